//! What a faulting instruction does under the simulated machine: the backdoor forms go to
//! the host model, other port I/O behaves like an empty port (reads all ones, writes
//! vanish) when the machine lets the thread touch the port, and anything else keeps its
//! fault. Which accesses execute is the host model's decision ([`Host`]); this file turns
//! instructions into host calls and back into registers and guest memory.

#![forbid(unsafe_code)]

use std::sync::{Mutex, MutexGuard};

use libc::pid_t;

use super::decode::{self, Insn, Op, PortArg, PortIo, Seg, MAX_INSN};
use super::sys::{self, UserRegs};
use super::{cpuid, lock_host, Thread};
use crate::proto::{self, Regs, HB_PORT, LB_PORT, MAX_GUEST_MESSAGE};
use crate::sim::host::Hypercall;
use crate::sim::Host;

/// EFLAGS.DF: string instructions walk downwards.
const DF: u64 = 1 << 10;
/// `si_code` of a fault the kernel raised for #GP.
const SI_KERNEL: i32 = 0x80;
/// Bytes of an empty-port `rep ins` written per trap; the rest is left in RCX and the
/// instruction re-executes, as an interrupted REP string instruction does on hardware.
const FILL_BUDGET: u64 = 1 << 20;
/// Hypercall flags in `lo16(EDX)` (open-vm-tools' `lib/include/backdoor_def.h`:
/// `BDOOR_FLAGS_LB` = `BDOOR_FLAGS_READ` = 0, `BDOOR_FLAGS_HB` = 1, `BDOOR_FLAGS_WRITE` = 2):
/// a low-bandwidth call (read, or write, as `in` and `out` are), a high-bandwidth read (host
/// to guest), a high-bandwidth write. The model answers nothing (EAX all ones) for other
/// values: the sources define no other bit.
const HC_LB: u16 = 0;
const HC_LB_WRITE: u16 = 2;
const HC_HB_IN: u16 = 1;
const HC_HB_OUT: u16 = 3;

/// The access an instruction makes, decided by the host model's rules.
enum Action {
    /// Low-bandwidth backdoor call (`in`/`out` of EAX on the LB port).
    Lb,
    /// High-bandwidth `rep outsb` on the HB port.
    HbOut,
    /// High-bandwidth `rep insb` on the HB port.
    HbIn,
    /// A port with nothing behind it.
    Empty,
    /// Not allowed: the guest keeps its SIGSEGV.
    Fault,
}

/// What [`Emulator::emulate`] did with a faulting instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Emulated {
    /// A port I/O instruction was executed (backdoor call or empty port).
    PortIo,
    /// A VMCALL / VMMCALL was executed.
    Hypercall,
    /// A CPUID was answered.
    Cpuid,
    /// A port I/O instruction the machine does not allow: the signal is to be delivered.
    PortFault,
    /// Nothing the simulated machine would have executed: the signal is to be delivered.
    No,
}

/// Executes faulting instructions of the guest against the host model.
pub(super) struct Emulator<'h> {
    host: &'h Mutex<Host>,
    /// Whether the guest sees a VMware CPUID (CPUID faulting armed in every process).
    cpuid: bool,
    /// What that CPUID shows beyond the real CPU's.
    machine: cpuid::Machine,
    /// Reused buffer for guest memory (no allocation per call).
    scratch: Vec<u8>,
}

impl<'h> Emulator<'h> {
    pub(super) fn new(host: &'h Mutex<Host>, cpuid: bool) -> Self {
        let machine = {
            let h = lock_host(host);
            cpuid::Machine {
                hypercalls: h.advertised_hypercalls(),
                tdx: h.shows_tdx(),
            }
        };
        Emulator {
            host,
            cpuid,
            machine,
            scratch: Vec::new(),
        }
    }

