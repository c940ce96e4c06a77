//! What every x86 platform shares: the backdoor instructions, the transport they travel by,
//! and the CPUID hints.
//!
//! | call | port instruction | registers in | registers out |
//! |---|---|---|---|
//! | LB | `in eax, dx` on port 0x5658 | EAX, EBX, ECX, EDX, ESI, EDI | EAX, EBX, ECX, EDX, ESI, EDI |
//! | HB out | `cld; rep outsb` on port 0x5659 | all seven; ESI = buffer, ECX = length | all seven |
//! | HB in | `cld; rep insb` on port 0x5659 | all seven; EDI = buffer, ECX = length | all seven |
//!
//! The hypercall forms (`vmcall`/`vmmcall`, flags in `lo16(EDX)`) are in `hypercall.rs`.
//! The hypervisor may change any of RAX, RBX, RCX, RDX, RSI, RDI, RBP and the flags, so every
//! one of them is either an output or saved and restored (`asm_x86_64.rs`, `asm_i686.rs`).

use super::asm::{self, __cpuid};
use super::hypercall::{self, Insn};
use crate::backdoor::transport::{self, Protection};
use crate::proto::Regs;
use crate::{Transport, TransportKind, VmwError};

/// Leaf whose EBX, ECX, EDX spell the hypervisor vendor.
const HYPERVISOR_LEAF: u32 = 0x4000_0000;
/// CPUID.1:ECX bit 31: "running under a hypervisor".
const HYPERVISOR_PRESENT: u32 = 1 << 31;
/// Intel's TDX enumeration leaf: EBX, EDX, ECX spell `IntelTDX    ` in a TDX guest
/// (`TDX_CPUID_LEAF_ID` in Linux's `arch/x86/coco/tdx/tdx.c`; open-vm-tools' `x86cpuid.h`
/// `CPUID_INTEL_TDX_VENDOR_STRING_FIXED`). The TDX module answers it, not the host.
const TDX_LEAF: u32 = 0x21;

/// The real backdoor instructions (the three calls of [`Backdoor`](crate::Backdoor)), by
/// one transport.
///
/// Only [`instructions`] creates one, and only after the backdoor answered a knock by that
/// transport, so a value of this type is evidence that the calls reach the VMware backdoor
/// and this thread may make them. Not `Send`/`Sync`: the evidence is about this thread's
/// access.
#[derive(Debug)]
pub(crate) struct RawCalls {
    transport: Transport,
    _this_thread_only: core::marker::PhantomData<*mut ()>,
}

/// The instructions of `transport`, for a caller that knows they are safe to run.
///
/// # Safety
///
/// A GETVERSION knock by `transport` on this machine was answered by the VMware backdoor,
/// and this thread holds the access the knock ran with for as long as the value lives.
pub(crate) unsafe fn instructions(transport: Transport) -> Result<RawCalls, VmwError> {
    Ok(RawCalls {
        transport,
        _this_thread_only: core::marker::PhantomData,
    })
}

/// One low-bandwidth call by `kind`, `regs` in the port form: what the contained knock runs.
///
/// # Safety
///
/// As [`asm::lb`] or [`hypercall::lb`]: the call reaches the VMware backdoor from this
/// thread, or the caller contains a fault.
pub(super) unsafe fn lb_by(kind: TransportKind, regs: &mut Regs) {
    // SAFETY: passed on from the caller.
    unsafe {
        match Insn::of(kind) {
            None => asm::lb(regs),
            Some(insn) => hypercall::lb(insn, regs),
        }
    }
}

impl RawCalls {
    pub(crate) fn lb(&mut self, regs: &mut Regs) {
        // SAFETY: a `RawCalls` exists only once the backdoor answered this transport with
        // this thread's access (`instructions`), so the call does not fault.
        unsafe { lb_by(self.transport.kind(), regs) }
    }

    pub(crate) fn hb_out(&mut self, regs: &mut Regs, data: &[u8]) {
        // SAFETY: as in `lb`; `hb_out` points ESI/ECX at `data`, which the host only reads.
        unsafe {
            match Insn::of(self.transport.kind()) {
                None => asm::hb_out(regs, data),
                Some(insn) => hypercall::hb_out(insn, regs, data),
            }
        }
    }

