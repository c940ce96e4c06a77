//! What arm64 platforms share: the backdoor instructions and the firmware hint that stands in
//! for CPUID.
//!
//! | call | x86 instruction described in W7 | X7 | registers in | registers out |
//! |---|---|---|---|---|
//! | LB | `in eax, dx` on port 0x5658 | `0x86_0000_000e` | X0..X5 | X0..X5 |
//! | HB out | `rep outsb` on port 0x5659 | `0x86_0000_0018` | X0..X6; X4 = buffer, X2 = length | X0..X6 |
//! | HB in | `rep insb` on port 0x5659 | `0x86_0000_001c` | X0..X6; X5 = buffer, X2 = length | X0..X6 |
//!
//! X0..X6 play EAX, EBX, ECX, EDX, ESI, EDI, EBP; the trap is `mrs xzr, mdccsr_el0`, which
//! VMware takes from EL0 (open-vm-tools' `backdoor_def.h`, "VMware x86 I/O space
//! virtualization on arm"). Nothing grants I/O privilege: there is no I/O space, and ring 3
//! (EL0) may use the backdoor as it is.
//!
//! There is no CPUID either. [`is_vmware_cpu`] reads the SMBIOS strings the firmware gives
//! (Linux's `/sys/class/dmi/id/`, readable by every user). open-vm-tools reads the ACPI FADT
//! "hypervisor vendor" field instead (`lib/misc/hostinfoHV.c`), but Linux shows that table
//! (`/sys/firmware/acpi/tables/FACP`) to root only, and the hint must not depend on
//! privilege.
//!
//! The one transport is [`TransportKind::Port`]: the trap carries the port instructions.
//! `vmcall` and `vmmcall` are x86 instructions, so a guard set to either fails its knock
//! with `Unsupported`.

use super::asm;
use crate::proto::Regs;
use crate::{ErrorKind, Transport, TransportKind, VmwError};

/// The real backdoor instructions (the three calls of [`Backdoor`](crate::Backdoor)).
///
/// Only [`instructions`] creates one, and only after the backdoor answered, so a value of
/// this type is evidence that the trap reaches the VMware backdoor. Not `Send`/`Sync`, as on
/// x86 (the evidence is kept per thread there; here it costs nothing).
#[derive(Debug)]
pub(crate) struct RawCalls {
    /// Whether high-bandwidth transfers may be made (the kind is always the port's).
    high_bandwidth: bool,
    _this_thread_only: core::marker::PhantomData<*mut ()>,
}

/// The transports arm64 has: the port instructions, by the trap.
pub(super) fn check(kind: TransportKind) -> Result<(), VmwError> {
    match kind {
        TransportKind::Port => Ok(()),
        other => Err(VmwError::new(
            ErrorKind::Unsupported,
            format_args!(
                "{other:?} is an x86 instruction; on arm64 the backdoor is reached by the \
                 port transport only (trapped with mrs xzr, mdccsr_el0)"
            ),
        )),
    }
}

/// The instructions of `transport`, for a caller that knows they are safe to run.
///
/// # Safety
///
/// A GETVERSION knock by `transport` on this machine was answered by the VMware backdoor.
pub(crate) unsafe fn instructions(transport: Transport) -> Result<RawCalls, VmwError> {
    check(transport.kind())?;
    Ok(RawCalls {
        high_bandwidth: transport.high_bandwidth(),
        _this_thread_only: core::marker::PhantomData,
    })
}

/// One low-bandwidth call by `kind`: what the contained knock runs. Only the port kind gets
/// here (`knock` checks first); it is the only call arm64 has.
///
/// # Safety
///
/// As [`asm::lb`]: the trap reaches the VMware backdoor, or the caller contains a fault.
pub(super) unsafe fn lb_by(kind: TransportKind, regs: &mut Regs) {
    debug_assert_eq!(kind, TransportKind::Port);
    // SAFETY: passed on from the caller.
    unsafe { asm::lb(regs) }
}

impl RawCalls {
    pub(crate) fn lb(&mut self, regs: &mut Regs) {
        // SAFETY: a `RawCalls` exists only once the backdoor answered (`instructions`), so
        // the `mrs` reaches VMware and does not trap to the kernel.
        unsafe { asm::lb(regs) }
    }

    pub(crate) fn hb_out(&mut self, regs: &mut Regs, data: &[u8]) {
        // SAFETY: as in `lb`; `hb_out` points X4/X2 at `data`, which the host only reads.
        unsafe { asm::hb_out(regs, data) }
    }

    pub(crate) fn hb_in(&mut self, regs: &mut Regs, buf: &mut [u8]) {
        // SAFETY: as in `lb`; `hb_in` points X5/X2 at `buf`, so the host writes only there.
        unsafe { asm::hb_in(regs, buf) }
    }

    /// Whether high-bandwidth transfers may be made by this transport.
    pub(crate) fn high_bandwidth(&self) -> bool {
        self.high_bandwidth
    }
}

/// Where Linux shows the SMBIOS strings, each file one line; these four are world-readable.
/// The product name comes first, as in systemd's `detect_vm_dmi()`.
const DMI_FILES: [&str; 4] = [
    "/sys/class/dmi/id/product_name",
    "/sys/class/dmi/id/sys_vendor",
    "/sys/class/dmi/id/board_vendor",
    "/sys/class/dmi/id/bios_vendor",
];

/// Whether the firmware says this is a VMware VM: an SMBIOS product name, system, board or
/// BIOS vendor (as Linux shows them in `/sys/class/dmi/id/`) that starts with `VMware`
/// (VMware's own "VMware, Inc." and "VMware20,1"-style names) or `VMW` — systemd's
/// `detect_vm_dmi()` rule. False where the files are missing (no SMBIOS, as on QEMU's `virt`
/// machine booted without firmware, or no sysfs).
pub(crate) fn is_vmware_cpu() -> bool {
    DMI_FILES
        .iter()
        .filter_map(|path| std::fs::read(path).ok())
        .any(|value| says_vmware(&value))
}

/// The decision, apart from the files: one DMI string.
fn says_vmware(value: &[u8]) -> bool {
    value.starts_with(b"VMware") || value.starts_with(b"VMW")
}

#[cfg(test)]
mod tests {
    use super::says_vmware;

    #[test]
    fn vmware_names_and_nothing_else() {
        assert!(says_vmware(b"VMware, Inc.\n"));
        assert!(says_vmware(b"VMware20,1\n"));
        assert!(says_vmware(b"VMware Virtual Platform\n"));
        assert!(!says_vmware(b"QEMU\n"));
        assert!(!says_vmware(b"KVM\n"));
        assert!(!says_vmware(b"Apple Inc.\n"));
        assert!(!says_vmware(b""));
        assert!(!says_vmware(b" VMware"), "a prefix, not a substring");
    }
}
