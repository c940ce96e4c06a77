//! The examples' backdoor guard: privileged access where the kernel grants it, else ring 3
//! (which VMware allows).
//!
//! `VMW_BACKDOOR_TRANSPORT` (`port`, `vmcall`, `vmmcall`, each optionally with `-lb` for low
//! bandwidth only) sets the transport, for a guest whose CPUID does not say what the host
//! takes (an emulated or nested one, or one under `vmw-sim` without CPUID faulting); unset,
//! the library chooses as the machine calls for.

use vmw_backdoor::{BackdoorGuard, Transport, VmwError};

/// The environment variable that names a transport.
const TRANSPORT_ENV: &str = "VMW_BACKDOOR_TRANSPORT";

/// A guard whose knock was answered.
pub fn probe() -> Result<BackdoorGuard, VmwError> {
    let Some(name) = std::env::var_os(TRANSPORT_ENV) else {
        return vmw_backdoor::probe_backdoor_privileged()
            .or_else(|_| vmw_backdoor::probe_backdoor());
    };
    let transport: Transport = name.to_string_lossy().parse()?;
    let by = |mut guard: BackdoorGuard| {
        guard.set_transport(transport);
        guard.probe_vmware_backdoor().map(|()| guard)
    };
    vmw_backdoor::access_backdoor_privileged()
        .and_then(by)
        .or_else(|_| vmw_backdoor::access_backdoor().and_then(by))
}
