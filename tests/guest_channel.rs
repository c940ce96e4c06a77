//! The RPCI channel, every scenario over every transport (`support/transport.rs`): in
//! memory against the host model, and through the library's real instructions under the
//! simulator's trap-and-emulate runner. Host flavours: HB or LB transfers, cookies or not.
//! The backdoor calls and allocations per RPC are counted for every size in `perf_counts.rs`.

#![cfg(all(
    feature = "sim",
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]

mod support;

use std::cell::RefCell;

use support::transport::Transport;
use vmw_backdoor::proto::{cmd, msg, Regs, MAX_GUEST_MESSAGE};
use vmw_backdoor::sim::{Answer, Host, HostConfig, Step};
use vmw_backdoor::{Backdoor, ErrorKind, RpciChannel, VmwError};

/// Checkpoints in a row the library absorbs before it gives up with a `Checkpoint` error
/// (its error message states the number).
const CPT_TRIES: u64 = 8;

/// The four kinds of host every behaviour must hold on.
fn flavours() -> [(&'static str, HostConfig); 4] {
    [
        ("HB, cookies", HostConfig::default()),
        ("LB, cookies", HostConfig::default().no_hb()),
        ("HB, no cookies", HostConfig::default().no_cookies()),
        ("LB, no cookies", HostConfig::default().no_hb().no_cookies()),
    ]
}

/// Bytes of every value, NUL and invalid UTF-8 included.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 131 + 7) as u8).collect()
}

fn open(b: &mut dyn Backdoor) -> RpciChannel<&mut dyn Backdoor> {
    RpciChannel::open(b).expect("open a channel")
}

fn message_calls(host: &Host, sub: u16) -> u64 {
    host.counters().lb_calls_for(cmd::MESSAGE, sub)
}

/// A call the host may have broken on purpose: fine, or an error a host fault explains
/// (never one that blames the caller, the platform or the OS).
fn ok_or_host_fault<T>(result: Result<T, VmwError>, what: &str) {
    if let Err(e) = result {
        let host_fault = [
            ErrorKind::Protocol,
            ErrorKind::ChannelClosed,
            ErrorKind::NoChannel,
            ErrorKind::TooLarge,
            ErrorKind::HostRefused,
            ErrorKind::PermissionDenied,
            ErrorKind::Checkpoint,
        ];
        assert!(
            host_fault.contains(&e.kind()),
            "{what}: {:?}: {e}",
            e.kind()
        );
    }
}

#[test]
fn every_channel_function_works_in_every_flavour() {
    for t in Transport::library() {
        for (name, config) in flavours() {
            let config = config.guestinfo("present", "value").machine_id("vm-7");
            let host = t.run(config, |b| {
                let mut c = open(b);
                let value = Some(b"value".to_vec());
                assert_eq!(c.get_guestinfo(b"guestinfo.present").unwrap(), value);
                assert_eq!(c.get_guestinfo(b"present").unwrap(), value);
                assert_eq!(c.get_guestinfo(b"GuestInfo.present").unwrap(), value);
                assert_eq!(c.get_guestinfo(b"missing").unwrap(), None);
                c.set_guestinfo(b"set.here", b"\xff\xfe not utf-8").unwrap();
                c.log("hello from the guest").unwrap();
                c.report_agent().unwrap();
                assert_eq!(c.rpc(b"machine.id.get").unwrap(), b"vm-7");
                assert_eq!(c.max_reply_len(), vmw_backdoor::DEFAULT_MAX_REPLY_LEN);
                assert!(format!("{c:?}").contains("RpciChannel"));
                c.close().unwrap();
                open(b).log("second channel").unwrap();
            });
            let what = format!("{t:?}, {name}");
            assert_eq!(
                host.guestinfo()
                    .get(&b"guestinfo.set.here"[..])
                    .map(Vec::as_slice),
                Some(&b"\xff\xfe not utf-8"[..]),
                "{what}"
            );
            assert_eq!(
                host.vmx_log(),
                [b"hello from the guest".to_vec(), b"second channel".to_vec()],
                "{what}"
            );
            assert_eq!(host.tools_version(), Some(&b"2147483647"[..]), "{what}");
            assert_eq!(host.open_channels(), 0, "{what}: every channel closed");
        }
    }
}

