//! What a trapped `mrs xzr, mdccsr_el0` does under the simulated machine: the x86 I/O
//! instruction X7 describes, with X0..X6 in the roles of EAX..EBP, executed by the same
//! rules as on x86 (`../emulate.rs`): the backdoor forms go to the host model, other ports
//! behave like an empty port where the machine lets the thread touch them, and anything
//! else keeps its SIGILL. Which accesses execute is the host model's decision ([`Host`]);
//! arm64 has no I/O privilege, so every access is an unprivileged one.

#![forbid(unsafe_code)]

use std::sync::{Mutex, MutexGuard};

use libc::pid_t;

use super::super::sys::{self, UserRegs};
use super::super::Thread;
use super::decode::{self, Op, PortArg, PortIo};
use crate::proto::arm64::MRS_XZR_MDCCSR_EL0;
use crate::proto::{self, Regs, HB_PORT, LB_PORT, MAX_GUEST_MESSAGE};
use crate::sim::Host;

/// `si_code` of the SIGILL Linux raises for an undefined instruction (`ILL_ILLOPC`).
const ILL_ILLOPC: i32 = 1;
/// The `mrs` is one 4-byte instruction.
const INSN_LEN: u64 = 4;
/// PSTATE.nRW: set while the thread runs AArch32 code (which this runner does not serve).
const PSTATE_AARCH32: u64 = 1 << 4;
/// Bytes of an empty-port `rep ins` written per trap; the rest is left in X2 and the
/// instruction re-executes, as an interrupted REP string instruction does on x86.
const FILL_BUDGET: u64 = 1 << 20;

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
    /// Not allowed: the guest keeps its SIGILL.
    Fault,
}

/// What [`Emulator::emulate`] did with a trapped instruction (the x86 runner's outcomes; the
/// tracer counts them by these names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)] // arm64 makes no hypercall and has no CPUID to answer
pub(crate) enum Emulated {
    /// An x86 I/O instruction was executed (backdoor call or empty port).
    PortIo,
    /// Not on arm64.
    Hypercall,
    /// Not on arm64.
    Cpuid,
    /// An I/O instruction the machine does not allow: the SIGILL is to be delivered.
    PortFault,
    /// Nothing the simulated machine would have executed: the signal is to be delivered.
    No,
}

/// Executes trapped instructions of the guest against the host model.
pub(crate) struct Emulator<'h> {
    host: &'h Mutex<Host>,
    /// Reused buffer for guest memory (no allocation per call).
    scratch: Vec<u8>,
}

impl<'h> Emulator<'h> {
    /// The CPUID flag is the x86 runner's; arm64 has no CPUID to show.
    pub(crate) fn new(host: &'h Mutex<Host>, _cpuid: bool) -> Self {
        Emulator {
            host,
            scratch: Vec::new(),
        }
    }

