//! CPUID as a VMware VM shows it, where the CPU supports CPUID faulting.
//!
//! With `arch_prctl(ARCH_SET_CPUID, 0)` a thread's CPUID raises #GP (SIGSEGV, like a
//! port access); the runner then answers from the real CPU with the hypervisor leaves
//! replaced: leaf 1 has the hypervisor bit, leaf 0x40000000 names `VMwareVMware`, leaf
//! 0x40000010 ECX offers the hypercalls the host model advertises (by default none, so guests
//! use the I/O ports), and a TDX machine shows leaf 0x21. The setting is inherited by
//! threads and `fork`, and cleared by `execve`, so the runner re-arms it after every exec by
//! running a two-instruction stub at the new program's entry point (`syscall` in a 64-bit
//! program, `int 0x80` in a 32-bit one).

#![forbid(unsafe_code)]

use std::ops::Range;

use libc::pid_t;

use super::decode::{CS_32, CS_64};
use super::sys::{self, UserRegs, ARCH_SET_CPUID};

/// `arch_prctl` on x86_64 (`syscall`).
const NR_ARCH_PRCTL: u32 = 158;
/// `arch_prctl` in the i386 table (`int 0x80` from a 32-bit program).
const NR_ARCH_PRCTL_I386: u32 = 384;
/// The hypervisor leaves a VMware VM reports (0x40000000 up to 0x40000010).
const HV_BASE: u32 = 0x4000_0000;
const HV_FEATURES: u32 = 0x4000_0010;
/// Single steps the re-arm stub may take: leaving the exec system call may report one extra
/// step stop before the first instruction runs.
const STUB_STEPS: usize = 4;

/// Turns CPUID faulting on for the calling thread (the forked guest, before it runs guest
/// code). Raw system call only. False when the CPU or kernel cannot.
pub(crate) fn arm_self() -> bool {
    sys::set_cpuid_faulting(true)
}

/// Whether this CPU and kernel can fault CPUID for a process: tried on the calling thread
/// and undone at once (nothing runs CPUID in between).
pub(crate) fn supported() -> bool {
    sys::set_cpuid_faulting(true) && sys::set_cpuid_faulting(false)
}

/// Intel's TDX enumeration leaf.
const TDX_LEAF: u32 = 0x21;

/// What the VM's CPUID shows beyond the real CPU's: from the host model.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Machine {
    /// Leaf 0x40000010 ECX: bit 0 VMMCALL, bit 1 VMCALL.
    pub(crate) hypercalls: u32,
    /// A TDX guest: leaf 0x21 spells `IntelTDX    `.
    pub(crate) tdx: bool,
}

/// EAX, EBX, ECX, EDX of CPUID `leaf`/`subleaf` on a VMware VM running on this CPU.
pub(crate) fn leaf(leaf: u32, subleaf: u32, machine: Machine) -> [u32; 4] {
    let word = |s: &[u8; 4]| u32::from_le_bytes(*s);
    match leaf {
        // "VMwa" "reVM" "ware" as little-endian words in EBX, ECX, EDX.
        HV_BASE => [HV_FEATURES, 0x6177_4d56, 0x4d56_6572, 0x6572_6177],
        // Frequencies unknown (guests ask GETHZ); the hypercalls the host takes.
        HV_FEATURES => [0, 0, machine.hypercalls, 0],
        0x4000_0001..=0x4000_00ff => [0; 4],
        // "IntelTDX    " in EBX, EDX, ECX, as the TDX module answers it.
        TDX_LEAF if machine.tdx => [0, word(b"Inte"), word(b"    "), word(b"lTDX")],
        _ => {
            let [a, b, c, d] = sys::cpuid(leaf, subleaf);
            let a = if leaf == 0 && machine.tdx {
                a.max(TDX_LEAF)
            } else {
                a
            };
            let c = if leaf == 1 { c | 1 << 31 } else { c };
            [a, b, c, d]
        }
    }
}

/// Answers a faulting CPUID in `regs`.
pub(crate) fn emulate(regs: &mut UserRegs, machine: Machine) {
    let [a, b, c, d] = leaf(regs.rax as u32, regs.rcx as u32, machine);
    regs.rax = a.into();
    regs.rbx = b.into();
    regs.rcx = c.into();
    regs.rdx = d.into();
}

/// After `execve` (tracee `pid` stopped at its exec event, single-threaded): turns CPUID
/// faulting back on by running `arch_prctl(ARCH_SET_CPUID, 0)` from a two-instruction stub
/// at the entry point, then restoring the code and registers. `step` runs one instruction
/// of `pid` and reports whether it came back stopped by that step; it is given the stub's
/// address range. On failure, the reason (CPUID then stays real for that program).
pub(crate) fn rearm(
    pid: pid_t,
    mut step: impl FnMut(pid_t, Range<u64>) -> bool,
) -> Result<(), String> {
    let failed = || format!("could not re-arm CPUID faulting after exec in {pid}");
    let saved = sys::get_regs(pid).map_err(|_| failed())?;
    let Some(stub) = Stub::for_code_segment(saved.cs) else {
        return Err(format!(
            "{pid} runs neither 64-bit nor 32-bit code (CS {:#x}): CPUID stays real",
            saved.cs
        ));
    };
    if run_stub(pid, &saved, &stub, &mut step) {
        Ok(())
    } else {
        Err(failed())
    }
}