#[test]
fn values_of_awkward_sizes_round_trip() {
    const SIZES: [usize; 8] = [0, 1, 3, 4, 5, 65_535, 65_536, 1 << 20];
    // Writes: the whole request must fit the host's 65,536 bytes.
    let room = MAX_GUEST_MESSAGE - b"info-set guestinfo.w ".len();
    for t in Transport::library() {
        for (name, mut config) in flavours() {
            for len in SIZES {
                config = config.guestinfo(format!("v{len}"), pattern(len));
            }
            let host = t.run(config, |b| {
                let mut c = open(b);
                for len in SIZES {
                    let got = c.get_guestinfo(format!("v{len}").as_bytes()).unwrap();
                    assert_eq!(got, Some(pattern(len)), "get {len} bytes");
                }
                for len in [1, 2, 3, 4, 5, 1000, room] {
                    let value: Vec<u8> = pattern(len).into_iter().map(|b| b.max(1)).collect();
                    c.set_guestinfo(b"w", &value).unwrap();
                    assert_eq!(c.get_guestinfo(b"w").unwrap(), Some(value), "set {len}");
                }
            });
            let stored = host.guestinfo().get(&b"guestinfo.w"[..]).map(Vec::len);
            assert_eq!(
                stored,
                Some(room),
                "{t:?}, {name}: the largest value fills the cap"
            );
        }
    }
}

#[test]
fn a_missing_key_is_none_and_a_refusal_keeps_the_host_text() {
    for t in Transport::library() {
        let config = HostConfig::default().guestinfo("k", "v").deny_guestinfo();
        let host = t.run(config, |b| {
            let mut c = open(b);
            for e in [
                c.get_guestinfo(b"k").unwrap_err(),
                c.set_guestinfo(b"k", b"top-secret").unwrap_err(),
            ] {
                // Its own kind, so that "not allowed here" is not taken for "not set".
                assert_eq!(e.kind(), ErrorKind::PermissionDenied);
                assert_eq!(e.host_reply(), Some(&b"Permission denied"[..]));
                assert!(
                    !e.to_string().contains("top-secret"),
                    "values stay out: {e}"
                );
            }
            assert!(c.is_open(), "a refusal is a complete exchange");
            c.log("the channel still works").unwrap();
        });
        assert_eq!(host.vmx_log().len(), 1, "{t:?}");
        t.run(HostConfig::default(), |b| {
            assert_eq!(open(b).get_guestinfo(b"absent").unwrap(), None);
        });
    }
}

#[test]
fn raw_rpc_returns_the_payload_or_the_refusal() {
    for t in Transport::library() {
        t.run(HostConfig::default().machine_id("vm-42"), |b| {
            let mut c = open(b);
            assert_eq!(c.rpc(b"machine.id.get").unwrap(), b"vm-42");
            let e = c.rpc(b"no.such.command arg").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::HostRefused);
            assert_eq!(e.host_reply(), Some(&b"Unknown command"[..]));
            assert!(e.to_string().contains("no.such.command"), "{e}");
        });
    }
}

#[test]
fn requests_go_out_without_a_trailing_nul() {
    for t in Transport::library() {
        let host = t.run(HostConfig::default(), |b| open(b).log("hello").unwrap());
        assert_eq!(
            host.counters().bytes_to_host,
            b"log hello".len() as u64,
            "{t:?}"
        );
        assert_eq!(host.vmx_log(), [b"hello".to_vec()], "{t:?}");
    }
}

#[test]
fn a_checkpoint_at_any_step_is_absorbed() {
    for t in Transport::library() {
        for (name, config) in flavours() {
            for step in Step::ALL {
                let config = config
                    .clone()
                    .guestinfo("k", pattern(9))
                    .fault(step, 1, Answer::Cpt);
                let host = t.run(config, |b| {
                    let mut c = open(b);
                    assert_eq!(c.get_guestinfo(b"k").unwrap(), Some(pattern(9)));
                    c.set_guestinfo(b"k", b"after").unwrap();
                    c.close().unwrap();
                });
                let what = format!("{t:?}, {name}, CPT at {step:?}");
                // Payload steps exist only in their transfer mode; there the checkpoint fires.
                let occurs = match step {
                    Step::SendPayload | Step::RecvPayload => name.starts_with("LB"),
                    Step::HbOut | Step::HbIn => name.starts_with("HB"),
                    _ => true,
                };
                assert_eq!(host.counters().cpts_injected, u64::from(occurs), "{what}");
                let stored = host.guestinfo().get(&b"guestinfo.k"[..]).map(Vec::as_slice);
                assert_eq!(stored, Some(&b"after"[..]), "{what}");
                assert_eq!(host.open_channels(), 0, "{what}");
            }
        }
    }
}

