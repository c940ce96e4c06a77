//! A VMware host you can run anywhere (feature `sim`, Linux x86_64 and aarch64).
//!
//! Two pieces:
//!
//! - [`host`]: a model of the VMware host side of the backdoor (low-level commands, the
//!   message channel, RPCI, TCLO), pure Rust, usable in memory through
//!   [`Backdoor`](crate::Backdoor).
//! - the trap-and-emulate runner: the guest runs as an ordinary traced process; its
//!   backdoor instructions (`in`/`out` on port 0x5658, `rep outsb`/`rep insb` on 0x5659)
//!   fault because it has no I/O privilege, and so do `vmcall`/`vmmcall` where the CPU
//!   has no hypervisor to hand them to; the runner answers them from the host model, so
//!   unmodified guest code runs as it would inside a VMware VM. `iopl` and
//!   `ioperm` are answered virtually ([`IoplPolicy`]); every other signal reaches the guest
//!   unchanged; threads, `fork` and `exec` are followed. On aarch64 the runner serves arm64
//!   guests: the SIGILL of a trapped `mrs xzr, mdccsr_el0` whose X7 carries `0x86` is the
//!   x86 instruction X7 describes ([`crate::proto::arm64`]), answered by the same model,
//!   and PC steps past it; there is no `iopl`, `ioperm` or CPUID to answer there. With
//!   [`HostConfig::vsock`] (x86_64) the guest's `AF_VSOCK` sockets are served too, and a
//!   connection to the host's RPCI port speaks DataMap to the same host model.
//!
//! # Running guest code in tests
//!
//! [`HostConfig::run`] forks, runs a closure as the guest in the traced child, and returns
//! how it ended together with the host's final state:
//!
//! ```
//! use vmw_backdoor::sim::{GuestExit, HostConfig};
//!
//! let run = HostConfig::default()
//!     .run(|| {
//!         // GETVERSION, by hand: what any backdoor client does first.
//!         let (mut eax, mut ecx) = (0x564D_5868u32, 10u32);
//!         let ebx: u32;
//!         // SAFETY: the instruction only touches the named registers; under the
//!         // simulator it is answered by the host model.
//!         unsafe {
//!             std::arch::asm!(
//!                 "xchg {b:r}, rbx", "in eax, dx", "xchg {b:r}, rbx",
//!                 b = inout(reg) 0u64 => _,
//!                 inout("eax") eax, inout("ecx") ecx, in("edx") 0x5658u32,
//!                 lateout("esi") _, lateout("edi") _,
//!             );
//!         }
//!         assert_eq!(eax, 6, "VMware backdoor version");
//!     })
//!     .expect("start the guest");
//! assert_eq!(run.exit, GuestExit::Exited(0));
//! assert_eq!(run.host.counters().lb_calls, 1);
//! ```
//!
//! A panic in the guest comes back as [`GuestExit::Panicked`] with its message;
//! [`SimRun::expect_success`] turns anything but a clean exit into a test failure. To run
//! another program instead of a closure, use [`HostConfig::run_command`]; the machine's
//! `iopl`/`ioperm` answer is [`HostConfig::iopl`]. From a shell, the `vmw-sim`
//! binary does the same for any command.
//!
//! # Limits
//!
//! - The guest closure runs in a `fork` of the calling process. If the caller has other
//!   threads (the test harness does), keep the closure to what is safe after `fork`: it
//!   should not wait on locks another thread might have held at that moment (stdout's, the
//!   environment's). Output printed without a trailing newline may be lost (the child exits
//!   with `_exit`).
//! - Only the calling thread may run the tracer; one run per thread at a time, any number of
//!   threads in parallel.
//! - CPUID is the real CPU's unless [`HostConfig::vmware_cpuid`] asks for a VMware one (which
//!   needs CPUID faulting and slows every trap down): by default `is_vmware_cpu()`-style
//!   checks see the real CPU.
//! - VMCALL and VMMCALL are only emulated where the CPU delivers them to the guest as a
//!   signal: inside a KVM guest the outer hypervisor answers its own vendor's instruction
//!   from ring 3 itself (RAX = -1, no signal): `vmcall` on Intel, `vmmcall` on AMD. The
//!   other one traps and is served.
//! - On aarch64, [`HostConfig::iopl`], [`HostConfig::vmware_cpuid`] and the hypercall
//!   settings have nothing to act on (no `iopl`/`ioperm` system calls, no CPUID, no
//!   `vmcall`), `is_vmware_cpu()` reads the machine's real SMBIOS strings, every access is
//!   unprivileged (so [`Mode::RestrictBackdoor`] faults it), and 32-bit (AArch32) guests are
//!   not served: their SIGILL is delivered. The trap needs a kernel that traps EL0
//!   debug-register reads (Linux does; under QEMU, version 10 or later — 7.2 lets the
//!   instruction through, so nothing reaches the runner).

pub mod host;
pub(crate) mod runner;

use std::fmt;
use std::io;
use std::process::Command;

pub use host::{
    Answer, Counters, Host, HostConfig, Hypercall, IoplPolicy, Mode, Step, TcloExchange,
    VsockFault, DEFAULT_TCLO_SCRIPT,
};

