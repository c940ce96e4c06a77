//! The GETVERSION knock, run where a fault cannot kill the caller.
//!
//! Outside VMware (and on VMware with ring-3 backdoor access restricted) an unprivileged `in`
//! on port 0x5658 raises #GP, which Linux delivers as SIGSEGV. The knock therefore runs in a
//! child process: on Linux a `clone(CLONE_VM | CLONE_VFORK)` child on a small stack of its
//! own, which shares our memory (it writes the registers straight into our slot) and
//! suspends us until it exits; on other Unix systems a forked child writing into a shared
//! mapping. A child that did not finish ended in the fault.
//!
//! The child must not *die* of the fault, only leave because of it. A core-dumping signal
//! (SIGSEGV, SIGBUS, SIGILL) that kills a task sharing our memory would, on Linux before
//! 5.16, take every process of that memory down with it (the core dump's `zap_threads`
//! kills all users of the mm, whatever `RLIMIT_CORE` says), and on every kernel it writes a
//! core file of our whole address space and a "general protection fault" line in the kernel
//! log. So the child installs its own handler for those signals, unblocks them, and the
//! handler ends the child with the raw `exit` system call and the signal number as status:
//! a handled signal is neither logged, dumped nor audited as an abnormal end.
//!
//! This module exists on x86 only.

use crate::proto::Regs;
use crate::VmwError;

/// How a knock ended.
#[derive(Debug)]
pub(crate) enum Knock {
    /// The `in` completed; the registers are what came back (an answer, or all ones).
    Completed(Regs),
    /// The `in` faulted; the signal that ended the child, when known.
    #[cfg_attr(not(unix), allow(dead_code))]
    Faulted(Option<i32>),
    /// Not attempted: the fault could not be contained on this OS and CPUID does not say
    /// VMware.
    #[cfg_attr(unix, allow(dead_code))]
    Skipped,
}

/// Knocks with `regs` (see [`super::cmd::knock_regs`]) and says how it went.
pub(crate) fn knock(regs: Regs) -> Result<Knock, VmwError> {
    imp::knock(regs)
}

/// The slot the child fills in; `done` is set only once the `in` has returned.
#[cfg(unix)]
struct Slot {
    regs: Regs,
    done: core::sync::atomic::AtomicBool,
}

/// The signals a backdoor access can raise where nothing answers it: #GP (SIGSEGV), a
/// bus error (SIGBUS), #UD from a hypercall instruction (SIGILL).
#[cfg(unix)]
const FAULTS: [libc::c_int; 3] = [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL];

/// The child's exit status when it left because of fault signal `sig`.
#[cfg(unix)]
const FAULT_STATUS_BASE: libc::c_int = 128;

/// The child's fault handler: leave at once, with the signal in the exit status.
/// Async-signal-safe; it never returns into the faulting instruction.
#[cfg(unix)]
extern "C" fn leave_on_fault(sig: libc::c_int) {
    // SAFETY: `_exit` ends only the calling process (the knock child, its own thread group),
    // runs no destructors or atexit handlers and is async-signal-safe.
    unsafe { libc::_exit(FAULT_STATUS_BASE + sig) }
}

/// The child's whole life: its own fault handlers, the knock, a flag. Async-signal-safe only.
///
/// # Safety
///
/// `slot` points to a live `Slot` no one else touches until the child has exited.
#[cfg(unix)]
unsafe fn knock_in_child(slot: *mut Slot) {
    // SAFETY: plain libc calls on local, zero-initialized values. The child has its own copy
    // of the signal dispositions and mask (no CLONE_SIGHAND, and it is no thread of ours),
    // so the parent's handlers (the application's, Rust's stack-overflow handler) are
    // neither run nor changed. No SA_ONSTACK: a CLONE_VFORK child inherits the parent
    // thread's alternate signal stack, which is not ours to write on; the handler runs on
    // the child's own stack. The fault signals are unblocked because the kernel answers a
    // fault whose signal is blocked by killing with the default action.
    unsafe {
        let mut set: libc::sigset_t = core::mem::zeroed();
        libc::sigemptyset(&mut set);
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = leave_on_fault as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        for sig in FAULTS {
            libc::sigaddset(&mut set, sig);
            libc::sigaddset(&mut sa.sa_mask, sig);
        }
        for sig in FAULTS {
            if libc::sigaction(sig, &sa, core::ptr::null_mut()) != 0 {
                // Without the handler a fault could take the caller down: do not knock.
                libc::_exit(1);
            }
        }
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, core::ptr::null_mut());
    }
    // SAFETY: the caller owns `slot` for now. The `in` may fault; then the handler ends this
    // child, which is the point. On success it fills the registers the slot holds.
    unsafe {
        super::asm::lb(&mut (*slot).regs);
        (*slot)
            .done
            .store(true, core::sync::atomic::Ordering::Release);
    }
}