#[test]
fn periodic_checkpoints_do_not_break_long_transfers() {
    for t in Transport::library() {
        for (name, config) in flavours() {
            let host = t.run(config.cpt_every(3).guestinfo("v", pattern(10_000)), |b| {
                let mut c = open(b);
                for _ in 0..5 {
                    assert_eq!(c.get_guestinfo(b"v").unwrap(), Some(pattern(10_000)));
                }
            });
            assert!(host.counters().cpts_injected > 0, "{t:?}, {name}");
        }
    }
}

#[test]
fn a_run_of_checkpoints_is_a_checkpoint_error_and_the_channel_recovers() {
    for t in Transport::library() {
        for (name, config) in flavours() {
            for step in [Step::SendSize, Step::RecvSize, Step::RecvStatus] {
                let mut config = config.clone().guestinfo("k", "v");
                for nth in 1..=CPT_TRIES {
                    config = config.fault(step, nth, Answer::Cpt);
                }
                let host = t.run(config, |b| {
                    let mut c = open(b);
                    let e = c.get_guestinfo(b"k").unwrap_err();
                    assert_eq!(e.kind(), ErrorKind::Checkpoint, "{e}");
                    assert!(
                        e.to_string().contains(&format!("{CPT_TRIES} checkpoints")),
                        "{e}"
                    );
                    assert_eq!(c.get_guestinfo(b"k").unwrap().as_deref(), Some(&b"v"[..]));
                });
                let what = format!("{t:?}, {name}, {step:?}");
                assert_eq!(host.counters().cpts_injected, CPT_TRIES, "{what}");
                assert_eq!(
                    host.open_channels(),
                    0,
                    "{what}: the failed channel was not leaked"
                );
            }
        }
    }
}

#[test]
fn checkpoints_on_every_cookie_open_never_downgrade_to_a_plain_channel() {
    for t in Transport::library() {
        let mut config = HostConfig::default();
        for nth in 1..=CPT_TRIES {
            config = config.fault(Step::Open, nth, Answer::Cpt);
        }
        let host = t.run(config, |b| {
            let e = RpciChannel::open(&mut *b).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Checkpoint, "{e}");
            // Once the checkpoints are over, the cookie channel opens.
            let c = open(b);
            assert!(format!("{c:?}").contains("cookies: true"), "{c:?}");
        });
        assert_eq!(
            host.counters().channels_opened,
            1,
            "{t:?}: no cookie-less OPEN"
        );
        assert_eq!(message_calls(&host, msg::OPEN), CPT_TRIES + 1, "{t:?}");
    }
}

