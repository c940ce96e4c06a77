//! The RPCI channel through the real instructions, under the simulator's trap-and-emulate
//! runner: every public function, HB and LB, cookies on and off, checkpoints, channel limits,
//! awkward sizes.

#![cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]

use vmw_backdoor::proto::{cmd, msg, MAX_GUEST_MESSAGE};
use vmw_backdoor::sim::host::{Answer, Step};
use vmw_backdoor::sim::{Host, HostConfig};
use vmw_backdoor::{EnhancedChan, ErrorKind};

/// Runs `guest` under the simulator and requires a clean exit.
#[track_caller]
fn run(config: HostConfig, guest: impl FnOnce()) -> Host {
    config.run(guest).expect("start the guest").expect_success()
}

/// The four kinds of host: HB or LB transfers, cookies or not.
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

fn guard() -> vmw_backdoor::BackdoorGuard {
    vmw_backdoor::probe_backdoor_privileged()
        .or_else(|_| vmw_backdoor::probe_backdoor())
        .unwrap()
}

/// Every backdoor call the host saw.
fn calls(host: &Host) -> u64 {
    let c = host.counters();
    c.backdoor_calls()
}

#[test]
fn every_channel_function_works_in_every_flavour() {
    for (name, config) in flavours() {
        let config = config.guestinfo("present", "value").machine_id("vm-7");
        let host = run(config, move || {
            let mut g = guard();
            let mut c = EnhancedChan::open(&mut g).unwrap();
            assert_eq!(
                c.get_guestinfo(b"guestinfo.present").unwrap().as_deref(),
                Some(&b"value"[..])
            );
            assert_eq!(
                c.get_guestinfo(b"present").unwrap().as_deref(),
                Some(&b"value"[..])
            );
            assert_eq!(c.get_guestinfo(b"missing").unwrap(), None);
            c.set_guestinfo(b"set.here", b"\xff\xfe not utf-8").unwrap();
            c.log("hello from the guest").unwrap();
            c.report_agent().unwrap();
            assert_eq!(c.rpc(b"machine.id.get").unwrap(), b"vm-7");
            let e = c.rpc(b"no.such.command").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::HostRefused);
            assert_eq!(e.host_reply(), Some(&b"Unknown command"[..]));
            assert_eq!(c.max_reply_len(), vmw_backdoor::DEFAULT_MAX_REPLY_LEN);
            c.set_max_reply_len(4);
            assert_eq!(c.max_reply_len(), 4);
            assert_eq!(
                c.get_guestinfo(b"present").unwrap_err().kind(),
                ErrorKind::TooLarge
            );
            c.set_max_reply_len(5);
            assert_eq!(
                c.get_guestinfo(b"present").unwrap().as_deref(),
                Some(&b"value"[..])
            );
            assert!(format!("{c:?}").contains("RpciChannel"));
            c.close().unwrap();
            let mut c = g.open_enhanced_chan().unwrap();
            c.log("second channel").unwrap();
        });
        assert_eq!(
            host.guestinfo()
                .get(&b"guestinfo.set.here"[..])
                .map(Vec::as_slice),
            Some(&b"\xff\xfe not utf-8"[..]),
            "{name}"
        );
        assert_eq!(
            host.vmx_log(),
            [b"hello from the guest".to_vec(), b"second channel".to_vec()],
            "{name}"
        );
        assert_eq!(host.tools_version(), Some(&b"2147483647"[..]), "{name}");
        assert_eq!(host.open_channels(), 0, "{name}: every channel closed");
    }
}

