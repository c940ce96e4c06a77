//! The ptrace trap-and-emulate runner.
//!
//! The guest is an ordinary process with no I/O privilege, so its backdoor instructions
//! fault: on x86_64 `in`/`out`/`ins`/`outs` raise #GP, which the kernel turns into SIGSEGV;
//! on aarch64 the `mrs xzr, mdccsr_el0` that carries an x86 I/O instruction in X7 traps to
//! the kernel, which raises SIGILL ([`aarch64`](self) below). The
//! runner traces the guest (and every thread and process it creates), catches those
//! signals before the guest sees them, decodes the instruction at RIP, lets the host model
//! answer, writes registers and memory back, steps RIP past the instruction and resumes the
//! guest as if the port had answered. Every other signal reaches the guest unchanged.
//!
//! `iopl`/`ioperm` never reach the kernel: a seccomp filter turns them into ptrace stops and
//! the runner answers them from a per-thread virtual privilege ([`privilege`]). On x86_64 a
//! second filter hands it the guest's vsock calls ([`vsock`](self)): its `AF_VSOCK`
//! sockets are `AF_UNIX` ones the runner binds and connects to the host's DataMap end, a
//! thread of the run that shares the host model (hence the `Mutex`).
//!
//! Pieces: [`sys`] (every raw system call, and the only `unsafe` code of the runner),
//! [`decode`] (instruction bytes), [`emulate`] (what an instruction does, by the host
//! model's rules), [`port_io`] (what an x86 I/O instruction does, on every instruction
//! set), [`privilege`] and [`seccomp`] (virtual `iopl`/`ioperm`), [`cpuid`] (the VMware
//! CPUID), [`launch`] (fork, set-up of the child, the outcome); the [`Tracer`] here owns
//! the event loop and the traced processes.
//!
//! The instruction set is chosen in one place, below: x86_64 has the files named above;
//! aarch64 has `aarch64/` with the same four module names (`decode`: the X7 descriptor,
//! `emulate`: the trapped `mrs`, and no CPUID or I/O privilege system calls to serve).
//! Both hand the I/O instruction they decoded to [`port_io`].

// `forbid` here would reach into `sys` too (an inner attribute covers the child modules and
// cannot be lifted); `deny` with the one exception below keeps this file and every
// submodule but `sys` free of `unsafe`, and the other files forbid it themselves.
#![deny(unsafe_code)]

// The instruction set the runner serves: adding one is adding a directory and a line here.
// Each provides `cpuid`, `decode`, `emulate` and `seccomp` with the items this file and
// `launch` use.
#[cfg(target_arch = "aarch64")]
#[path = "aarch64/mod.rs"]
mod aarch64;
#[cfg(target_arch = "aarch64")]
use aarch64::{cpuid, decode, emulate, seccomp};
#[cfg(target_arch = "x86_64")]
mod cpuid;
#[cfg(target_arch = "x86_64")]
mod decode;
#[cfg(target_arch = "x86_64")]
mod emulate;
#[cfg(target_arch = "x86_64")]
mod seccomp;

pub(crate) mod launch;
// Port I/O semantics: one for every instruction set, over its registers.
mod port_io;
// The guest's vsock: x86_64's system call tables only.
#[cfg(target_arch = "x86_64")]
mod vsock;
// Kept per thread on every instruction set; only x86 has `iopl`/`ioperm` to answer from it.
#[cfg_attr(target_arch = "aarch64", allow(dead_code))]
mod privilege;
#[allow(unsafe_code)]
mod sys;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::ops::Range;
use std::sync::{Mutex, MutexGuard};

use libc::pid_t;

use self::decode::DecodeCache;
use self::emulate::Emulator;
use self::privilege::IoPrivilege;
#[cfg(target_arch = "x86_64")]
use self::seccomp::IoCall;
use self::sys::Status;
use super::{GuestExit, Host, IoplPolicy, TrapStats};

/// Events a new tracee may wait for its creator's fork/clone event before it runs anyway
/// (the creator was killed between creating it and reporting it).
const HOLD_LIMIT: u32 = 10_000;
/// Stops a single step of the runner's own code may see (the step plus stray signals)
/// before giving up.
const STEP_STOPS: usize = 8;

/// Pids are already well spread: hashing them is wasted time on every trap.
#[derive(Default)]
struct PidHasher(u64);