/// Runs `stub` at `saved.rip` and puts code and registers back; true if the system call ran
/// and succeeded.
fn run_stub(
    pid: pid_t,
    saved: &UserRegs,
    stub: &Stub,
    step: &mut impl FnMut(pid_t, Range<u64>) -> bool,
) -> bool {
    let entry = saved.rip;
    let Ok(code) = sys::peek8(pid, entry) else {
        return false;
    };
    let [.., keep] = code;
    let [c0, c1, c2, c3, c4, c5, c6] = stub.code;
    if sys::poke8(pid, entry, [c0, c1, c2, c3, c4, c5, c6, keep]).is_err() {
        return false;
    }
    let end = entry + stub.code.len() as u64;
    let mut regs = *saved;
    (stub.set_args)(&mut regs);
    // Step until RIP is past the stub.
    let mut armed = false;
    if sys::set_regs(pid, &regs).is_ok() {
        for _ in 0..STUB_STEPS {
            if !step(pid, entry..end) {
                break;
            }
            match sys::get_regs(pid) {
                Ok(r) if r.rip == end => {
                    armed = r.rax == 0;
                    break;
                }
                Ok(r) if (entry..end).contains(&r.rip) => {}
                _ => break,
            }
        }
    }
    // Put everything back as execve left it (RAX: execve's 0).
    let restored = sys::poke8(pid, entry, code).is_ok()
        && sys::set_regs(pid, &UserRegs { rax: 0, ..*saved }).is_ok();
    armed && restored
}

/// The code that calls `arch_prctl(ARCH_SET_CPUID, 0)` in a freshly exec'd program, for
/// its code segment (the system call instruction and its number depend on the mode).
struct Stub {
    /// `mov eax, NR; syscall` or `mov eax, NR; int 0x80` (both 7 bytes).
    code: [u8; 7],
    /// Puts the arguments where that calling convention wants them.
    set_args: fn(&mut UserRegs),
}

impl Stub {
    fn for_code_segment(cs: u64) -> Option<Stub> {
        match cs {
            CS_64 => Some(Stub {
                code: mov_eax_then(NR_ARCH_PRCTL, [0x0f, 0x05]), // syscall
                set_args: |r| {
                    r.rdi = ARCH_SET_CPUID;
                    r.rsi = 0;
                },
            }),
            CS_32 => Some(Stub {
                code: mov_eax_then(NR_ARCH_PRCTL_I386, [0xcd, 0x80]), // int 0x80
                set_args: |r| {
                    r.rbx = ARCH_SET_CPUID;
                    r.rcx = 0;
                },
            }),
            _ => None,
        }
    }
}

/// `mov eax, nr` (same encoding in both modes) followed by a two-byte instruction.
fn mov_eax_then(nr: u32, [i0, i1]: [u8; 2]) -> [u8; 7] {
    let [n0, n1, n2, n3] = nr.to_le_bytes();
    [0xb8, n0, n1, n2, n3, i0, i1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmware_signature_and_hypervisor_bit() {
        let plain = Machine::default();
        let [max, b, c, d] = leaf(HV_BASE, 0, plain);
        assert_eq!(max, HV_FEATURES);
        let mut name = Vec::new();
        for w in [b, c, d] {
            name.extend_from_slice(&w.to_le_bytes());
        }
        assert_eq!(name, b"VMwareVMware");
        assert_eq!(
            leaf(HV_FEATURES, 0, plain)[2] & 3,
            0,
            "no hypercall offered"
        );
        assert_ne!(leaf(1, 0, plain)[2] & (1 << 31), 0);
        assert_eq!(leaf(0, 0, plain), sys::cpuid(0, 0), "others are real");
    }

    #[test]
    fn hypercalls_and_tdx_as_the_machine_says() {
        let m = Machine {
            hypercalls: 0b10,
            tdx: true,
        };
        assert_eq!(leaf(HV_FEATURES, 0, m)[2], 0b10, "VMCALL");
        let [max, ..] = leaf(0, 0, m);
        assert!(max >= TDX_LEAF);
        let [_, b, c, d] = leaf(TDX_LEAF, 0, m);
        let mut name = Vec::new();
        for w in [b, d, c] {
            name.extend_from_slice(&w.to_le_bytes());
        }
        assert_eq!(name, b"IntelTDX    ");
        assert_eq!(
            leaf(TDX_LEAF, 0, Machine::default()),
            sys::cpuid(TDX_LEAF, 0),
            "real unless TDX"
        );
    }
}
