//! The hypercall transport (`vmcall` / `vmmcall`) through the real instructions, under the
//! simulator's trap-and-emulate runner: the choice from CPUID, a forced transport, calls per
//! RPC against the port's, the host's counters, the SEV-ES and TDX machines, and outside
//! VMware.
//!
//! The runner can serve a hypercall only where the CPU hands it to the process as a fault.
//! Inside a KVM guest the outer hypervisor answers its own vendor's instruction from ring 3
//! (RAX = -1, no signal): `vmcall` on Intel, `vmmcall` on AMD; the other one traps. So every
//! test first asks which ones trap here ([`trapping`]) and runs with those, saying what it
//! skipped. The choice from CPUID needs CPUID faulting as well.

#![cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]

mod support;

use std::process::Command;

use support::guest::{cpuid_faulting, trapping_hypercalls as trapping};
use vmw_backdoor::sim::{GuestExit, Host, HostConfig, Hypercall, Mode};
use vmw_backdoor::{ErrorKind, RpciChannel, Transport, TransportKind};

/// Runs `guest` under the simulator and requires a clean exit.
#[track_caller]
fn run(config: HostConfig, guest: impl FnOnce()) -> Host {
    config.run(guest).expect("start the guest").expect_success()
}

fn kind(hc: Hypercall) -> TransportKind {
    match hc {
        Hypercall::Vmcall => TransportKind::Vmcall,
        Hypercall::Vmmcall => TransportKind::Vmmcall,
    }
}

fn transport(hc: Hypercall) -> Transport {
    Transport::new(kind(hc))
}

/// The host's count of `hc` calls.
fn hypercalls(host: &Host, hc: Hypercall) -> u64 {
    let c = host.counters();
    match hc {
        Hypercall::Vmcall => c.vmcall_calls,
        Hypercall::Vmmcall => c.vmmcall_calls,
    }
}

/// Port calls the host saw.
fn port_calls(host: &Host) -> u64 {
    let c = host.counters();
    c.lb_calls + c.hb_in_calls + c.hb_out_calls
}

/// A guard whose calls travel by `t`, knocked (one call).
fn guard_by(t: Transport) -> vmw_backdoor::BackdoorGuard {
    let mut g = vmw_backdoor::access_backdoor().unwrap();
    g.set_transport(t);
    g.probe_vmware_backdoor().unwrap();
    assert_eq!(g.transport().unwrap(), t);
    g
}

/// The RPCs of one session: `info-get guestinfo.k` (20 bytes) answered `1 value` (7).
const RPCS: u64 = 4;
/// Calls per RPC by low-bandwidth calls: SENDSIZE, RECVSIZE, RECVSTATUS, five SENDPAYLOAD
/// and two RECVPAYLOAD.
const LB_PER_RPC: u64 = 3 + 5 + 2;

/// Knock, open, [`RPCS`] gets, close, by `t`: the calls the host sees.
fn session(config: HostConfig, t: Transport) -> Host {
    run(config.guestinfo("k", "value"), move || {
        let mut g = guard_by(t);
        let mut c = g.open_enhanced_chan().unwrap();
        for _ in 0..RPCS {
            assert_eq!(
                c.get_guestinfo(b"k").unwrap().as_deref(),
                Some(&b"value"[..])
            );
        }
        c.close().map_err(|_| "close").unwrap();
    })
}

