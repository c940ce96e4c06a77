//! What a faulting instruction does under the simulated machine: the backdoor forms go to
//! the host model, other port I/O behaves like an empty port (reads all ones, writes
//! vanish) when the thread may touch the port, and anything else keeps its fault.

use libc::pid_t;

use super::decode::{self, Insn, Op, PortArg, PortIo, Seg, MAX_INSN};
use super::sys::{self, UserRegs};
use super::{cpuid, Tracer};
use crate::proto::{self, Regs, HB_PORT, LB_PORT, MAX_GUEST_MESSAGE};
use crate::sim::Mode;

/// EFLAGS.DF: string instructions walk downwards.
const DF: u64 = 1 << 10;
/// User code segment selectors on x86_64 Linux.
const CS_64: u64 = 0x33;
const CS_32: u64 = 0x23;
/// `si_code` of a fault the kernel raised for #GP.
const SI_KERNEL: i32 = 0x80;
/// Bytes of an empty-port `rep ins` written per trap; the rest is left in RCX and the
/// instruction re-executes, as an interrupted REP string instruction does on hardware.
const FILL_BUDGET: u64 = 1 << 20;
/// Hypercall flags in `lo16(EDX)` (PROTOCOL §8.1).
const HC_LB: u16 = 0;
const HC_HB_IN: u16 = 1;
const HC_HB_OUT: u16 = 3;

/// The access an instruction makes, decided against the mode and the thread's privilege.
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

