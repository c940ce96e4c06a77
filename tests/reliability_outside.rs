//! Outside VMware, every public entry point returns an error (or its plain answer) and the
//! caller never dies of a signal: on the simulator's bare-metal and restricted-backdoor
//! machines, with the kernel granting I/O privilege, refusing it (EPERM) or lacking it
//! (ENOSYS), and on this machine itself, without the simulator.
//!
//! Each environment's guest tries every entry point it can reach, checks each result, and
//! exits with the number of calls it made; the parent checks that number, so an entry point
//! skipped by mistake (or a guest killed by a signal) fails the test. Channel methods need
//! a channel, which no probe hands out where there is no backdoor; they are reached on a
//! restricted VMware host through a ring-3 guard that was answered while another guard of
//! the thread held I/O privilege, after that privilege was given back.
//!
//! Which entry points there are is not kept by hand: it is read from the library's rustdoc
//! JSON (`support/public_api.rs` has the rule), and the entry points the guests tried must
//! be exactly those, so a new public function that no test here calls fails by name.

#![cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]

#[path = "support/public_api.rs"]
mod public_api;
mod support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use vmw_backdoor::sim::{GuestExit, HostConfig, IoplPolicy, Mode};
use vmw_backdoor::{
    BackdoorAccess, BackdoorGuard, EnhancedChan, ErrorKind, Route, Transport, TransportKind,
    VmwError,
};

/// Entry points no guest outside VMware can call: the instructions themselves, which only
/// an `Instructions` runs, and that only a guard whose knock was answered hands out
/// (`BackdoorGuard::instructions` and `BackdoorAccess::backdoor` are tried, and fail), and
/// what an `Instructions` says of its transport.
const NEED_AN_ANSWER: [&str; 4] = [
    "Backdoor::lb",
    "Backdoor::hb_out",
    "Backdoor::hb_in",
    "Backdoor::high_bandwidth",
];

/// Calls that are not in the rustdoc inventory (a `Drop` impl is a trait impl) but are an
/// entry point all the same.
const DROPS: [&str; 2] = ["drop(BackdoorGuard)", "drop(RpciChannel)"];

/// The entry points tried in one environment, and how their errors must look.
struct Tries {
    names: BTreeSet<&'static str>,
    /// Calls made, accessors of the errors they returned not counted.
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

    /// An entry point that needs the backdoor: it must fail with `no_backdoor`, and no host
    /// reply.
    fn fails<T: std::fmt::Debug>(&mut self, name: &'static str, r: Result<T, VmwError>) {
        self.tried(name);
        let e = r.expect_err(name);
        self.names
            .extend(["VmwError::kind", "VmwError::host_reply"]);
        assert_eq!(e.kind(), self.no_backdoor, "{name}: {e}");
        assert_eq!(e.host_reply(), None, "{name}: {e}");
    }

    /// A vsock channel's opening where no vsock endpoint answers: one of the kinds that say
    /// so (no vsock here, nothing took the connection, or no privileged port for a process
    /// that may not bind one), with the errno kept, and no host reply.
    fn vsock_fails<T: std::fmt::Debug>(&mut self, name: &'static str, r: Result<T, VmwError>) {
        self.tried(name);
        let e = r.expect_err(name);
        self.names.insert("VmwError::raw_os_error");
        let kinds = [
            ErrorKind::Unsupported,
            ErrorKind::NoChannel,
            ErrorKind::Privilege,
        ];
        assert!(kinds.contains(&e.kind()), "{name}: {:?}: {e}", e.kind());
        assert!(e.raw_os_error().is_some(), "{name}: the errno is kept: {e}");
        assert_eq!(e.host_reply(), None, "{name}: {e}");
    }