impl Hasher for PidHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_i32(&mut self, n: i32) {
        self.0 = n as u32 as u64;
    }
}

type PidMap<V> = HashMap<pid_t, V, BuildHasherDefault<PidHasher>>;

/// What the runner keeps per traced thread.
#[derive(Default)]
struct Thread {
    /// Its virtual I/O privilege.
    io: IoPrivilege,
    /// Port I/O instructions it faulted on lately, by address.
    decoded: DecodeCache,
    /// What to finish when its current system call exits (a rewritten vsock `socket`).
    #[cfg(target_arch = "x86_64")]
    at_exit: Option<vsock::AtExit>,
}

impl Thread {
    fn new(io: IoPrivilege) -> Thread {
        Thread {
            io,
            ..Thread::default()
        }
    }
}

/// What an `Emulator` did with a faulting instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(target_arch = "aarch64", allow(dead_code))] // no hypercall or CPUID there
enum Emulated {
    /// A port I/O instruction was executed (backdoor call or empty port).
    PortIo,
    /// A VMCALL / VMMCALL was executed.
    Hypercall,
    /// A CPUID was answered.
    Cpuid,
    /// A port I/O instruction the machine does not allow: the signal is to be delivered.
    PortFault,
    /// Nothing the simulated machine would have executed: the signal is to be delivered.
    No,
}

/// A stop reported for a tracee whose creator has not reported it yet.
struct Held {
    pid: pid_t,
    sig: i32,
    event: i32,
    waited: u32,
}

/// The tracer of one guest process tree; owns the event loop.
pub(crate) struct Tracer<'h> {
    /// Executes the guest's faulting instructions against the host model.
    emu: Emulator<'h>,
    #[cfg_attr(target_arch = "aarch64", allow(dead_code))] // no iopl/ioperm there
    policy: IoplPolicy,
    root: pid_t,
    root_exit: Option<GuestExit>,
    /// Every live tracee (thread or process) and its virtual I/O privilege.
    threads: PidMap<Thread>,
    /// Announced by a fork/clone event but not yet stopped: what it inherits.
    expected: PidMap<IoPrivilege>,
    /// Stopped before its creator's fork/clone event: resumed when that comes.
    held: Vec<Held>,
    /// Signals that arrived while the runner was stepping a tracee itself; delivered when
    /// it resumes.
    deferred: Vec<(pid_t, i32)>,
    /// Tracees in a group-stop (SIGSTOP and friends), waiting for SIGCONT.
    stopped: std::collections::HashSet<pid_t, BuildHasherDefault<PidHasher>>,
    stats: TrapStats,
    /// The host model, shared with the vsock endpoint.
    #[cfg_attr(target_arch = "aarch64", allow(dead_code))]
    host: &'h Mutex<Host>,
    #[cfg(target_arch = "x86_64")]
    vsock: vsock::Vsock,
}

