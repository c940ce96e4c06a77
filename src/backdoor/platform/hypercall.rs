//! The hypercall transport: the backdoor's three calls as `vmcall` / `vmmcall`, and which
//! of them CPUID advertises.
//!
//! The protocol code speaks the port form (`lo16(EDX)` = 0x5658 or 0x5659); this file turns
//! a call into its hypercall form and the answer back:
//!
//! | call | `lo16(EDX)` sent | buffer | registers back |
//! |---|---|---|---|
//! | LB | 0 (`BDOOR_FLAGS_LB \| BDOOR_FLAGS_READ`) | none | all six, as the port call |
//! | HB out | 3 (`BDOOR_FLAGS_HB \| BDOOR_FLAGS_WRITE`) | ESI, ECX | EBX status (the rest undefined) |
//! | HB in | 1 (`BDOOR_FLAGS_HB`, read) | EDI, ECX | EBX status (the rest undefined) |
//!
//! (open-vm-tools `lib/include/backdoor_def.h`, `lib/backdoor/backdoor.c`; Linux
//! `arch/x86/include/asm/vmware.h`.) The instruction is plain: no `rep`, no direction flag.
//! A register the hypervisor left exactly as the hypercall sent it reads as the port form
//! sent it, so "left untouched" means the same to the protocol code on both transports
//! (how a host passes over an unknown command).

use super::asm;
use crate::proto::Regs;
use crate::TransportKind;

/// `lo16(EDX)` of a low-bandwidth hypercall.
const FLAGS_LB: u16 = 0;
/// `BDOOR_FLAGS_HB`: a high-bandwidth transfer.
const FLAGS_HB: u16 = 1 << 0;
/// `BDOOR_FLAGS_WRITE`: guest to host (clear: host to guest, `BDOOR_FLAGS_READ`).
const FLAGS_WRITE: u16 = 1 << 1;

/// Leaf whose EAX is the highest hypervisor leaf and EBX, ECX, EDX the vendor.
const HYPERVISOR_LEAF: u32 = 0x4000_0000;
/// VMware's feature leaf (`CPUID_VMW_FEATURES`): ECX bit 0 VMMCALL, bit 1 VMCALL.
const VMW_FEATURES_LEAF: u32 = 0x4000_0010;
/// `CPUID_VMW_FEATURES` ECX: the host takes `vmmcall`.
const ECX_VMMCALL: u32 = 1 << 0;
/// `CPUID_VMW_FEATURES` ECX: the host takes `vmcall`.
const ECX_VMCALL: u32 = 1 << 1;

/// The hypercall instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Insn {
    Vmcall,
    Vmmcall,
}

impl Insn {
    /// The instruction of a hypercall transport; `None` for the port.
    pub(super) fn of(kind: TransportKind) -> Option<Insn> {
        match kind {
            TransportKind::Vmcall => Some(Insn::Vmcall),
            TransportKind::Vmmcall => Some(Insn::Vmmcall),
            TransportKind::Port => None,
        }
    }

    /// # Safety
    ///
    /// As [`asm::vmcall`]: the hypervisor takes the instruction, or a fault is contained,
    /// and any buffer the registers describe is live.
    unsafe fn call(self, regs: &mut Regs) {
        // SAFETY: passed on from the caller.
        unsafe {
            match self {
                Insn::Vmcall => asm::vmcall(regs),
                Insn::Vmmcall => asm::vmmcall(regs),
            }
        }
    }
}

/// `regs.dx` with `lo16` replaced by `flags`.
fn with_flags(dx: u64, flags: u16) -> u64 {
    (dx & !0xFFFF) | u64::from(flags)
}

/// One low-bandwidth call by hypercall; `regs` in and out in the port form.
///
/// # Safety
///
/// As [`asm::vmcall`]: a knock with `insn` was answered by VMware with the access this
/// thread holds, or the caller contains a fault.
pub(super) unsafe fn lb(insn: Insn, regs: &mut Regs) {
    let port_dx = regs.dx;
    regs.dx = with_flags(port_dx, FLAGS_LB);
    let sent_dx = regs.dx;
    // SAFETY: passed on from the caller; an LB call describes no buffer.
    unsafe { insn.call(regs) };
    if regs.dx == sent_dx {
        regs.dx = port_dx;
    }
}

