//! Detection, privilege and the low-level commands, through the real instructions: each test
//! runs guest code under the simulator's trap-and-emulate runner.

#![cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]

use vmw_backdoor::sim::{Host, HostConfig, IoplPolicy, Mode};
use vmw_backdoor::{BiosUuid, ErrorKind, Frequencies, HostTime, Product, Version};

/// Runs `guest` under the simulator and requires a clean exit (a failed assertion in the
/// guest fails the test with its message; a signal fails it too).
#[track_caller]
fn run(config: HostConfig, guest: impl FnOnce()) -> Host {
    config.run(guest).expect("start the guest").expect_success()
}

fn expect_kind<T: std::fmt::Debug>(
    r: Result<T, vmw_backdoor::VmwError>,
    kind: ErrorKind,
) -> String {
    let e = r.expect_err("an error");
    assert_eq!(e.kind(), kind, "{e}");
    e.to_string()
}

#[test]
fn probes_find_vmware_and_report_version_and_product() {
    for expected in [Product::EsxServer, Product::Workstation] {
        let host = run(HostConfig::default().product(expected), move || {
            let want = Version {
                version: 6,
                product: expected,
            };
            let mut g = vmw_backdoor::probe_backdoor().unwrap();
            assert_eq!(g.get_version().unwrap(), want);
            assert!(!g.is_privileged());
            let mut g = vmw_backdoor::probe_backdoor_privileged().unwrap();
            assert!(g.is_privileged());
            assert_eq!(g.get_version().unwrap(), want);
            g.probe_vmware_backdoor().unwrap();
        });
        assert!(host.counters().lb_calls >= 4);
    }
}

#[test]
fn outside_vmware_every_probe_is_an_error_and_the_guest_lives() {
    let host = run(HostConfig::default().mode(Mode::NotVmware), || {
        let m = expect_kind(vmw_backdoor::probe_backdoor(), ErrorKind::NotVmware);
        assert!(m.contains("faulted") && m.contains("I/O privilege"), "{m}");
        // With privilege the `in` does not fault: no device answers (all ones).
        let m = expect_kind(
            vmw_backdoor::probe_backdoor_privileged(),
            ErrorKind::NotVmware,
        );
        assert!(m.contains("no VMware backdoor answered"), "{m}");
        // Guards that were never probed knock, contained, on first use.
        for mut g in [
            vmw_backdoor::access_backdoor().unwrap(),
            vmw_backdoor::access_backdoor_privileged().unwrap(),
        ] {
            expect_kind(g.get_version(), ErrorKind::NotVmware);
            expect_kind(g.hardware_version(), ErrorKind::NotVmware);
            expect_kind(g.cpu_mhz(), ErrorKind::NotVmware);
            expect_kind(g.bios_uuid(), ErrorKind::NotVmware);
            expect_kind(g.host_time(), ErrorKind::NotVmware);
            expect_kind(g.frequencies(), ErrorKind::NotVmware);
            expect_kind(g.vcpu_info(), ErrorKind::NotVmware);
            expect_kind(g.probe_vmware_backdoor(), ErrorKind::NotVmware);
            expect_kind(g.open_enhanced_chan(), ErrorKind::NotVmware);
            expect_kind(
                vmw_backdoor::EnhancedChan::open(&mut g),
                ErrorKind::NotVmware,
            );
        }
    });
    assert_eq!(host.counters().rpcs, 0);
}

#[test]
fn restricted_ring3_access_needs_the_privileged_probe() {
    run(HostConfig::default().mode(Mode::RestrictBackdoor), || {
        let m = expect_kind(vmw_backdoor::probe_backdoor(), ErrorKind::NotVmware);
        assert!(
            m.contains("restrict_backdoor") && m.contains("I/O privilege"),
            "{m}"
        );
        let mut g = vmw_backdoor::probe_backdoor_privileged()
            .or_else(|_| vmw_backdoor::probe_backdoor())
            .unwrap();
        assert_eq!(g.get_version().unwrap().product, Product::EsxServer);
        let mut chan = g.open_enhanced_chan().unwrap();
        chan.log("restricted but privileged").unwrap();
    });
}

#[test]
fn iopl_refusals_are_distinct_errors_pointing_at_the_unprivileged_access() {
    for (policy, errno, cause) in [
        (IoplPolicy::Eperm, libc::EPERM, "CAP_SYS_RAWIO"),
        (IoplPolicy::Enosys, libc::ENOSYS, "CONFIG_X86_IOPL_IOPERM"),
    ] {
        run(HostConfig::default().iopl(policy), move || {
            for r in [
                vmw_backdoor::access_backdoor_privileged(),
                vmw_backdoor::probe_backdoor_privileged(),
            ] {
                let e = r.unwrap_err();
                assert_eq!(e.kind(), ErrorKind::Privilege);
                assert_eq!(e.raw_os_error(), Some(errno));
                assert!(std::error::Error::source(&e).is_some());
                let m = e.to_string();
                assert!(m.contains(cause) && m.contains("probe_backdoor"), "{m}");
            }
            // The advice works: the unprivileged access reaches VMware.
            let mut g = vmw_backdoor::probe_backdoor_privileged()
                .or_else(|_| vmw_backdoor::probe_backdoor())
                .unwrap();
            assert!(!g.is_privileged());
            g.get_version().unwrap();
        });
    }
}

