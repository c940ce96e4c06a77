//! The i686 backdoor instructions (see `x86.rs` for the register contract).
//!
//! i686 runs out of registers (EBX, ESI and EBP cannot be `asm!` operands), so all seven are
//! loaded from and stored to a block in memory.

use crate::proto::Regs;
use core::arch::asm;
pub(super) use core::arch::x86::{__cpuid, CpuidResult};

/// Registers in the order the i686 blocks load and store them: EAX, EBX, ECX, EDX, ESI,
/// EDI, EBP at byte offsets 0, 4, 8, 12, 16, 20, 24.
type Block = [u32; 7];

fn to_block(r: &Regs) -> Block {
    [r.ax, r.bx, r.cx, r.dx, r.si, r.di, r.bp].map(|v| v as u32)
}

fn from_block(r: &mut Regs, b: &Block) {
    let [ax, bx, cx, dx, si, di, bp] = b.map(u64::from);
    *r = Regs {
        ax,
        bx,
        cx,
        dx,
        si,
        di,
        bp,
    };
}

/// Runs `$insn` with all seven registers loaded from the [`Block`] at `$block` and stores
/// them all back there. EBX, ESI and EBP cannot be operands on i686, so they are pushed,
/// loaded inside the block and popped; the block pointer itself travels on the stack while
/// the host owns EDI.
macro_rules! with_all_registers {
    ($insn:literal, $block:expr) => {
        asm!(
            "push ebp",
            "push ebx",
            "push esi",
            "push edi",
            "mov eax, [edi]",
            "mov ebx, [edi + 4]",
            "mov ecx, [edi + 8]",
            "mov edx, [edi + 12]",
            "mov esi, [edi + 16]",
            "mov ebp, [edi + 24]",
            "mov edi, [edi + 20]",
            "cld",
            $insn,
            "xchg edi, [esp]",
            "mov [edi], eax",
            "mov [edi + 4], ebx",
            "mov [edi + 8], ecx",
            "mov [edi + 12], edx",
            "mov [edi + 16], esi",
            "mov [edi + 24], ebp",
            "pop eax",
            "mov [edi + 20], eax",
            "pop esi",
            "pop ebx",
            "pop ebp",
            inout("edi") $block => _,
            out("eax") _,
            out("ecx") _,
            out("edx") _,
        )
    };
}

/// One low-bandwidth backdoor call: `in eax, dx`, with `regs` loaded into EAX..EDI before
/// and the host's answer stored back after.
///
/// # Safety
///
/// Port `lo16(regs.dx)` must be the VMware backdoor and reachable from this thread: either
/// a knock already succeeded with the access this thread holds, or the caller contains a
/// fault (the knock runs in a child process).
#[doc(alias = "inl")]
#[inline]
pub(crate) unsafe fn lb(regs: &mut Regs) {
    let mut block = to_block(regs);
    // SAFETY: the caller vouches for the port. The block is a live local array that the
    // asm reads and writes only within its 28 bytes; EBX, ESI, EBP are restored from the
    // stack, every other register is declared clobbered, and pushes are balanced by pops.
    unsafe { with_all_registers!("in eax, dx", block.as_mut_ptr()) };
    from_block(regs, &block);
}

/// One high-bandwidth guest-to-host transfer: `cld; rep outsb` of `data` (see the x86_64
/// version for the register contract).
///
/// # Safety
///
/// As for [`lb`]. The host reads `data.len()` bytes at `data`, which the slice makes valid.
#[doc(alias = "outsb")]
#[inline]
pub(crate) unsafe fn hb_out(regs: &mut Regs, data: &[u8]) {
    regs.si = data.as_ptr() as usize as u64;
    regs.cx = data.len() as u64;
    let mut block = to_block(regs);
    // SAFETY: as in `lb`; ESI/ECX describe exactly `data`, which `rep outsb` only reads.
    unsafe { with_all_registers!("rep outsb", block.as_mut_ptr()) };
    from_block(regs, &block);
}

/// One high-bandwidth host-to-guest transfer: `cld; rep insb` into `buf` (see the x86_64
/// version for the register contract).
///
/// # Safety
///
/// As for [`lb`]. The host writes at most `buf.len()` bytes at `buf`.
#[doc(alias = "insb")]
#[inline]
pub(crate) unsafe fn hb_in(regs: &mut Regs, buf: &mut [u8]) {
    regs.di = buf.as_mut_ptr() as usize as u64;
    regs.cx = buf.len() as u64;
    let mut block = to_block(regs);
    // SAFETY: as in `lb`; EDI/ECX describe exactly `buf`, so `rep insb` writes only there.
    unsafe { with_all_registers!("rep insb", block.as_mut_ptr()) };
    from_block(regs, &block);
}

/// One `vmcall` (Intel VT-x) with all seven registers loaded from `regs` and stored back.
/// The block's `cld` does not matter to it (it is no string instruction).
///
/// # Safety
///
/// The hypervisor must be VMware and take `vmcall` from this thread (a knock with it was
/// answered), or the caller contains a fault; elsewhere it raises #UD (SIGILL) or #GP. For a
/// high-bandwidth call ESI or EDI and ECX must describe a live buffer.
#[inline]
pub(crate) unsafe fn vmcall(regs: &mut Regs) {
    let mut block = to_block(regs);
    // SAFETY: as in `lb`; any buffer the registers describe is the caller's to vouch for.
    unsafe { with_all_registers!("vmcall", block.as_mut_ptr()) };
    from_block(regs, &block);
}

/// One `vmmcall` (AMD-V), as [`vmcall`].
///
/// # Safety
///
/// As for [`vmcall`], with `vmmcall`.
#[inline]
pub(crate) unsafe fn vmmcall(regs: &mut Regs) {
    let mut block = to_block(regs);
    // SAFETY: as in `vmcall`.
    unsafe { with_all_registers!("vmmcall", block.as_mut_ptr()) };
    from_block(regs, &block);
}
