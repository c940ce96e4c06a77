//! What every x86 platform shares: the backdoor instructions and the CPUID hint.
//!
//! | call | instruction | registers in | registers out |
//! |---|---|---|---|
//! | LB | `in eax, dx` on port 0x5658 | EAX, EBX, ECX, EDX, ESI, EDI | EAX, EBX, ECX, EDX, ESI, EDI |
//! | HB out | `cld; rep outsb` on port 0x5659 | all seven; ESI = buffer, ECX = length | all seven |
//! | HB in | `cld; rep insb` on port 0x5659 | all seven; EDI = buffer, ECX = length | all seven |
//!
//! The hypervisor may change any of RAX, RBX, RCX, RDX, RSI, RDI, RBP and the flags, so every
//! one of them is either an output or saved and restored (`asm_x86_64.rs`, `asm_i686.rs`).

use super::asm::{self, __cpuid};
use crate::proto::Regs;

/// Leaf whose EBX, ECX, EDX spell the hypervisor vendor.
const HYPERVISOR_LEAF: u32 = 0x4000_0000;
/// CPUID.1:ECX bit 31: "running under a hypervisor".
const HYPERVISOR_PRESENT: u32 = 1 << 31;

/// The real backdoor instructions (the three calls of [`Backdoor`](crate::Backdoor)).
///
/// Zero-sized. Only [`instructions`] creates one, and only after the backdoor answered, so a
/// value of this type is evidence that the port is the VMware backdoor and this thread may use
/// it. Not `Send`/`Sync`: the evidence is about this thread's I/O access.
#[derive(Debug)]
pub(crate) struct RawCalls {
    _this_thread_only: core::marker::PhantomData<*mut ()>,
}

/// The instructions, for a caller that knows they are safe to run.
///
/// # Safety
///
/// A GETVERSION knock on this machine was answered by the VMware backdoor, and this thread
/// holds the I/O access the knock ran with for as long as the value lives.
pub(crate) unsafe fn instructions() -> Result<RawCalls, crate::VmwError> {
    Ok(RawCalls {
        _this_thread_only: core::marker::PhantomData,
    })
}

impl RawCalls {
    pub(crate) fn lb(&mut self, regs: &mut Regs) {
        // SAFETY: an `RawCalls` exists only once the backdoor answered with this thread's
        // access (`instructions`), so the port is VMware's and the call does not fault.
        unsafe { asm::lb(regs) }
    }

    pub(crate) fn hb_out(&mut self, regs: &mut Regs, data: &[u8]) {
        // SAFETY: as in `lb`; `hb_out` points ESI/ECX at `data`, which the host only reads.
        unsafe { asm::hb_out(regs, data) }
    }

    pub(crate) fn hb_in(&mut self, regs: &mut Regs, buf: &mut [u8]) {
        // SAFETY: as in `lb`; `hb_in` points EDI/ECX at `buf`, so the host writes only there.
        unsafe { asm::hb_in(regs, buf) }
    }
}

/// Whether the CPU says it runs under VMware: CPUID.1:ECX bit 31 (hypervisor present) and the
/// vendor signature `"VMwareVMware"` at leaf 0x40000000.
pub(crate) fn is_vmware_cpu() -> bool {
    // `__cpuid` is an unsafe fn in older Rust releases and safe in newer ones; the block
    // serves both.
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every CPU these targets run on (x86_64, and i686 and later); it
    // reads identification registers and has no other effect.
    let (leaf1, vendor) = unsafe { (__cpuid(1), __cpuid(HYPERVISOR_LEAF)) };
    says_vmware(leaf1.ecx, [vendor.ebx, vendor.ecx, vendor.edx])
}

/// The decision, apart from the instruction: hypervisor bit set and the exact signature.
fn says_vmware(leaf1_ecx: u32, vendor: [u32; 3]) -> bool {
    let mut signature = [0u8; 12];
    for (dst, reg) in signature.chunks_exact_mut(4).zip(vendor) {
        dst.copy_from_slice(&reg.to_le_bytes());
    }
    leaf1_ecx & HYPERVISOR_PRESENT != 0 && &signature == b"VMwareVMware"
}

#[cfg(test)]
mod tests {
    use super::says_vmware;

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
}
