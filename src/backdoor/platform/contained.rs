//! The GETVERSION knock, run where a fault cannot kill the caller.
//!
//! Outside VMware (and on VMware with ring-3 backdoor access restricted) an unprivileged `in`
//! on port 0x5658 raises #GP, which Linux delivers as SIGSEGV; a `vmcall` or `vmmcall` raises
//! #UD (SIGILL) where no hypervisor takes it, or #GP; on arm64 the `mrs xzr, mdccsr_el0`
//! traps to the kernel, which raises SIGILL. The knock therefore runs in a
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
//! handler ends the child with `_exit` and the signal number in the exit status: a handled
//! signal is neither logged, dumped nor audited as an abnormal end.

use crate::proto::Regs;
use crate::TransportKind;

/// The slot the child fills in; `done` is set only once the call has returned.
pub(super) struct Slot {
    pub(super) regs: Regs,
    /// The instruction to knock with.
    pub(super) via: TransportKind,
    pub(super) done: core::sync::atomic::AtomicBool,
}

/// The signals a backdoor access can raise where nothing answers it: #GP (SIGSEGV), a
/// bus error (SIGBUS), #UD from a hypercall instruction or the arm64 trap (SIGILL).
const FAULTS: [libc::c_int; 3] = [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL];

/// The child's exit status when it left because of fault signal `sig`.
const FAULT_STATUS_BASE: libc::c_int = 128;

/// The child's fault handler: leave at once, with the signal in the exit status.
/// Async-signal-safe; it never returns into the faulting instruction.
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
pub(super) unsafe fn knock_in_child(slot: *mut Slot) {
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
    // SAFETY: the caller owns `slot` for now. The call may fault; then the handler ends this
    // child, which is the point. On success it fills the registers the slot holds.
    unsafe {
        super::lb_by((*slot).via, &mut (*slot).regs);
        (*slot)
            .done
            .store(true, core::sync::atomic::Ordering::Release);
    }
}

/// Waits for the exited child `pid` with `waitpid` `flags`; returns the fault signal that
/// ended it, if one did (caught by [`leave_on_fault`], or fatal if it got past it).
pub(super) fn reap(pid: libc::pid_t, flags: libc::c_int) -> Option<i32> {
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
