//! x86 operating systems without `fork`-style containment (Windows, …): no child process to
//! contain a fault in, so the knock runs only where CPUID names VMware; no I/O privilege for
//! user space.

use super::{no_io_privilege, Knock, Privilege};
use crate::proto::Regs;
use crate::VmwError;

pub(crate) use super::x86::{instructions, is_vmware_cpu, RawCalls};

/// Every x86 build can reach a backdoor, unprivileged.
pub(crate) fn supported() -> Result<(), VmwError> {
    Ok(())
}

pub(crate) fn knock(mut regs: Regs) -> Result<Knock, VmwError> {
    if !is_vmware_cpu() {
        return Ok(Knock::Skipped);
    }
    // SAFETY: CPUID names VMware, whose backdoor answers ring-3 code by default.
    unsafe { super::asm::lb(&mut regs) };
    Ok(Knock::Completed(regs))
}

pub(crate) fn raise_io_privilege() -> Result<Privilege, VmwError> {
    Err(no_io_privilege())
}

pub(crate) fn release_io_privilege(_: Privilege) -> Result<(), VmwError> {
    Ok(())
}
