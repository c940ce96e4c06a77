//! Hand-written guest instructions for the simulator tests (deliberately not the library:
//! these tests check the simulator against the protocol, independently of the guest code).
//!
//! Each call loads all seven protocol registers from a frame, executes one backdoor
//! instruction, and stores all seven back. RBX and RBP cannot be asm operands, so they are
//! saved, loaded, stored and restored inside the block.
#![allow(dead_code)]

use std::arch::asm;

use vmw_backdoor::proto::Regs;

/// The registers in a fixed layout the asm can address.
#[repr(C)]
#[derive(Clone, Copy)]
struct Frame {
    ax: u64,
    bx: u64,
    cx: u64,
    dx: u64,
    si: u64,
    di: u64,
    bp: u64,
}

macro_rules! backdoor_fn {
    ($(#[$doc:meta])* $name:ident, $($insn:literal),+) => {
        $(#[$doc])*
        pub fn $name(r: &mut Regs) {
            let mut f = Frame { ax: r.ax, bx: r.bx, cx: r.cx, dx: r.dx, si: r.si, di: r.di, bp: r.bp };
            // SAFETY: the block saves and restores RBX, RBP and its own stack use; every other
            // register it writes is declared clobbered. Memory it touches through RSI/RDI
            // is what the caller pointed them at (a live buffer), or nothing for LB calls.
            unsafe {
                asm!(
                    "push rbx",
                    "push rbp",
                    "push r8",
                    "mov rax, [r8]",
                    "mov rbx, [r8 + 8]",
                    "mov rcx, [r8 + 16]",
                    "mov rdx, [r8 + 24]",
                    "mov rsi, [r8 + 32]",
                    "mov rdi, [r8 + 40]",
                    "mov rbp, [r8 + 48]",
                    $($insn,)+
                    "xchg rax, [rsp]",
                    "mov [rax + 8], rbx",
                    "mov [rax + 16], rcx",
                    "mov [rax + 24], rdx",
                    "mov [rax + 32], rsi",
                    "mov [rax + 40], rdi",
                    "mov [rax + 48], rbp",
                    "pop rcx",
                    "mov [rax], rcx",
                    "pop rbp",
                    "pop rbx",
                    in("r8") &mut f as *mut Frame,
                    out("rax") _, out("rcx") _, out("rdx") _, out("rsi") _, out("rdi") _,
                );
            }
            *r = Regs { ax: f.ax, bx: f.bx, cx: f.cx, dx: f.dx, si: f.si, di: f.di, bp: f.bp };
        }
    };
}

backdoor_fn!(
    /// `in eax, dx`: the low-bandwidth call.
    lb_in,
    "in eax, dx"
);
backdoor_fn!(
    /// `out dx, eax`: the low-bandwidth call as the published 0.2.4 crate makes it.
    lb_out,
    "out dx, eax"
);
backdoor_fn!(
    /// `cld; rep outsb`: high-bandwidth guest-to-host (buffer at RSI, count in RCX).
    hb_out,
    "cld",
    "rep outsb"
);
backdoor_fn!(
    /// `cld; rep insb`: high-bandwidth host-to-guest (buffer at RDI, count in RCX).
    hb_in,
    "cld",
    "rep insb"
);
backdoor_fn!(
    /// `std; rep insb; cld`: the same, walking downwards from RDI (direction flag set).
    hb_in_down,
    "std",
    "rep insb",
    "cld"
);
backdoor_fn!(
    /// `std; rep outsb; cld`: guest-to-host walking downwards from RSI.
    hb_out_down,
    "std",
    "rep outsb",
    "cld"
);
backdoor_fn!(
    /// `vmmcall`: the AMD hypercall form (flags instead of a port in `lo16(EDX)`).
    vmmcall,
    "vmmcall"
);

/// The magic every call carries in EAX.
pub const MAGIC: u64 = 0x564D_5868;

/// A low-bandwidth call with the given command (ECX) and the rest zero but the port.
pub fn lb_cmd(ecx: u64, ebx: u64) -> Regs {
    let mut r = Regs {
        ax: MAGIC,
        bx: ebx,
        cx: ecx,
        dx: 0x5658,
        ..Regs::default()
    };
    lb_in(&mut r);
    r
}
