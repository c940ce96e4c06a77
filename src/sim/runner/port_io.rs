//! Port I/O under the simulated machine, on every instruction set: the backdoor forms go to
//! the host model, other port I/O behaves like an empty port (reads all ones, writes
//! vanish) where the machine lets the thread touch the port, and anything else keeps its
//! fault. Which accesses execute is the host model's decision ([`Host`]); this file turns
//! an x86 I/O instruction into host calls and back into registers and guest memory.
//!
//! Each instruction set decodes its own trap into a [`PortIo`] and shows the thread's
//! registers through [`PortRegs`]: x86_64 with its address size and segment bases, arm64
//! as the X registers that stand for the x86 ones.

#![forbid(unsafe_code)]

use std::sync::Mutex;

use libc::pid_t;

use super::privilege::IoPrivilege;
use super::{lock_host, sys};
use crate::proto::{self, Regs, HB_PORT, LB_PORT, MAX_GUEST_MESSAGE};
use crate::sim::Host;

/// Bytes of an empty-port `rep ins` written per trap; the rest is left in the count and the
/// instruction re-executes, as an interrupted REP string instruction does on hardware.
const FILL_BUDGET: u64 = 1 << 20;

/// What an I/O instruction does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// `in` (port to AL/AX/EAX).
    In,
    /// `out` (AL/AX/EAX to port).
    Out,
    /// `ins` (port to memory at the destination pointer).
    Ins,
    /// `outs` (memory at the source pointer to port).
    Outs,
}

/// Where the port number comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PortArg {
    /// `lo16(DX)`.
    Dx,
    /// An immediate byte (`in al, 0x60`).
    Imm(u8),
}

/// An x86 I/O instruction, as far as its effect depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PortIo {
    /// The operation.
    pub op: Op,
    /// Bytes per transfer: 1, 2 or 4.
    pub size: u8,
    /// The port operand.
    pub port: PortArg,
    /// A REP prefix on a string form (ignored by the CPU on `in`/`out`, so false there).
    pub rep: bool,
}

/// A string instruction's operand registers: x86's RCX, RSI and RDI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Operand {
    Count,
    Src,
    Dst,
}

/// The trapped thread's registers as an x86 I/O instruction sees them.
pub(super) trait PortRegs {
    /// The backdoor's seven registers.
    fn backdoor(&self) -> Regs;
    fn set_backdoor(&mut self, regs: &Regs);
    /// A string operand at the instruction's address size.
    fn operand(&self, which: Operand) -> u64;
    /// Writes a string operand back as the instruction does at its address size.
    fn set_operand(&mut self, which: Operand, value: u64);
    /// The guest address a pointer operand names (x86 adds a segment base to `outs`').
    fn address(&self, which: Operand) -> u64 {
        self.operand(which)
    }
    /// EFLAGS.DF: string forms walk downwards.
    fn down(&self) -> bool;
}

/// How an emulated instruction ends.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Done: the program counter moves past it.
    Next,
    /// Partly done (a long REP string): the program counter stays, the guest re-executes
    /// the rest.
    Again,
    /// Not executed: the guest gets its fault.
    Fault,
}

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
    /// Not allowed: the guest keeps its fault.
    Fault,
}

/// Executes `io` for thread `pid`, whose virtual I/O privilege is `privilege` (none: every
/// access is unprivileged); `scratch` is a reused buffer for guest memory.
pub(super) fn execute(
    host: &Mutex<Host>,
    pid: pid_t,
    regs: &mut impl PortRegs,
    io: &PortIo,
    privilege: Option<&IoPrivilege>,
    scratch: &mut Vec<u8>,
) -> Step {
    let before = regs.backdoor();
    let port = match io.port {
        PortArg::Dx => proto::lo16(before.dx),
        PortArg::Imm(p) => u16::from(p),
    };
    let privileged = privilege.is_some_and(|p| p.allows(port, io.size));
    match decide(host, io, port, before.ax as u32, privileged) {
        Action::Fault => Step::Fault,
        Action::Lb => {
            let mut r = before;
            if io.op == Op::In {
                lock_host(host).lb_in(&mut r);
            } else {
                lock_host(host).lb(&mut r);
            }
            regs.set_backdoor(&r);
            Step::Next
        }
        Action::HbOut => hb_out(host, pid, regs, before, scratch),
        Action::HbIn => hb_in(host, pid, regs, before),
        Action::Empty => empty_port(pid, regs, io, scratch),
    }
}

/// What `io` on `port` does on this machine.
fn decide(host: &Mutex<Host>, io: &PortIo, port: u16, eax: u32, privileged: bool) -> Action {
    if !lock_host(host).port_reachable(port, privileged) {
        return Action::Fault;
    }
    match (io.op, io.size, io.rep) {
        (Op::In, 4, _) if port == LB_PORT => Action::Lb,
        (Op::Out, 4, _) if port == LB_PORT && lock_host(host).takes_out(eax) => Action::Lb,
        (Op::Outs, 1, true) if port == HB_PORT => Action::HbOut,
        (Op::Ins, 1, true) if port == HB_PORT => Action::HbIn,
        // Any other access to a port it may touch finds no device there.
        _ => Action::Empty,
    }
}

