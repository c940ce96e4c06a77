//! Outside VMware, every public entry point returns an error (or its plain answer) and the
//! caller never dies of a signal: on the simulator's bare-metal and restricted-backdoor
//! machines, with the kernel granting I/O privilege, refusing it (EPERM) or lacking it
//! (ENOSYS), and on this machine itself, without the simulator.
//!
//! Each environment's guest tries every entry point it can reach, checks each result, and
//! exits with the number it tried; the parent checks that number, so an entry point
//! skipped by mistake (or a guest killed by a signal) fails the test. Channel methods need
//! a channel, which no probe hands out where there is no backdoor; they are reached on a
//! restricted VMware host through a ring-3 guard that was answered while another guard of
//! the thread held I/O privilege, after that privilege was given back.

#![cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]

mod support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use vmw_backdoor::sim::{GuestExit, HostConfig, IoplPolicy, Mode};
use vmw_backdoor::{BackdoorGuard, EnhancedChan, ErrorKind, VmwError};

/// Free functions (the channel constructor included).
const FREE_FUNCTIONS: [&str; 6] = [
    "is_vmware_cpu",
    "access_backdoor",
    "access_backdoor_privileged",
    "probe_backdoor",
    "probe_backdoor_privileged",
    "EnhancedChan::open",
];

/// Methods of a guard (dropping it included).
const GUARD_METHODS: [&str; 12] = [
    "probe_vmware_backdoor",
    "is_privileged",
    "get_version",
    "hardware_version",
    "cpu_mhz",
    "bios_uuid",
    "host_time",
    "frequencies",
    "vcpu_info",
    "open_enhanced_chan",
    "release_access",
    "drop(BackdoorGuard)",
];

/// Methods of a channel (dropping it included).
const CHANNEL_METHODS: [&str; 9] = [
    "rpc",
    "get_guestinfo",
    "set_guestinfo",
    "log",
    "report_agent",
    "max_reply_len",
    "set_max_reply_len",
    "close",
    "drop(EnhancedChan)",
];

/// The entry points tried in one environment, and how their errors must look.
struct Tries {
    names: BTreeSet<&'static str>,
    calls: usize,
    /// The kind every backdoor call must fail with.
    no_backdoor: ErrorKind,
}

impl Tries {
    fn new(no_backdoor: ErrorKind) -> Self {
        Tries {
            names: BTreeSet::new(),
            calls: 0,
            no_backdoor,
        }
    }

    fn tried(&mut self, name: &'static str) {
        self.names.insert(name);
        self.calls += 1;
    }

    /// An entry point that needs the backdoor: it must fail with `no_backdoor`.
    fn fails<T: std::fmt::Debug>(&mut self, name: &'static str, r: Result<T, VmwError>) {
        self.tried(name);
        let e = r.expect_err(name);
        assert_eq!(e.kind(), self.no_backdoor, "{name}: {e}");
    }

    /// Every guard method, on a guard that cannot reach the backdoor; consumes it.
    fn guard(&mut self, mut g: BackdoorGuard) {
        self.fails("probe_vmware_backdoor", g.probe_vmware_backdoor());
        self.fails("get_version", g.get_version());
        self.fails("hardware_version", g.hardware_version());
        self.fails("cpu_mhz", g.cpu_mhz());
        self.fails("bios_uuid", g.bios_uuid());
        self.fails("host_time", g.host_time());
        self.fails("frequencies", g.frequencies());
        self.fails("vcpu_info", g.vcpu_info());
        self.fails("open_enhanced_chan", g.open_enhanced_chan().map(drop));
        self.fails("EnhancedChan::open", EnhancedChan::open(&mut g).map(drop));
        self.tried("is_privileged");
        let privileged = g.is_privileged();
        if privileged {
            self.tried("release_access");
            assert!(g.release_access().is_ok(), "release_access");
        } else {
            self.tried("drop(BackdoorGuard)");
            drop(g);
        }
    }

    /// Every channel method, on a channel whose backdoor access is gone; consumes it.
    fn channel(&mut self, mut c: EnhancedChan<'_>, close: bool) {
        self.fails("rpc", c.rpc(b"machine.id.get"));
        self.fails("get_guestinfo", c.get_guestinfo(b"k"));
        self.fails("set_guestinfo", c.set_guestinfo(b"k", b"v"));
        self.fails("log", c.log("line"));
        self.fails("report_agent", c.report_agent());
        self.tried("max_reply_len");
        let cap = c.max_reply_len();
        self.tried("set_max_reply_len");
        c.set_max_reply_len(cap / 2);
        assert_eq!(c.max_reply_len(), cap / 2);
        if close {
            self.tried("close");
            assert!(c.close().is_err(), "close without access");
        } else {
            self.tried("drop(EnhancedChan)");
            drop(c);
        }
    }