#[test]
fn a_forced_hypercall_carries_guestinfo_both_ways_with_the_ports_calls() {
    for hc in trapping() {
        for (name, config, per_rpc) in [
            // HB: SENDSIZE, rep outsb, RECVSIZE, rep insb, RECVSTATUS.
            ("HB", HostConfig::default(), 5),
            // LB: 3 + ⌈20/4⌉ + ⌈7/4⌉ (the reply `1 value` with its status prefix).
            ("LB", HostConfig::default().no_hb(), LB_PER_RPC),
        ] {
            let t = transport(hc);
            let by_hc = session(config.clone(), t);
            let by_port = session(config.clone(), Transport::PORT);
            let calls = by_hc.counters().backdoor_calls();
            assert_eq!(
                calls,
                by_port.counters().backdoor_calls(),
                "{hc:?} {name}: the port's calls"
            );
            assert_eq!(calls, 1 + 1 + RPCS * per_rpc + 1, "{hc:?} {name}");
            assert_eq!(
                hypercalls(&by_hc, hc),
                calls,
                "{hc:?} {name}: all by {hc:?}"
            );
            assert_eq!(port_calls(&by_hc), 0, "{hc:?} {name}: none by port");
            assert_eq!(by_hc.open_channels(), 0);
            assert_eq!(by_hc.counters().rpcs, RPCS);
            assert_eq!(
                by_hc.counters().lb_by_command,
                by_port.counters().lb_by_command,
                "{hc:?} {name}: the same commands"
            );
        }

        // Set and read back, high-bandwidth both ways, and a log line; with and without
        // cookies.
        for config in [HostConfig::default(), HostConfig::default().no_cookies()] {
            let value: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8 + 1).collect();
            let want = value.clone();
            let host = run(config, move || {
                let mut g = guard_by(transport(hc));
                let mut c = g.open_enhanced_chan().unwrap();
                c.set_guestinfo(b"big", &value[..60_000]).unwrap();
                assert_eq!(
                    c.get_guestinfo(b"big").unwrap().as_deref(),
                    Some(&value[..60_000])
                );
                c.log("by hypercall").unwrap();
                assert_eq!(c.get_guestinfo(b"missing").unwrap(), None);
            });
            assert_eq!(
                host.guestinfo()
                    .get(&b"guestinfo.big"[..])
                    .map(Vec::as_slice),
                Some(&want[..60_000])
            );
            assert_eq!(host.vmx_log(), [b"by hypercall".to_vec()]);
            let c = host.counters();
            assert!(c.bytes_to_host >= 60_000 && c.bytes_to_guest >= 60_000);
            assert_eq!(port_calls(&host), 0);
        }
    }
}

#[test]
fn low_bandwidth_only_never_uses_hb_even_where_the_host_offers_it() {
    for hc in trapping() {
        let t = transport(hc).low_bandwidth_only();
        let host = session(HostConfig::default(), t);
        let c = host.counters();
        assert_eq!(
            c.backdoor_calls(),
            1 + 1 + RPCS * LB_PER_RPC + 1,
            "{hc:?}: the LB formula on an HB host"
        );
        assert_eq!(hypercalls(&host, hc), c.backdoor_calls());
        assert_eq!(c.lb_calls_for(30, 2), RPCS * 5, "SENDPAYLOAD");
        assert_eq!(c.lb_calls_for(30, 4), RPCS * 2, "RECVPAYLOAD");
    }
    // The port the same way.
    let host = session(HostConfig::default(), Transport::PORT.low_bandwidth_only());
    let c = host.counters();
    assert_eq!((c.hb_in_calls, c.hb_out_calls), (0, 0));
    assert_eq!(c.lb_calls, 1 + 1 + RPCS * LB_PER_RPC + 1);
}

#[test]
fn stats_count_hypercalls_apart_from_port_calls() {
    for hc in trapping() {
        let host = session(HostConfig::default(), transport(hc));
        let json = host.stats_json();
        let n = hypercalls(&host, hc);
        let (mine, other) = match hc {
            Hypercall::Vmcall => ("vmcall_calls", "vmmcall_calls"),
            Hypercall::Vmmcall => ("vmmcall_calls", "vmcall_calls"),
        };
        assert!(json.contains(&format!("\"{mine}\":{n},")), "{json}");
        assert!(json.contains(&format!("\"{other}\":0,")), "{json}");
        for port in ["lb_calls", "hb_in_calls", "hb_out_calls"] {
            assert!(json.contains(&format!("\"{port}\":0,")), "{port}: {json}");
        }
        assert_eq!(host.counters().hypercalls(), n);
    }
}