/// How much of a high-bandwidth message of `count` bytes to take from the guest: the host
/// rejects anything over the cap, and one byte more is enough to show it.
pub(super) fn message_len(count: u64) -> usize {
    count.min(MAX_GUEST_MESSAGE as u64 + 1) as usize
}

/// Reads `len` bytes of guest memory at `addr` into `buf`; false where any is unreadable.
pub(super) fn read_guest(pid: pid_t, addr: u64, len: usize, buf: &mut Vec<u8>) -> bool {
    buf.clear();
    buf.resize(len, 0);
    sys::read_mem(pid, addr, buf) == len
}

/// `rep outsb` on the HB port: the guest's buffer goes to the host.
fn hb_out(
    host: &Mutex<Host>,
    pid: pid_t,
    regs: &mut impl PortRegs,
    before: Regs,
    scratch: &mut Vec<u8>,
) -> Step {
    let count = regs.operand(Operand::Count);
    if count == 0 {
        return Step::Next;
    }
    let take = message_len(count);
    let src = regs.address(Operand::Src);
    let down = regs.down();
    let start = if down {
        src.wrapping_sub(take as u64 - 1)
    } else {
        src
    };
    if !read_guest(pid, start, take, scratch) {
        return Step::Fault;
    }
    if down {
        scratch.reverse();
    }
    let si = regs.operand(Operand::Src);
    let mut r = before;
    lock_host(host).rep_outsb(&mut r, scratch);
    regs.set_backdoor(&r);
    // Finish the string instruction where the host did not say otherwise.
    if r.si == before.si {
        regs.set_operand(Operand::Src, step(si, count, down));
    }
    if r.cx == before.cx {
        regs.set_operand(Operand::Count, 0);
    }
    Step::Next
}

/// `rep insb` on the HB port: the host's bytes land in the guest's buffer.
fn hb_in(host: &Mutex<Host>, pid: pid_t, regs: &mut impl PortRegs, before: Regs) -> Step {
    let count = regs.operand(Operand::Count);
    if count == 0 {
        return Step::Next;
    }
    let mut r = before;
    let mut data = lock_host(host).rep_insb(&mut r);
    data.truncate(usize::try_from(count).unwrap_or(usize::MAX));
    let n = data.len() as u64;
    let dst = regs.operand(Operand::Dst);
    let down = regs.down();
    if n > 0 {
        let at = regs.address(Operand::Dst);
        let start = if down {
            data.reverse();
            at.wrapping_sub(n - 1)
        } else {
            at
        };
        // A bad buffer faults the guest like the real instruction; the host has already
        // handed the message over, as it would have on a real VM.
        if !sys::write_mem(pid, start, &data) {
            return Step::Fault;
        }
    }
    regs.set_backdoor(&r);
    if r.di == before.di {
        regs.set_operand(Operand::Dst, step(dst, n, down));
    }
    if r.cx == before.cx {
        regs.set_operand(Operand::Count, count - n);
        // An empty port hands out a bounded amount per call: the guest re-executes the
        // rest, as an interrupted REP instruction does.
        if n < count && lock_host(host).rep_insb_continues() {
            return Step::Again;
        }
    }
    Step::Next
}

/// An I/O port with no device: reads give all ones, writes are dropped; string forms move
/// their pointers and count as the instruction would.
fn empty_port(pid: pid_t, regs: &mut impl PortRegs, io: &PortIo, scratch: &mut Vec<u8>) -> Step {
    let size = u64::from(io.size);
    let count = if io.rep {
        regs.operand(Operand::Count)
    } else {
        1
    };
    match io.op {
        Op::In => {
            let mut r = regs.backdoor();
            // AL and AX keep the rest of the register; EAX clears its upper half.
            r.ax = match io.size {
                1 => r.ax | 0xff,
                2 => r.ax | 0xffff,
                _ => proto::NO_ANSWER.into(),
            };
            regs.set_backdoor(&r);
            Step::Next
        }
        Op::Out => Step::Next,
        Op::Outs => {
            let src = regs.operand(Operand::Src);
            regs.set_operand(
                Operand::Src,
                step(src, count.wrapping_mul(size), regs.down()),
            );
            if io.rep {
                regs.set_operand(Operand::Count, 0);
            }
            Step::Next
        }
        Op::Ins => {
            let down = regs.down();
            let now = count.min(FILL_BUDGET / size);
            let bytes = now * size;
            let dst = regs.operand(Operand::Dst);
            if bytes > 0 {
                let at = regs.address(Operand::Dst);
                let start = if down {
                    at.wrapping_sub(bytes - size)
                } else {
                    at
                };
                scratch.clear();
                scratch.resize(bytes as usize, 0xff);
                if !sys::write_mem(pid, start, scratch) {
                    return Step::Fault;
                }
            }
            regs.set_operand(Operand::Dst, step(dst, bytes, down));
            if io.rep {
                regs.set_operand(Operand::Count, count - now);
            }
            if count > now {
                Step::Again
            } else {
                Step::Next
            }
        }
    }
}

