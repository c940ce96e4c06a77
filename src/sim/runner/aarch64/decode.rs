//! The x86 I/O instruction W7 describes ("VMware x86 I/O space virtualization on arm",
//! open-vm-tools' `lib/include/backdoor_def.h`), and the per-thread cache of call sites
//! known to hold the trapping `mrs`. Pure functions over integers.

#![forbid(unsafe_code)]

use super::super::port_io::{Op, PortArg, PortIo};
use crate::proto::arm64::{
    W7_DF, W7_DIR, W7_IMM_SHIFT, W7_SIZE_MASK, W7_STR, W7_WITH, X86_IO_MAGIC,
};

/// Call sites a thread's [`DecodeCache`] remembers.
const CACHE_SLOTS: usize = 4;

/// The instruction X7 describes; `None` without [`X86_IO_MAGIC`] in X7<63:32>, for the
/// invalid size 3, or with a reserved bit set (they "must be set to 0").
pub(crate) fn decode(x7: u64) -> Option<PortIo> {
    if (x7 >> 32) as u32 != X86_IO_MAGIC {
        return None;
    }
    let w7 = x7 as u32;
    let size = match w7 & W7_SIZE_MASK {
        0 => 1,
        1 => 2,
        2 => 4,
        _ => return None,
    };
    let read = w7 & W7_DIR != 0;
    // Bits 4:3: the instruction type; each defines the bits above it up to `used`.
    let (port, string, rep, used) = match (w7 & W7_STR != 0, w7 & W7_WITH != 0) {
        (false, false) => (PortArg::Imm((w7 >> W7_IMM_SHIFT) as u8), false, false, 13),
        (false, true) => (PortArg::Dx, false, false, 5),
        (true, false) => (PortArg::Dx, true, false, 6),
        (true, true) => (PortArg::Dx, true, true, 6),
    };
    if w7 >> used != 0 {
        return None;
    }
    let op = match (string, read) {
        (false, true) => Op::In,
        (false, false) => Op::Out,
        (true, true) => Op::Ins,
        (true, false) => Op::Outs,
    };
    Some(PortIo {
        op,
        size,
        port,
        rep,
    })
}

/// EFLAGS.DF of the string form X7 describes: the pointer walks downwards. Not defined for
/// `in`/`out` (the bit is reserved, or part of the immediate port).
pub(crate) fn down(x7: u64) -> bool {
    x7 as u32 & W7_DF != 0
}

/// The last few addresses at which a thread's SIGILL came from the trapping `mrs`, so a call
/// site that traps again skips reading its instruction word (a ptrace round trip).
///
/// Used only for a SIGILL the kernel raised at the same address; dropped at `execve`. What
/// it cannot see is code replaced in place at that very address by another undefined
/// instruction (a JIT, a library unloaded and another loaded exactly there): accepted, as
/// on x86.
#[derive(Default)]
pub(crate) struct DecodeCache {
    slots: [Option<u64>; CACHE_SLOTS],
    next: usize,
}

impl DecodeCache {
    pub(crate) fn contains(&self, pc: u64) -> bool {
        self.slots.contains(&Some(pc))
    }

    pub(crate) fn put(&mut self, pc: u64) {
        if !self.contains(pc) {
            if let Some(slot) = self.slots.get_mut(self.next) {
                *slot = Some(pc);
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
    use crate::proto::arm64::{X7_HB_IN, X7_HB_OUT, X7_LB};

    const MAGIC: u64 = (X86_IO_MAGIC as u64) << 32;

    #[test]
    fn the_three_backdoor_calls() {
        let lb = decode(X7_LB).unwrap();
        assert_eq!(
            (lb.op, lb.size, lb.port, lb.rep),
            (Op::In, 4, PortArg::Dx, false)
        );
        let out = decode(X7_HB_OUT).unwrap();
        assert_eq!(
            (out.op, out.size, out.port, out.rep, down(X7_HB_OUT)),
            (Op::Outs, 1, PortArg::Dx, true, false)
        );
        let inb = decode(X7_HB_IN).unwrap();
        assert_eq!(
            (inb.op, inb.size, inb.rep, down(X7_HB_IN)),
            (Op::Ins, 1, true, false)
        );
    }

    #[test]
    fn every_form_w7_names() {
        // out dx, ax: size 1 (2 bytes), write, DX.
        let p = decode(MAGIC | 0b0_1001).unwrap();
        assert_eq!((p.op, p.size, p.port), (Op::Out, 2, PortArg::Dx));
        // in al, 0x60: immediate port in W7<12:5>.
        let p = decode(MAGIC | (0x60 << 5) | 0b100).unwrap();
        assert_eq!((p.op, p.size, p.port), (Op::In, 1, PortArg::Imm(0x60)));
        // outsd without REP, DF set.
        let x7 = MAGIC | (1 << 5) | 0b1_0010;
        let p = decode(x7).unwrap();
        assert_eq!((p.op, p.size, p.rep, down(x7)), (Op::Outs, 4, false, true));
        // rep insb with DF set.
        let x7 = X7_HB_IN | (1 << 5);
        let p = decode(x7).unwrap();
        assert_eq!((p.op, p.rep, down(x7)), (Op::Ins, true, true));
    }

    #[test]
    fn not_ours() {
        assert_eq!(decode(0x0000_000e), None, "no magic");
        assert_eq!(decode(0x0000_0087_0000_000e), None, "another magic");
        assert_eq!(decode(MAGIC | 0b1111), None, "size 3 is invalid");
        assert_eq!(decode(X7_LB | (1 << 5)), None, "DF is reserved on in/out");
        assert_eq!(decode(X7_HB_OUT | (1 << 6)), None, "reserved bit");
        assert_eq!(decode(MAGIC | (1 << 13)), None, "past the immediate");
    }

    #[test]
    fn cache_remembers_a_few_sites() {
        let mut c = DecodeCache::default();
        for pc in 0..5u64 {
            c.put(pc * 4);
        }
        assert!(!c.contains(0), "the oldest fell out");
        assert!(c.contains(16) && c.contains(4));
        c.clear();
        assert!(!c.contains(16));
    }
}