#[test]
fn after_any_failed_step_the_channel_is_back_in_step() {
    for t in Transport::library() {
        for (name, config) in flavours() {
            for step in Step::ALL {
                for answer in [Answer::Fail, Answer::CloseChannel] {
                    let what = format!("{t:?}, {name}, {answer:?} at {step:?}");
                    let config = config.clone().guestinfo("k", "v").fault(step, 2, answer);
                    let host = t.run(config, |b| {
                        let Ok(mut c) = RpciChannel::open(b) else {
                            return; // the fault hit the first OPEN
                        };
                        // The fault lands on the second occurrence: in the first or second
                        // exchange.
                        for _ in 0..3 {
                            ok_or_host_fault(c.get_guestinfo(b"k"), &what);
                        }
                        assert_eq!(c.get_guestinfo(b"k").unwrap().as_deref(), Some(&b"v"[..]));
                        if let Err(c) = c.close() {
                            drop(c); // a failed CLOSE is not sent again
                        }
                    });
                    assert_eq!(host.open_channels(), 0, "{what}: channels leaked");
                }
            }
        }
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
    for t in Transport::library() {
        for (name, config) in flavours() {
            for step in Step::ALL {
                for answer in &hostile {
                    let what = format!("{t:?}, {name}, {answer:?} at {step:?}");
                    let config =
                        config
                            .clone()
                            .guestinfo("k", "value")
                            .fault(step, 2, answer.clone());
                    let host = t.run(config, |b| {
                        let Ok(mut c) = RpciChannel::open(b) else {
                            return;
                        };
                        // The fault lands in one of these; each may fail, none may panic or hang.
                        for _ in 0..3 {
                            ok_or_host_fault(c.get_guestinfo(b"k"), &what);
                        }
                        let last = c.get_guestinfo(b"k").unwrap();
                        assert_eq!(last.as_deref(), Some(&b"value"[..]), "{what}");
                    });
                    assert_eq!(host.open_channels(), 0, "{what}: channels leaked");
                }
            }
        }
    }
}

#[test]
fn a_channel_the_host_dropped_is_reopened_and_the_request_sent_once() {
    for t in Transport::library() {
        let config = HostConfig::default().fault(Step::SendSize, 1, Answer::CloseChannel);
        let host = t.run(config, |b| open(b).set_guestinfo(b"k", b"w").unwrap());
        let c = host.counters();
        assert_eq!(c.rpcs, 1, "{t:?}: executed exactly once");
        assert_eq!(c.channels_opened, 2, "{t:?}");
        assert_eq!(
            message_calls(&host, msg::CLOSE),
            1,
            "{t:?}: the drop closes the new channel; no CLOSE for the id the host freed"
        );
        assert_eq!(host.open_channels(), 0, "{t:?}");
    }
}

#[test]
fn replies_over_the_cap_fail_before_fetching_and_cost_only_the_channel() {
    for t in Transport::library() {
        let config = HostConfig::default().guestinfo("v", pattern(5000));
        let host = t.run(config.clone(), |b| {
            let mut c = open(b);
            c.set_max_reply_len(4999);
            assert_eq!(c.max_reply_len(), 4999);
            let e = c.get_guestinfo(b"v").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::TooLarge);
            assert!(
                e.to_string().contains("5000 bytes, over the 4999-byte cap"),
                "{e}"
            );
            assert!(!c.is_open(), "the channel holding the reply was closed");
        });
        let counters = host.counters();
        assert_eq!(
            counters.bytes_to_guest, 0,
            "{t:?}: no reply bytes were fetched"
        );
        assert_eq!(counters.channels_closed, 1, "{t:?}");
        t.run(config, |b| {
            let mut c = open(b);
            c.set_max_reply_len(4999);
            let _ = c.get_guestinfo(b"v");
            c.set_max_reply_len(5000);
            assert_eq!(c.get_guestinfo(b"v").unwrap(), Some(pattern(5000)));
            assert!(c.is_open());
        });
    }
}

#[test]
fn a_small_cap_limits_values_not_refusals() {
    for t in Transport::library() {
        let config = HostConfig::default().guestinfo("v", "123456789");
        t.run(config.clone(), |b| {
            let mut c = open(b);
            c.set_max_reply_len(8);
            let e = c.get_guestinfo(b"v").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::TooLarge);
            assert!(
                e.to_string().contains("9 bytes, over the 8-byte cap"),
                "{e}"
            );
            assert!(
                c.is_open(),
                "a small reply is read whole: the channel stays in step"
            );
            assert_eq!(c.get_guestinfo(b"missing").unwrap(), None);
            let e = c.rpc(b"no.such.command").unwrap_err();
            assert_eq!(e.host_reply(), Some(&b"Unknown command"[..]), "{e}");
        });
        t.run(config.deny_guestinfo(), |b| {
            let mut c = open(b);
            c.set_max_reply_len(0);
            let e = c.get_guestinfo(b"v").unwrap_err();
            assert_eq!(e.host_reply(), Some(&b"Permission denied"[..]), "{e}");
        });
    }
}

#[test]
fn open_falls_back_to_a_cookie_less_channel() {
    for t in Transport::library() {
        let host = t.run(HostConfig::default().no_cookies(), |b| drop(open(b)));
        assert_eq!(
            message_calls(&host, msg::OPEN),
            2,
            "{t:?}: cookie OPEN, then plain OPEN"
        );
        assert_eq!(host.counters().channels_opened, 1, "{t:?}");
    }
}

