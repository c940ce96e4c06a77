//! Linux on arm64: the knock in a `clone(CLONE_VM | CLONE_VFORK)` child (outside VMware the
//! `mrs xzr, mdccsr_el0` traps to the kernel, which raises SIGILL); no I/O privilege to take.
//!
//! The privileged entry points return the `Unsupported` error: arm64 has no I/O space and no
//! `iopl`/`ioperm`, and VMware answers the backdoor from EL0 (user space) as it is, so there
//! is nothing a privileged access could add. The usual
//! `probe_backdoor_privileged().or_else(|_| probe_backdoor())` therefore probes once,
//! unprivileged.

use super::{no_io_privilege, Knock, Privilege};
use crate::backdoor::transport::Protection;
use crate::proto::Regs;
use crate::{Transport, TransportKind, VmwError};

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

/// One contained knock; only the port transport exists here.
pub(crate) fn knock(regs: Regs, via: TransportKind) -> Result<Knock, VmwError> {
    super::arm64::check(via)?;
    super::clone_knock::knock(regs, via)
}

/// No I/O privilege exists on arm64: `Unsupported` (see the module documentation).
pub(crate) fn raise_io_privilege() -> Result<Privilege, VmwError> {
    Err(no_io_privilege())
}

pub(crate) fn release_io_privilege(_: Privilege) -> Result<(), VmwError> {
    Ok(())
}