    /// Every guard method, on a guard that cannot reach the backdoor; consumes it.
    fn guard(&mut self, mut g: BackdoorGuard) {
        self.fails(
            "BackdoorGuard::probe_vmware_backdoor",
            g.probe_vmware_backdoor(),
        );
        self.fails("BackdoorGuard::get_version", g.get_version());
        self.fails("BackdoorGuard::hardware_version", g.hardware_version());
        self.fails("BackdoorGuard::cpu_mhz", g.cpu_mhz());
        self.fails("BackdoorGuard::bios_uuid", g.bios_uuid());
        self.fails("BackdoorGuard::host_time", g.host_time());
        self.fails("BackdoorGuard::frequencies", g.frequencies());
        self.fails("BackdoorGuard::vcpu_info", g.vcpu_info());
        self.fails("BackdoorGuard::instructions", g.instructions().map(drop));
        // As a channel's access: the guard itself, and borrowed (`EnhancedChan`'s).
        self.fails("BackdoorAccess::backdoor", g.backdoor().map(drop));
        self.fails(
            "BackdoorAccess::backdoor",
            BackdoorAccess::backdoor(&mut &mut g).map(drop),
        );
        self.fails(
            "BackdoorGuard::open_enhanced_chan",
            g.open_enhanced_chan().map(drop),
        );
        self.fails("RpciChannel::open", EnhancedChan::open(&mut g).map(drop));
        // The transport the machine calls for (CPUID names no VMware here: the ports), and
        // each hypercall by force: its knock fails as cleanly (#UD, #GP, or another
        // hypervisor's answer, all contained).
        self.tried("BackdoorGuard::transport");
        let chosen = g.transport().expect("a transport");
        assert_eq!(chosen.kind(), TransportKind::Port, "{chosen}");
        for forced in [Transport::VMCALL, Transport::VMMCALL] {
            self.tried("BackdoorGuard::set_transport");
            g.set_transport(forced);
            assert_eq!(g.transport().expect("the one set"), forced);
            self.fails(
                "BackdoorGuard::probe_vmware_backdoor",
                g.probe_vmware_backdoor(),
            );
        }
        self.tried("BackdoorGuard::set_transport");
        g.set_transport(chosen);
        self.tools(&mut g);
        self.tried("BackdoorGuard::is_privileged");
        let privileged = g.is_privileged();
        if privileged {
            self.tried("BackdoorGuard::release_access");
            assert!(g.release_access().is_ok(), "release_access");
        } else {
            self.tried("drop(BackdoorGuard)");
            drop(g);
        }
    }

    /// The TCLO service on a guard that cannot reach the backdoor, and the tools types
    /// around it (which need no backdoor). 20 calls.
    fn tools(&mut self, g: &mut BackdoorGuard) {
        use std::time::Duration;
        use vmw_backdoor::tools::{
            Clock, GuestInfo, PowerOp, SystemClock, ToolsConfig, ToolsHandler, ToolsService,
        };
        struct Defaults;
        impl ToolsHandler for Defaults {}

        self.tried("ToolsService::new");
        let mut s = ToolsService::new(&mut *g);
        self.tried("ToolsService::set_clock");
        s.set_clock(Box::new(SystemClock::default()));
        self.fails("ToolsService::run", s.run(&mut Defaults));
        self.fails(
            "ToolsService::run_for",
            s.run_for(&mut Defaults, Duration::from_secs(1)),
        );
        self.tried("ToolsService::stats");
        assert_eq!(s.stats().commands, 0);
        drop(s);
        self.tried("ToolsService::with_config");
        let s = ToolsService::with_config(&mut *g, ToolsConfig::default());
        self.tried("ToolsService::stop_handle");
        let stop = s.stop_handle();
        self.tried("StopHandle::is_stopped");
        assert!(!stop.is_stopped());
        self.tried("StopHandle::stop");
        stop.stop();
        self.tried("StopHandle::sleep");
        assert!(
            stop.sleep(Duration::from_secs(60)),
            "a stopped handle does not wait"
        );
        drop(s);
        let mut clock = SystemClock::default();
        self.tried("Clock::now");
        let before = clock.now();
        self.tried("Clock::sleep");
        clock.sleep(Duration::from_secs(60), &stop);
        assert!(clock.now() - before < Duration::from_secs(60));
        self.tried("GuestInfo::from_system");
        let info = GuestInfo::from_system();
        self.tried("GuestInfo::primary_ipv4");
        let _ = info.primary_ipv4();
        // The handler's defaults: what an agent that implements nothing answers.
        let h = &mut Defaults;
        self.tried("ToolsHandler::power_op");
        assert!(h.power_op(PowerOp::Halt));
        self.tried("ToolsHandler::after_power_op");
        h.after_power_op(PowerOp::Halt, true);
        self.tried("ToolsHandler::set_option");
        assert!(!h.set_option(b"synctime", b"1"));
        self.tried("ToolsHandler::command");
        assert!(h.command(b"x", b"").is_none());
        self.tried("ToolsHandler::guest_info");
        assert_eq!(h.guest_info(), GuestInfo::default());
        self.tried("ToolsHandler::channel_error");
        h.channel_error(&VmwError::from("a channel error"));
    }

