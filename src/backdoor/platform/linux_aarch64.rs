//! Linux on arm64: the knock in a `clone(CLONE_VM | CLONE_VFORK)` child (outside VMware the
//! `mrs xzr, mdccsr_el0` traps to the kernel, which raises SIGILL); no I/O privilege to take.
//!
//! The privileged entry points return the `Unsupported` error: arm64 has no I/O space and no
//! `iopl`/`ioperm`, and VMware answers the backdoor from EL0 (user space) as it is, so there
//! is nothing a privileged access could add. The usual
//! `probe_backdoor_privileged().or_else(|_| probe_backdoor())` therefore probes once,
//! unprivileged.

use core::sync::atomic::{AtomicBool, Ordering};

use super::contained::{self, knock_in_child, Slot};
use super::{no_io_privilege, Knock, Privilege};
use crate::backdoor::transport::Protection;
use crate::proto::Regs;
use crate::{ErrorKind, Transport, TransportKind, VmwError};

pub(crate) use super::arm64::{instructions, is_vmware_cpu, RawCalls};

/// Every Linux arm64 build can reach a backdoor.
pub(crate) fn supported() -> Result<(), VmwError> {
    Ok(())
}

/// Nothing to tell: confidential arm64 guests (CCA realms) are not recognised.
pub(crate) fn protection() -> Protection {
    Protection::None
}

/// The one transport arm64 has: the port instructions, trapped.
pub(crate) fn detect_transport() -> Result<Transport, VmwError> {
    Ok(Transport::PORT)
}

/// The child runs a few small frames; 64 KiB leaves room for unoptimized builds.
const STACK_BYTES: usize = 64 * 1024;

extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `Slot`; CLONE_VFORK keeps the parent suspended until
    // this child exits, so nothing else touches it meanwhile.
    unsafe { knock_in_child(arg.cast::<Slot>()) };
    0
}

pub(crate) fn knock(regs: Regs, via: TransportKind) -> Result<Knock, VmwError> {
    super::arm64::check(via)?;
    let mut stack = vec![0u8; STACK_BYTES];
    // AAPCS64: the stack pointer is 16-byte aligned.
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
    let signal = contained::reap(pid, libc::__WALL);
    drop(stack);
    if slot.done.load(Ordering::Acquire) {
        Ok(Knock::Completed(slot.regs))
    } else {
        Ok(Knock::Faulted(signal))
    }
}

/// No I/O privilege exists on arm64: `Unsupported` (see the module documentation).
pub(crate) fn raise_io_privilege() -> Result<Privilege, VmwError> {
    Err(no_io_privilege())
}

pub(crate) fn release_io_privilege(_: Privilege) -> Result<(), VmwError> {
    Ok(())
}
