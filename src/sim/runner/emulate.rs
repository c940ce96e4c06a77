//! What a faulting instruction does under the simulated machine: port I/O as [`port_io`]
//! executes it on every instruction set, hypercalls and CPUID where the host model allows
//! them ([`Host`]), and anything else keeps its fault. This file turns x86 instructions into
//! host calls and back into registers and guest memory.

#![forbid(unsafe_code)]

use std::sync::{Mutex, MutexGuard};

use libc::pid_t;

use super::decode::{self, Insn, PortInsn, Seg, MAX_INSN};
use super::port_io::{self, Operand, PortRegs, Step};
use super::sys::{self, UserRegs};
use super::{cpuid, lock_host, Emulated, Thread};
use crate::proto::{self, Regs, HB_PORT, LB_PORT};
use crate::sim::host::Hypercall;
use crate::sim::Host;

/// EFLAGS.DF: string instructions walk downwards.
const DF: u64 = 1 << 10;
/// `si_code` of a fault the kernel raised for #GP.
const SI_KERNEL: i32 = 0x80;
/// Hypercall flags in `lo16(EDX)` (open-vm-tools' `lib/include/backdoor_def.h`:
/// `BDOOR_FLAGS_LB` = `BDOOR_FLAGS_READ` = 0, `BDOOR_FLAGS_HB` = 1, `BDOOR_FLAGS_WRITE` = 2):
/// a low-bandwidth call (read, or write, as `in` and `out` are), a high-bandwidth read (host
/// to guest), a high-bandwidth write. The model answers nothing (EAX all ones) for other
/// values: the sources define no other bit.
const HC_LB: u16 = 0;
const HC_LB_WRITE: u16 = 2;
const HC_HB_IN: u16 = 1;
const HC_HB_OUT: u16 = 3;

/// Executes faulting instructions of the guest against the host model.
pub(super) struct Emulator<'h> {
    host: &'h Mutex<Host>,
    /// Whether the guest sees a VMware CPUID (CPUID faulting armed in every process).
    cpuid: bool,
    /// What that CPUID shows beyond the real CPU's.
    machine: cpuid::Machine,
    /// Reused buffer for guest memory (no allocation per call).
    scratch: Vec<u8>,
    /// SIGSEGVs the guest's processes sent (the filter stops `kill` and its kin for them)
    /// and the runner has not yet seen arrive.
    segv_sent: u64,
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
            segv_sent: 0,
        }
    }

    /// A guest's process is sending a SIGSEGV: until it arrives, no SIGSEGV is taken for
    /// a fault without asking the kernel.
    pub(super) fn segv_sent(&mut self) {
        self.segv_sent = self.segv_sent.saturating_add(1);
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
        let Ok(mut regs) = sys::get_regs(pid) else {
            return Emulated::No;
        };
        let Some(long_mode) = decode::long_mode(regs.cs) else {
            return Emulated::No;
        };
        let cached = if sig == libc::SIGSEGV {
            thread
                .as_deref()
                .and_then(|t| t.decoded.get(regs.rip, regs.cs))
        } else {
            None
        };
        // Only faults count: a SIGSEGV sent with kill() while RIP happens to sit on an `in`
        // must reach the guest. At a port instruction this thread faulted on before, a
        // SIGSEGV is that fault again (#GP comes before any memory access of the
        // instruction) unless a process of the guest's sent one: only then is the kernel
        // asked, which spares one of the four ptrace requests of the common path.
        let code = match cached {
            Some(_) if self.segv_sent == 0 => SI_KERNEL,
            _ => match sys::signal_code(pid) {
                Ok(code) if code > 0 => code,
                Ok(_) => {
                    if sig == libc::SIGSEGV {
                        self.segv_sent = self.segv_sent.saturating_sub(1);
                    }
                    return Emulated::No;
                }
                Err(_) => return Emulated::No,
            },
        };
        // Port I/O without permission raises #GP, which the kernel reports as SI_KERNEL.
        let gp = sig == libc::SIGSEGV && code == SI_KERNEL;
        let cached = cached.filter(|_| gp);
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
            Insn::Port(io) if sig == libc::SIGSEGV => port_io::execute(
                self.host,
                pid,
                &mut X86Regs::new(&mut regs, &io),
                &io.io,
                thread.map(|t| &t.io),
                &mut self.scratch,
            ),
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
                let take = port_io::message_len(regs.rcx & width);
                if !port_io::read_guest(pid, regs.rsi & width, take, &mut self.scratch) {
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

/// The x86 register file as a port instruction sees it: RCX, RSI and RDI at the
/// instruction's address size, and the base of an `outs` segment override.
struct X86Regs<'r> {
    regs: &'r mut UserRegs,
    addr_bits: u8,
    seg: Seg,
}

impl<'r> X86Regs<'r> {
    fn new(regs: &'r mut UserRegs, insn: &PortInsn) -> Self {
        X86Regs {
            regs,
            addr_bits: insn.addr_bits,
            seg: insn.seg,
        }
    }

    fn slot(&mut self, which: Operand) -> &mut u64 {
        match which {
            Operand::Count => &mut self.regs.rcx,
            Operand::Src => &mut self.regs.rsi,
            Operand::Dst => &mut self.regs.rdi,
        }
    }
}

impl PortRegs for X86Regs<'_> {
    fn backdoor(&self) -> Regs {
        to_proto(self.regs)
    }

    fn set_backdoor(&mut self, regs: &Regs) {
        from_proto(self.regs, regs);
    }

    fn operand(&self, which: Operand) -> u64 {
        let value = match which {
            Operand::Count => self.regs.rcx,
            Operand::Src => self.regs.rsi,
            Operand::Dst => self.regs.rdi,
        };
        match self.addr_bits {
            16 => value & 0xffff,
            32 => value & 0xffff_ffff,
            _ => value,
        }
    }

    /// 32-bit writes clear the upper half, 16-bit writes keep it.
    fn set_operand(&mut self, which: Operand, value: u64) {
        let bits = self.addr_bits;
        let slot = self.slot(which);
        *slot = match bits {
            16 => (*slot & !0xffff) | (value & 0xffff),
            32 => value & 0xffff_ffff,
            _ => value,
        };
    }

    /// `ins` writes through ES, flat on Linux; `outs` reads through its override.
    fn address(&self, which: Operand) -> u64 {
        let base = match (which, self.seg) {
            (Operand::Src, Seg::Fs) => self.regs.fs_base,
            (Operand::Src, Seg::Gs) => self.regs.gs_base,
            _ => 0,
        };
        base.wrapping_add(self.operand(which))
    }

    fn down(&self) -> bool {
        self.regs.eflags & DF != 0
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