impl Tracer<'_> {
    /// Emulates the instruction a guest thread faulted on with `sig`. False when it is not
    /// one the simulated machine would have executed: the signal is then delivered.
    pub(super) fn emulate(&mut self, pid: pid_t, sig: i32) -> bool {
        // Only faults count: a SIGSEGV sent with kill() while RIP happens to sit on an `in`
        // must reach the guest.
        let Ok(code) = sys::signal_code(pid) else {
            return false;
        };
        if code <= 0 {
            return false;
        }
        let Ok(mut regs) = sys::get_regs(pid) else {
            return false;
        };
        let long_mode = match regs.cs {
            CS_64 => true,
            CS_32 => false,
            _ => return false,
        };
        // Port I/O without permission raises #GP, which the kernel reports as SI_KERNEL.
        let gp = sig == libc::SIGSEGV && code == SI_KERNEL;
        let cached = if gp {
            self.threads
                .get(&pid)
                .and_then(|t| t.decoded.get(regs.rip, regs.cs))
        } else {
            None
        };
        let insn = match cached {
            Some(io) => Insn::Port(io),
            None => {
                let Some(insn) = fetch(pid, regs.rip, long_mode) else {
                    return false;
                };
                if let (true, Insn::Port(io), Some(t)) = (gp, insn, self.threads.get_mut(&pid)) {
                    t.decoded.put(regs.rip, regs.cs, io);
                }
                insn
            }
        };
        let done = match insn {
            Insn::Port(io) if sig == libc::SIGSEGV => self.port_io(pid, &mut regs, &io),
            Insn::Hypercall => self.hypercall(pid, &mut regs),
            Insn::Cpuid { .. } if gp && self.cpuid => {
                cpuid::emulate(&mut regs);
                Step::Next
            }
            Insn::Port(_) | Insn::Cpuid { .. } => Step::Fault,
        };
        match done {
            Step::Fault => {
                if let Insn::Port(_) = insn {
                    self.stats.faults_delivered += 1;
                }
                false
            }
            Step::Next | Step::Again => {
                if matches!(done, Step::Next) {
                    regs.rip = regs.rip.wrapping_add(u64::from(insn.len()));
                }
                if sys::set_regs(pid, &regs).is_err() {
                    return false;
                }
                match insn {
                    Insn::Port(_) => self.stats.port_io += 1,
                    Insn::Hypercall => self.stats.hypercalls += 1,
                    Insn::Cpuid { .. } => self.stats.cpuid += 1,
                }
                true
            }
        }
    }

    fn decide(&self, pid: pid_t, io: &PortIo, port: u16, eax: u32) -> Action {
        // An `out` only returns a result when a live backdoor takes it; any other write
        // to the port goes nowhere and changes no register, unlike an `in`, which reads.
        let live = self.host.mode() != Mode::NotVmware && eax == proto::MAGIC;
        let backdoor = match (io.op, io.size, io.rep) {
            (Op::In, 4, _) if port == LB_PORT => Some(Action::Lb),
            (Op::Out, 4, _) if port == LB_PORT && live => Some(Action::Lb),
            (Op::Outs, 1, true) if port == HB_PORT => Some(Action::HbOut),
            (Op::Ins, 1, true) if port == HB_PORT => Some(Action::HbIn),
            _ => None,
        };
        let backdoor_port = port == LB_PORT || port == HB_PORT;
        let privileged = self
            .threads
            .get(&pid)
            .is_some_and(|t| t.io.allows(port, io.size));
        match (self.host.mode(), backdoor) {
            // VMware lets ring 3 use the backdoor ports whatever the I/O bitmap says.
            (Mode::Vmware, Some(call)) => call,
            (Mode::Vmware, None) if backdoor_port || privileged => Action::Empty,
            (Mode::RestrictBackdoor, Some(call)) if privileged => call,
            // Bare metal: a privileged backdoor read reaches an empty port; the host model
            // answers it as such (EAX all ones, 0xFF bytes) and counts it.
            (Mode::NotVmware, Some(call)) if privileged => call,
            (_, _) if privileged => Action::Empty,
            _ => Action::Fault,
        }
    }

    fn port_io(&mut self, pid: pid_t, regs: &mut UserRegs, io: &PortIo) -> Step {
        let port = match io.port {
            PortArg::Dx => proto::lo16(regs.rdx),
            PortArg::Imm(p) => u16::from(p),
        };
        match self.decide(pid, io, port, regs.rax as u32) {
            Action::Fault => Step::Fault,
            Action::Lb => {
                let mut r = to_proto(regs);
                self.host.lb(&mut r);
                from_proto(regs, &r);
                if io.op == Op::In {
                    // A 32-bit register write clears the upper half of RAX.
                    regs.rax &= 0xffff_ffff;
                }
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
        self.host.hb_out(&mut r, &self.scratch);
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
        let mut data = self.host.hb_in(&mut r);
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
            if n < count && self.host.mode() == Mode::NotVmware {
                return Step::Again;
            }
        }
        Step::Next
    }

    /// VMCALL / VMMCALL: the same host calls, selected by flags in `lo16(EDX)` instead of a
    /// port. Allowed wherever VMware would allow ring 3 to use the backdoor.
    fn hypercall(&mut self, pid: pid_t, regs: &mut UserRegs) -> Step {
        let allowed = match self.host.mode() {
            Mode::Vmware => true,
            Mode::RestrictBackdoor => self
                .threads
                .get(&pid)
                .is_some_and(|t| t.io.allows(LB_PORT, 4)),
            Mode::NotVmware => false,
        };
        if !allowed {
            return Step::Fault;
        }
        let flags = proto::lo16(regs.rdx);
        let before = to_proto(regs);
        let mut r = before;
        // The host model speaks ports: present the call as its port form.
        let as_port = |port: u16| (before.dx & !0xffff) | u64::from(port);
        match flags {
            HC_LB => {
                r.dx = as_port(LB_PORT);
                self.host.lb(&mut r);
            }
            HC_HB_OUT => {
                r.dx = as_port(HB_PORT);
                let take = regs.rcx.min(MAX_GUEST_MESSAGE as u64 + 1) as usize;
                self.scratch.clear();
                self.scratch.resize(take, 0);
                if sys::read_mem(pid, regs.rsi, &mut self.scratch) < take {
                    return Step::Fault;
                }
                self.host.hb_out(&mut r, &self.scratch);
            }
            HC_HB_IN => {
                r.dx = as_port(HB_PORT);
                let mut data = self.host.hb_in(&mut r);
                data.truncate(usize::try_from(regs.rcx).unwrap_or(usize::MAX));
                if !data.is_empty() && !sys::write_mem(pid, regs.rdi, &data) {
                    return Step::Fault;
                }
            }
            _ => r.ax = 0xffff_ffff,
        }
        if proto::lo16(r.dx) == LB_PORT || proto::lo16(r.dx) == HB_PORT {
            r.dx = (r.dx & !0xffff) | u64::from(flags);
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
                _ => 0xffff_ffff,
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