/// One high-bandwidth guest-to-host transfer of `data` by hypercall: ESI/ECX describe
/// `data`, `lo16(EDX)` = 3. EBX has the status after it.
///
/// # Safety
///
/// As [`lb`]. The hypervisor reads `data.len()` bytes at `data`, which the slice makes valid.
pub(super) unsafe fn hb_out(insn: Insn, regs: &mut Regs, data: &[u8]) {
    regs.si = data.as_ptr() as usize as u64;
    regs.cx = data.len() as u64;
    let port_dx = regs.dx;
    regs.dx = with_flags(port_dx, FLAGS_HB | FLAGS_WRITE);
    let sent_dx = regs.dx;
    // SAFETY: passed on from the caller; RSI/RCX describe exactly `data`.
    unsafe { insn.call(regs) };
    if regs.dx == sent_dx {
        regs.dx = port_dx;
    }
}

/// One high-bandwidth host-to-guest transfer into `buf` by hypercall: EDI/ECX describe
/// `buf`, `lo16(EDX)` = 1. EBX has the status after it.
///
/// # Safety
///
/// As [`lb`]. The hypervisor writes at most `buf.len()` bytes at `buf`, which the exclusive
/// borrow makes valid.
pub(super) unsafe fn hb_in(insn: Insn, regs: &mut Regs, buf: &mut [u8]) {
    regs.di = buf.as_mut_ptr() as usize as u64;
    regs.cx = buf.len() as u64;
    let port_dx = regs.dx;
    regs.dx = with_flags(port_dx, FLAGS_HB);
    let sent_dx = regs.dx;
    // SAFETY: passed on from the caller; RDI/RCX describe exactly `buf`.
    unsafe { insn.call(regs) };
    if regs.dx == sent_dx {
        regs.dx = port_dx;
    }
}

/// The hypercall CPUID advertises, in open-vm-tools' order: VMCALL, then VMMCALL; `None`
/// (the ports) unless CPUID names VMware with the feature leaf.
pub(super) fn advertised() -> Option<TransportKind> {
    from_features(features_ecx())
}

/// Whether CPUID names VMware and advertises the hypercall `kind` (false for the port).
#[allow(dead_code)] // only where a knock cannot be contained
pub(super) fn advertises(kind: TransportKind) -> bool {
    let bit = match kind {
        TransportKind::Vmcall => ECX_VMCALL,
        TransportKind::Vmmcall => ECX_VMMCALL,
        TransportKind::Port => return false,
    };
    features_ecx().is_some_and(|ecx| ecx & bit != 0)
}

/// The feature leaf's ECX, where CPUID names VMware and has the leaf.
fn features_ecx() -> Option<u32> {
    if !super::x86::is_vmware_cpu() {
        return None;
    }
    let max = super::x86::cpuid(HYPERVISOR_LEAF).eax;
    (max >= VMW_FEATURES_LEAF).then(|| super::x86::cpuid(VMW_FEATURES_LEAF).ecx)
}

/// The decision of [`advertised`] on the feature leaf's ECX (`None`: no such leaf).
fn from_features(ecx: Option<u32>) -> Option<TransportKind> {
    let ecx = ecx?;
    if ecx & ECX_VMCALL != 0 {
        Some(TransportKind::Vmcall)
    } else if ecx & ECX_VMMCALL != 0 {
        Some(TransportKind::Vmmcall)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmcall_first_then_vmmcall_else_ports() {
        assert_eq!(from_features(None), None, "no feature leaf");
        assert_eq!(from_features(Some(0)), None);
        assert_eq!(
            from_features(Some(ECX_VMMCALL)),
            Some(TransportKind::Vmmcall)
        );
        assert_eq!(from_features(Some(ECX_VMCALL)), Some(TransportKind::Vmcall));
        assert_eq!(
            from_features(Some(ECX_VMCALL | ECX_VMMCALL)),
            Some(TransportKind::Vmcall),
            "both: VMCALL, as open-vm-tools (Linux would use the ports)"
        );
        assert_eq!(
            from_features(Some(!3)),
            None,
            "other bits are not hypercalls"
        );
    }

    #[test]
    fn flags_as_backdoor_def_h_names_them() {
        assert_eq!(FLAGS_LB, 0);
        assert_eq!(FLAGS_HB | FLAGS_WRITE, 3, "HB out");
        assert_eq!(FLAGS_HB, 1, "HB in");
        assert_eq!(with_flags(0xABCD_5658, FLAGS_LB), 0xABCD_0000);
    }
}