/// Not a test: the guest program the `vmw-sim` tests below run. Reads guestinfo `k` by the
/// transport named in `VMW_HC_TRANSPORT` (or the detected one) and prints it.
#[test]
#[ignore = "helper: run by other tests as a guest program"]
fn guest_program() {
    let Ok(name) = std::env::var("VMW_HC_TRANSPORT") else {
        return;
    };
    let mut g = vmw_backdoor::access_backdoor().unwrap();
    if name != "detect" {
        g.set_transport(name.parse().unwrap());
    }
    let mut c = g.open_enhanced_chan().unwrap();
    let value = c.get_guestinfo(b"k").unwrap().unwrap_or_default();
    println!(
        "{} {}",
        g_transport(&mut c),
        String::from_utf8_lossy(&value)
    );
}

fn g_transport(c: &mut vmw_backdoor::EnhancedChan<'_>) -> Transport {
    c.access_mut().transport().unwrap()
}

/// `vmw-sim OPTIONS -- <this test binary as the guest program, by `transport`>`.
fn vmw_sim(options: &[&str], transport: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vmw-sim"))
        .args(options)
        .args(["-e", "guestinfo.k=from-the-host", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "guest_program", "--nocapture", "-q"])
        .env("VMW_HC_TRANSPORT", transport)
        .output()
        .expect("run vmw-sim")
}

