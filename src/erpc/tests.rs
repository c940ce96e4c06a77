//! The channel and RPCI logic against the in-memory host model: every branch of the
//! protocol at memory speed. The same behaviour through the real instructions is covered by
//! `tests/guest_*.rs` under the trap-and-emulate runner.

use std::cell::RefCell;

use super::channel::CPT_TRIES;
use crate::proto::{cmd, msg, MAX_GUEST_MESSAGE};
use crate::sim::host::{Answer, Host, HostConfig, Step};
use crate::{ErrorKind, RpciChannel};

/// Every backdoor call the host saw.
fn calls(host: &Host) -> u64 {
    let c = host.counters();
    c.backdoor_calls()
}

fn message_calls(host: &Host, sub: u16) -> u64 {
    host.counters().lb_calls_for(cmd::MESSAGE, sub)
}

/// Host flavours every behaviour must hold on: HB or LB, cookies or not.
fn flavours() -> [(&'static str, HostConfig); 4] {
    [
        ("hb+cookies", HostConfig::default()),
        ("lb+cookies", HostConfig::default().no_hb()),
        ("hb, no cookies", HostConfig::default().no_cookies()),
        ("lb, no cookies", HostConfig::default().no_hb().no_cookies()),
    ]
}

fn with_value(config: HostConfig, value: &[u8]) -> HostConfig {
    config.guestinfo("v", value)
}

/// A call the host may have broken on purpose: fine, or an error a host fault explains
/// (never one that blames the caller, the platform or the OS).
fn ok_or_host_fault<T: std::fmt::Debug>(result: Result<T, crate::VmwError>, what: &str) {
    if let Err(e) = result {
        let host_fault = [
            ErrorKind::Protocol,
            ErrorKind::ChannelClosed,
            ErrorKind::NoChannel,
            ErrorKind::TooLarge,
            ErrorKind::HostRefused,
            ErrorKind::Checkpoint,
        ];
        assert!(
            host_fault.contains(&e.kind()),
            "{what}: {:?}: {e}",
            e.kind()
        );
    }
}

fn pattern(len: usize) -> Vec<u8> {
    // Every byte value, including NUL and bytes that are not UTF-8.
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

#[test]
fn reads_values_of_every_awkward_size_in_every_flavour() {
    for (name, config) in flavours() {
        for len in [0, 1, 3, 4, 5, 65_535, 65_536, 1 << 20] {
            let value = pattern(len);
            let mut host = Host::new(with_value(config.clone(), &value));
            let mut rpci = RpciChannel::open(&mut host).unwrap();
            let got = rpci.get_guestinfo(b"guestinfo.v").unwrap();
            assert_eq!(got.as_deref(), Some(&value[..]), "{name}, {len} bytes");
        }
    }
}

#[test]
fn writes_values_and_reads_them_back_with_or_without_the_prefix() {
    for (name, config) in flavours() {
        let mut host = Host::new(config);
        let mut rpci = RpciChannel::open(&mut host).unwrap();
        for len in [0, 1, 3, 4, 5, 1000] {
            let value: Vec<u8> = pattern(len).into_iter().map(|b| b | 0x80).collect();
            rpci.set_guestinfo(b"k", &value).unwrap();
            assert_eq!(
                rpci.access().guestinfo().get(&b"guestinfo.k"[..]),
                Some(&value),
                "{name}"
            );
            let back = rpci.get_guestinfo(b"GuestInfo.k").unwrap();
            assert_eq!(back, Some(value), "{name}, {len} bytes");
        }
    }
}

#[test]
fn largest_settable_value_fills_the_host_cap_exactly() {
    let overhead = b"info-set guestinfo.k ".len();
    let mut host = Host::new(HostConfig::default());
    let mut rpci = RpciChannel::open(&mut host).unwrap();
    let fits = vec![b'x'; MAX_GUEST_MESSAGE - overhead];
    rpci.set_guestinfo(b"k", &fits).unwrap();
    assert_eq!(
        rpci.access().guestinfo().get(&b"guestinfo.k"[..]),
        Some(&fits)
    );

    let before = calls(rpci.access());
    let too_big = vec![b'x'; MAX_GUEST_MESSAGE - overhead + 1];
    let e = rpci.set_guestinfo(b"k", &too_big).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooLarge);
    assert_eq!(
        calls(rpci.access()),
        before,
        "nothing may be sent for a request over the cap"
    );
    let e = rpci.rpc(&vec![b'x'; MAX_GUEST_MESSAGE + 1]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooLarge);
    assert_eq!(calls(rpci.access()), before);
    assert!(
        rpci.is_open(),
        "a refused request does not cost the channel"
    );
}

#[test]
fn a_missing_key_is_none_and_a_refusal_keeps_the_host_text() {
    let mut host = Host::new(HostConfig::default());
    let mut rpci = RpciChannel::open(&mut host).unwrap();
    assert_eq!(rpci.get_guestinfo(b"absent").unwrap(), None);

    let mut host = Host::new(HostConfig::default().guestinfo("k", "v").deny_guestinfo());
    let mut rpci = RpciChannel::open(&mut host).unwrap();
    for e in [
        rpci.get_guestinfo(b"k").unwrap_err(),
        rpci.set_guestinfo(b"k", b"secret-value").unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::HostRefused);
        assert_eq!(e.host_reply(), Some(&b"Permission denied"[..]));
        assert!(
            !e.to_string().contains("secret-value"),
            "values stay out of messages: {e}"
        );
    }
    assert!(rpci.is_open(), "a refusal is a complete exchange");
}

