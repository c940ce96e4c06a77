//! The ptrace trap-and-emulate runner.
//!
//! The guest is an ordinary process with no I/O privilege, so its backdoor instructions
//! fault: `in`/`out`/`ins`/`outs` raise #GP, which the kernel turns into SIGSEGV. The
//! runner traces the guest (and every thread and process it creates), catches those
//! signals before the guest sees them, decodes the instruction at RIP, lets the host model
//! answer, writes registers and memory back, steps RIP past the instruction and resumes the
//! guest as if the port had answered. Every other signal reaches the guest unchanged.
//!
//! `iopl`/`ioperm` never reach the kernel: a seccomp filter turns them into ptrace stops and
//! the runner answers them from a per-thread virtual privilege ([`privilege`]).
//!
//! Pieces: [`sys`] (raw calls), [`decode`] (instruction bytes), [`emulate`] (what an
//! instruction does), [`privilege`] and [`seccomp`] (virtual `iopl`/`ioperm`), [`launch`]
//! (fork, set-up of the child, the outcome).

mod cpuid;
mod decode;
mod emulate;
pub(crate) mod launch;
mod privilege;
mod seccomp;
mod sys;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;

use libc::pid_t;

use self::privilege::IoPrivilege;
use self::seccomp::IoCall;
use self::sys::Status;
use super::{GuestExit, Host, IoplPolicy, TrapStats};

/// Events a new tracee may wait for its creator's fork/clone event before it runs anyway
/// (the creator was killed between creating it and reporting it).
const HOLD_LIMIT: u32 = 10_000;

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
}

impl Thread {
    fn new(io: IoPrivilege) -> Thread {
        Thread {
            io,
            decoded: DecodeCache::default(),
        }
    }
}

/// The last few port I/O instructions a thread faulted on, by (RIP, CS), so a call site
/// that traps again skips reading its instruction bytes (a ptrace round trip).
///
/// An entry is only used for a fault of the kind port I/O raises (#GP, `SI_KERNEL`) at the
/// same address and code segment, and the cache is dropped at `execve`. What it cannot see
/// is code replaced in place at that very address by another #GP-raising instruction
/// (unloading a library and loading another exactly there, or a JIT): accepted.
#[derive(Default)]
struct DecodeCache {
    slots: [Option<(u64, u64, decode::PortIo)>; 4],
    next: usize,
}

impl DecodeCache {
    fn get(&self, rip: u64, cs: u64) -> Option<decode::PortIo> {
        self.slots
            .iter()
            .flatten()
            .find(|(r, c, _)| *r == rip && *c == cs)
            .map(|(_, _, io)| *io)
    }

    fn put(&mut self, rip: u64, cs: u64, io: decode::PortIo) {
        if self.get(rip, cs).is_none() {
            if let Some(slot) = self.slots.get_mut(self.next % 4) {
                *slot = Some((rip, cs, io));
            }
            self.next = (self.next + 1) % 4;
        }
    }

    fn clear(&mut self) {
        *self = DecodeCache::default();
    }
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
    host: &'h mut Host,
    policy: IoplPolicy,
    root: pid_t,
    root_exit: Option<GuestExit>,
    /// Every live tracee (thread or process) and its virtual I/O privilege.
    threads: PidMap<Thread>,
    /// Announced by a fork/clone event but not yet stopped: what it inherits.
    expected: PidMap<IoPrivilege>,
    /// Stopped before its creator's fork/clone event: resumed when that comes.
    held: Vec<Held>,
    /// Whether the guest sees a VMware CPUID (CPUID faulting armed in every process).
    cpuid: bool,
    /// Signals that arrived while the runner was stepping a tracee itself; delivered when
    /// it resumes.
    deferred: Vec<(pid_t, i32)>,
    stats: TrapStats,
    /// Reused buffer for guest memory (no allocation per call).
    scratch: Vec<u8>,
}

impl<'h> Tracer<'h> {
    /// A tracer for the tree rooted at `root`, which it has already seized.
    pub(crate) fn new(host: &'h mut Host, policy: IoplPolicy, cpuid: bool, root: pid_t) -> Self {
        let mut threads = PidMap::default();
        threads.insert(root, Thread::default());
        Tracer {
            host,
            policy,
            root,
            root_exit: None,
            threads,
            expected: PidMap::default(),
            held: Vec::new(),
            cpuid,
            deferred: Vec::new(),
            stats: TrapStats {
                tracees: 1,
                ..TrapStats::default()
            },
            scratch: Vec::new(),
        }
    }

    /// Serves the guest tree until every tracee is gone; returns how the root ended.
    pub(crate) fn run(mut self) -> io::Result<(Option<GuestExit>, TrapStats)> {
        while let Some((pid, status)) = sys::wait_any()? {
            self.on_status(pid, status);
            self.age_held();
        }
        Ok((self.root_exit, self.stats))
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
                if self.cpuid {
                    self.rearm_cpuid(pid);
                }
                self.resume_with_deferred(pid);
            }
            libc::PTRACE_EVENT_SECCOMP => {
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
                log::warn!(
                    "vmw-sim: tracee {} started before its creator reported it",
                    h.pid
                );
                self.threads.insert(h.pid, Thread::default());
                self.stats.tracees += 1;
                self.on_stop(h.pid, h.sig, h.event);
            } else {
                i += 1;
            }
        }
    }

    fn on_signal(&mut self, pid: pid_t, sig: i32) {
        if (sig == libc::SIGSEGV || sig == libc::SIGILL) && self.emulate(pid, sig) {
            resume(pid, 0);
        } else {
            self.stats.signals_delivered += 1;
            resume(pid, sig);
        }
    }

    /// Answers a guest's `iopl`/`ioperm` from its virtual privilege; the real system call is
    /// skipped.
    fn on_io_syscall(&mut self, pid: pid_t) {
        let (Ok(mut regs), Ok(data)) = (sys::get_regs(pid), sys::event_msg(pid)) else {
            return;
        };
        let Some(call) = IoCall::from_data(data) else {
            return;
        };
        let policy = self.policy;
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
        };
        regs.orig_rax = u64::MAX; // skip the real system call
        regs.rax = ret as u64;
        if sys::set_regs(pid, &regs).is_ok() {
            self.stats.io_syscalls += 1;
        }
    }
}

impl Tracer<'_> {
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
            } else {
                // SAFETY: tgkill to a thread of our own tracee; pid is its thread-group leader
                // (it just completed execve).
                unsafe { libc::syscall(libc::SYS_tgkill, pid, pid, sig) };
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
            log::warn!("vmw-sim: ptrace: {e}");
        }
    }
}