#[test]
fn vmw_sim_counts_hypercalls_in_its_stats_and_checks_its_options() {
    let dir = std::env::temp_dir().join(format!("vmw-hc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for hc in trapping() {
        let (name, key) = match hc {
            Hypercall::Vmcall => ("vmcall", "vmcall_calls"),
            Hypercall::Vmmcall => ("vmmcall", "vmmcall_calls"),
        };
        let stats = dir.join(format!("{name}.json"));
        let out = vmw_sim(
            &["--hypercall", name, "--stats", stats.to_str().unwrap()],
            name,
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name}: {out:?}");
        assert!(
            stdout.contains(&format!("{name} from-the-host")),
            "{stdout}"
        );
        let json = std::fs::read_to_string(&stats).unwrap();
        // Knock, OPEN, SENDSIZE, HB out, RECVSIZE, HB in, RECVSTATUS, CLOSE.
        assert!(json.contains(&format!("\"{key}\":8,")), "{json}");
        assert!(json.contains("\"lb_calls\":0,"), "{json}");
    }
    let out = vmw_sim(&["--hypercall", "tdcall"], "port");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--hypercall: expected vmcall or vmmcall"),
        "{out:?}"
    );
    let help = Command::new(env!("CARGO_BIN_EXE_vmw-sim"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for option in [
        "--hypercall vmcall|vmmcall",
        "--sev-es",
        "--tdx",
        "vmcall_calls",
    ] {
        assert!(help.contains(option), "help lacks {option}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_transport_follows_the_advertised_cpuid_in_open_vm_tools_order() {
    if !cpuid_faulting() {
        eprintln!("no CPUID faulting here: the simulator cannot advertise a hypercall");
        return;
    }
    let trap = trapping();
    let vmware = || HostConfig::default().vmware_cpuid(true).guestinfo("k", "v");
    let check = |config: HostConfig, want: Transport| {
        let host = run(config, move || {
            let mut g = vmw_backdoor::probe_backdoor().unwrap();
            assert_eq!(g.transport().unwrap(), want);
            assert_eq!(Transport::detect().unwrap(), want);
            let mut c = g.open_enhanced_chan().unwrap();
            assert_eq!(c.get_guestinfo(b"k").unwrap().as_deref(), Some(&b"v"[..]));
        });
        let c = host.counters();
        let by_port = port_calls(&host);
        match want.kind() {
            TransportKind::Port => assert_eq!(c.hypercalls(), 0, "{want}"),
            _ => assert_eq!(by_port, 0, "{want}: no port call"),
        }
    };
    check(vmware(), Transport::PORT);
    for hc in &trap {
        check(vmware().hypercall(*hc), transport(*hc));
    }
    if trap.contains(&Hypercall::Vmcall) {
        // Both advertised: VMCALL, as open-vm-tools chooses (Linux would take the ports).
        check(
            vmware()
                .hypercall(Hypercall::Vmmcall)
                .hypercall(Hypercall::Vmcall),
            Transport::VMCALL,
        );
    }
}

#[test]
fn tdx_is_a_typed_unsupported_error_and_nothing_is_knocked() {
    // Without CPUID faulting the library cannot see TDX: its port knock faults, contained.
    let host = run(HostConfig::default().tdx(true), || {
        let e = vmw_backdoor::probe_backdoor().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotVmware, "{e}");
        let e = vmw_backdoor::probe_backdoor_privileged().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotVmware, "{e}");
    });
    assert_eq!(host.counters().backdoor_calls(), 0, "every access faulted");
    if !cpuid_faulting() {
        eprintln!("no CPUID faulting here: the simulator cannot show TDX's leaf 0x21");
        return;
    }
    let host = run(HostConfig::default().vmware_cpuid(true).tdx(true), || {
        for r in [
            vmw_backdoor::probe_backdoor().map(drop),
            vmw_backdoor::probe_backdoor_privileged().map(drop),
            Transport::detect().map(drop),
        ] {
            let e = r.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
            assert!(e.to_string().contains("TDX"), "{e}");
        }
        let mut g = vmw_backdoor::access_backdoor().unwrap();
        assert_eq!(g.transport().unwrap_err().kind(), ErrorKind::Unsupported);
        // Forced, it is tried, contained, and faults.
        g.set_transport(Transport::VMCALL);
        assert_eq!(
            g.probe_vmware_backdoor().unwrap_err().kind(),
            ErrorKind::NotVmware
        );
    });
    assert_eq!(host.counters().backdoor_calls(), 0);
}

#[test]
fn on_the_sev_es_machine_the_port_fails_and_vmmcall_lb_only_works() {
    let sev = || HostConfig::default().sev_es(true).guestinfo("k", "value");
    // The port, as on such a VM: ring 3 faults, with privilege `in` carries EAX alone.
    let host = run(sev(), || {
        let e = vmw_backdoor::probe_backdoor().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotVmware, "{e}");
        assert!(e.to_string().contains("faulted"), "{e}");
        let e = vmw_backdoor::probe_backdoor_privileged().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotVmware, "{e}");
        assert!(e.to_string().contains("no VMware backdoor answered"), "{e}");
        // VMCALL is #UD on AMD.
        let mut g = vmw_backdoor::access_backdoor().unwrap();
        g.set_transport(Transport::VMCALL);
        assert_eq!(
            g.probe_vmware_backdoor().unwrap_err().kind(),
            ErrorKind::NotVmware
        );
    });
    let c = host.counters();
    assert_eq!(
        (c.lb_calls, c.vmcall_calls),
        (1, 0),
        "the privileged `in` only"
    );
    assert!(c.lb_by_command.is_empty(), "the backdoor saw no command");

    // In memory the calls arrive as VMMCALL delivers them, and HB is off.
    let mut host = Host::new(sev());
    let mut chan = RpciChannel::open(&mut host).unwrap();
    assert_eq!(
        chan.get_guestinfo(b"k").unwrap().as_deref(),
        Some(&b"value"[..])
    );
    chan.set_guestinfo(b"set", &[b'x'; 1000]).unwrap();
    drop(chan);
    let c = host.counters();
    assert_eq!((c.hb_in_calls, c.hb_out_calls), (0, 0));
    assert_eq!(host.guestinfo()[&b"guestinfo.set"[..]], [b'x'; 1000]);

    if !trapping().contains(&Hypercall::Vmmcall) {
        eprintln!("VMMCALL does not trap here: the SEV-ES machine's VMMCALL is not tested");
        return;
    }
    let lb_only = Transport::VMMCALL.low_bandwidth_only();
    let host = session(sev(), lb_only);
    let c = host.counters();
    assert_eq!(c.vmmcall_calls, 1 + 1 + RPCS * LB_PER_RPC + 1);
    assert_eq!(port_calls(&host), 0);
    // A guest that trusts the host's HB bit there fails, as it would on such a VM.
    run(sev(), || {
        let mut g = guard_by(Transport::VMMCALL);
        let mut c = g.open_enhanced_chan().unwrap();
        let e = c.get_guestinfo(b"k").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
    });
}