    /// The host model, shared with the vsock endpoint's threads.
    fn host(&self) -> MutexGuard<'h, Host> {
        lock_host(self.host)
    }

    /// Whether the guest sees a VMware CPUID.
    pub(super) fn vmware_cpuid(&self) -> bool {
        self.cpuid
    }

    /// Emulates the instruction guest thread `pid` (its runner state: `thread`) faulted on
    /// with `sig`; on success its registers are written back, RIP past the instruction.
    pub(super) fn emulate(
        &mut self,
        pid: pid_t,
        sig: i32,
        mut thread: Option<&mut Thread>,
    ) -> Emulated {
        // Only faults count: a SIGSEGV sent with kill() while RIP happens to sit on an `in`
        // must reach the guest.
        let Ok(code) = sys::signal_code(pid) else {
            return Emulated::No;
        };
        if code <= 0 {
            return Emulated::No;
        }
        let Ok(mut regs) = sys::get_regs(pid) else {
            return Emulated::No;
        };
        let Some(long_mode) = decode::long_mode(regs.cs) else {
            return Emulated::No;
        };
        // Port I/O without permission raises #GP, which the kernel reports as SI_KERNEL.
        let gp = sig == libc::SIGSEGV && code == SI_KERNEL;
        let cached = if gp {
            thread
                .as_deref()
                .and_then(|t| t.decoded.get(regs.rip, regs.cs))
        } else {
            None
        };
        let insn = match cached {
            Some(io) => Insn::Port(io),
            None => {
                let Some(insn) = fetch(pid, regs.rip, long_mode) else {
                    return Emulated::No;
                };
                if let (true, Insn::Port(io), Some(t)) = (gp, insn, thread.as_deref_mut()) {
                    t.decoded.put(regs.rip, regs.cs, io);
                }
                insn
            }
        };
        let thread = thread.as_deref();
        let done = match insn {
            Insn::Port(io) if sig == libc::SIGSEGV => self.port_io(pid, &mut regs, &io, thread),
            Insn::Hypercall(hc) => self.hypercall(pid, &mut regs, thread, hc, long_mode),
            Insn::Cpuid { .. } if gp && self.cpuid => {
                cpuid::emulate(&mut regs, self.machine);
                Step::Next
            }
            Insn::Port(_) | Insn::Cpuid { .. } => Step::Fault,
        };
        match done {
            Step::Fault => match insn {
                Insn::Port(_) => Emulated::PortFault,
                _ => Emulated::No,
            },
            Step::Next | Step::Again => {
                if matches!(done, Step::Next) {
                    regs.rip = regs.rip.wrapping_add(u64::from(insn.len()));
                }
                if sys::set_regs(pid, &regs).is_err() {
                    return Emulated::No;
                }
                match insn {
                    Insn::Port(_) => Emulated::PortIo,
                    Insn::Hypercall(_) => Emulated::Hypercall,
                    Insn::Cpuid { .. } => Emulated::Cpuid,
                }
            }
        }
    }

    /// What `io` on `port` does on this machine, for a thread with `thread`'s privilege.
    fn decide(&self, io: &PortIo, port: u16, eax: u32, thread: Option<&Thread>) -> Action {
        let privileged = thread.is_some_and(|t| t.io.allows(port, io.size));
        if !self.host().port_reachable(port, privileged) {
            return Action::Fault;
        }
        match (io.op, io.size, io.rep) {
            (Op::In, 4, _) if port == LB_PORT => Action::Lb,
            (Op::Out, 4, _) if port == LB_PORT && self.host().takes_out(eax) => Action::Lb,
            (Op::Outs, 1, true) if port == HB_PORT => Action::HbOut,
            (Op::Ins, 1, true) if port == HB_PORT => Action::HbIn,
            // Any other access to a port it may touch finds no device there.
            _ => Action::Empty,
        }
    }

    fn port_io(
        &mut self,
        pid: pid_t,
        regs: &mut UserRegs,
        io: &PortIo,
        thread: Option<&Thread>,
    ) -> Step {
        let port = match io.port {
            PortArg::Dx => proto::lo16(regs.rdx),
            PortArg::Imm(p) => u16::from(p),
        };
        match self.decide(io, port, regs.rax as u32, thread) {
            Action::Fault => Step::Fault,
            Action::Lb => {
                let mut r = to_proto(regs);
                if io.op == Op::In {
                    self.host().lb_in(&mut r);
                } else {
                    self.host().lb(&mut r);
                }
                from_proto(regs, &r);
                Step::Next
            }
            Action::HbOut => self.hb_out(pid, regs, io),
            Action::HbIn => self.hb_in(pid, regs, io),
            Action::Empty => empty_port(pid, regs, io, &mut self.scratch),
        }
    }

    /// `rep outsb` on the HB port: the guest's buffer goes to the host.
    fn hb_out(&mut self, pid: pid_t, regs: &mut UserRegs, io: &PortIo) -> Step {
        let count = reg(regs.rcx, io.addr_bits);
        if count == 0 {
            return Step::Next;
        }
        // The host rejects anything over the cap; one byte more is enough to show it.
        let take = count.min(MAX_GUEST_MESSAGE as u64 + 1) as usize;
        let src = seg_base(regs, io.seg).wrapping_add(reg(regs.rsi, io.addr_bits));
        let down = regs.eflags & DF != 0;
        let start = if down {
            src.wrapping_sub(take as u64 - 1)
        } else {
            src
        };
        self.scratch.clear();
        self.scratch.resize(take, 0);
        if sys::read_mem(pid, start, &mut self.scratch) < take {
            return Step::Fault;
        }
        if down {
            self.scratch.reverse();
        }
        let before = to_proto(regs);
        let mut r = before;
        self.host().rep_outsb(&mut r, &self.scratch);
        from_proto(regs, &r);
        // Finish the string instruction where the host did not say otherwise.
        if r.si == before.si {
            set_reg(
                &mut regs.rsi,
                step(reg(before.si, io.addr_bits), count, down),
                io.addr_bits,
            );
        }
        if r.cx == before.cx {
            set_reg(&mut regs.rcx, 0, io.addr_bits);
        }
        Step::Next
    }

    /// `rep insb` on the HB port: the host's bytes land in the guest's buffer.
    fn hb_in(&mut self, pid: pid_t, regs: &mut UserRegs, io: &PortIo) -> Step {
        let count = reg(regs.rcx, io.addr_bits);
        if count == 0 {
            return Step::Next;
        }
        let before = to_proto(regs);
        let mut r = before;
        let mut data = self.host().rep_insb(&mut r);
        data.truncate(usize::try_from(count).unwrap_or(usize::MAX));
        let n = data.len() as u64;
        let dst = reg(regs.rdi, io.addr_bits);
        let down = regs.eflags & DF != 0;
        if n > 0 {
            let start = if down {
                data.reverse();
                dst.wrapping_sub(n - 1)
            } else {
                dst
            };
            // A bad buffer faults the guest like the real instruction; the host has already
            // handed the message over, as it would have on a real VM.
            if !sys::write_mem(pid, start, &data) {
                return Step::Fault;
            }
        }
        from_proto(regs, &r);
        if r.di == before.di {
            set_reg(&mut regs.rdi, step(dst, n, down), io.addr_bits);
        }
        if r.cx == before.cx {
            set_reg(&mut regs.rcx, count - n, io.addr_bits);
            // An empty port hands out a bounded amount per call: the guest re-executes the
            // rest, as an interrupted REP instruction does.
            if n < count && self.host().rep_insb_continues() {
                return Step::Again;
            }
        }
        Step::Next
    }

    /// VMCALL / VMMCALL: the same host calls, selected by flags in `lo16(EDX)` instead of a
    /// port, where the host model allows them. No string-instruction semantics: RSI/RDI/RCX
    /// only describe the buffer (32 bits of them in a 32-bit process) and stay as the host
    /// leaves them.
    fn hypercall(
        &mut self,
        pid: pid_t,
        regs: &mut UserRegs,
        thread: Option<&Thread>,
        hc: Hypercall,
        long_mode: bool,
    ) -> Step {
        let privileged = thread.is_some_and(|t| t.io.allows(LB_PORT, 4));
        if !self.host().hypercall_allowed(hc, privileged) {
            return Step::Fault;
        }
        let width = if long_mode { u64::MAX } else { 0xffff_ffff };
        let flags = proto::lo16(regs.rdx);
        let mut before = to_proto(regs);
        if !long_mode {
            // A 32-bit process's registers are 32 bits: the upper halves are not its own.
            for reg in [
                &mut before.ax,
                &mut before.bx,
                &mut before.cx,
                &mut before.dx,
                &mut before.si,
                &mut before.di,
                &mut before.bp,
            ] {
                *reg &= width;
            }
        }
        let mut r = before;
        // The host model speaks ports: present the call as its port form.
        let port = match flags {
            HC_LB | HC_LB_WRITE => LB_PORT,
            HC_HB_IN | HC_HB_OUT => HB_PORT,
            _ => 0,
        };
        r.dx = (before.dx & !0xffff) | u64::from(port);
        let presented = r.dx;
        match flags {
            HC_LB | HC_LB_WRITE => self.host().hypercall_lb(hc, &mut r),
            HC_HB_OUT => {
                let count = regs.rcx & width;
                let take = count.min(MAX_GUEST_MESSAGE as u64 + 1) as usize;
                self.scratch.clear();
                self.scratch.resize(take, 0);
                if sys::read_mem(pid, regs.rsi & width, &mut self.scratch) < take {
                    return Step::Fault;
                }
                self.host().hypercall_hb_out(hc, &mut r, &self.scratch);
            }
            HC_HB_IN => {
                let mut data = self.host().hypercall_hb_in(hc, &mut r);
                data.truncate(usize::try_from(regs.rcx & width).unwrap_or(usize::MAX));
                if !data.is_empty() && !sys::write_mem(pid, regs.rdi & width, &data) {
                    return Step::Fault;
                }
            }
            _ => self.host().hypercall_unknown(hc, &mut r),
        }
        // A register the host left as presented reads as the guest sent it.
        if r.dx == presented {
            r.dx = before.dx;
        }
        from_proto(regs, &r);
        Step::Next
    }
}