#[test]
fn values_of_awkward_sizes_round_trip() {
    const SIZES: [usize; 7] = [0, 1, 3, 4, 5, 65_535, 65_536];
    for (name, config) in flavours() {
        let mut config = config.guestinfo("big", pattern(1 << 20));
        for len in SIZES {
            config = config.guestinfo(format!("v{len}"), pattern(len));
        }
        let host = run(config, || {
            let mut g = guard();
            let mut c = g.open_enhanced_chan().unwrap();
            for len in SIZES {
                let key = format!("v{len}");
                let got = c.get_guestinfo(key.as_bytes()).unwrap();
                assert_eq!(got, Some(pattern(len)), "get {len} bytes");
            }
            assert_eq!(
                c.get_guestinfo(b"big").unwrap(),
                Some(pattern(1 << 20)),
                "1 MiB"
            );
            // Writes: the whole request must fit the host's 65,536 bytes.
            let room = MAX_GUEST_MESSAGE - b"info-set guestinfo.w ".len();
            for len in [0, 1, 3, 4, 5, room] {
                let value: Vec<u8> = pattern(len).into_iter().map(|b| b.max(1)).collect();
                c.set_guestinfo(b"w", &value).unwrap();
                assert_eq!(
                    c.get_guestinfo(b"w").unwrap(),
                    Some(value),
                    "set {len} bytes"
                );
            }
            for len in [room + 1, 65_535, 65_536] {
                let e = c.set_guestinfo(b"w", &vec![b'x'; len]).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::TooLarge, "set {len} bytes");
            }
            let e = c.rpc(&vec![b'x'; MAX_GUEST_MESSAGE + 1]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::TooLarge);
        });
        assert_eq!(host.open_channels(), 0, "{name}");
    }
}

#[test]
fn refusals_keep_the_host_text() {
    let host = run(
        HostConfig::default().guestinfo("k", "v").deny_guestinfo(),
        || {
            let mut g = guard();
            let mut c = g.open_enhanced_chan().unwrap();
            for e in [
                c.get_guestinfo(b"k").unwrap_err(),
                c.set_guestinfo(b"k", b"top-secret").unwrap_err(),
            ] {
                assert_eq!(e.kind(), ErrorKind::HostRefused);
                assert_eq!(e.host_reply(), Some(&b"Permission denied"[..]));
                assert!(!e.to_string().contains("top-secret"), "{e}");
            }
            c.log("the channel still works").unwrap();
        },
    );
    assert_eq!(host.vmx_log().len(), 1);
}

#[test]
fn a_checkpoint_at_any_step_is_absorbed() {
    for (name, config) in flavours() {
        for step in Step::ALL {
            let config = config
                .clone()
                .guestinfo("k", pattern(9))
                .fault(step, 1, Answer::Cpt);
            let host = run(config, || {
                let mut g = guard();
                let mut c = g.open_enhanced_chan().unwrap();
                assert_eq!(c.get_guestinfo(b"k").unwrap(), Some(pattern(9)));
                c.set_guestinfo(b"k", b"after").unwrap();
                c.close().unwrap();
            });
            // Payload steps exist only in their transfer mode; there the checkpoint must fire.
            let occurs = match step {
                Step::SendPayload | Step::RecvPayload => name.starts_with("LB"),
                Step::HbOut | Step::HbIn => name.starts_with("HB"),
                _ => true,
            };
            assert_eq!(
                host.counters().cpts_injected,
                u64::from(occurs),
                "{name}, {step:?}"
            );
            assert_eq!(
                host.guestinfo().get(&b"guestinfo.k"[..]).map(Vec::as_slice),
                Some(&b"after"[..])
            );
            assert_eq!(host.open_channels(), 0, "{name}, {step:?}");
        }
    }
}

#[test]
fn a_run_of_checkpoints_is_a_checkpoint_error_and_the_channel_recovers() {
    for (name, config) in flavours() {
        let mut config = config.guestinfo("k", "v");
        for nth in 1..=32 {
            config = config.fault(Step::RecvSize, nth, Answer::Cpt);
        }
        let host = run(config, || {
            let mut g = guard();
            let mut c = g.open_enhanced_chan().unwrap();
            let e = c.get_guestinfo(b"k").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Checkpoint, "{e}");
            // Keep asking: the faults run out and the channel comes back.
            let mut tries = 0;
            let value = loop {
                tries += 1;
                match c.get_guestinfo(b"k") {
                    Ok(v) => break v,
                    Err(e) => assert_eq!(e.kind(), ErrorKind::Checkpoint, "{e}"),
                }
                assert!(tries < 10);
            };
            assert_eq!(value.as_deref(), Some(&b"v"[..]));
        });
        assert_eq!(host.open_channels(), 0, "{name}");
    }
}