/// A string pointer after moving `n` bytes.
fn step(at: u64, n: u64, down: bool) -> u64 {
    if down {
        at.wrapping_sub(n)
    } else {
        at.wrapping_add(n)
    }
}

#[cfg(test)]
mod tests {
    //! The semantics over a plain register file, with this process as the guest (its own
    //! memory is reachable by `process_vm_writev`, no tracing needed).

    use super::*;
    use crate::proto::{cmd, MAGIC};
    use crate::sim::{HostConfig, IoplPolicy};

    /// 64-bit operands, as arm64 has them.
    #[derive(Default)]
    struct Plain {
        r: Regs,
        down: bool,
    }

    impl PortRegs for Plain {
        fn backdoor(&self) -> Regs {
            self.r
        }
        fn set_backdoor(&mut self, regs: &Regs) {
            self.r = *regs;
        }
        fn operand(&self, which: Operand) -> u64 {
            match which {
                Operand::Count => self.r.cx,
                Operand::Src => self.r.si,
                Operand::Dst => self.r.di,
            }
        }
        fn set_operand(&mut self, which: Operand, value: u64) {
            match which {
                Operand::Count => self.r.cx = value,
                Operand::Src => self.r.si = value,
                Operand::Dst => self.r.di = value,
            }
        }
        fn down(&self) -> bool {
            self.down
        }
    }

    const REP_INSB: PortIo = PortIo {
        op: Op::Ins,
        size: 1,
        port: PortArg::Dx,
        rep: true,
    };

    fn run(regs: &mut Plain, io: PortIo, privileged: bool) -> Step {
        let host = Mutex::new(Host::new(HostConfig::default()));
        let mut all = IoPrivilege::default();
        assert_eq!(all.iopl(3, IoplPolicy::Allow), 0);
        let privilege = privileged.then_some(&all);
        let pid = std::process::id() as pid_t;
        execute(&host, pid, regs, &io, privilege, &mut Vec::new())
    }

    #[test]
    fn lb_call_reaches_the_host() {
        let mut regs = Plain::default();
        regs.r.ax = MAGIC.into();
        regs.r.cx = cmd::GETVERSION.into();
        regs.r.dx = LB_PORT.into();
        let io = PortIo {
            op: Op::In,
            size: 4,
            ..REP_INSB
        };
        assert_eq!(run(&mut regs, io, false), Step::Next);
        assert_eq!(regs.r.bx, u64::from(MAGIC));
    }

    #[test]
    fn other_ports_fault_unprivileged_and_are_empty_privileged() {
        let mut regs = Plain::default();
        regs.r.ax = 0x1234_5678_0000_0000;
        regs.r.dx = 0x80;
        let io = PortIo {
            op: Op::In,
            size: 2,
            ..REP_INSB
        };
        assert_eq!(run(&mut regs, io, false), Step::Fault);
        assert_eq!(run(&mut regs, io, true), Step::Next);
        assert_eq!(regs.r.ax, 0x1234_5678_0000_ffff, "AX only");
    }

    #[test]
    fn empty_rep_ins_fills_downwards() {
        let mut buf = [0u8; 8];
        let mut regs = Plain {
            down: true,
            ..Plain::default()
        };
        let at = buf.as_mut_ptr() as u64 + 5;
        (regs.r.cx, regs.r.dx, regs.r.di) = (3, 0x80, at);
        assert_eq!(run(&mut regs, REP_INSB, true), Step::Next);
        assert_eq!(std::hint::black_box(buf), [0, 0, 0, 0xff, 0xff, 0xff, 0, 0]);
        assert_eq!((regs.r.cx, regs.r.di), (0, at - 3));
    }

    #[test]
    fn empty_rep_ins_stops_at_the_budget_and_faults_on_bad_memory() {
        let mut buf = vec![0u8; FILL_BUDGET as usize + 2];
        let mut regs = Plain::default();
        let at = buf.as_mut_ptr() as u64;
        (regs.r.cx, regs.r.dx, regs.r.di) = (FILL_BUDGET + 2, 0x80, at);
        assert_eq!(run(&mut regs, REP_INSB, true), Step::Again);
        assert_eq!((regs.r.cx, regs.r.di), (2, at + FILL_BUDGET));
        assert_eq!(run(&mut regs, REP_INSB, true), Step::Next);
        assert!(std::hint::black_box(&buf).iter().all(|&b| b == 0xff));
        regs.r.cx = 1;
        regs.r.di = 8;
        assert_eq!(run(&mut regs, REP_INSB, true), Step::Fault);
    }

    #[test]
    fn empty_outs_moves_its_pointer_without_reading() {
        let mut regs = Plain {
            down: true,
            ..Plain::default()
        };
        (regs.r.cx, regs.r.dx, regs.r.si) = (3, 0x80, 0x100);
        let io = PortIo {
            op: Op::Outs,
            size: 4,
            ..REP_INSB
        };
        assert_eq!(run(&mut regs, io, true), Step::Next);
        assert_eq!((regs.r.cx, regs.r.si), (0, 0x100 - 12));
    }
}