/// The host model, whoever holds it: a thread that panicked while holding it left it as
/// consistent as the model ever is (it never panics itself), so poisoning is ignored.
pub(crate) fn lock_host(host: &Mutex<Host>) -> MutexGuard<'_, Host> {
    host.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<'h> Tracer<'h> {
    /// A tracer for the tree rooted at `root`, which it has already seized; `vsock`: the
    /// run's vsock names when the host offers vsock (x86_64).
    pub(crate) fn new(
        host: &'h Mutex<Host>,
        policy: IoplPolicy,
        cpuid: bool,
        root: pid_t,
        #[cfg_attr(target_arch = "aarch64", allow(unused_variables))] vsock: Option<
            launch::VsockNames,
        >,
    ) -> Self {
        let mut threads = PidMap::default();
        threads.insert(root, Thread::default());
        Tracer {
            emu: Emulator::new(host, cpuid),
            host,
            #[cfg(target_arch = "x86_64")]
            vsock: vsock::Vsock::new(vsock),
            policy,
            root,
            root_exit: None,
            threads,
            expected: PidMap::default(),
            held: Vec::new(),
            deferred: Vec::new(),
            stopped: Default::default(),
            stats: TrapStats {
                tracees: 1,
                ..TrapStats::default()
            },
        }
    }

    /// Serves the guest tree until every tracee is gone, or until the root has ended and
    /// all that remain are stopped with nothing left to continue them: those are let go,
    /// still stopped, as a shell leaves them (the kernel sends an orphaned process group's
    /// stopped members SIGHUP and SIGCONT). Returns how the root ended.
    pub(crate) fn run(mut self) -> io::Result<(Option<GuestExit>, TrapStats)> {
        loop {
            if self.only_stopped_remain() {
                self.let_stopped_go();
                break;
            }
            let Some((pid, status)) = sys::wait_any()? else {
                break;
            };
            self.stopped.remove(&pid);
            self.on_status(pid, status);
            self.age_held();
        }
        Ok((self.root_exit, self.stats))
    }

    fn only_stopped_remain(&self) -> bool {
        self.root_exit.is_some()
            && !self.threads.is_empty()
            && self.expected.is_empty()
            && self.held.is_empty()
            && self.threads.keys().all(|pid| self.stopped.contains(pid))
    }

    /// Detaches every remaining (group-stopped) tracee, leaving it stopped.
    fn let_stopped_go(&mut self) {
        for pid in std::mem::take(&mut self.stopped) {
            // Only a tracee in a ptrace-stop can be detached: interrupt the listening one.
            if sys::interrupt(pid).is_ok() {
                let _ = sys::wait_for(pid);
            }
            ignore_gone(sys::detach(pid));
            self.threads.remove(&pid);
        }
    }

    fn on_status(&mut self, pid: pid_t, status: Status) {
        match status {
            Status::Exited(code) => self.gone(pid, GuestExit::Exited(code)),
            Status::Killed(sig) => self.gone(pid, GuestExit::Signaled(sig)),
            Status::Stopped { sig, event } => {
                if !self.threads.contains_key(&pid) {
                    let Some(inherited) = self.expected.remove(&pid) else {
                        self.held.push(Held {
                            pid,
                            sig,
                            event,
                            waited: 0,
                        });
                        return;
                    };
                    self.threads.insert(pid, Thread::new(inherited));
                    self.stats.tracees += 1;
                }
                self.on_stop(pid, sig, event);
            }
        }
    }

    fn gone(&mut self, pid: pid_t, how: GuestExit) {
        self.threads.remove(&pid);
        self.expected.remove(&pid);
        self.held.retain(|h| h.pid != pid);
        if pid == self.root {
            self.root_exit = Some(how);
        }
    }

    fn on_stop(&mut self, pid: pid_t, sig: i32, event: i32) {
        match event {
            0 => self.on_signal(pid, sig),
            libc::PTRACE_EVENT_STOP => {
                if matches!(
                    sig,
                    libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
                ) {
                    // Group-stop: stay stopped until SIGCONT, but keep reporting.
                    ignore_gone(sys::listen(pid));
                    self.stopped.insert(pid);
                } else {
                    // A new tracee's first stop, or an interrupt.
                    resume(pid, 0);
                }
            }
            libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE => {
                if let Ok(child) = sys::event_msg(pid) {
                    let inherited = self
                        .threads
                        .get(&pid)
                        .map(|t| t.io.clone())
                        .unwrap_or_default();
                    self.adopt(child as pid_t, inherited);
                }
                resume(pid, 0);
            }
            libc::PTRACE_EVENT_EXEC => {
                // A non-leader thread that execs takes over the leader's pid; its privilege
                // goes with it (I/O privilege survives execve). The code is new.
                if let Ok(former) = sys::event_msg(pid) {
                    let former = former as pid_t;
                    if former != pid {
                        if let Some(t) = self.threads.remove(&former) {
                            self.threads.insert(pid, t);
                        }
                    }
                }
                if let Some(t) = self.threads.get_mut(&pid) {
                    t.decoded.clear();
                }
                self.stats.execs += 1;
                if self.emu.vmware_cpuid() {
                    if let Err(msg) = cpuid::rearm(pid, |pid, stub| self.step(pid, stub)) {
                        log::warn!("{msg}");
                    }
                }
                self.resume_with_deferred(pid);
            }
            libc::PTRACE_EVENT_SECCOMP => {
                #[cfg(target_arch = "x86_64")]
                if let Some(trap) = sys::event_msg(pid).ok().and_then(vsock::Trap::from_data) {
                    self.on_sock_syscall(pid, trap);
                    return;
                }
                self.on_io_syscall(pid);
                resume(pid, 0);
            }
            _ => resume(pid, 0),
        }
    }

    /// A fork/clone event named `child`: run it now if it already stopped, else note what
    /// it inherits for when it does.
    fn adopt(&mut self, child: pid_t, inherited: IoPrivilege) {
        if let Some(i) = self.held.iter().position(|h| h.pid == child) {
            let h = self.held.swap_remove(i);
            self.threads.insert(child, Thread::new(inherited));
            self.stats.tracees += 1;
            self.on_stop(h.pid, h.sig, h.event);
        } else {
            self.expected.insert(child, inherited);
        }
    }

    /// Lets held tracees go (without inherited privilege) when their creator's event can no
    /// longer be expected: nothing else is traced, or too many events went by.
    fn age_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let nobody_else = self.threads.is_empty();
        let mut i = 0;
        while let Some(h) = self.held.get_mut(i) {
            h.waited += 1;
            if nobody_else || h.waited > HOLD_LIMIT {
                let h = self.held.swap_remove(i);
                log::warn!("tracee {} started before its creator reported it", h.pid);
                self.threads.insert(h.pid, Thread::default());
                self.stats.tracees += 1;
                self.on_stop(h.pid, h.sig, h.event);
            } else {
                i += 1;
            }
        }
    }

    fn on_signal(&mut self, pid: pid_t, sig: i32) {
        #[cfg(target_arch = "x86_64")]
        if sig == sys::SYSCALL_STOP {
            // Only a call the runner asked to see the exit of stops here.
            let at = self.threads.get_mut(&pid).and_then(|t| t.at_exit.take());
            if let Some(at) = at {
                self.vsock.on_exit(pid, at);
                self.stats.vsock_syscalls = self.vsock.calls;
            }
            resume(pid, 0);
            return;
        }
        let done = if sig == libc::SIGSEGV || sig == libc::SIGILL {
            self.emu.emulate(pid, sig, self.threads.get_mut(&pid))
        } else {
            Emulated::No
        };
        match done {
            Emulated::PortIo => self.stats.port_io += 1,
            Emulated::Hypercall => self.stats.hypercalls += 1,
            Emulated::Cpuid => self.stats.cpuid += 1,
            Emulated::PortFault => self.stats.faults_delivered += 1,
            Emulated::No => {}
        }
        if matches!(done, Emulated::PortFault | Emulated::No) {
            self.stats.signals_delivered += 1;
            resume(pid, sig);
        } else {
            resume(pid, 0);
        }
    }

    /// Answers a guest's `iopl`/`ioperm` from its virtual privilege; the real system call is
    /// skipped.
    #[cfg(target_arch = "x86_64")]
    fn on_io_syscall(&mut self, pid: pid_t) {
        let Some(call) = sys::event_msg(pid).ok().and_then(IoCall::from_data) else {
            return;
        };
        // A SIGSEGV on its way from one guest process to another: noted, and the call runs.
        if call == IoCall::SegvSent {
            self.emu.segv_sent();
            return;
        }
        let Ok(mut regs) = sys::get_regs(pid) else {
            return;
        };
        // A child cloned out of the runner's sight would meet the backdoor for real: the
        // flag is cleared and the call goes on.
        if let IoCall::UntracedClone64 | IoCall::UntracedClone32 = call {
            match call {
                IoCall::UntracedClone64 => regs.rdi &= !seccomp::CLONE_UNTRACED,
                _ => regs.rbx &= !seccomp::CLONE_UNTRACED,
            }
            ignore_gone(sys::set_regs(pid, &regs));
            return;
        }
        let policy = match self.policy {
            IoplPolicy::Credentials if privilege::has_sys_rawio(pid) => IoplPolicy::Allow,
            IoplPolicy::Credentials => IoplPolicy::Eperm,
            policy => policy,
        };
        let p = &mut self.threads.entry(pid).or_default().io;
        // Argument widths follow the C prototypes: iopl(unsigned int),
        // ioperm(unsigned long, unsigned long, int); the i386 table is 32-bit throughout.
        let ret = match call {
            IoCall::Iopl64 => p.iopl(regs.rdi as u32, policy),
            IoCall::Ioperm64 => p.ioperm(regs.rdi, regs.rsi, regs.rdx as u32 != 0, policy),
            IoCall::Iopl32 => p.iopl(regs.rbx as u32, policy),
            IoCall::Ioperm32 => p.ioperm(
                u64::from(regs.rbx as u32),
                u64::from(regs.rcx as u32),
                regs.rdx as u32 != 0,
                policy,
            ),
            IoCall::UntracedClone64 | IoCall::UntracedClone32 | IoCall::SegvSent => return,
        };
        regs.orig_rax = u64::MAX; // skip the real system call
        regs.rax = ret as u64;
        if sys::set_regs(pid, &regs).is_ok() {
            self.stats.io_syscalls += 1;
        }
    }

    /// A guest's socket call the vsock filter stopped: answered, rewritten (then seen
    /// again at its exit) or let through.
    #[cfg(target_arch = "x86_64")]
    fn on_sock_syscall(&mut self, pid: pid_t, trap: vsock::Trap) {
        let at = self.vsock.on_entry(pid, trap, self.host);
        self.stats.vsock_syscalls = self.vsock.calls;
        match at {
            Some(at) => {
                self.threads.entry(pid).or_default().at_exit = Some(at);
                ignore_gone(sys::cont_to_syscall_exit(pid));
            }
            None => resume(pid, 0),
        }
    }

    /// No `iopl`/`ioperm` exist to answer on aarch64 (no filter stops the guest for them).
    #[cfg(target_arch = "aarch64")]
    fn on_io_syscall(&mut self, _: pid_t) {}

    /// Runs one instruction of `pid` for the runner's own code at `stub`; false if it did
    /// not come back stopped by the step. Signals that arrive meanwhile are kept for
    /// delivery when it resumes, except a fault raised by `stub` itself, which the program
    /// must never see.
    fn step(&mut self, pid: pid_t, stub: Range<u64>) -> bool {
        for _ in 0..STEP_STOPS {
            if sys::single_step(pid).is_err() {
                return false;
            }
            match sys::wait_for(pid) {
                Ok(Some((
                    _,
                    Status::Stopped {
                        sig: libc::SIGTRAP,
                        event: 0,
                    },
                ))) => return true,
                Ok(Some((_, Status::Stopped { sig, event: 0 }))) => {
                    let faulted_in_stub = matches!(
                        sig,
                        libc::SIGSEGV | libc::SIGILL | libc::SIGBUS | libc::SIGFPE
                    ) && sys::get_regs(pid)
                        .map_or(true, |r| stub.contains(&sys::pc(&r)));
                    if faulted_in_stub {
                        return false;
                    }
                    self.deferred.push((pid, sig));
                }
                Ok(Some((_, Status::Stopped { .. }))) => {}
                Ok(Some((_, Status::Exited(code)))) => {
                    self.gone(pid, GuestExit::Exited(code));
                    return false;
                }
                Ok(Some((_, Status::Killed(sig)))) => {
                    self.gone(pid, GuestExit::Signaled(sig));
                    return false;
                }
                Ok(None) | Err(_) => return false,
            }
        }
        false
    }

    /// Resumes `pid` with the first signal that was held back while the runner stepped it;
    /// any further ones are sent again.
    fn resume_with_deferred(&mut self, pid: pid_t) {
        let mut first = 0;
        let mut i = 0;
        while i < self.deferred.len() {
            let Some(&(p, sig)) = self.deferred.get(i) else {
                break;
            };
            if p != pid {
                i += 1;
                continue;
            }
            self.deferred.swap_remove(i);
            if first == 0 {
                first = sig;
            } else if let Err(e) = sys::tgkill(pid, pid, sig) {
                // pid is the thread-group leader (it just completed execve); one that
                // vanished meanwhile is fine, anything else loses the signal.
                if e.raw_os_error() != Some(libc::ESRCH) {
                    log::warn!("signal {sig} for {pid} lost: tgkill: {e}");
                }
            }
        }
        resume(pid, first);
    }
}

/// Resumes a tracee; one that vanished meanwhile (killed) is fine, its exit comes next.
fn resume(pid: pid_t, sig: i32) {
    ignore_gone(sys::cont(pid, sig));
}

fn ignore_gone(r: io::Result<()>) {
    if let Err(e) = r {
        if e.raw_os_error() != Some(libc::ESRCH) {
            log::warn!("ptrace: {e}");
        }
    }
}