    /// The free functions and, through every guard they hand out, the guard methods.
    /// `privilege` is what `access_backdoor_privileged` must give: `Ok` or the errno.
    fn everything(&mut self, privilege: Result<(), i32>) {
        self.tried("is_vmware_cpu");
        let _ = vmw_backdoor::is_vmware_cpu();
        self.fails("probe_backdoor", vmw_backdoor::probe_backdoor());
        self.tried("probe_backdoor_privileged");
        let e = vmw_backdoor::probe_backdoor_privileged().expect_err("probe_backdoor_privileged");
        let want = if privilege.is_ok() {
            self.no_backdoor
        } else {
            ErrorKind::Privilege
        };
        assert_eq!(e.kind(), want, "probe_backdoor_privileged: {e}");
        self.tried("access_backdoor");
        self.guard(vmw_backdoor::access_backdoor().expect("access_backdoor"));
        self.tried("access_backdoor_privileged");
        match (vmw_backdoor::access_backdoor_privileged(), privilege) {
            (Ok(g), Ok(())) => self.guard(g),
            (Err(e), Err(errno)) => {
                assert_eq!(e.kind(), ErrorKind::Privilege, "{e}");
                assert_eq!(e.raw_os_error(), Some(errno), "{e}");
            }
            (got, want) => panic!("access_backdoor_privileged: {got:?}, want {want:?}"),
        }
    }
}

/// Runs `guest` on the simulator; it must exit with the count it returns.
fn run(mode: Mode, iopl: IoplPolicy, guest: fn() -> usize, expected: usize) -> usize {
    let run = HostConfig::default()
        .guestinfo("k", "v")
        .mode(mode)
        .iopl(iopl)
        .run(move || std::process::exit(i32::try_from(guest()).unwrap()))
        .expect("start the guest");
    assert_eq!(
        run.exit,
        GuestExit::Exited(expected as i32),
        "{mode:?}, iopl {iopl:?}: entry points tried (or how the guest died)"
    );
    assert_eq!(run.host.counters().rpcs, 0, "{mode:?}: nothing got through");
    expected
}

fn errno(policy: IoplPolicy) -> Result<(), i32> {
    match policy {
        IoplPolicy::Allow => Ok(()),
        IoplPolicy::Eperm => Err(libc::EPERM),
        IoplPolicy::Enosys => Err(libc::ENOSYS),
    }
}

/// Free functions, and guard methods on the unprivileged guard and (where the kernel
/// grants privilege) on the privileged one.
fn no_backdoor_guest(policy: IoplPolicy) -> usize {
    let mut t = Tries::new(ErrorKind::NotVmware);
    t.everything(errno(policy));
    let mut want: BTreeSet<_> = FREE_FUNCTIONS.into_iter().collect();
    want.extend(GUARD_METHODS);
    if policy != IoplPolicy::Allow {
        want.remove("release_access");
    }
    assert_eq!(t.names, want);
    t.calls
}

#[test]
fn every_entry_point_fails_cleanly_on_the_simulators_machines_without_a_backdoor() {
    let mut total = 0;
    // Calls: 5 free functions, then 12 guard calls (`EnhancedChan::open` among them) on
    // each guard handed out: one unprivileged, one privileged where the kernel grants it.
    let calls = |privileged: bool| 5 + 12 * (1 + usize::from(privileged));
    for (mode, iopl) in [
        (Mode::NotVmware, IoplPolicy::Allow),
        (Mode::NotVmware, IoplPolicy::Eperm),
        (Mode::NotVmware, IoplPolicy::Enosys),
        (Mode::RestrictBackdoor, IoplPolicy::Eperm),
        (Mode::RestrictBackdoor, IoplPolicy::Enosys),
    ] {
        let guest: fn() -> usize = match iopl {
            IoplPolicy::Allow => || no_backdoor_guest(IoplPolicy::Allow),
            IoplPolicy::Eperm => || no_backdoor_guest(IoplPolicy::Eperm),
            IoplPolicy::Enosys => || no_backdoor_guest(IoplPolicy::Enosys),
        };
        total += run(mode, iopl, guest, calls(iopl == IoplPolicy::Allow));
    }
    println!("outside VMware (simulated): {total} entry-point calls");
    assert_eq!(total, 29 + 4 * 17);
}

