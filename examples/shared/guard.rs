//! The examples' way to the host: for RPCs the best channel there is (privileged vsock,
//! vsock, else the backdoor: [`session`]), for the backdoor's own commands a guard with
//! privileged access where the kernel grants it, else ring 3 (which VMware allows).
//!
//! `VMW_BACKDOOR_TRANSPORT` (`port`, `vmcall`, `vmmcall`, each optionally with `-lb` for low
//! bandwidth only) sets the backdoor's transport, for a guest whose CPUID does not say what
//! the host takes (an emulated or nested one, or one under `vmw-sim` without CPUID
//! faulting), and makes RPCs go by the backdoor with it; unset, the library chooses as the
//! machine calls for.

use vmw_backdoor::{BackdoorGuard, Session, Transport, VmwError};

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

/// An RPCI session: [`Session::connect`] (vsock where the host takes it, else the
/// backdoor), or the backdoor by the transport `VMW_BACKDOOR_TRANSPORT` names.
#[allow(dead_code)] // checkvm needs no RPC
pub fn session() -> Result<Session, VmwError> {
    if std::env::var_os(TRANSPORT_ENV).is_some() {
        return Session::open(probe()?);
    }
    Session::connect()
}
