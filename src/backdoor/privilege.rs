//! Raising and dropping port I/O privilege (`ioperm`, then `iopl`) for the calling thread.
//!
//! On VMware the backdoor answers ring-3 code without any privilege; privilege matters where
//! ring-3 backdoor access is restricted, and makes an outside-VMware knock read all ones
//! instead of faulting. Linux keeps I/O permission per thread (inherited by children), which
//! is why [`BackdoorGuard`](super::BackdoorGuard) is not `Send`.

use crate::VmwError;

/// Which privilege a guard took, so that exactly that one is given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    not(all(target_os = "linux", any(target_arch = "x86", target_arch = "x86_64"))),
    allow(dead_code)
)]
pub(crate) enum Privilege {
    /// No change: the unprivileged access.
    None,
    /// `ioperm` on the backdoor ports.
    Ioperm,
    /// `iopl(3)`: every port (the fallback when `ioperm` is refused).
    Iopl,
}

#[cfg(all(target_os = "linux", any(target_arch = "x86", target_arch = "x86_64")))]
mod imp {
    use super::Privilege;
    use crate::proto::LB_PORT;
    use crate::{ErrorKind, VmwError};

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

    pub(crate) fn raise() -> Result<Privilege, VmwError> {
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
        const FALLBACK: &str =
            "use the unprivileged access (probe_backdoor), which works on VMware";
        let message = match errno {
            libc::ENOSYS => format!(
                "ioperm/iopl: ENOSYS — kernel built without CONFIG_X86_IOPL_IOPERM; {FALLBACK}"
            ),
            libc::EPERM => format!(
                "ioperm/iopl: EPERM — raising I/O privilege needs CAP_SYS_RAWIO and a kernel \
                 without lockdown; run as root without lockdown, or {FALLBACK}"
            ),
            _ => format!("ioperm/iopl failed; {FALLBACK}"),
        };
        VmwError::os(ErrorKind::Privilege, message, errno)
    }

    pub(crate) fn release(p: Privilege) -> Result<(), VmwError> {
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
}

#[cfg(not(all(target_os = "linux", any(target_arch = "x86", target_arch = "x86_64"))))]
mod imp {
    use super::Privilege;
    use crate::{ErrorKind, VmwError};

    pub(crate) fn raise() -> Result<Privilege, VmwError> {
        Err(VmwError::new(
            ErrorKind::Unsupported,
            "privileged backdoor access (ioperm/iopl) exists only on Linux x86; use the \
             unprivileged access (probe_backdoor), which works on VMware",
        ))
    }

    pub(crate) fn release(_: Privilege) -> Result<(), VmwError> {
        Ok(())
    }
}

use std::cell::Cell;

thread_local! {
    /// This thread's privileged guards and the privilege they share. Privilege is taken by
    /// the first and given back by the last, so dropping one guard cannot pull the privilege
    /// from under another (whose next access would then fault where ring 3 is restricted).
    static HELD: Cell<(u32, Privilege)> = const { Cell::new((0, Privilege::None)) };
}

/// Takes I/O privilege for this thread (`ioperm` on the four backdoor ports, else
/// `iopl(3)`), or joins the privilege another guard of this thread already holds.
pub(crate) fn raise() -> Result<Privilege, VmwError> {
    let (holders, held) = HELD.with(Cell::get);
    if holders > 0 {
        HELD.with(|h| h.set((holders.saturating_add(1), held)));
        return Ok(held);
    }
    let taken = imp::raise()?;
    HELD.with(|h| h.set((1, taken)));
    Ok(taken)
}

/// Whether a privileged guard of this thread holds I/O privilege now.
pub(crate) fn thread_holds() -> bool {
    HELD.try_with(|h| h.get().0 > 0).unwrap_or(false)
}

/// Gives back what [`raise`] returned; the last holder on the thread gives back the
/// privilege itself. On failure the caller still holds it.
pub(crate) fn release(p: Privilege) -> Result<(), VmwError> {
    if p == Privilege::None {
        return Ok(());
    }
    // During thread teardown the record may be gone; then release for real.
    let holders = HELD.try_with(|h| h.get().0).unwrap_or(1);
    if holders > 1 {
        let _ = HELD.try_with(|h| h.set((holders - 1, p)));
        return Ok(());
    }
    imp::release(p)?;
    let _ = HELD.try_with(|h| h.set((0, Privilege::None)));
    Ok(())
}
