//! Decoding the instruction a guest faulted on: port I/O (`in`, `out`, `ins`, `outs`, with
//! their prefixes) and the VMCALL / VMMCALL hypercalls. Pure functions over bytes, and the
//! per-thread cache of decoded call sites.

#![forbid(unsafe_code)]

use super::port_io::{Op, PortArg, PortIo};
use crate::sim::host::Hypercall;

/// Linux user code segment selectors on x86_64: 64-bit programs and 32-bit (compatibility
/// mode) ones (`__USER_CS` and `__USER32_CS`, arch/x86/include/asm/segment.h).
pub(crate) const CS_64: u64 = 0x33;
pub(crate) const CS_32: u64 = 0x23;

/// Port I/O call sites a thread's [`DecodeCache`] remembers.
const CACHE_SLOTS: usize = 4;

/// The longest x86 instruction; longer ones raise #GP and are not ours.
pub(crate) const MAX_INSN: usize = 15;

/// Segment override of an `outs` source; only FS and GS have a base in 64-bit mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seg {
    /// No override that changes the address.
    Flat,
    /// `fs:`.
    Fs,
    /// `gs:`.
    Gs,
}

/// A decoded port I/O instruction: the access, and how x86 addresses its string operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PortInsn {
    /// The access.
    pub io: PortIo,
    /// Address size of a string form: 16, 32 or 64 bits (RSI/RDI/RCX width).
    pub addr_bits: u8,
    /// Segment override (matters for `outs` only).
    pub seg: Seg,
    /// Instruction length in bytes.
    pub len: u8,
}

/// A decoded instruction the runner emulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Insn {
    /// Port I/O.
    Port(PortInsn),
    /// VMCALL (`0f 01 c1`) or VMMCALL (`0f 01 d9`): the hypercall backdoor.
    Hypercall(Hypercall),
    /// CPUID (`0f a2`), faulting because CPUID faulting is on for the guest.
    Cpuid {
        /// Instruction length (prefixes are allowed and mean nothing).
        len: u8,
    },
}

impl Insn {
    /// Length in bytes.
    pub(crate) fn len(&self) -> u8 {
        match self {
            Insn::Port(p) => p.len,
            Insn::Hypercall(_) => 3,
            Insn::Cpuid { len } => *len,
        }
    }
}

/// Whether `b` is a prefix byte: an instruction whose first bytes are all prefixes may be
/// longer than what was fetched.
pub(crate) fn is_prefix(b: u8, long_mode: bool) -> bool {
    matches!(
        b,
        0x66 | 0x67 | 0xf2 | 0xf3 | 0xf0 | 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65
    ) || (long_mode && (0x40..=0x4f).contains(&b))
}

