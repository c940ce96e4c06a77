//! The x86_64 backdoor instructions (see `x86.rs` for the register contract).
//!
//! RBX (reserved by LLVM) and RBP (the frame pointer) cannot be `asm!` operands: each block
//! swaps them with scratch registers around the instruction.

use crate::proto::Regs;
use core::arch::asm;
pub(super) use core::arch::x86_64::{__cpuid, CpuidResult};

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

/// Defines a hypercall: `$insn` (`vmcall` or `vmmcall`) with all seven registers of `regs`
/// loaded before and the hypervisor's registers stored back after. No `rep`, no direction
/// flag: the instruction is not a string instruction. RBX and RBP are swapped with scratch
/// registers around it, as in `hb_out`.
macro_rules! hypercall_fn {
    ($(#[$doc:meta])* $name:ident, $insn:literal) => {
        $(#[$doc])*
        ///
        /// # Safety
        ///
        /// The hypervisor must be VMware and take this instruction from this thread (a knock
        /// with it was answered), or the caller contains a fault (the knock runs in a child
        /// process): elsewhere it raises #UD (SIGILL), or #GP, or another hypervisor
        /// answers it. For a high-bandwidth call RSI or RDI and RCX must describe a live
        /// buffer the hypervisor may read (guest-to-host) or write (host-to-guest).
        #[inline]
        pub(crate) unsafe fn $name(regs: &mut Regs) {
            // SAFETY: the caller vouches for the instruction and for any buffer the registers
            // describe (see above). RBX and RBP are swapped with scratch registers the
            // hypervisor does not see and swapped back; every other register it may change
            // is an output; memory is not marked untouched, so a buffer the hypervisor
            // wrote is read afresh; no stack is used.
            unsafe {
                asm!(
                    "xchg rbx, {bx}",
                    "xchg rbp, {bp}",
                    $insn,
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
    };
}

hypercall_fn!(
    /// One `vmcall` (Intel VT-x) with all seven registers in and out.
    vmcall,
    "vmcall"
);
hypercall_fn!(
    /// One `vmmcall` (AMD-V) with all seven registers in and out.
    vmmcall,
    "vmmcall"
);
