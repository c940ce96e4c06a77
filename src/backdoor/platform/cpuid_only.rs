//! x86 operating systems without `fork`-style containment (Windows, …): no child process to
//! contain a fault in, so the knock runs only where CPUID names VMware (and, for a
//! hypercall, advertises it); no I/O privilege for user space.

use super::{no_io_privilege, Knock, Privilege};
use crate::backdoor::transport::Protection;
use crate::proto::Regs;
use crate::{Transport, TransportKind, VmwError};

pub(crate) use super::x86::{instructions, is_vmware_cpu, RawCalls};

/// The guest's protection: TDX from CPUID; AMD memory encryption is not looked for.
pub(crate) fn protection() -> Protection {
    super::x86::protection(|| Protection::None)
}

/// The transport this machine calls for.
pub(crate) fn detect_transport() -> Result<Transport, VmwError> {
    super::x86::detect(protection())
}

/// Every x86 build can reach a backdoor, unprivileged.
pub(crate) fn supported() -> Result<(), VmwError> {
    Ok(())
}

pub(crate) fn knock(mut regs: Regs, via: TransportKind) -> Result<Knock, VmwError> {
    let safe = match via {
        TransportKind::Port => is_vmware_cpu(),
        // A hypercall the host does not take raises #UD: only one CPUID advertises.
        hypercall => super::hypercall::advertises(hypercall),
    };
    if !safe {
        return Ok(Knock::Skipped);
    }
    // SAFETY: CPUID names VMware, whose backdoor answers ring-3 code by default, by the port
    // and by the hypercalls it advertises.
    unsafe { super::x86::lb_by(via, &mut regs) };
    Ok(Knock::Completed(regs))
}

pub(crate) fn raise_io_privilege() -> Result<Privilege, VmwError> {
    Err(no_io_privilege())
}

pub(crate) fn release_io_privilege(_: Privilege) -> Result<(), VmwError> {
    Ok(())
}