    /// Every channel method, on a channel whose backdoor access is gone; consumes it.
    fn channel(&mut self, mut c: EnhancedChan<'_>, close: bool) {
        self.fails("RpciChannel::rpc", c.rpc(b"machine.id.get"));
        self.fails("RpciChannel::get_guestinfo", c.get_guestinfo(b"k"));
        self.fails("RpciChannel::set_guestinfo", c.set_guestinfo(b"k", b"v"));
        self.fails("RpciChannel::log", c.log("line"));
        self.fails("RpciChannel::report_agent", c.report_agent());
        self.fails(
            "RpciChannel::get_guestinfo_string",
            c.get_guestinfo_string(b"k"),
        );
        self.fails(
            "RpciChannel::get_guestinfo_bool",
            c.get_guestinfo_bool(b"k"),
        );
        self.fails(
            "RpciChannel::get_guestinfo_parsed",
            c.get_guestinfo_parsed::<u8>(b"k"),
        );
        self.fails(
            "RpciChannel::get_decoded_guestinfo",
            c.get_decoded_guestinfo(b"k"),
        );
        self.fails("RpciChannel::clear_guestinfo", c.clear_guestinfo(b"k"));
        self.fails("RpciChannel::ovf_environment", c.ovf_environment());
        #[cfg(feature = "ovf")]
        self.fails("RpciChannel::ovf_properties", c.ovf_properties());
        self.tried("RpciChannel::route");
        assert_eq!(c.route(), Route::Backdoor);
        self.tried("RpciChannel::reply_timeout");
        let timeout = c.reply_timeout();
        self.tried("RpciChannel::set_reply_timeout");
        c.set_reply_timeout(timeout / 2);
        assert_eq!(c.reply_timeout(), timeout / 2);
        self.tried("RpciChannel::max_reply_len");
        let cap = c.max_reply_len();
        self.tried("RpciChannel::set_max_reply_len");
        c.set_max_reply_len(cap / 2);
        assert_eq!(c.max_reply_len(), cap / 2);
        // Nothing reached the host, so it still holds the channel opened while privileged.
        self.tried("RpciChannel::is_open");
        assert!(c.is_open(), "is_open");
        self.tried("RpciChannel::access");
        assert!(!c.access().is_privileged(), "a ring-3 guard");
        self.tried("RpciChannel::access_mut");
        let access = c.access_mut();
        self.fails("BackdoorAccess::backdoor", access.backdoor().map(drop));
        if close {
            self.tried("RpciChannel::close");
            assert!(c.close().is_err(), "close without access");
        } else {
            self.tried("drop(RpciChannel)");
            drop(c);
        }
    }

    /// The free functions and, through every guard they hand out, the guard methods.
    /// `privilege` is what `access_backdoor_privileged` must give: `Ok` or the errno.
    fn everything(&mut self, privilege: Result<(), i32>) {
        self.tried("is_vmware_cpu");
        let _ = vmw_backdoor::is_vmware_cpu();
        self.fails("probe_backdoor", vmw_backdoor::probe_backdoor());
        self.fails("RpciChannel::connect", vmw_backdoor::Session::connect());
        self.fails("guestinfo", vmw_backdoor::guestinfo("k"));
        let access = || vmw_backdoor::access_backdoor().expect("access_backdoor");
        self.vsock_fails(
            "RpciChannel::open_vsock",
            vmw_backdoor::Session::open_vsock(access()),
        );
        self.vsock_fails(
            "RpciChannel::open_privileged_vsock",
            vmw_backdoor::Session::open_privileged_vsock(access()),
        );
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
                self.names.insert("VmwError::raw_os_error");
                assert_eq!(e.kind(), ErrorKind::Privilege, "{e}");
                assert_eq!(e.raw_os_error(), Some(errno), "{e}");
            }
            (got, want) => panic!("access_backdoor_privileged: {got:?}, want {want:?}"),
        }
    }
}