/// How the guest (the root process of the run) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestExit {
    /// It exited with this status.
    Exited(i32),
    /// This signal killed it (11 for SIGSEGV: a fault the simulated machine did not absorb).
    Signaled(i32),
    /// The guest closure panicked with this message (it then exited with status 101).
    Panicked(String),
}

impl GuestExit {
    /// The status a shell would report: the exit status, `128 + N` for signal N, 101 for a
    /// panic (what a Rust program that panics in `main` exits with).
    #[must_use]
    pub fn code(&self) -> i32 {
        match self {
            GuestExit::Exited(code) => *code,
            GuestExit::Signaled(sig) => 128 + sig,
            GuestExit::Panicked(_) => runner::launch::PANIC_EXIT,
        }
    }

    /// Whether the guest exited with status 0.
    #[must_use]
    pub fn success(&self) -> bool {
        *self == GuestExit::Exited(0)
    }
}

impl fmt::Display for GuestExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestExit::Exited(code) => write!(f, "exited with status {code}"),
            GuestExit::Signaled(sig) => write!(f, "killed by signal {sig}"),
            GuestExit::Panicked(msg) => write!(f, "panicked: {msg}"),
        }
    }
}

/// The outcome of a simulated run: how the guest ended and the host's final state.
#[derive(Debug)]
pub struct SimRun {
    /// How the guest ended.
    pub exit: GuestExit,
    /// The host model after the run: counters, guestinfo store, VMX log, TCLO replies.
    pub host: Host,
    /// What the runner did (instructions emulated, signals delivered, ...).
    pub traps: TrapStats,
}

impl SimRun {
    /// The host, if the guest exited with status 0; otherwise panics with how it ended
    /// (for tests: `let host = config.run(guest)?.expect_success();`).
    #[track_caller]
    #[allow(clippy::must_use_candidate)] // called for its assertion as often as for the host
    pub fn expect_success(self) -> Host {
        assert!(self.exit.success(), "guest under vmw-sim {}", self.exit);
        self.host
    }
}

/// What the runner did during one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrapStats {
    /// Port I/O instructions emulated (backdoor calls and empty-port accesses).
    pub port_io: u64,
    /// VMCALL / VMMCALL instructions emulated (the host counts them by instruction:
    /// [`Counters::vmcall_calls`], [`Counters::vmmcall_calls`]).
    pub hypercalls: u64,
    /// Port I/O the guest was not allowed to make: its SIGSEGV was delivered.
    pub faults_delivered: u64,
    /// Signals passed on to the guest (including those faults).
    pub signals_delivered: u64,
    /// `iopl`/`ioperm` calls answered virtually.
    pub io_syscalls: u64,
    /// CPUID instructions answered (see [`HostConfig::vmware_cpuid`]).
    pub cpuid: u64,
    /// Processes and threads traced, the first guest included.
    pub tracees: u64,
    /// Successful `execve` calls.
    pub execs: u64,
    /// vsock system calls answered or rewritten by the runner ([`HostConfig::vsock`]).
    pub vsock_syscalls: u64,
}

impl HostConfig {
    /// Forks; the child runs `f` as the guest of this host, traced (its backdoor
    /// instructions are answered by the host model). Returns when the child and everything
    /// it started have ended. Errors only when the guest could not be started.
    ///
    /// ```
    /// use vmw_backdoor::sim::{HostConfig, IoplPolicy};
    ///
    /// let run = HostConfig::default()
    ///     .iopl(IoplPolicy::Enosys)
    ///     .run(|| {
    ///         // SAFETY: iopl has no memory effects.
    ///         let r = unsafe { libc::iopl(3) };
    ///         assert_eq!(r, -1);
    ///         assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::ENOSYS));
    ///     })
    ///     .unwrap();
    /// run.expect_success();
    /// ```
    pub fn run<F: FnOnce()>(self, f: F) -> io::Result<SimRun> {
        self.check_power_ops()?;
        let settings = runner::launch::Settings::of(&self);
        runner::launch::run(
            Host::new(self),
            settings,
            runner::launch::Guest::Closure(Box::new(f)),
        )
    }

    /// Runs `cmd` as the guest of this host, traced, with every process and thread it
    /// starts; returns when all have ended. An `exec` failure (program not found, ...) is the
    /// error `Command::spawn` would give. `cmd`'s arguments, environment, working directory
    /// and inherited or file stdio apply; `Stdio::piped()` does not give the caller a handle.
    ///
    /// Power operations queued as TCLO commands (`OS_Halt`, `OS_Reboot`, ...) are refused
    /// with an `InvalidInput` error unless [`HostConfig::allow_power_ops`]: an unmodified
    /// vmtoolsd running as root would act on them, on the machine running the simulator.
    pub fn run_command(self, cmd: &mut Command) -> io::Result<SimRun> {
        self.check_power_ops()?;
        let settings = runner::launch::Settings::of(&self);
        runner::launch::run(
            Host::new(self),
            settings,
            runner::launch::Guest::Command(cmd),
        )
    }
}
