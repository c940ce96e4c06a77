//! [`Transport`]: which instruction carries the backdoor's calls, and whether high-bandwidth
//! transfers may be used.

use core::fmt;
use core::str::FromStr;

use super::platform;
use crate::{ErrorKind, VmwError};

/// The instruction a backdoor call is made with.
///
/// The register contract is the same for all of them but for `lo16(EDX)`: the I/O port
/// (0x5658 low-bandwidth, 0x5659 high-bandwidth) for [`Port`](Self::Port), and flags for the
/// hypercalls (open-vm-tools' `backdoor_def.h`: `BDOOR_FLAGS_HB` = 1, `BDOOR_FLAGS_WRITE` =
/// 2; so 0 for a low-bandwidth call, 3 for a high-bandwidth guest-to-host transfer, 1 for
/// host-to-guest). A hypercall's high-bandwidth form is a plain `vmcall`/`vmmcall` (no
/// `rep`, no direction flag), and only EBX's status is defined after it.
///
/// New kinds may be added in minor releases; match with a wildcard arm.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// The I/O ports: `in eax, dx` on 0x5658, `rep outsb` / `rep insb` on 0x5659. Every
    /// VMware host has them.
    Port,
    /// `vmcall` (Intel VT-x), which a VMware host advertises in CPUID leaf 0x40000010 ECX
    /// bit 1.
    Vmcall,
    /// `vmmcall` (AMD-V), advertised in CPUID leaf 0x40000010 ECX bit 0; the only way to
    /// the backdoor from an AMD SEV-ES or SEV-SNP guest.
    Vmmcall,
}

/// How the backdoor's calls reach the hypervisor: the instruction ([`TransportKind`]) and
/// whether high-bandwidth transfers may be used.
///
/// A [`BackdoorGuard`](crate::BackdoorGuard) chooses one at its first knock, as
/// [`Transport::detect`] does, unless one was set with
/// [`BackdoorGuard::set_transport`](crate::BackdoorGuard::set_transport):
///
/// | machine | transport |
/// |---|---|
/// | Intel TDX guest (CPUID leaf 0x21 says `IntelTDX`) | none: [`ErrorKind::Unsupported`] |
/// | AMD SEV-ES or SEV-SNP guest, as the Linux kernel reports it | [`Transport::VMMCALL`], low bandwidth only |
/// | AMD SEV guest (memory encrypted, registers not), as the Linux kernel reports it | as below, low bandwidth only |
/// | CPUID names VMware and advertises VMCALL (leaf 0x40000010 ECX bit 1) | [`Transport::VMCALL`] |
/// | CPUID names VMware and advertises VMMCALL (bit 0) | [`Transport::VMMCALL`] |
/// | anything else | [`Transport::PORT`] |
///
/// That is open-vm-tools' order (`BackdoorGetInterface` in `lib/backdoor/backdoor.c`:
/// VMCALL first, then VMMCALL, else the ports). Linux's own `vmware.c` differs in one
/// case: with both bits set it uses the ports.
///
/// Force a transport where CPUID is masked or cannot be trusted to say what the host takes
/// (a nested or emulated guest, a VM whose CPUID a management layer rewrites):
///
/// ```no_run
/// use vmw_backdoor::Transport;
///
/// # fn main() -> Result<(), vmw_backdoor::VmwError> {
/// let mut guard = vmw_backdoor::access_backdoor()?;
/// guard.set_transport(Transport::VMCALL);
/// guard.probe_vmware_backdoor()?; // the GETVERSION knock, by VMCALL, contained
/// assert_eq!(guard.transport()?, Transport::VMCALL);
/// # Ok(()) }
/// ```
///
/// Outside VMware a hypercall raises #UD (SIGILL) or #GP (SIGSEGV), or another hypervisor
/// answers it; like the port, it is first tried in the contained knock, so a wrong choice
/// ends in [`ErrorKind::NotVmware`], never in a signal.
///
/// `Display` and `FromStr` use the names `port`, `vmcall`, `vmmcall`, with `-lb` appended
/// for low bandwidth only (`vmmcall-lb`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Transport {
    kind: TransportKind,
    high_bandwidth: bool,
}