/// A ring-3 guard answered while another guard of the thread held I/O privilege, and its
/// channel, after that privilege was given back: on a host that restricts ring 3, their
/// access is gone, and every call must say so instead of faulting.
fn stale_guard_guest() -> usize {
    let mut t = Tries::new(ErrorKind::NotVmware);
    let privileged = vmw_backdoor::probe_backdoor_privileged().expect("privileged probe");
    let mut ring3 = vmw_backdoor::probe_backdoor().expect("answered while privileged");
    let chan = ring3.open_enhanced_chan().expect("open while privileged");
    drop(privileged);
    t.channel(chan, true);
    let chan = EnhancedChan::open(&mut ring3);
    assert_eq!(chan.unwrap_err().kind(), ErrorKind::NotVmware);
    t.guard(ring3);

    // The same with the channel dropped instead of closed.
    let privileged = vmw_backdoor::probe_backdoor_privileged().expect("privileged probe");
    let mut ring3 = vmw_backdoor::probe_backdoor().expect("answered while privileged");
    let chan = ring3.open_enhanced_chan().expect("open while privileged");
    drop(privileged);
    t.channel(chan, false);

    let mut want: BTreeSet<_> = CHANNEL_METHODS.into_iter().collect();
    want.extend(GUARD_METHODS);
    want.insert("EnhancedChan::open");
    want.remove("release_access");
    assert_eq!(t.names, want);
    t.calls
}

#[test]
fn a_guard_whose_borrowed_privilege_is_gone_fails_cleanly() {
    let calls = run(
        Mode::RestrictBackdoor,
        IoplPolicy::Allow,
        stale_guard_guest,
        2 * 8 + 12,
    );
    println!("stale access: {calls} entry-point calls");
}

/// This machine, no simulator: a KVM guest whose kernel has no `iopl`/`ioperm` (ENOSYS) and
/// where a ring-3 `in` on 0x5658 dies of SIGSEGV. (On a real VMware guest the backdoor
/// answers, and this test only checks that nothing died.)
#[test]
fn every_entry_point_fails_cleanly_on_this_machine() {
    let vmware = vmw_backdoor::probe_backdoor().is_ok();
    if vmware {
        println!("this machine answers the VMware backdoor: only checking for survival");
        let mut g = vmw_backdoor::probe_backdoor().unwrap();
        g.get_version().unwrap();
        return;
    }
    let kernel = match vmw_backdoor::access_backdoor_privileged() {
        Ok(_) => Ok(()),
        Err(e) => Err(e.raw_os_error().expect("errno")),
    };
    let mut t = Tries::new(ErrorKind::NotVmware);
    t.everything(kernel);
    println!(
        "outside VMware (this machine, privilege {kernel:?}): {} entry-point calls",
        t.calls
    );
    assert_eq!(t.calls, 5 + 12 * (1 + usize::from(kernel.is_ok())));
}

fn quiet(cmd: &mut Command) -> &mut Command {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
}

#[test]
fn the_examples_exit_with_an_error_and_never_die_of_a_signal() {
    let bare = vmw_backdoor::probe_backdoor().is_err();
    let mut runs = 0;
    for (name, args) in support::EXAMPLE_RUNS {
        let exe = support::example(name);
        for (mode, iopl) in [
            (Mode::NotVmware, IoplPolicy::Allow),
            (Mode::NotVmware, IoplPolicy::Enosys),
            (Mode::RestrictBackdoor, IoplPolicy::Eperm),
            (Mode::RestrictBackdoor, IoplPolicy::Enosys),
        ] {
            let run = HostConfig::default()
                .mode(mode)
                .iopl(iopl)
                .run_command(quiet(Command::new(&exe).args(args)))
                .unwrap();
            assert_eq!(
                run.exit,
                GuestExit::Exited(1),
                "{name} {args:?}, {mode:?}, {iopl:?}"
            );
            runs += 1;
        }
        if bare {
            let status = quiet(Command::new(&exe).args(args)).status().unwrap();
            assert_eq!(
                status.code(),
                Some(1),
                "{name} {args:?} on this machine: {status}"
            );
            runs += 1;
        }
    }
    println!("examples outside VMware: {runs} runs");
    assert_eq!(runs, support::EXAMPLE_RUNS.len() * (4 + usize::from(bare)));
}