#[test]
fn outside_vmware_a_forced_hypercall_is_a_typed_error() {
    // The simulator's bare metal, with and without I/O privilege.
    run(HostConfig::default().mode(Mode::NotVmware), || {
        for t in [Transport::VMCALL, Transport::VMMCALL] {
            for privileged in [false, true] {
                let mut g = if privileged {
                    vmw_backdoor::access_backdoor_privileged().unwrap()
                } else {
                    vmw_backdoor::access_backdoor().unwrap()
                };
                g.set_transport(t);
                let e = g.get_version().unwrap_err();
                assert_eq!(e.kind(), ErrorKind::NotVmware, "{t}: {e}");
                assert_eq!(
                    g.open_enhanced_chan().unwrap_err().kind(),
                    ErrorKind::NotVmware
                );
            }
        }
    });
    // This machine, no simulator.
    if vmw_backdoor::probe_backdoor().is_ok() {
        eprintln!("this machine answers the VMware backdoor: not outside VMware");
        return;
    }
    assert_eq!(Transport::detect().unwrap().kind(), TransportKind::Port);
    for t in [Transport::VMCALL, Transport::VMMCALL] {
        let mut g = vmw_backdoor::access_backdoor().unwrap();
        g.set_transport(t);
        let e = g.probe_vmware_backdoor().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotVmware, "{t}: {e}");
        assert!(
            e.to_string().contains(match t.kind() {
                TransportKind::Vmcall => "VMCALL",
                _ => "VMMCALL",
            }),
            "{e}"
        );
        println!("{t} outside VMware: {e}");
    }
}

/// The i686 build of the library by hypercall (the examples take `VMW_BACKDOOR_TRANSPORT`):
/// HB and LB transfers of a value that is not a multiple of four bytes, through the i686
/// register block.
#[test]
#[ignore = "needs `rustup target add i686-unknown-linux-gnu` and a 32-bit libc (gcc-multilib)"]
fn the_i686_build_takes_hypercalls() {
    let guestinfo = support::i686_example("guestinfo");

    let value: Vec<u8> = (1..=70_001u32).map(|i| (i % 255 + 1) as u8).collect();
    let out = std::env::temp_dir().join(format!("vmw-hc-i686-{}", std::process::id()));
    for hc in trapping() {
        let name = transport(hc).to_string();
        for (config, lb_only) in [
            (HostConfig::default(), false),
            (HostConfig::default().no_hb(), false),
            (HostConfig::default(), true),
        ] {
            let env = if lb_only {
                transport(hc).low_bandwidth_only().to_string()
            } else {
                name.clone()
            };
            let mut cmd = Command::new(&guestinfo);
            cmd.arg("k")
                .env("VMW_BACKDOOR_TRANSPORT", &env)
                .stdout(std::fs::File::create(&out).unwrap());
            let run = config.guestinfo("k", &value).run_command(&mut cmd).unwrap();
            assert_eq!(run.exit, GuestExit::Exited(0), "{env}");
            assert!(
                std::fs::read(&out).unwrap() == value,
                "{env}: byte for byte"
            );
            let c = run.host.counters();
            assert_eq!(hypercalls(&run.host, hc), c.backdoor_calls(), "{env}");
            assert_eq!(port_calls(&run.host), 0, "{env}");
        }
        let run = HostConfig::default()
            .run_command(
                Command::new(&guestinfo)
                    .args(["k", "set-from-i686"])
                    .env("VMW_BACKDOOR_TRANSPORT", &name),
            )
            .unwrap();
        assert_eq!(run.exit, GuestExit::Exited(0), "{name}: set");
        assert_eq!(
            run.host
                .guestinfo()
                .get(&b"guestinfo.k"[..])
                .map(Vec::as_slice),
            Some(&b"set-from-i686"[..])
        );
    }
    let _ = std::fs::remove_file(out);
}