impl Transport {
    /// The I/O ports, high-bandwidth transfers allowed.
    pub const PORT: Transport = Transport::new(TransportKind::Port);
    /// `vmcall`, high-bandwidth transfers allowed.
    pub const VMCALL: Transport = Transport::new(TransportKind::Vmcall);
    /// `vmmcall`, high-bandwidth transfers allowed.
    pub const VMMCALL: Transport = Transport::new(TransportKind::Vmmcall);

    /// `kind`, with high-bandwidth transfers allowed (used where the host offers them).
    #[must_use]
    pub const fn new(kind: TransportKind) -> Transport {
        Transport {
            kind,
            high_bandwidth: true,
        }
    }

    /// The same instruction, for low-bandwidth calls only: a channel then moves every
    /// message four bytes per call, even where the host offers high-bandwidth transfers.
    ///
    /// What a guest whose memory the host cannot read must use (AMD SEV, SEV-ES, SEV-SNP):
    /// a high-bandwidth transfer hands the host a buffer address.
    #[must_use]
    pub const fn low_bandwidth_only(self) -> Transport {
        Transport {
            kind: self.kind,
            high_bandwidth: false,
        }
    }

    /// The instruction.
    #[must_use]
    pub const fn kind(self) -> TransportKind {
        self.kind
    }

    /// Whether high-bandwidth transfers may be used (where the host offers them).
    #[must_use]
    pub const fn high_bandwidth(self) -> bool {
        self.high_bandwidth
    }

    /// Whether the calls are hypercalls (`vmcall`/`vmmcall`), which need no I/O privilege.
    #[must_use]
    pub const fn is_hypercall(self) -> bool {
        !matches!(self.kind, TransportKind::Port)
    }

    /// The transport this machine calls for, as a guard's first knock chooses it (see the
    /// table above). Reads CPUID and, on Linux, what the kernel says about memory
    /// encryption (`/sys/devices/system/cpu/sev/`, `/dev/sev-guest`); knocks on nothing.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Unsupported`] in an Intel TDX guest, where user space cannot reach the
    /// backdoor (the message says why), and on targets that are not x86.
    pub fn detect() -> Result<Transport, VmwError> {
        platform::detect_transport()
    }