    /// The host model (shared, as on x86, with the threads a run may start).
    fn host(&self) -> MutexGuard<'h, Host> {
        super::super::lock_host(self.host)
    }

    /// Never: there is no CPUID.
    pub(crate) fn vmware_cpuid(&self) -> bool {
        false
    }

    /// Emulates the instruction guest thread `pid` (its runner state: `thread`) trapped on
    /// with `sig`; on success its registers are written back, PC past the instruction.
    pub(crate) fn emulate(
        &mut self,
        pid: pid_t,
        sig: i32,
        thread: Option<&mut Thread>,
    ) -> Emulated {
        // Only the kernel's undefined-instruction SIGILL counts: one sent with kill() while
        // PC happens to sit on the `mrs` must reach the guest.
        if sig != libc::SIGILL || sys::signal_code(pid).ok() != Some(ILL_ILLOPC) {
            return Emulated::No;
        }
        // An AArch32 thread's register set does not read as a 64-bit one: not ours.
        let Ok(mut regs) = sys::get_regs(pid) else {
            return Emulated::No;
        };
        if regs.pstate & PSTATE_AARCH32 != 0 || !is_the_trap(pid, regs.pc, thread) {
            return Emulated::No;
        }
        let Some(io) = decode::decode(regs.regs[7]) else {
            return Emulated::No;
        };
        match self.port_io(pid, &mut regs, &io) {
            Step::Fault => Emulated::PortFault,
            done @ (Step::Next | Step::Again) => {
                if matches!(done, Step::Next) {
                    regs.pc = regs.pc.wrapping_add(INSN_LEN);
                }
                if sys::set_regs(pid, &regs).is_err() {
                    return Emulated::No;
                }
                Emulated::PortIo
            }
        }
    }

    /// What `io` on `port` does on this machine: every arm64 access is unprivileged.
    fn decide(&self, io: &PortIo, port: u16, eax: u32) -> Action {
        if !self.host().port_reachable(port, false) {
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

    fn port_io(&mut self, pid: pid_t, regs: &mut UserRegs, io: &PortIo) -> Step {
        let port = match io.port {
            PortArg::Dx => proto::lo16(regs.regs[3]),
            PortArg::Imm(p) => u16::from(p),
        };
        match self.decide(io, port, regs.regs[0] as u32) {
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

    /// `rep outsb` on the HB port: the guest's buffer (X4, X2 bytes) goes to the host.
    fn hb_out(&mut self, pid: pid_t, regs: &mut UserRegs, io: &PortIo) -> Step {
        let count = regs.regs[2];
        if count == 0 {
            return Step::Next;
        }
        // The host rejects anything over the cap; one byte more is enough to show it.
        let take = count.min(MAX_GUEST_MESSAGE as u64 + 1) as usize;
        let src = regs.regs[4];
        let start = if io.down {
            src.wrapping_sub(take as u64 - 1)
        } else {
            src
        };
        self.scratch.clear();
        self.scratch.resize(take, 0);
        if sys::read_mem(pid, start, &mut self.scratch) < take {
            return Step::Fault;
        }
        if io.down {
            self.scratch.reverse();
        }
        let before = to_proto(regs);
        let mut r = before;
        self.host().rep_outsb(&mut r, &self.scratch);
        from_proto(regs, &r);
        // Finish the string instruction where the host did not say otherwise.
        if r.si == before.si {
            regs.regs[4] = step(src, count, io.down);
        }
        if r.cx == before.cx {
            regs.regs[2] = 0;
        }
        Step::Next
    }

    /// `rep insb` on the HB port: the host's bytes land in the guest's buffer (X5).
    fn hb_in(&mut self, pid: pid_t, regs: &mut UserRegs, io: &PortIo) -> Step {
        let count = regs.regs[2];
        if count == 0 {
            return Step::Next;
        }
        let before = to_proto(regs);
        let mut r = before;
        let mut data = self.host().rep_insb(&mut r);
        data.truncate(usize::try_from(count).unwrap_or(usize::MAX));
        let n = data.len() as u64;
        let dst = regs.regs[5];
        if n > 0 {
            let start = if io.down {
                data.reverse();
                dst.wrapping_sub(n - 1)
            } else {
                dst
            };
            // A bad buffer faults the guest like the real access; the host has already
            // handed the message over, as it would have on a real VM.
            if !sys::write_mem(pid, start, &data) {
                return Step::Fault;
            }
        }
        from_proto(regs, &r);
        if r.di == before.di {
            regs.regs[5] = step(dst, n, io.down);
        }
        if r.cx == before.cx {
            regs.regs[2] = count - n;
            // An empty port hands out a bounded amount per call: the guest re-executes the
            // rest, as an interrupted REP instruction does.
            if n < count && self.host().rep_insb_continues() {
                return Step::Again;
            }
        }
        Step::Next
    }
}

/// Whether the instruction at `pc` is `mrs xzr, mdccsr_el0`, remembered per thread.
fn is_the_trap(pid: pid_t, pc: u64, thread: Option<&mut Thread>) -> bool {
    if thread.as_deref().is_some_and(|t| t.decoded.contains(pc)) {
        return true;
    }
    let mut word = [0u8; 4];
    let fetched = match sys::peek8(pid, pc) {
        Ok(bytes) => bytes.get(..4).is_some_and(|b| {
            word.copy_from_slice(b);
            true
        }),
        // The last instruction before an unmapped page: 8 bytes cannot be read, 4 can.
        Err(_) => sys::read_mem(pid, pc, &mut word) == word.len(),
    };
    let ours = fetched && u32::from_le_bytes(word) == MRS_XZR_MDCCSR_EL0;
    if let (true, Some(t)) = (ours, thread) {
        t.decoded.put(pc);
    }
    ours
}

/// How an emulated instruction ends.
enum Step {
    /// Done: PC moves past it.
    Next,
    /// Partly done (a long REP string): PC stays, the guest re-executes the rest.
    Again,
    /// Not executed: the guest gets its SIGILL.
    Fault,
}

/// An I/O port with no device: reads give all ones, writes are dropped; string forms move
/// X4/X5/X2 as the x86 instruction moves RSI/RDI/RCX.
fn empty_port(pid: pid_t, regs: &mut UserRegs, io: &PortIo, scratch: &mut Vec<u8>) -> Step {
    let size = u64::from(io.size);
    let count = if io.rep { regs.regs[2] } else { 1 };
    match io.op {
        Op::In => {
            // As x86 writes AL, AX or EAX (the last clearing the upper half).
            let x0 = regs.regs[0];
            regs.regs[0] = match io.size {
                1 => x0 | 0xff,
                2 => x0 | 0xffff,
                _ => proto::NO_ANSWER.into(),
            };
            Step::Next
        }
        Op::Out => Step::Next,
        Op::Outs => {
            regs.regs[4] = step(regs.regs[4], count.wrapping_mul(size), io.down);
            if io.rep {
                regs.regs[2] = 0;
            }
            Step::Next
        }
        Op::Ins => {
            let now = count.min(FILL_BUDGET / size);
            let bytes = now * size;
            let dst = regs.regs[5];
            if bytes > 0 {
                let start = if io.down {
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
            regs.regs[5] = step(dst, bytes, io.down);
            if io.rep {
                regs.regs[2] = count - now;
            }
            if count > now {
                Step::Again
            } else {
                Step::Next
            }
        }
    }
}

/// X0..X6 as the x86 registers they stand for.
fn to_proto(u: &UserRegs) -> Regs {
    let x = &u.regs;
    Regs {
        ax: x[0],
        bx: x[1],
        cx: x[2],
        dx: x[3],
        si: x[4],
        di: x[5],
        bp: x[6],
    }
}

fn from_proto(u: &mut UserRegs, r: &Regs) {
    let x = &mut u.regs;
    x[0] = r.ax;
    x[1] = r.bx;
    x[2] = r.cx;
    x[3] = r.dx;
    x[4] = r.si;
    x[5] = r.di;
    x[6] = r.bp;
}

/// A string pointer after moving `n` bytes.
fn step(at: u64, n: u64, down: bool) -> u64 {
    if down {
        at.wrapping_sub(n)
    } else {
        at.wrapping_add(n)
    }
}
