//! Targets without a backdoor this crate can reach (neither x86 nor Linux arm64): every
//! entry point reports `Unsupported`.

use super::{no_io_privilege, Knock, Privilege};
use crate::backdoor::transport::Protection;
use crate::proto::Regs;
use crate::{ErrorKind, Transport, TransportKind, VmwError};

/// No backdoor instructions exist here: the type has no value, so no call can be made.
#[derive(Debug)]
pub(crate) enum RawCalls {}

impl RawCalls {
    pub(crate) fn lb(&mut self, _: &mut Regs) {
        match *self {}
    }
    pub(crate) fn hb_out(&mut self, _: &mut Regs, _: &[u8]) {
        match *self {}
    }
    pub(crate) fn hb_in(&mut self, _: &mut Regs, _: &mut [u8]) {
        match *self {}
    }
    pub(crate) fn high_bandwidth(&self) -> bool {
        match *self {}
    }
}

pub(crate) fn supported() -> Result<(), VmwError> {
    Err(unsupported())
}

fn unsupported() -> VmwError {
    VmwError::new(
        ErrorKind::Unsupported,
        format_args!(
            "the VMware backdoor is reached through x86 port I/O or x86 hypercalls (or their \
             arm64 trap on Linux), which this target ({}) does not have",
            std::env::consts::ARCH
        ),
    )
}

/// # Safety
///
/// None needed: there are no instructions to hand out.
pub(crate) unsafe fn instructions(_: Transport) -> Result<RawCalls, VmwError> {
    Err(unsupported())
}

pub(crate) fn knock(_: Regs, _: TransportKind) -> Result<Knock, VmwError> {
    Err(unsupported())
}

/// Nothing to tell.
pub(crate) fn protection() -> Protection {
    Protection::None
}

/// No transport reaches a backdoor here.
pub(crate) fn detect_transport() -> Result<Transport, VmwError> {
    Err(unsupported())
}

/// No CPUID here.
pub(crate) fn is_vmware_cpu() -> bool {
    false
}

pub(crate) fn raise_io_privilege() -> Result<Privilege, VmwError> {
    Err(no_io_privilege())
}

pub(crate) fn release_io_privilege(_: Privilege) -> Result<(), VmwError> {
    Ok(())
}
