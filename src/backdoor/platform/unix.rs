//! Other Unix systems on x86: the knock in a forked child; no I/O privilege for user space.

use core::sync::atomic::{AtomicBool, Ordering};

use super::contained::{self, knock_in_child, Slot};
use super::{no_io_privilege, Knock, Privilege};
use crate::backdoor::transport::Protection;
use crate::proto::Regs;
use crate::{ErrorKind, Transport, TransportKind, VmwError};

pub(crate) use super::x86::{instructions, is_vmware_cpu, RawCalls};

/// The guest's protection: TDX from CPUID; AMD memory encryption is not looked for (no
/// kernel interface is known here).
pub(crate) fn protection() -> Protection {
    super::x86::protection(|| Protection::None)
}

/// The transport this machine calls for.
pub(crate) fn detect_transport() -> Result<Transport, VmwError> {
    super::x86::detect(protection())
}

/// Every Unix x86 build can reach a backdoor, unprivileged.
pub(crate) fn supported() -> Result<(), VmwError> {
    Ok(())
}

pub(crate) fn raise_io_privilege() -> Result<Privilege, VmwError> {
    Err(no_io_privilege())
}

pub(crate) fn release_io_privilege(_: Privilege) -> Result<(), VmwError> {
    Ok(())
}

pub(crate) fn knock(regs: Regs, via: TransportKind) -> Result<Knock, VmwError> {
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
            via,
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
        let signal = contained::reap(pid, 0);
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