/// Reads and decodes the instruction at `rip`. One 8-byte peek covers nearly every
/// instruction (the backdoor ones are 1 to 3 bytes); only a run of 8 prefixes, or code
/// ending within 8 bytes of an unmapped page, takes the slower full read.
fn fetch(pid: pid_t, rip: u64, long_mode: bool) -> Option<Insn> {
    if let Ok(word) = sys::peek8(pid, rip) {
        if !word.iter().all(|&b| decode::is_prefix(b, long_mode)) {
            return decode::decode(&word, long_mode);
        }
    }
    let mut code = [0u8; MAX_INSN];
    let got = sys::read_mem(pid, rip, &mut code);
    decode::decode(code.get(..got).unwrap_or(&[]), long_mode)
}

/// How an emulated instruction ends.
enum Step {
    /// Done: RIP moves past it.
    Next,
    /// Partly done (a long REP string): RIP stays, the guest re-executes the rest.
    Again,
    /// Not executed: the guest gets its fault.
    Fault,
}

/// An I/O port with no device: reads give all ones, writes are dropped; string forms move
/// RSI/RDI/RCX as the instruction would.
fn empty_port(pid: pid_t, regs: &mut UserRegs, io: &PortIo, scratch: &mut Vec<u8>) -> Step {
    let size = u64::from(io.size);
    let down = regs.eflags & DF != 0;
    let count = if io.rep {
        reg(regs.rcx, io.addr_bits)
    } else {
        1
    };
    match io.op {
        Op::In => {
            regs.rax = match io.size {
                1 => regs.rax | 0xff,
                2 => regs.rax | 0xffff,
                _ => proto::NO_ANSWER.into(),
            };
            Step::Next
        }
        Op::Out => Step::Next,
        Op::Outs => {
            let moved = count.wrapping_mul(size);
            let src = reg(regs.rsi, io.addr_bits);
            set_reg(&mut regs.rsi, step(src, moved, down), io.addr_bits);
            if io.rep {
                set_reg(&mut regs.rcx, 0, io.addr_bits);
            }
            Step::Next
        }
        Op::Ins => {
            let now = count.min(FILL_BUDGET / size);
            let bytes = now * size;
            let dst = reg(regs.rdi, io.addr_bits);
            if bytes > 0 {
                let start = if down {
                    dst.wrapping_sub(bytes - size)
                } else {
                    dst
                };
                scratch.clear();
                scratch.resize(bytes as usize, 0xff);
                if !sys::write_mem(pid, start, scratch) {
                    return Step::Fault;
                }
            }
            set_reg(&mut regs.rdi, step(dst, bytes, down), io.addr_bits);
            if io.rep {
                set_reg(&mut regs.rcx, count - now, io.addr_bits);
            }
            if count > now {
                Step::Again
            } else {
                Step::Next
            }
        }
    }
}