#[test]
fn raw_rpc_returns_the_payload_or_the_refusal() {
    let mut host = Host::new(HostConfig::default().machine_id("vm-42"));
    let mut rpci = RpciChannel::open(&mut host).unwrap();
    assert_eq!(rpci.rpc(b"machine.id.get").unwrap(), b"vm-42");
    let e = rpci.rpc(b"no.such.command arg").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::HostRefused);
    assert_eq!(e.host_reply(), Some(&b"Unknown command"[..]));
    assert!(e.to_string().contains("no.such.command"), "{e}");
}

#[test]
fn requests_go_out_without_a_trailing_nul() {
    let mut host = Host::new(HostConfig::default());
    let mut rpci = RpciChannel::open(&mut host).unwrap();
    rpci.log("hello").unwrap();
    assert_eq!(
        rpci.access().counters().bytes_to_host,
        b"log hello".len() as u64
    );
    assert_eq!(rpci.access().vmx_log(), [b"hello".to_vec()]);
    rpci.report_agent().unwrap();
    assert_eq!(rpci.access().tools_version(), Some(&b"2147483647"[..]));
}

#[test]
fn bad_keys_and_values_are_refused_before_sending() {
    let mut host = Host::new(HostConfig::default());
    let mut rpci = RpciChannel::open(&mut host).unwrap();
    let before = calls(rpci.access());
    for key in [&b""[..], b"guestinfo.", b"a b", b"a\0b", b"a\tb"] {
        let e = rpci.get_guestinfo(key).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{key:?}");
    }
    let e = rpci.set_guestinfo(b"k", b"a\0b").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert_eq!(calls(rpci.access()), before);
}

#[test]
fn an_open_channel_costs_the_floor_of_calls_per_rpc() {
    let value = pattern(1001);
    // HB: SENDSIZE, rep outsb, RECVSIZE, rep insb, RECVSTATUS.
    let mut host = Host::new(with_value(HostConfig::default(), &value));
    let mut rpci = RpciChannel::open(&mut host).unwrap();
    let before = calls(rpci.access());
    rpci.get_guestinfo(b"v").unwrap();
    assert_eq!(calls(rpci.access()) - before, 5);

    // LB: SENDSIZE + ⌈request/4⌉ + RECVSIZE + ⌈reply/4⌉ + RECVSTATUS.
    let mut host = Host::new(with_value(HostConfig::default().no_hb(), &value));
    let mut rpci = RpciChannel::open(&mut host).unwrap();
    let before = calls(rpci.access());
    rpci.get_guestinfo(b"v").unwrap();
    let request = b"info-get guestinfo.v".len() as u64;
    let reply = 2 + value.len() as u64;
    assert_eq!(
        calls(rpci.access()) - before,
        3 + request.div_ceil(4) + reply.div_ceil(4)
    );
}

#[test]
fn a_checkpoint_at_any_step_is_retried_transparently() {
    for (name, config) in flavours() {
        for step in Step::ALL {
            let value = pattern(9);
            let config = with_value(config.clone(), &value).fault(step, 1, Answer::Cpt);
            let mut host = Host::new(config);
            let mut rpci = RpciChannel::open(&mut host).unwrap();
            let got = rpci.get_guestinfo(b"v");
            assert_eq!(got.unwrap(), Some(value), "{name}, CPT at {step:?}");
            rpci.close().unwrap();
            assert_eq!(host.open_channels(), 0, "{name}, CPT at {step:?}");
        }
    }
}

#[test]
fn periodic_checkpoints_do_not_break_long_transfers() {
    for (name, config) in flavours() {
        let value = pattern(10_000);
        let mut host = Host::new(with_value(config.cpt_every(3), &value));
        let mut rpci = RpciChannel::open(&mut host).unwrap();
        for _ in 0..5 {
            let got = rpci.get_guestinfo(b"v").unwrap();
            assert_eq!(got.as_deref(), Some(&value[..]), "{name}");
        }
        assert!(rpci.access().counters().cpts_injected > 0, "{name}");
    }
}

