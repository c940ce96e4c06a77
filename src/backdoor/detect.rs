//! CPUID-based detection: cheap, harmless, and only a hint.

/// Leaf whose EBX, ECX, EDX spell the hypervisor vendor.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
const HYPERVISOR_LEAF: u32 = 0x4000_0000;
/// CPUID.1:ECX bit 31: "running under a hypervisor".
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
const HYPERVISOR_PRESENT: u32 = 1 << 31;

/// Whether the CPU says it runs under VMware: CPUID.1:ECX bit 31 (hypervisor present) and the
/// vendor signature `"VMwareVMware"` at leaf 0x40000000. Always `false` on non-x86 targets.
///
/// This is a hint, not proof in either direction: a hypervisor may hide or change its
/// signature while the backdoor still answers. [`probe_backdoor`](crate::probe_backdoor)
/// asks the backdoor itself, safely.
pub fn is_vmware_cpu() -> bool {
    #[cfg(target_arch = "x86")]
    use core::arch::x86::__cpuid;
    #[cfg(target_arch = "x86_64")]
    use core::arch::x86_64::__cpuid;

    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        // `__cpuid` is an unsafe fn in older Rust releases and safe in newer ones; the block
        // serves both.
        #[allow(unused_unsafe)]
        // SAFETY: CPUID exists on every CPU these targets run on (x86_64, and i686 and
        // later); it reads identification registers and has no other effect.
        let (leaf1, vendor) = unsafe { (__cpuid(1), __cpuid(HYPERVISOR_LEAF)) };
        says_vmware(leaf1.ecx, [vendor.ebx, vendor.ecx, vendor.edx])
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
    {
        false
    }
}

/// The decision, apart from the instruction: hypervisor bit set and the exact signature.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
fn says_vmware(leaf1_ecx: u32, vendor: [u32; 3]) -> bool {
    let mut signature = [0u8; 12];
    for (dst, reg) in signature.chunks_exact_mut(4).zip(vendor) {
        dst.copy_from_slice(&reg.to_le_bytes());
    }
    leaf1_ecx & HYPERVISOR_PRESENT != 0 && &signature == b"VMwareVMware"
}

#[cfg(all(test, any(target_arch = "x86", target_arch = "x86_64")))]
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