/// Waits for the exited child `pid` with `waitpid` `flags`; returns the fault signal that
/// ended it, if one did (caught by [`leave_on_fault`], or fatal if it got past it).
#[cfg(unix)]
fn reap(pid: libc::pid_t, flags: libc::c_int) -> Option<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes one int to `status`, a live local.
        let r = unsafe { libc::waitpid(pid, &mut status, flags) };
        if r == pid {
            if libc::WIFSIGNALED(status) {
                return Some(libc::WTERMSIG(status));
            }
            let code = libc::WEXITSTATUS(status) - FAULT_STATUS_BASE;
            return FAULTS.contains(&code).then_some(code);
        }
        if r < 0 && errno::errno().0 == libc::EINTR {
            continue;
        }
        return None;
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use super::{knock_in_child, Knock, Slot};
    use crate::proto::Regs;
    use crate::{ErrorKind, VmwError};
    use core::sync::atomic::{AtomicBool, Ordering};

    /// The child runs a few small frames; 64 KiB leaves room for unoptimized builds.
    const STACK_BYTES: usize = 64 * 1024;

    extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the parent's `Slot`; CLONE_VFORK keeps the parent suspended until
        // this child exits, so nothing else touches it meanwhile.
        unsafe { knock_in_child(arg.cast::<Slot>()) };
        0
    }

    pub(super) fn knock(regs: Regs) -> Result<Knock, VmwError> {
        let mut stack = vec![0u8; STACK_BYTES];
        let top = stack.as_mut_ptr_range().end as usize & !15;
        let mut slot = Slot {
            regs,
            done: AtomicBool::new(false),
        };
        // Exit signal 0: no SIGCHLD reaches the application, and only a __WALL wait (ours)
        // can reap the child.
        let flags = libc::CLONE_VM | libc::CLONE_VFORK;
        // SAFETY: `child` only does async-signal-safe work on `slot` and its own stack, the top
        // of a live 16-byte-aligned heap buffer. CLONE_VFORK suspends this thread until the
        // child exits, so `stack` and `slot` outlive it and are not touched concurrently.
        let pid = unsafe {
            libc::clone(
                child,
                top as *mut libc::c_void,
                flags,
                (&mut slot as *mut Slot).cast(),
            )
        };
        if pid < 0 {
            return Err(VmwError::os(
                ErrorKind::System,
                "clone failed, so the backdoor knock cannot run contained",
                errno::errno().0,
            ));
        }
        // Exit signal 0 made it a "clone" child, which only __WALL waits for.
        let signal = super::reap(pid, libc::__WALL);
        drop(stack);
        if slot.done.load(Ordering::Acquire) {
            Ok(Knock::Completed(slot.regs))
        } else {
            Ok(Knock::Faulted(signal))
        }
    }
}

#[cfg(all(unix, not(target_os = "linux")))]
mod imp {
    use super::{knock_in_child, Knock, Slot};
    use crate::proto::Regs;
    use crate::{ErrorKind, VmwError};
    use core::sync::atomic::{AtomicBool, Ordering};

    pub(super) fn knock(regs: Regs) -> Result<Knock, VmwError> {
        let size = core::mem::size_of::<Slot>();
        // SAFETY: a fresh anonymous shared mapping; no existing memory is affected.
        let map = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANON,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(VmwError::os(
                ErrorKind::System,
                "mmap failed, so the backdoor knock cannot run contained",
                errno::errno().0,
            ));
        }
        let slot = map.cast::<Slot>();
        // SAFETY: the mapping is page-aligned, writable and at least `size` bytes.
        unsafe {
            slot.write(Slot {
                regs,
                done: AtomicBool::new(false),
            })
        };
        // SAFETY: the child runs only async-signal-safe code (`knock_in_child`, `_exit`).
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: the child owns its copy-on-write view; the slot is shared and the
            // parent does not read it until the child has exited.
            unsafe {
                knock_in_child(slot);
                libc::_exit(0);
            }
        }
        let result = if pid < 0 {
            Err(VmwError::os(
                ErrorKind::System,
                "fork failed, so the backdoor knock cannot run contained",
                errno::errno().0,
            ))
        } else {
            let signal = super::reap(pid, 0);
            // SAFETY: the child has exited; the slot is initialized and ours again.
            let s = unsafe { &*slot };
            Ok(if s.done.load(Ordering::Acquire) {
                Knock::Completed(s.regs)
            } else {
                Knock::Faulted(signal)
            })
        };
        // SAFETY: unmapping the mapping created above, no longer referenced.
        unsafe { libc::munmap(map, size) };
        result
    }
}

#[cfg(not(unix))]
mod imp {
    use super::Knock;
    use crate::proto::Regs;
    use crate::VmwError;

    /// No child process to contain a fault in: knock only where CPUID says VMware.
    pub(super) fn knock(mut regs: Regs) -> Result<Knock, VmwError> {
        if !super::super::detect::is_vmware_cpu() {
            return Ok(Knock::Skipped);
        }
        // SAFETY: CPUID names VMware, whose backdoor answers ring-3 code by default.
        unsafe { super::super::asm::lb(&mut regs) };
        Ok(Knock::Completed(regs))
    }
}