#[test]
fn endless_checkpoints_give_a_checkpoint_error_and_a_working_channel() {
    for (name, config) in flavours() {
        for step in [Step::SendSize, Step::RecvSize, Step::RecvStatus] {
            let mut config = config.clone().guestinfo("k", "v");
            for nth in 1..=u64::from(CPT_TRIES) {
                config = config.fault(step, nth, Answer::Cpt);
            }
            let mut host = Host::new(config);
            let mut rpci = RpciChannel::open(&mut host).unwrap();
            let e = rpci.get_guestinfo(b"k").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Checkpoint, "{name}, {step:?}: {e}");
            assert!(
                rpci.access().open_channels() <= 1,
                "{name}: the failed channel was not leaked"
            );
            let again = rpci.get_guestinfo(b"k").unwrap();
            assert_eq!(again.as_deref(), Some(&b"v"[..]), "{name}, {step:?}");
            assert_eq!(rpci.access().open_channels(), 1);
        }
    }
}

#[test]
fn after_any_failed_step_the_channel_is_back_in_step() {
    for (name, config) in flavours() {
        for step in Step::ALL {
            for answer in [Answer::Fail, Answer::CloseChannel] {
                let config = config
                    .clone()
                    .guestinfo("k", "v")
                    .fault(step, 2, answer.clone());
                let mut host = Host::new(config);
                let Ok(mut rpci) = RpciChannel::open(&mut host) else {
                    continue;
                };
                let what = format!("{name}, {answer:?} at {step:?}");
                // The fault lands on the second occurrence: in the first or second exchange.
                for _ in 0..3 {
                    ok_or_host_fault(rpci.get_guestinfo(b"k"), &what);
                }
                let last = rpci.get_guestinfo(b"k");
                assert_eq!(last.unwrap().as_deref(), Some(&b"v"[..]), "{what}");
                assert!(
                    rpci.access().open_channels() <= 1,
                    "{what}: channels leaked"
                );
                if let Err(chan) = rpci.close() {
                    drop(chan); // a failed CLOSE is not sent again
                }
                assert_eq!(host.open_channels(), 0, "{what}");
            }
        }
    }
}

#[test]
fn a_channel_the_host_dropped_is_reopened_and_the_request_sent_once() {
    let mut host = Host::new(HostConfig::default().guestinfo("k", "v").fault(
        Step::SendSize,
        1,
        Answer::CloseChannel,
    ));
    let mut rpci = RpciChannel::open(&mut host).unwrap();
    rpci.set_guestinfo(b"k", b"w").unwrap();
    assert_eq!(rpci.access().counters().rpcs, 1, "executed exactly once");
    assert_eq!(rpci.access().counters().channels_opened, 2);
    assert_eq!(
        message_calls(rpci.access(), msg::CLOSE),
        0,
        "no CLOSE for an id the host freed"
    );
    assert_eq!(rpci.access().open_channels(), 1);
}

#[test]
fn replies_over_the_cap_fail_before_allocating_and_cost_only_the_channel() {
    let mut host = Host::new(with_value(HostConfig::default(), &pattern(100)));
    let mut rpci = RpciChannel::open(&mut host).unwrap();
    rpci.set_max_reply_len(99);
    let e = rpci.get_guestinfo(b"v").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooLarge);
    assert!(
        rpci.access().counters().bytes_to_guest == 0,
        "no reply bytes were fetched"
    );
    assert_eq!(
        rpci.access().open_channels(),
        0,
        "the channel holding the reply was closed"
    );
    rpci.set_max_reply_len(100);
    assert_eq!(rpci.get_guestinfo(b"v").unwrap(), Some(pattern(100)));
    assert_eq!(rpci.access().open_channels(), 1);
}

#[test]
fn open_falls_back_to_a_cookie_less_channel_and_reports_exhaustion() {
    let mut host = Host::new(HostConfig::default().no_cookies());
    let rpci = RpciChannel::open(&mut host).unwrap();
    assert_eq!(
        message_calls(rpci.access(), msg::OPEN),
        2,
        "cookie OPEN, then plain OPEN"
    );

    // Eight channels at once on one host, shared through a RefCell.
    let host = RefCell::new(Host::new(HostConfig::default().channels(8)));
    let held: Vec<_> = (0..8).map(|_| RpciChannel::open(&host).unwrap()).collect();
    let e = RpciChannel::open(&host).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoChannel);
    assert_eq!(host.borrow().open_channels(), 8);
    for chan in held {
        chan.close().unwrap();
    }
    assert_eq!(host.borrow().open_channels(), 0);
}