    /// The name `Display` prints and `FromStr` reads.
    fn name(self) -> &'static str {
        match (self.kind, self.high_bandwidth) {
            (TransportKind::Port, true) => "port",
            (TransportKind::Port, false) => "port-lb",
            (TransportKind::Vmcall, true) => "vmcall",
            (TransportKind::Vmcall, false) => "vmcall-lb",
            (TransportKind::Vmmcall, true) => "vmmcall",
            (TransportKind::Vmmcall, false) => "vmmcall-lb",
        }
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Transport({})", self.name())
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Reads `port`, `vmcall`, `vmmcall`, each optionally followed by `-lb` (low bandwidth
/// only), as `Display` prints them; ASCII case is ignored.
impl FromStr for Transport {
    type Err = VmwError;

    fn from_str(s: &str) -> Result<Transport, VmwError> {
        let lower = s.to_ascii_lowercase();
        let (kind, lb_only) = match lower.strip_suffix("-lb") {
            Some(kind) => (kind, true),
            None => (lower.as_str(), false),
        };
        let transport = match kind {
            "port" => Transport::PORT,
            "vmcall" => Transport::VMCALL,
            "vmmcall" => Transport::VMMCALL,
            _ => {
                return Err(VmwError::new(
                    ErrorKind::InvalidInput,
                    format_args!(
                        "unknown backdoor transport `{}`: expected port, vmcall or vmmcall, \
                         optionally with -lb (low bandwidth only)",
                        s.escape_debug()
                    ),
                ))
            }
        };
        Ok(if lb_only {
            transport.low_bandwidth_only()
        } else {
            transport
        })
    }
}

/// What the machine tells user space about the guest's protection by the CPU (confidential
/// computing), as far as it can be known without privilege.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)] // each platform reports only some of these
pub(crate) enum Protection {
    /// Nothing known: an ordinary guest, or one whose kernel does not say.
    None,
    /// AMD SEV: memory encrypted, registers not. The host cannot read a buffer, so no
    /// high-bandwidth transfers; the port and the hypercalls still carry registers.
    EncryptedMemory,
    /// AMD SEV-ES or SEV-SNP: memory and register state encrypted. Only VMMCALL reaches the
    /// host with registers (the kernel's #VC handler forwards them through the GHCB); an
    /// `in` carries EAX alone. Low bandwidth only.
    EncryptedState,
    /// Intel TDX: no backdoor call from user space reaches the host.
    Tdx,
}

/// The transport for a machine: `protection`, then what CPUID advertised (`advertised`, in
/// open-vm-tools' order already), else the ports.
#[allow(dead_code)] // not on targets without x86
pub(crate) fn choose(
    protection: Protection,
    advertised: Option<TransportKind>,
) -> Result<Transport, VmwError> {
    let cpuid = Transport::new(advertised.unwrap_or(TransportKind::Port));
    match protection {
        Protection::None => Ok(cpuid),
        Protection::EncryptedMemory => Ok(cpuid.low_bandwidth_only()),
        Protection::EncryptedState => Ok(Transport::VMMCALL.low_bandwidth_only()),
        Protection::Tdx => Err(tdx_unsupported()),
    }
}

/// A transport the caller set, adjusted to the machine: never high-bandwidth transfers where
/// the host cannot read the guest's memory. (In a TDX guest nothing works; a forced
/// transport is still tried, contained, for kernels that forward user-space hypercalls.)
#[allow(dead_code)] // not on targets without x86
pub(crate) fn adjust(forced: Transport, protection: Protection) -> Transport {
    match protection {
        Protection::EncryptedMemory | Protection::EncryptedState => forced.low_bandwidth_only(),
        Protection::None | Protection::Tdx => forced,
    }
}

/// The error for a TDX guest.
fn tdx_unsupported() -> VmwError {
    VmwError::new(
        ErrorKind::Unsupported,
        "this is an Intel TDX guest (CPUID leaf 0x21 says IntelTDX), where user space cannot \
         reach the VMware backdoor: the TDX module turns a port access or a VMCALL into a \
         #VE, which Linux answers for user space only for CPUID (anything else ends in \
         SIGSEGV), and the kernel's own VMware calls (TDG.VP.VMCALL) are not offered to user \
         space; so no knock was tried. VMware's guest RPC also runs over vsock, which this \
         crate does not implement",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in [Transport::PORT, Transport::VMCALL, Transport::VMMCALL] {
            for t in [t, t.low_bandwidth_only()] {
                assert_eq!(t.to_string().parse::<Transport>().unwrap(), t);
            }
        }
        assert_eq!(
            "VMMCALL-LB".parse::<Transport>().unwrap(),
            Transport::VMMCALL.low_bandwidth_only()
        );
        let e = "tdcall".parse::<Transport>().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("tdcall"), "{e}");
        assert_eq!(
            format!("{:?}", Transport::VMCALL.low_bandwidth_only()),
            "Transport(vmcall-lb)"
        );
    }

    #[test]
    fn properties() {
        assert!(Transport::PORT.high_bandwidth() && !Transport::PORT.is_hypercall());
        assert!(Transport::VMCALL.is_hypercall());
        let lb = Transport::VMMCALL.low_bandwidth_only();
        assert_eq!(
            (lb.kind(), lb.high_bandwidth()),
            (TransportKind::Vmmcall, false)
        );
    }

    #[test]
    fn the_machine_decides_in_open_vm_tools_order_after_protection() {
        use TransportKind::*;
        let none = Protection::None;
        assert_eq!(choose(none, None).unwrap(), Transport::PORT);
        assert_eq!(choose(none, Some(Vmcall)).unwrap(), Transport::VMCALL);
        assert_eq!(choose(none, Some(Vmmcall)).unwrap(), Transport::VMMCALL);
        let lb = |t: Transport| t.low_bandwidth_only();
        assert_eq!(
            choose(Protection::EncryptedMemory, None).unwrap(),
            lb(Transport::PORT)
        );
        for advertised in [None, Some(Vmcall), Some(Vmmcall)] {
            assert_eq!(
                choose(Protection::EncryptedState, advertised).unwrap(),
                lb(Transport::VMMCALL),
                "SEV-ES: VMMCALL whatever CPUID says"
            );
            let e = choose(Protection::Tdx, advertised).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Unsupported);
            assert!(e.to_string().contains("TDX"), "{e}");
        }
        assert_eq!(
            adjust(Transport::VMMCALL, Protection::EncryptedState),
            lb(Transport::VMMCALL)
        );
        assert_eq!(adjust(Transport::VMCALL, none), Transport::VMCALL);
    }
}