/// Calls a guest makes on each guard it gets.
const GUARD_CALLS: usize = 21 + TOOLS_CALLS;
/// Calls `Tries::tools` makes.
const TOOLS_CALLS: usize = 20;
/// Calls a guest makes on each channel it gets.
const CHANNEL_CALLS: usize = 21 + cfg!(feature = "ovf") as usize;
/// Calls of the free functions.
const FREE_CALLS: usize = 9;

/// Calls `Tries::everything` makes: the free functions, and the guard methods on each guard
/// handed out (one unprivileged, one privileged where the kernel grants it).
fn everything_calls(privileged: bool) -> usize {
    FREE_CALLS + GUARD_CALLS * (1 + usize::from(privileged))
}

/// Runs `guest` on the simulator; it must exit with `expected`, the number of calls it made.
/// Returns the entry points it tried.
fn run(mode: Mode, iopl: IoplPolicy, guest: fn() -> Tries, expected: usize) -> BTreeSet<String> {
    let file = std::env::temp_dir().join(format!(
        "vmw-outside-{}-{mode:?}-{iopl:?}",
        std::process::id()
    ));
    let names = file.clone();
    let run = HostConfig::default()
        .guestinfo("k", "v")
        .mode(mode)
        .iopl(iopl)
        .run(move || {
            let t = guest();
            let list: Vec<_> = t.names.into_iter().collect();
            std::fs::write(&names, list.join("\n")).expect("write the names tried");
            std::process::exit(i32::try_from(t.calls).unwrap())
        })
        .expect("start the guest");
    assert_eq!(
        run.exit,
        GuestExit::Exited(expected as i32),
        "{mode:?}, iopl {iopl:?}: entry points tried (or how the guest died)"
    );
    assert_eq!(run.host.counters().rpcs, 0, "{mode:?}: nothing got through");
    let list = std::fs::read_to_string(&file).expect("the names the guest tried");
    std::fs::remove_file(&file).ok();
    list.lines().map(str::to_owned).collect()
}

fn errno(policy: IoplPolicy) -> Result<(), i32> {
    match policy {
        IoplPolicy::Allow => Ok(()),
        IoplPolicy::Eperm => Err(libc::EPERM),
        IoplPolicy::Enosys => Err(libc::ENOSYS),
        other => panic!("{other:?} is not one fixed answer"),
    }
}

/// Free functions, and guard methods on the unprivileged guard and (where the kernel
/// grants privilege) on the privileged one.
fn no_backdoor_guest(policy: IoplPolicy) -> Tries {
    let mut t = Tries::new(ErrorKind::NotVmware);
    t.everything(errno(policy));
    t
}

/// The simulator's machines without a backdoor, each kernel policy; the names tried.
fn on_the_simulators_machines_without_a_backdoor() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (mode, iopl) in [
        (Mode::NotVmware, IoplPolicy::Allow),
        (Mode::NotVmware, IoplPolicy::Eperm),
        (Mode::NotVmware, IoplPolicy::Enosys),
        (Mode::RestrictBackdoor, IoplPolicy::Eperm),
        (Mode::RestrictBackdoor, IoplPolicy::Enosys),
    ] {
        let guest: fn() -> Tries = match iopl {
            IoplPolicy::Allow => || no_backdoor_guest(IoplPolicy::Allow),
            IoplPolicy::Eperm => || no_backdoor_guest(IoplPolicy::Eperm),
            IoplPolicy::Enosys => || no_backdoor_guest(IoplPolicy::Enosys),
            other => panic!("{other:?} is not in the list above"),
        };
        let expected = everything_calls(iopl == IoplPolicy::Allow);
        names.extend(run(mode, iopl, guest, expected));
    }
    names
}

