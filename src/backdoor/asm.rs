//! The crate's only inline assembly: one small function per backdoor register contract.
//!
//! | function | instruction | registers in | registers out |
//! |---|---|---|---|
//! | [`lb`] | `in eax, dx` on port 0x5658 | EAX, EBX, ECX, EDX, ESI, EDI | EAX, EBX, ECX, EDX, ESI, EDI |
//! | [`hb_out`] | `cld; rep outsb` on port 0x5659 | all seven; ESI = buffer, ECX = length | all seven |
//! | [`hb_in`] | `cld; rep insb` on port 0x5659 | all seven; EDI = buffer, ECX = length | all seven |
//!
//! The hypervisor may change any of RAX, RBX, RCX, RDX, RSI, RDI, RBP and the flags, so every
//! one of them is either an output or saved and restored. Two of them cannot be `asm!`
//! operands: RBX (reserved by LLVM on x86_64) and RBP (the frame pointer); on i686 ESI is
//! reserved as well. x86_64 swaps RBX and RBP with scratch registers inside the block; i686,
//! which runs out of registers, loads and stores all seven through a block in memory.
//!
//! [`Asm`] wraps the three functions as a [`Transport`], the seam every protocol layer above
//! is written against. On targets without x86 port I/O, [`Asm`] is an empty enum: it cannot be
//! created, so the layers above compile everywhere and the guard reports `Unsupported`.

use crate::proto::{Regs, Transport};

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
pub(crate) use x86::{hb_in, hb_out, lb};

/// The real backdoor instructions as a [`Transport`].
///
/// Zero-sized. Only [`Asm::new`] creates one, and only after the backdoor answered, so a
/// value of this type is evidence that the port is the VMware backdoor and this thread may use
/// it. Not `Send`/`Sync`: the evidence is about this thread's I/O access.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
#[derive(Debug)]
pub(crate) struct Asm {
    _this_thread_only: core::marker::PhantomData<*mut ()>,
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
impl Asm {
    /// # Safety
    ///
    /// A GETVERSION knock on this machine was answered by the VMware backdoor, and this thread
    /// still holds the I/O access the knock ran with (the same guard, not yet released).
    pub(crate) unsafe fn new() -> Asm {
        Asm {
            _this_thread_only: core::marker::PhantomData,
        }
    }
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
impl Transport for Asm {
    fn lb(&mut self, regs: &mut Regs) {
        // SAFETY: an `Asm` exists only once the backdoor answered with this thread's access
        // (`Asm::new`), so the port is VMware's and the call does not fault.
        unsafe { lb(regs) }
    }

    fn hb_out(&mut self, regs: &mut Regs, data: &[u8]) {
        // SAFETY: as in `lb`; `hb_out` points ESI/ECX at `data`, which the host only reads.
        unsafe { hb_out(regs, data) }
    }