/// Decodes the instruction at the start of `bytes` (what could be read at RIP; may be
/// short near an unmapped page). `long_mode` is false for a 32-bit (compatibility mode)
/// process. `None` when it is not an instruction the runner emulates.
pub(crate) fn decode(bytes: &[u8], long_mode: bool) -> Option<Insn> {
    let mut opsize16 = false;
    let mut addr_override = false;
    let mut rep = false;
    let mut lock = false;
    let mut seg = Seg::Flat;
    let mut prefixes = 0usize;
    // Prefixes, then the opcode; bounded by the 15-byte instruction limit.
    let mut i = 0usize;
    let opcode = loop {
        if i >= MAX_INSN {
            return None;
        }
        let b = *bytes.get(i)?;
        if !is_prefix(b, long_mode) {
            break b;
        }
        match b {
            0x66 => opsize16 = true,
            0x67 => addr_override = true,
            0xf2 | 0xf3 => rep = true,
            0xf0 => lock = true,
            0x26 | 0x2e | 0x36 | 0x3e => seg = Seg::Flat,
            0x64 => seg = Seg::Fs,
            0x65 => seg = Seg::Gs,
            // REX (long mode only): meaningful right before the opcode, and it changes
            // nothing for port I/O (no 64-bit operand size exists), so it is skipped.
            _ => {}
        }
        prefixes += 1;
        i += 1;
    };
    let wide = if opsize16 { 2 } else { 4 };
    let (op, size, port, extra) = match opcode {
        0xe4 => (Op::In, 1, PortArg::Imm(*bytes.get(i + 1)?), 1),
        0xe5 => (Op::In, wide, PortArg::Imm(*bytes.get(i + 1)?), 1),
        0xe6 => (Op::Out, 1, PortArg::Imm(*bytes.get(i + 1)?), 1),
        0xe7 => (Op::Out, wide, PortArg::Imm(*bytes.get(i + 1)?), 1),
        0xec => (Op::In, 1, PortArg::Dx, 0),
        0xed => (Op::In, wide, PortArg::Dx, 0),
        0xee => (Op::Out, 1, PortArg::Dx, 0),
        0xef => (Op::Out, wide, PortArg::Dx, 0),
        0x6c => (Op::Ins, 1, PortArg::Dx, 0),
        0x6d => (Op::Ins, wide, PortArg::Dx, 0),
        0x6e => (Op::Outs, 1, PortArg::Dx, 0),
        0x6f => (Op::Outs, wide, PortArg::Dx, 0),
        0x0f if bytes.get(i + 1) == Some(&0xa2) => {
            return (!lock && i + 2 <= MAX_INSN).then_some(Insn::Cpuid { len: (i + 2) as u8 });
        }
        0x0f => {
            // Hypercalls take no prefixes (with them the bytes mean other instructions).
            let call = match bytes.get(i + 1..i + 3) {
                Some([0x01, 0xc1]) => Hypercall::Vmcall,
                Some([0x01, 0xd9]) => Hypercall::Vmmcall,
                _ => return None,
            };
            return (prefixes == 0).then_some(Insn::Hypercall(call));
        }
        _ => return None,
    };
    // LOCK on port I/O is #UD, not #GP: never ours to emulate.
    if lock {
        return None;
    }
    let len = i + 1 + extra;
    if len > MAX_INSN {
        return None;
    }
    let string = matches!(op, Op::Ins | Op::Outs);
    let addr_bits = match (long_mode, addr_override) {
        (true, false) => 64,
        (true, true) | (false, false) => 32,
        (false, true) => 16,
    };
    Some(Insn::Port(PortInsn {
        io: PortIo {
            op,
            size,
            port,
            rep: rep && string,
        },
        addr_bits,
        seg: if long_mode { seg } else { Seg::Flat },
        len: len as u8,
    }))
}

/// Whether code running with code segment `cs` is 64-bit (`Some(true)`) or 32-bit
/// (`Some(false)`); `None` for any other segment (not a Linux user program).
pub(crate) fn long_mode(cs: u64) -> Option<bool> {
    match cs {
        CS_64 => Some(true),
        CS_32 => Some(false),
        _ => None,
    }
}

/// The last few port I/O instructions a thread faulted on, by (RIP, CS), so a call site
/// that traps again skips reading its instruction bytes (a ptrace round trip).
///
/// An entry is only used for a fault of the kind port I/O raises (#GP, `SI_KERNEL`) at the
/// same address and code segment, and the cache is dropped at `execve`. What it cannot see
/// is code replaced in place at that very address by another #GP-raising instruction
/// (unloading a library and loading another exactly there, or a JIT): accepted.
#[derive(Default)]
pub(crate) struct DecodeCache {
    slots: [Option<(u64, u64, PortInsn)>; CACHE_SLOTS],
    next: usize,
}

impl DecodeCache {
    pub(crate) fn get(&self, rip: u64, cs: u64) -> Option<PortInsn> {
        self.slots
            .iter()
            .flatten()
            .find(|(r, c, _)| *r == rip && *c == cs)
            .map(|(_, _, io)| *io)
    }

    pub(crate) fn put(&mut self, rip: u64, cs: u64, io: PortInsn) {
        if self.get(rip, cs).is_none() {
            if let Some(slot) = self.slots.get_mut(self.next) {
                *slot = Some((rip, cs, io));
            }
            self.next = (self.next + 1) % CACHE_SLOTS;
        }
    }