    pub(crate) fn hb_in(&mut self, regs: &mut Regs, buf: &mut [u8]) {
        // SAFETY: as in `lb`; `hb_in` points EDI/ECX at `buf`, so the host writes only there.
        unsafe {
            match Insn::of(self.transport.kind()) {
                None => asm::hb_in(regs, buf),
                Some(insn) => hypercall::hb_in(insn, regs, buf),
            }
        }
    }

    /// Whether high-bandwidth transfers may be made by this transport.
    pub(crate) fn high_bandwidth(&self) -> bool {
        self.transport.high_bandwidth()
    }
}

/// CPUID `leaf`, subleaf 0.
pub(super) fn cpuid(leaf: u32) -> asm::CpuidResult {
    // `__cpuid` is an unsafe fn in older Rust releases and safe in newer ones; the block
    // serves both.
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every CPU these targets run on (x86_64, and i686 and later); it
    // reads identification registers and has no other effect.
    unsafe {
        __cpuid(leaf)
    }
}

/// The guest's protection as CPUID shows it (a TDX guest), else `os`'s finding.
pub(super) fn protection(os: impl FnOnce() -> Protection) -> Protection {
    let max_basic = cpuid(0).eax;
    let tdx = max_basic >= TDX_LEAF && {
        let leaf = cpuid(TDX_LEAF);
        says_tdx([leaf.ebx, leaf.edx, leaf.ecx])
    };
    if tdx {
        Protection::Tdx
    } else {
        os()
    }
}

/// The transport for this machine, given its `protection`.
pub(super) fn detect(protection: Protection) -> Result<Transport, VmwError> {
    transport::choose(protection, hypercall::advertised())
}

/// Whether EBX, EDX, ECX of leaf 0x21 spell `IntelTDX    `.
fn says_tdx(regs: [u32; 3]) -> bool {
    &spell(regs) == b"IntelTDX    "
}

/// Three registers as the 12 ASCII bytes they hold.
fn spell(regs: [u32; 3]) -> [u8; 12] {
    let mut out = [0u8; 12];
    for (dst, reg) in out.chunks_exact_mut(4).zip(regs) {
        dst.copy_from_slice(&reg.to_le_bytes());
    }
    out
}

/// Whether the CPU says it runs under VMware: CPUID.1:ECX bit 31 (hypervisor present) and the
/// vendor signature `"VMwareVMware"` at leaf 0x40000000.
pub(crate) fn is_vmware_cpu() -> bool {
    let (leaf1, vendor) = (cpuid(1), cpuid(HYPERVISOR_LEAF));
    says_vmware(leaf1.ecx, [vendor.ebx, vendor.ecx, vendor.edx])
}

/// The decision, apart from the instruction: hypervisor bit set and the exact signature.
fn says_vmware(leaf1_ecx: u32, vendor: [u32; 3]) -> bool {
    leaf1_ecx & HYPERVISOR_PRESENT != 0 && &spell(vendor) == b"VMwareVMware"
}

#[cfg(test)]
mod tests {
    use super::{says_tdx, says_vmware};

    const VMWARE: [u32; 3] = [0x6177_4D56, 0x4D56_6572, 0x6572_6177];
    const KVM: [u32; 3] = [0x4B4D_564B, 0x564B_4D56, 0x0000_004D];

    #[test]
    fn needs_both_the_hypervisor_bit_and_the_signature() {
        assert!(says_vmware(1 << 31, VMWARE));
        assert!(
            !says_vmware(0, VMWARE),
            "signature without the hypervisor bit"
        );
        assert!(!says_vmware(1 << 31, KVM), "another hypervisor");
    }

    #[test]
    fn tdx_by_its_leaf_0x21_signature() {
        // EBX "Inte", EDX "lTDX", ECX "    ": open-vm-tools' raw "Inte    lTDX" is EBX,
        // ECX, EDX.
        let w = |s: &[u8; 4]| u32::from_le_bytes(*s);
        assert!(says_tdx([w(b"Inte"), w(b"lTDX"), w(b"    ")]));
        assert!(
            !says_tdx([w(b"Inte"), w(b"    "), w(b"lTDX")]),
            "register order"
        );
        assert!(!says_tdx([0; 3]), "a CPU without the leaf");
    }
}
