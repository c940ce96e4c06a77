//! Linux on x86: the knock in a `clone(CLONE_VM | CLONE_VFORK)` child, I/O privilege with
//! `ioperm` on the backdoor ports, else `iopl(3)`.

use core::sync::atomic::{AtomicBool, Ordering};

use super::contained::{self, knock_in_child, Slot};
use super::{Knock, Privilege};
use crate::proto::{Regs, LB_PORT};
use crate::{ErrorKind, VmwError};

pub(crate) use super::x86::{instructions, is_vmware_cpu, RawCalls};

/// Every Linux x86 build can reach a backdoor.
pub(crate) fn supported() -> Result<(), VmwError> {
    Ok(())
}

/// The child runs a few small frames; 64 KiB leaves room for unoptimized builds.
const STACK_BYTES: usize = 64 * 1024;

extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `Slot`; CLONE_VFORK keeps the parent suspended until
    // this child exits, so nothing else touches it meanwhile.
    unsafe { knock_in_child(arg.cast::<Slot>()) };
    0
}

pub(crate) fn knock(regs: Regs) -> Result<Knock, VmwError> {
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
    let signal = contained::reap(pid, libc::__WALL);
    drop(stack);
    if slot.done.load(Ordering::Acquire) {
        Ok(Knock::Completed(slot.regs))
    } else {
        Ok(Knock::Faulted(signal))
    }
}

/// A 32-bit `in` on 0x5658 touches ports 0x5658..=0x565B; that range covers 0x5659 too.
const PORTS: libc::c_ulong = 4;

fn ioperm(on: bool) -> Result<(), i32> {
    // SAFETY: ioperm only changes this thread's I/O permission bitmap; it takes plain
    // integers and touches no memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_ioperm,
            libc::c_ulong::from(LB_PORT),
            PORTS,
            libc::c_int::from(on),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(errno::errno().0)
    }
}

fn iopl(level: libc::c_int) -> Result<(), i32> {
    // SAFETY: iopl only changes this thread's I/O privilege level; plain integer argument.
    let rc = unsafe { libc::syscall(libc::SYS_iopl, level) };
    if rc == 0 {
        Ok(())
    } else {
        Err(errno::errno().0)
    }
}

pub(crate) fn raise_io_privilege() -> Result<Privilege, VmwError> {
    match ioperm(true) {
        Ok(()) => return Ok(Privilege::Ioperm),
        Err(e) => {
            log::debug!("ioperm({LB_PORT:#x}, {PORTS}, 1) failed (errno {e}); trying iopl(3)")
        }
    }
    match iopl(3) {
        Ok(()) => Ok(Privilege::Iopl),
        Err(errno) => Err(refused(errno)),
    }
}

/// The error for a kernel that refused both `ioperm` and `iopl`.
fn refused(errno: i32) -> VmwError {
    const FALLBACK: &str = "use the unprivileged access (probe_backdoor), which works on VMware";
    let message = match errno {
        libc::ENOSYS => {
            format!("ioperm/iopl: ENOSYS — kernel built without CONFIG_X86_IOPL_IOPERM; {FALLBACK}")
        }
        libc::EPERM => format!(
            "ioperm/iopl: EPERM — raising I/O privilege needs CAP_SYS_RAWIO and a kernel \
             without lockdown; run as root without lockdown, or {FALLBACK}"
        ),
        _ => format!("ioperm/iopl failed; {FALLBACK}"),
    };
    VmwError::os(ErrorKind::Privilege, message, errno)
}

pub(crate) fn release_io_privilege(p: Privilege) -> Result<(), VmwError> {
    let (what, result) = match p {
        Privilege::None => return Ok(()),
        Privilege::Ioperm => ("ioperm(0x5658, 4, 0)", ioperm(false)),
        Privilege::Iopl => ("iopl(0)", iopl(0)),
    };
    result.map_err(|errno| {
        VmwError::os(
            ErrorKind::Privilege,
            format_args!("{what} failed: the thread keeps its I/O privilege"),
            errno,
        )
    })
}