#[test]
fn eight_channels_survive_a_thousand_open_close_cycles() {
    let config = HostConfig::default().channels(8).guestinfo("k", "v");
    let host = run(config, || {
        let mut g = guard();
        for i in 0..1000 {
            let mut c = g.open_enhanced_chan().unwrap();
            assert_eq!(c.get_guestinfo(b"k").unwrap().as_deref(), Some(&b"v"[..]));
            if i % 2 == 0 {
                c.close().unwrap();
            } // else: dropped, which closes it too
        }
        // All eight at once, then one too many.
        let mut guards: Vec<_> = (0..9).map(|_| guard()).collect();
        let mut open = Vec::new();
        let mut refused = None;
        for g in &mut guards {
            match g.open_enhanced_chan() {
                Ok(c) => open.push(c),
                Err(e) => refused = Some(e),
            }
        }
        assert_eq!(open.len(), 8);
        assert_eq!(refused.unwrap().kind(), ErrorKind::NoChannel);
    });
    assert_eq!(host.open_channels(), 0, "nothing leaks");
    assert_eq!(host.counters().channels_opened, 1008);
    assert_eq!(host.counters().channels_closed, 1008);
}

#[test]
fn close_is_sent_once_explicitly_or_on_drop() {
    let host = run(HostConfig::default(), || {
        let mut g = guard();
        g.open_enhanced_chan().unwrap().close().unwrap();
        drop(g.open_enhanced_chan().unwrap());
    });
    assert_eq!(host.counters().lb_calls_for(cmd::MESSAGE, msg::CLOSE), 2);
    assert_eq!(host.open_channels(), 0);
}

/// Backdoor calls per RPC on an open channel, measured as the difference between a run with
/// one more RPC and one without.
fn calls_per_rpc(config: HostConfig, rpc: fn(&mut EnhancedChan<'_>)) -> u64 {
    let session = |rpcs: usize| {
        let host = run(config.clone(), move || {
            let mut g = guard();
            let mut c = g.open_enhanced_chan().unwrap();
            for _ in 0..rpcs {
                rpc(&mut c);
            }
        });
        calls(&host)
    };
    session(2) - session(1)
}

#[test]
fn an_open_channel_costs_the_floor_of_backdoor_calls() {
    let value = pattern(999);
    let get = |c: &mut EnhancedChan<'_>| {
        c.get_guestinfo(b"key").unwrap().unwrap();
    };
    let hb = calls_per_rpc(HostConfig::default().guestinfo("key", &value), get);
    assert_eq!(hb, 5, "SENDSIZE, rep outsb, RECVSIZE, rep insb, RECVSTATUS");

    let lb = calls_per_rpc(HostConfig::default().no_hb().guestinfo("key", &value), get);
    let request = b"info-get guestinfo.key".len() as u64;
    let reply = 2 + value.len() as u64;
    assert_eq!(lb, 3 + request.div_ceil(4) + reply.div_ceil(4));
}

#[test]
fn the_published_crates_calling_pattern_compiles_and_works() {
    fn afterburn_style() -> Result<Option<Vec<u8>>, Box<dyn std::error::Error>> {
        let mut g = vmw_backdoor::probe_backdoor_privileged()
            .or_else(|_| vmw_backdoor::probe_backdoor())?;
        let mut c = vmw_backdoor::EnhancedChan::open(&mut g)?;
        let v: Option<Vec<u8>> = c.get_guestinfo(b"guestinfo.metadata")?;
        Ok(v)
    }
    let host = run(HostConfig::default().guestinfo("metadata", "e30K"), || {
        assert_eq!(afterburn_style().unwrap().as_deref(), Some(&b"e30K"[..]));
    });
    assert_eq!(host.open_channels(), 0);
}
