//! VMware guest-host "backdoor" (crate docs to be written with the library; see README.md).

#![deny(missing_docs)]
#![deny(missing_debug_implementations)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod backdoor;
pub mod erpc;
mod error;
pub mod proto;
#[cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]
pub mod sim;

pub use backdoor::{
    access_backdoor, access_backdoor_privileged, is_vmware_cpu, probe_backdoor,
    probe_backdoor_privileged, BackdoorGuard, BiosUuid, Frequencies, HostTime, Product, VcpuInfo,
    Version,
};
pub use erpc::EnhancedChan;
pub use error::{ErrorKind, VmwError};
