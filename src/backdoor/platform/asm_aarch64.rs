//! The arm64 backdoor instructions: the x86 calls described in X7 and trapped with
//! `mrs xzr, mdccsr_el0` (see `arm64.rs` for the register contract, and
//! [`crate::proto::arm64`] for the numbers).
//!
//! X0..X6 are all free `asm!` operands on arm64 (unlike RBX and RBP on x86_64), so the
//! blocks load and store [`Regs`] directly. VMware may change X0..X5 on a low-bandwidth call
//! and X0..X6 on a high-bandwidth one, and any guest memory (open-vm-tools'
//! `backdoorGcc64_arm64.c`): each of those is an output, X7 is clobbered too, and no block
//! claims memory untouched. The flags are left to the compiler's default (clobbered),
//! although VMware documents it does not change them.

use crate::proto::arm64::{X7_HB_IN, X7_HB_OUT, X7_LB};
use crate::proto::Regs;
use core::arch::asm;

/// One low-bandwidth backdoor call: `in eax, dx` described in X7, with `regs` loaded into
/// X0..X5 before and the host's answer stored back after. X6 (EBP) is not part of this
/// contract.
///
/// # Safety
///
/// The machine must be a VMware VM whose backdoor this thread may use (a knock already
/// succeeded), or the caller contains a fault (the knock runs in a child process):
/// elsewhere the `mrs` traps to the guest's own kernel, which raises SIGILL.
#[inline]
pub(crate) unsafe fn lb(regs: &mut Regs) {
    // SAFETY: the caller vouches for the trap (see above). Every register the host may
    // change is an output; the block uses no stack.
    unsafe {
        asm!(
            "mrs xzr, mdccsr_el0",
            inout("x0") regs.ax,
            inout("x1") regs.bx,
            inout("x2") regs.cx,
            inout("x3") regs.dx,
            inout("x4") regs.si,
            inout("x5") regs.di,
            inout("x7") X7_LB => _,
            options(nostack),
        );
    }
}

/// One high-bandwidth guest-to-host transfer: `rep outsb` (DF clear) of `data`. Sets
/// `regs.si` (X4) and `regs.cx` (X2) to `data`; X0, X1, X3, X5 and X6 come from `regs`; the
/// host's registers are stored back (the status is `hi16(regs.bx)`).
///
/// # Safety
///
/// As for [`lb`]. The host reads `data.len()` bytes at `data`, which the slice makes valid.
#[inline]
pub(crate) unsafe fn hb_out(regs: &mut Regs, data: &[u8]) {
    regs.si = data.as_ptr() as u64;
    regs.cx = data.len() as u64;
    // SAFETY: the caller vouches for the trap. X4/X2 describe exactly `data` and W7 says
    // DF is clear, so the host reads only the slice, forwards.
    unsafe { hb(regs, X7_HB_OUT) }
}

/// One high-bandwidth host-to-guest transfer: `rep insb` (DF clear) into `buf`. Sets
/// `regs.di` (X5) and `regs.cx` (X2) to `buf`; X0, X1, X3, X4 and X6 come from `regs`; the
/// host's registers are stored back (the status is `hi16(regs.bx)`).
///
/// # Safety
///
/// As for [`lb`]. The host writes at most `buf.len()` bytes at `buf`, which the exclusive
/// borrow makes valid.
#[inline]
pub(crate) unsafe fn hb_in(regs: &mut Regs, buf: &mut [u8]) {
    regs.di = buf.as_mut_ptr() as u64;
    regs.cx = buf.len() as u64;
    // SAFETY: the caller vouches for the trap. X5/X2 describe exactly `buf` and W7 says DF
    // is clear, so the host writes only the slice.
    unsafe { hb(regs, X7_HB_IN) }
}

/// The high-bandwidth block: all seven registers in and out, X7 = `x7`.
///
/// # Safety
///
/// As for [`hb_out`] or [`hb_in`], whichever `x7` describes.
#[inline]
unsafe fn hb(regs: &mut Regs, x7: u64) {
    // SAFETY: passed on from the callers. Every register the host may change is an output;
    // memory is not claimed untouched, so a buffer the host wrote is read afresh.
    unsafe {
        asm!(
            "mrs xzr, mdccsr_el0",
            inout("x0") regs.ax,
            inout("x1") regs.bx,
            inout("x2") regs.cx,
            inout("x3") regs.dx,
            inout("x4") regs.si,
            inout("x5") regs.di,
            inout("x6") regs.bp,
            inout("x7") x7 => _,
            options(nostack),
        );
    }
}