#[test]
fn every_entry_point_fails_cleanly_on_the_simulators_machines_without_a_backdoor() {
    let names = on_the_simulators_machines_without_a_backdoor();
    println!("outside VMware (simulated): {} entry points", names.len());
}

/// A ring-3 guard answered while another guard of the thread held I/O privilege, and its
/// channel, after that privilege was given back: on a host that restricts ring 3, their
/// access is gone, and every call must say so instead of faulting.
fn stale_guard_guest() -> Tries {
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
    t
}

/// The stale guard and its channels; the names tried.
fn through_a_guard_whose_borrowed_privilege_is_gone() -> BTreeSet<String> {
    run(
        Mode::RestrictBackdoor,
        IoplPolicy::Allow,
        stale_guard_guest,
        2 * CHANNEL_CALLS + GUARD_CALLS,
    )
}

#[test]
fn a_guard_whose_borrowed_privilege_is_gone_fails_cleanly() {
    let names = through_a_guard_whose_borrowed_privilege_is_gone();
    println!("stale access: {} entry points", names.len());
}

/// This machine, no simulator: a KVM guest whose kernel has no `iopl`/`ioperm` (ENOSYS) and
/// where a ring-3 `in` on 0x5658 dies of SIGSEGV. (On a real VMware guest the backdoor
/// answers, and this only checks that nothing died.) The names tried, if not VMware.
fn on_this_machine() -> Option<BTreeSet<String>> {
    let vmware = vmw_backdoor::probe_backdoor().is_ok();
    if vmware {
        println!("this machine answers the VMware backdoor: only checking for survival");
        let mut g = vmw_backdoor::probe_backdoor().unwrap();
        g.get_version().unwrap();
        return None;
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
    assert_eq!(t.calls, everything_calls(kernel.is_ok()));
    Some(t.names.into_iter().map(str::to_owned).collect())
}

#[test]
fn every_entry_point_fails_cleanly_on_this_machine() {
    on_this_machine();
}

/// The entry points tried above, in every environment together, are exactly the library's
/// public ones (from its rustdoc), but for those that need an answered backdoor: a new
/// public function fails this test until a guest here calls it, and a name tried here that
/// the inventory lacks means the inventory lost something.
#[test]
fn the_guests_try_every_public_entry_point() {
    let (inventory, took) = public_api::entry_points();
    println!(
        "rustdoc JSON in {took:.1?}: {} entry points",
        inventory.len()
    );
    for name in NEED_AN_ANSWER {
        assert!(inventory.contains(name), "{name} is not public any more");
    }

    let mut tried = on_the_simulators_machines_without_a_backdoor();
    tried.extend(through_a_guard_whose_borrowed_privilege_is_gone());
    tried.extend(on_this_machine().unwrap_or_default());
    for name in DROPS {
        assert!(tried.remove(name), "{name} was not tried");
    }

    let untried: Vec<_> = inventory
        .iter()
        .filter(|name| !tried.contains(*name) && !NEED_AN_ANSWER.contains(&name.as_str()))
        .collect();
    assert!(
        untried.is_empty(),
        "public entry points no guest here tries outside VMware: {untried:?} \
         (call them in `Tries`, checking how they fail)"
    );
    let unknown: Vec<_> = tried.difference(&inventory).collect();
    assert!(
        unknown.is_empty(),
        "tried, but not in the rustdoc inventory: {unknown:?} (renamed, or the reader in \
         support/public_api.rs missed them)"
    );
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
        // rpctool exits as vmware-rpctool does outside VMware (`return -1`).
        let status = if name == "rpctool" { 255 } else { 1 };
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
                GuestExit::Exited(status),
                "{name} {args:?}, {mode:?}, {iopl:?}"
            );
            runs += 1;
        }
        if bare {
            let exit = quiet(Command::new(&exe).args(args)).status().unwrap();
            assert_eq!(
                exit.code(),
                Some(status),
                "{name} {args:?} on this machine: {exit}"
            );
            runs += 1;
        }
    }
    println!("examples outside VMware: {runs} runs");
    assert_eq!(runs, support::EXAMPLE_RUNS.len() * (4 + usize::from(bare)));
}