    fn hb_in(&mut self, regs: &mut Regs, buf: &mut [u8]) {
        // SAFETY: as in `lb`; `hb_in` points EDI/ECX at `buf`, so the host writes only there.
        unsafe { hb_in(regs, buf) }
    }
}

/// Stand-in on targets without x86 port I/O: no value exists, so no call can be made.
#[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
#[derive(Debug)]
pub(crate) enum Asm {}

#[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
impl Transport for Asm {
    fn lb(&mut self, _: &mut Regs) {
        match *self {}
    }
    fn hb_out(&mut self, _: &mut Regs, _: &[u8]) {
        match *self {}
    }
    fn hb_in(&mut self, _: &mut Regs, _: &mut [u8]) {
        match *self {}
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use crate::proto::Regs;
    use core::arch::asm;

    /// One low-bandwidth backdoor call: `in eax, dx`, with `regs` loaded into RAX..RDI before
    /// and the host's answer stored back after. RBP is not part of this contract.
    ///
    /// # Safety
    ///
    /// Port `lo16(regs.dx)` must be the VMware backdoor and reachable from this thread: either
    /// a knock already succeeded with the access this thread holds, or the caller contains a
    /// fault (the knock runs in a child process). Elsewhere the `in` faults (SIGSEGV) without
    /// I/O privilege, or talks to whatever device sits on the port with it.
    #[doc(alias = "inl")]
    #[inline]
    pub(crate) unsafe fn lb(regs: &mut Regs) {
        // SAFETY: the caller vouches for the port (see above). RBX is swapped with a scratch
        // register around the `in` and swapped back, so the compiler's RBX survives; every
        // other register the host may change is an output; no stack is touched.
        unsafe {
            asm!(
                "xchg rbx, {bx}",
                "in eax, dx",
                "xchg rbx, {bx}",
                bx = inout(reg) regs.bx,
                inout("rax") regs.ax,
                inout("rcx") regs.cx,
                inout("rdx") regs.dx,
                inout("rsi") regs.si,
                inout("rdi") regs.di,
                options(nostack),
            );
        }
    }

    /// One high-bandwidth guest-to-host transfer: `cld; rep outsb` of `data` to port
    /// `lo16(regs.dx)`. Sets `regs.si`/`regs.cx` to `data`; EAX, EBX, EDX, EDI and EBP come
    /// from `regs`; the host's registers are stored back (the status is `hi16(regs.bx)`).
    ///
    /// # Safety
    ///
    /// As for [`lb`]. The host reads `data.len()` bytes at `data`, which the slice makes valid.
    #[doc(alias = "outsb")]
    #[inline]
    pub(crate) unsafe fn hb_out(regs: &mut Regs, data: &[u8]) {
        regs.si = data.as_ptr() as u64;
        regs.cx = data.len() as u64;
        // SAFETY: the caller vouches for the port. RSI/RCX describe exactly `data`, so
        // `rep outsb` reads only the slice (DF cleared first, so it walks forward). RBX and
        // RBP are swapped with scratch registers the host does not touch, and swapped back.
        unsafe {
            asm!(
                "xchg rbx, {bx}",
                "xchg rbp, {bp}",
                "cld",
                "rep outsb",
                "xchg rbp, {bp}",
                "xchg rbx, {bx}",
                bx = inout(reg) regs.bx,
                bp = inout(reg) regs.bp,
                inout("rax") regs.ax,
                inout("rcx") regs.cx,
                inout("rdx") regs.dx,
                inout("rsi") regs.si,
                inout("rdi") regs.di,
                options(nostack),
            );
        }
    }

    /// One high-bandwidth host-to-guest transfer: `cld; rep insb` from port `lo16(regs.dx)`
    /// into `buf`. Sets `regs.di`/`regs.cx` to `buf`; EAX, EBX, EDX, ESI and EBP come from
    /// `regs`; the host's registers are stored back (the status is `hi16(regs.bx)`).
    ///
    /// # Safety
    ///
    /// As for [`lb`]. The host writes at most `buf.len()` bytes at `buf`, which the exclusive
    /// borrow makes valid.
    #[doc(alias = "insb")]
    #[inline]
    pub(crate) unsafe fn hb_in(regs: &mut Regs, buf: &mut [u8]) {
        regs.di = buf.as_mut_ptr() as u64;
        regs.cx = buf.len() as u64;
        // SAFETY: the caller vouches for the port. RDI/RCX describe exactly `buf`, so
        // `rep insb` writes only the slice (DF cleared first). RBX and RBP are swapped with
        // scratch registers the host does not touch, and swapped back.
        unsafe {
            asm!(
                "xchg rbx, {bx}",
                "xchg rbp, {bp}",
                "cld",
                "rep insb",
                "xchg rbp, {bp}",
                "xchg rbx, {bx}",
                bx = inout(reg) regs.bx,
                bp = inout(reg) regs.bp,
                inout("rax") regs.ax,
                inout("rcx") regs.cx,
                inout("rdx") regs.dx,
                inout("rsi") regs.si,
                inout("rdi") regs.di,
                options(nostack),
            );
        }
    }
}

#[cfg(target_arch = "x86")]
mod x86 {
    use crate::proto::Regs;
    use core::arch::asm;

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
}