#[test]
fn eight_channels_survive_a_thousand_open_close_cycles() {
    for t in Transport::library() {
        let config = HostConfig::default().channels(8).guestinfo("k", "v");
        let host = t.run(config, |b| {
            for i in 0..1000 {
                let mut c = open(&mut *b);
                assert_eq!(c.get_guestinfo(b"k").unwrap().as_deref(), Some(&b"v"[..]));
                if i % 2 == 0 {
                    c.close().unwrap();
                } // else: dropped, which closes it too
            }
            // All eight at once on one backdoor, then one too many.
            let shared = RefCell::new(b);
            let held: Vec<_> = (0..8)
                .map(|_| RpciChannel::open(&shared).unwrap())
                .collect();
            let e = RpciChannel::open(&shared).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::NoChannel);
            assert!(e.to_string().contains("channels may be in use"), "{e}");
            for c in held {
                c.close().unwrap();
            }
        });
        assert_eq!(host.open_channels(), 0, "{t:?}: nothing leaks");
        assert_eq!(host.counters().channels_opened, 1008, "{t:?}");
        assert_eq!(host.counters().channels_closed, 1008, "{t:?}");
    }
}

#[test]
fn close_is_sent_once_explicitly_or_on_drop() {
    for t in Transport::library() {
        let host = t.run(HostConfig::default(), |b| {
            open(&mut *b).close().unwrap(); // and nothing when it drops
            drop(open(b));
        });
        assert_eq!(message_calls(&host, msg::CLOSE), 2, "{t:?}");
        assert_eq!(host.open_channels(), 0);

        // A CLOSE the host fails still counts: no second CLOSE for the same channel.
        let host = t.run(
            HostConfig::default().fault(Step::Close, 1, Answer::Fail),
            |b| {
                let handed_back = open(b).close().unwrap_err();
                assert!(!handed_back.is_open());
            },
        );
        assert_eq!(message_calls(&host, msg::CLOSE), 1, "{t:?}");
    }
}

/// Backdoors with no message channel: one that is not there (EAX all ones, as on real
/// hardware's empty port) and one that leaves every register as sent (QEMU's `vmport`
/// with `x-signal-unsupported-cmd=off`).
struct Absent;
struct Silent;

impl Backdoor for Absent {
    fn lb(&mut self, regs: &mut Regs) {
        regs.ax = u64::from(u32::MAX);
    }
    fn hb_out(&mut self, _: &mut Regs, _: &[u8]) {}
    fn hb_in(&mut self, _: &mut Regs, buf: &mut [u8]) {
        buf.fill(0xff);
    }
}

impl Backdoor for Silent {
    fn lb(&mut self, _: &mut Regs) {}
    fn hb_out(&mut self, _: &mut Regs, _: &[u8]) {}
    fn hb_in(&mut self, _: &mut Regs, _: &mut [u8]) {}
}

#[test]
fn a_backdoor_without_the_message_command_says_so() {
    for e in [
        RpciChannel::open(Absent).unwrap_err(),
        RpciChannel::open(Silent).unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::NoChannel);
        assert!(
            e.to_string()
                .contains("does not implement the message channel"),
            "{e}"
        );
    }
}

#[test]
fn the_published_crates_calling_pattern_compiles_and_works() {
    fn afterburn_style() -> Result<Option<Vec<u8>>, Box<dyn std::error::Error>> {
        let mut g = vmw_backdoor::probe_backdoor_privileged()
            .or_else(|_| vmw_backdoor::probe_backdoor())?;
        let mut c = vmw_backdoor::EnhancedChan::open(&mut g)?;
        let v: Option<Vec<u8>> = c.get_guestinfo(b"guestinfo.metadata")?;
        drop(c);
        g.open_enhanced_chan()?.log("second channel")?;
        Ok(v)
    }
    let run = HostConfig::default().guestinfo("metadata", "e30K").run(|| {
        assert_eq!(afterburn_style().unwrap().as_deref(), Some(&b"e30K"[..]));
    });
    let host = run.expect("start the guest").expect_success();
    assert_eq!(host.vmx_log(), [b"second channel".to_vec()]);
    assert_eq!(host.open_channels(), 0);
}