#[test]
fn a_thousand_open_close_cycles_on_eight_channels_leak_nothing() {
    let mut host = Host::new(HostConfig::default().channels(8).guestinfo("k", "v"));
    for _ in 0..1000 {
        let mut rpci = RpciChannel::open(&mut host).unwrap();
        assert_eq!(
            rpci.get_guestinfo(b"k").unwrap().as_deref(),
            Some(&b"v"[..])
        );
        rpci.close().unwrap();
    }
    assert_eq!(host.open_channels(), 0);
    assert_eq!(host.counters().channels_closed, 1000);
}

#[test]
fn close_is_sent_once_only() {
    let mut host = Host::new(HostConfig::default());
    let rpci = RpciChannel::open(&mut host).unwrap();
    rpci.close().unwrap(); // and nothing when it drops
    assert_eq!(message_calls(&host, msg::CLOSE), 1);

    // A CLOSE the host fails still counts: no second CLOSE for the same channel.
    let mut host = Host::new(HostConfig::default().fault(Step::Close, 1, Answer::Fail));
    let rpci = RpciChannel::open(&mut host).unwrap();
    let handed_back = rpci.close().unwrap_err();
    assert!(!handed_back.is_open());
    drop(handed_back);
    assert_eq!(message_calls(&host, msg::CLOSE), 1);
}

#[test]
fn debug_output_never_contains_the_cookies() {
    let mut host = Host::new(HostConfig::default().seed(7));
    let rpci = RpciChannel::open(&mut host).unwrap();
    let text = format!("{rpci:?}");
    let (high, low) = rpci.cookies();
    assert!(high != 0 && low != 0);
    for cookie in [high, low] {
        assert!(!text.contains(&cookie.to_string()), "{text}");
        assert!(!text.contains(&format!("{cookie:x}")), "{text}");
        assert!(!text.contains(&format!("{cookie:X}")), "{text}");
    }
}

#[test]
fn hostile_answers_give_errors_never_panics_and_the_channel_recovers() {
    let hostile = [
        Answer::Raw(u32::MAX),
        Answer::Raw(0x0001_0000),
        Answer::Raw(0x00FF_0000),
        Answer::WrongMessageType(7),
        Answer::ClaimLength(u32::MAX),
        Answer::ClaimLength(3),
        Answer::NoPrefix,
        Answer::Phantom(9),
        Answer::Phantom(u32::MAX),
    ];
    for (name, config) in flavours() {
        for step in Step::ALL {
            for answer in &hostile {
                let what = format!("{name}, {answer:?} at {step:?}");
                let config = config
                    .clone()
                    .guestinfo("k", "value")
                    .fault(step, 2, answer.clone());
                let mut host = Host::new(config);
                let Ok(mut rpci) = RpciChannel::open(&mut host) else {
                    continue;
                };
                // The fault lands in one of these; each may fail, none may panic or hang.
                for _ in 0..3 {
                    ok_or_host_fault(rpci.get_guestinfo(b"k"), &what);
                }
                let last = rpci.get_guestinfo(b"k").unwrap();
                assert_eq!(last.as_deref(), Some(&b"value"[..]), "{what}");
                assert!(
                    rpci.access().open_channels() <= 1,
                    "{what}: channels leaked"
                );
            }
        }
    }
}

#[test]
fn checkpoints_on_every_cookie_open_never_downgrade_to_a_plain_channel() {
    let mut config = HostConfig::default();
    for nth in 1..=u64::from(CPT_TRIES) {
        config = config.fault(Step::Open, nth, Answer::Cpt);
    }
    let mut host = Host::new(config);
    let e = RpciChannel::open(&mut host).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Checkpoint, "{e}");
    assert_eq!(
        host.counters().channels_opened,
        0,
        "a cookie-less OPEN was tried"
    );
    assert_eq!(message_calls(&host, msg::OPEN), u64::from(CPT_TRIES));
    // Once the checkpoints are over, the cookie channel opens.
    let rpci = RpciChannel::open(&mut host).unwrap();
    assert!(format!("{rpci:?}").contains("cookies: true"), "{rpci:?}");
}

#[test]
fn a_backdoor_without_the_message_command_says_so() {
    use crate::proto::partial_hosts::{Nothing, Silent};
    for e in [
        RpciChannel::open(&mut Nothing).unwrap_err(),
        RpciChannel::open(&mut Silent).unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::NoChannel);
        assert!(
            e.to_string()
                .contains("does not implement the message channel"),
            "{e}"
        );
    }
    // A full host that refuses (every channel taken) is told apart.
    let host = RefCell::new(Host::new(HostConfig::default().channels(1)));
    let _held = RpciChannel::open(&host).unwrap();
    let e = RpciChannel::open(&host).unwrap_err();
    assert!(e.to_string().contains("channels may be in use"), "{e}");
}