    pub(crate) fn clear(&mut self) {
        *self = DecodeCache::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(bytes: &[u8]) -> PortInsn {
        match decode(bytes, true) {
            Some(Insn::Port(p)) => p,
            other => panic!("{bytes:02x?} decoded as {other:?}"),
        }
    }

    #[test]
    fn backdoor_forms() {
        let lb = port(&[0xed, 0x90]);
        assert_eq!(
            (lb.io.op, lb.io.size, lb.io.port, lb.len),
            (Op::In, 4, PortArg::Dx, 1)
        );
        let out = port(&[0xef]);
        assert_eq!((out.io.op, out.io.size), (Op::Out, 4));
        let outsb = port(&[0xf3, 0x6e]);
        assert_eq!(
            (
                outsb.io.op,
                outsb.io.size,
                outsb.io.rep,
                outsb.addr_bits,
                outsb.len
            ),
            (Op::Outs, 1, true, 64, 2)
        );
        let insb = port(&[0xf3, 0x6c]);
        assert_eq!((insb.io.op, insb.io.rep, insb.len), (Op::Ins, true, 2));
    }

    #[test]
    fn prefixes_change_size_address_and_segment() {
        let inw = port(&[0x66, 0xed]);
        assert_eq!((inw.io.size, inw.len), (2, 2));
        let rex = port(&[0x66, 0x48, 0xed]);
        assert_eq!((rex.io.size, rex.len), (2, 3));
        let a32 = port(&[0x67, 0xf3, 0x6c]);
        assert_eq!((a32.addr_bits, a32.len, a32.io.rep), (32, 3, true));
        let fs = port(&[0x64, 0xf3, 0x6e]);
        assert_eq!(fs.seg, Seg::Fs);
        let repne = port(&[0xf2, 0x6d]);
        assert_eq!((repne.io.rep, repne.io.size), (true, 4));
        let plain = port(&[0x6e]);
        assert!(!plain.io.rep);
        // REP means nothing on in/out.
        assert!(!port(&[0xf3, 0xed]).io.rep);
    }

    #[test]
    fn immediate_ports() {
        let p = port(&[0xe4, 0x60]);
        assert_eq!(
            (p.io.op, p.io.size, p.io.port, p.len),
            (Op::In, 1, PortArg::Imm(0x60), 2)
        );
        let p = port(&[0x66, 0xe7, 0x80]);
        assert_eq!(
            (p.io.op, p.io.size, p.io.port, p.len),
            (Op::Out, 2, PortArg::Imm(0x80), 3)
        );
        assert_eq!(decode(&[0xe5], true), None, "immediate cut off");
    }

    #[test]
    fn compat_mode_has_no_rex_and_narrower_addresses() {
        // 0x48 is `dec eax` in 32-bit code: not a prefix, not ours.
        assert_eq!(decode(&[0x48, 0xed], false), None);
        let Some(Insn::Port(p)) = decode(&[0x67, 0xf3, 0x6e], false) else {
            panic!()
        };
        assert_eq!(p.addr_bits, 16);
        let Some(Insn::Port(p)) = decode(&[0x64, 0xf3, 0x6e], false) else {
            panic!()
        };
        assert_eq!((p.addr_bits, p.seg), (32, Seg::Flat));
    }

    #[test]
    fn hypercalls() {
        assert_eq!(
            decode(&[0x0f, 0x01, 0xc1], true),
            Some(Insn::Hypercall(Hypercall::Vmcall))
        );
        assert_eq!(
            decode(&[0x0f, 0x01, 0xd9, 0xcc], true),
            Some(Insn::Hypercall(Hypercall::Vmmcall))
        );
        assert_eq!(
            decode(&[0x0f, 0x01, 0xd9], false),
            Some(Insn::Hypercall(Hypercall::Vmmcall)),
            "the same in 32-bit code"
        );
        assert_eq!(decode(&[0x66, 0x0f, 0x01, 0xc1], true), None);
        assert_eq!(decode(&[0x0f, 0x01, 0xd0], true), None, "xgetbv");
        assert_eq!(decode(&[0x0f, 0x01], true), None);
    }

    #[test]
    fn cpuid() {
        assert_eq!(decode(&[0x0f, 0xa2], true), Some(Insn::Cpuid { len: 2 }));
        assert_eq!(
            decode(&[0x66, 0x0f, 0xa2], false),
            Some(Insn::Cpuid { len: 3 })
        );
        assert_eq!(decode(&[0xf0, 0x0f, 0xa2], true), None);
        assert_eq!(decode(&[0x0f], true), None);
    }

    #[test]
    fn not_ours() {
        assert_eq!(decode(&[], true), None);
        assert_eq!(decode(&[0x90], true), None);
        assert_eq!(decode(&[0xf0, 0xed], true), None, "lock is #UD");
        assert_eq!(decode(&[0x66; 20], true), None, "prefixes past 15 bytes");
        let mut long = [0x66u8; 15];
        long[14] = 0xed;
        assert!(decode(&long, true).is_some(), "exactly 15 bytes is legal");
        let mut too_long = [0x66u8; 15];
        too_long[14] = 0xe5;
        assert_eq!(decode(&[&too_long[..], &[0x10]].concat(), true), None);
    }
}