fn to_proto(u: &UserRegs) -> Regs {
    Regs {
        ax: u.rax,
        bx: u.rbx,
        cx: u.rcx,
        dx: u.rdx,
        si: u.rsi,
        di: u.rdi,
        bp: u.rbp,
    }
}

fn from_proto(u: &mut UserRegs, r: &Regs) {
    u.rax = r.ax;
    u.rbx = r.bx;
    u.rcx = r.cx;
    u.rdx = r.dx;
    u.rsi = r.si;
    u.rdi = r.di;
    u.rbp = r.bp;
}

/// A register as an address-size operand (RSI/ESI/SI ...).
fn reg(value: u64, bits: u8) -> u64 {
    match bits {
        16 => value & 0xffff,
        32 => value & 0xffff_ffff,
        _ => value,
    }
}

/// Writes an address-size operand back: 32-bit writes clear the upper half, 16-bit writes
/// keep it.
fn set_reg(slot: &mut u64, value: u64, bits: u8) {
    *slot = match bits {
        16 => (*slot & !0xffff) | (value & 0xffff),
        32 => value & 0xffff_ffff,
        _ => value,
    };
}

/// A string pointer after moving `n` bytes.
fn step(at: u64, n: u64, down: bool) -> u64 {
    if down {
        at.wrapping_sub(n)
    } else {
        at.wrapping_add(n)
    }
}

fn seg_base(regs: &UserRegs, seg: Seg) -> u64 {
    match seg {
        Seg::Flat => 0,
        Seg::Fs => regs.fs_base,
        Seg::Gs => regs.gs_base,
    }
}
