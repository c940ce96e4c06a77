//! What a trapped `mrs xzr, mdccsr_el0` does under the simulated machine: the x86 I/O
//! instruction X7 describes, with X0..X6 in the roles of EAX..EBP, executed by the same
//! rules as on x86 ([`port_io`]), and anything else keeps its SIGILL. arm64 has no I/O
//! privilege, so every access is an unprivileged one.

#![forbid(unsafe_code)]

use std::sync::Mutex;

use libc::pid_t;

use super::super::port_io::{self, Operand, PortRegs, Step};
use super::super::sys::{self, UserRegs};
use super::super::{Emulated, Thread};
use super::decode;
use crate::proto::arm64::MRS_XZR_MDCCSR_EL0;
use crate::proto::Regs;
use crate::sim::Host;

/// `si_code` of the SIGILL Linux raises for an undefined instruction (`ILL_ILLOPC`).
const ILL_ILLOPC: i32 = 1;
/// The `mrs` is one 4-byte instruction.
const INSN_LEN: u64 = 4;
/// PSTATE.nRW: set while the thread runs AArch32 code (which this runner does not serve).
const PSTATE_AARCH32: u64 = 1 << 4;

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
        // No I/O privilege on arm64.
        match port_io::execute(self.host, pid, &mut regs, &io, None, &mut self.scratch) {
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

/// X0..X6 stand for EAX..EBP; X2 is the count and X4/X5 the pointers, always 64 bits, with
/// no segments; DF is a bit of X7.
impl PortRegs for UserRegs {
    fn backdoor(&self) -> Regs {
        let x = &self.regs;
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

    fn set_backdoor(&mut self, r: &Regs) {
        self.regs[..7].copy_from_slice(&[r.ax, r.bx, r.cx, r.dx, r.si, r.di, r.bp]);
    }

    fn operand(&self, which: Operand) -> u64 {
        self.regs[x_of(which)]
    }

    fn set_operand(&mut self, which: Operand, value: u64) {
        self.regs[x_of(which)] = value;
    }

    fn down(&self) -> bool {
        decode::down(self.regs[7])
    }
}

/// The X register holding a string operand.
fn x_of(which: Operand) -> usize {
    match which {
        Operand::Count => 2,
        Operand::Src => 4,
        Operand::Dst => 5,
    }
}
