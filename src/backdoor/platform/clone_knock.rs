//! The knock on Linux: a `clone(CLONE_VM | CLONE_VFORK)` child runs the one call, on a stack
//! of its own, and catches its own fault (`contained.rs`); the caller reads the answer from
//! the shared memory. No fork: the address space is shared, so the caller's size does not
//! matter (BENCHMARKS.md, section 6).

use core::sync::atomic::{AtomicBool, Ordering};

use super::contained::{self, knock_in_child, Slot};
use super::Knock;
use crate::proto::Regs;
use crate::{ErrorKind, TransportKind, VmwError};

/// The child runs a few small frames; 64 KiB leaves room for unoptimized builds.
const STACK_BYTES: usize = 64 * 1024;

extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `Slot`; CLONE_VFORK keeps the parent suspended until
    // this child exits, so nothing else touches it meanwhile.
    unsafe { knock_in_child(arg.cast::<Slot>()) };
    0
}

/// One contained knock by `via`.
pub(crate) fn knock(regs: Regs, via: TransportKind) -> Result<Knock, VmwError> {
    let mut stack = vec![0u8; STACK_BYTES];
    // Both ABIs (x86-64 SysV, AAPCS64) want a 16-byte-aligned stack pointer.
    let top = stack.as_mut_ptr_range().end as usize & !15;
    let mut slot = Slot {
        regs,
        via,
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
    let signal = contained::reap(pid, libc::__WALL);
    drop(stack);
    if slot.done.load(Ordering::Acquire) {
        Ok(Knock::Completed(slot.regs))
    } else {
        Ok(Knock::Faulted(signal))
    }
}