#[test]
fn privilege_is_given_back_by_the_last_guard_of_the_thread() {
    // On a host that restricts ring 3, an unprivileged knock succeeds exactly while this
    // thread holds I/O privilege.
    run(HostConfig::default().mode(Mode::RestrictBackdoor), || {
        let reachable = || vmw_backdoor::probe_backdoor().is_ok();
        assert!(!reachable());

        let g = vmw_backdoor::probe_backdoor_privileged().unwrap();
        assert!(reachable());
        drop(g);
        assert!(!reachable(), "drop gives the privilege back");

        let g = vmw_backdoor::probe_backdoor_privileged().unwrap();
        g.release_access().unwrap();
        assert!(!reachable(), "release_access gives it back");

        let mut first = vmw_backdoor::probe_backdoor_privileged().unwrap();
        let second = vmw_backdoor::probe_backdoor_privileged().unwrap();
        drop(second);
        assert!(reachable(), "another guard still holds it");
        first.get_version().unwrap();
        first
            .open_enhanced_chan()
            .unwrap()
            .log("still privileged")
            .unwrap();
        drop(first);
        assert!(!reachable());

        // A thread that already ran when this one took privilege does not share it.
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            wait.recv().unwrap();
            reachable()
        });
        let _held = vmw_backdoor::probe_backdoor_privileged().unwrap();
        go.send(()).unwrap();
        assert!(!other.join().unwrap(), "I/O privilege is per thread");
    });
}

#[test]
fn low_level_commands_return_typed_answers() {
    let uuid = *b"\x42\x0d\x1e\x6b\x2c\x4f\x11\x9a\x43\x7e\x11\x20\x3c\x58\x65\x01";
    let config = HostConfig::default()
        .hw_version(19)
        .mhz(3_100)
        .bios_uuid(uuid)
        .time(1_800_000_123, 456_789)
        .max_time_lag(2_000)
        .hz(2_900_000_001, 1_000_000_000)
        .vcpu_info((1 << 1) | (1 << 4));
    run(config, move || {
        let mut g = vmw_backdoor::access_backdoor().unwrap();
        assert_eq!(g.hardware_version().unwrap(), Some(19));
        assert_eq!(g.cpu_mhz().unwrap(), Some(3_100));
        assert_eq!(g.bios_uuid().unwrap(), Some(BiosUuid(uuid)));
        let t = g.host_time().unwrap().unwrap();
        assert_eq!(
            t,
            HostTime {
                secs: 1_800_000_123,
                micros: 456_789,
                max_lag_micros: 2_000
            }
        );
        assert_eq!(t.since_unix_epoch().as_micros(), 1_800_000_123_456_789);
        assert_eq!(
            g.frequencies().unwrap(),
            Some(Frequencies {
                tsc_hz: 2_900_000_001,
                apic_bus_hz: 1_000_000_000
            })
        );
        let v = g.vcpu_info().unwrap().unwrap();
        assert!(v.sync_vtscs() && v.mmio_honors_pat() && !v.legacy_x2apic_ok());
    });
}

#[test]
fn commands_a_host_lacks_read_as_none() {
    let config = HostConfig::default().no_gethz().no_vcpu_info().mhz(0);
    run(config, || {
        let mut g = vmw_backdoor::probe_backdoor().unwrap();
        assert_eq!(g.frequencies().unwrap(), None);
        assert_eq!(g.vcpu_info().unwrap(), None);
        assert_eq!(g.cpu_mhz().unwrap(), None);
    });
}

#[test]
fn the_cpuid_hint_sees_the_vmware_signature_and_probes_do_not_need_it() {
    // The simulator shows a VMware CPUID only where the CPU can fault CPUID.
    let cpuid_fault = std::fs::read_to_string("/proc/cpuinfo")
        .is_ok_and(|s| s.split_whitespace().any(|flag| flag == "cpuid_fault"));
    if cpuid_fault {
        run(HostConfig::default().vmware_cpuid(true), || {
            assert!(vmw_backdoor::is_vmware_cpu());
        });
    }
    // Where the signature is hidden or names another hypervisor, the knock still decides.
    run(HostConfig::default().vmware_cpuid(false), || {
        let cpu_says = vmw_backdoor::is_vmware_cpu();
        let mut g = vmw_backdoor::probe_backdoor().unwrap();
        assert_eq!(
            g.get_version().unwrap().version,
            6,
            "CPUID said VMware: {cpu_says}"
        );
    });
}

/// The instructions a guard lends reach only the backdoor: a call aimed at another port, or
/// without the magic, still goes to the backdoor instead of faulting in ring 3.
#[test]
fn lent_instructions_reach_only_the_backdoor() {
    use vmw_backdoor::proto::{cmd, Regs, MAGIC};
    use vmw_backdoor::Backdoor;
    run(HostConfig::default(), || {
        let mut guard = vmw_backdoor::probe_backdoor().unwrap();
        let mut calls = guard.instructions().unwrap();
        let mut regs = Regs {
            ax: 0,
            bx: 0,
            cx: cmd::GETVERSION.into(),
            dx: 0x80, // the POST port, not the backdoor
            ..Regs::default()
        };
        calls.lb(&mut regs);
        assert_eq!(
            regs.bx,
            u64::from(MAGIC),
            "GETVERSION answered by the backdoor"
        );
    });
}
