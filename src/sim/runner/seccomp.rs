//! The seccomp filter that hands `iopl` and `ioperm` to the runner: a guest's call to either
//! stops it with `PTRACE_EVENT_SECCOMP` (the runner then answers it virtually). So does a
//! `clone` with `CLONE_UNTRACED`, whose flag the runner clears so the child stays served;
//! `clone3`, whose flags the filter cannot see, fails with `ENOSYS`, so the C library falls
//! back to `clone`. Every other system call is allowed untouched.

#![forbid(unsafe_code)]

use libc::sock_filter;

use super::sys;

/// Which I/O-privilege call stopped the guest: the filter's `SECCOMP_RET_DATA`, read back
/// with `PTRACE_GETEVENTMSG`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IoCall {
    /// `iopl` through the 64-bit (or x32) system call table; argument in RDI.
    Iopl64,
    /// `ioperm` through the 64-bit (or x32) table; arguments in RDI, RSI, RDX.
    Ioperm64,
    /// `iopl` through the i386 table (`int 0x80`, 32-bit processes); argument in EBX.
    Iopl32,
    /// `ioperm` through the i386 table; arguments in EBX, ECX, EDX.
    Ioperm32,
    /// `clone` with `CLONE_UNTRACED` through the 64-bit table; flags in RDI.
    UntracedClone64,
    /// `clone` with `CLONE_UNTRACED` through the i386 table; flags in EBX.
    UntracedClone32,
}

impl IoCall {
    /// The call a filter data value names.
    pub(crate) fn from_data(data: u64) -> Option<IoCall> {
        match data {
            1 => Some(IoCall::Iopl64),
            2 => Some(IoCall::Ioperm64),
            3 => Some(IoCall::Iopl32),
            4 => Some(IoCall::Ioperm32),
            5 => Some(IoCall::UntracedClone64),
            6 => Some(IoCall::UntracedClone32),
            _ => None,
        }
    }
}

// Classic BPF opcodes and the seccomp ABI (stable kernel numbers), shared with the vsock
// filter (`vsock/filter.rs`).
pub(super) const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
pub(super) const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
pub(super) const RET_K: u16 = 0x06; // BPF_RET | BPF_K
pub(super) const RET_ALLOW: u32 = 0x7fff_0000;
pub(super) const RET_TRACE: u32 = 0x7ff0_0000;
pub(super) const RET_ERRNO: u32 = 0x0005_0000;
const ENOSYS: u32 = libc::ENOSYS as u32;
pub(super) const ARCH_X86_64: u32 = 0xc000_003e;
pub(super) const ARCH_I386: u32 = 0x4000_0003;
pub(super) const X32_BIT: u32 = 0x4000_0000;
pub(super) const OFFSET_NR: u32 = 0; // seccomp_data.nr
pub(super) const OFFSET_ARCH: u32 = 4; // seccomp_data.arch
pub(super) const OFFSET_ARG0: u32 = 16; // seccomp_data.args[0], its low 32 bits (little-endian)
/// The clone flag that would take a child out of the runner's sight.
pub(crate) const CLONE_UNTRACED: u64 = 0x0080_0000;

// System call numbers.
const NR64_IOPL: u32 = 172;
const NR64_IOPERM: u32 = 173;
const NR32_IOPL: u32 = 110;
const NR32_IOPERM: u32 = 101;
const NR64_CLONE: u32 = 56;
const NR32_CLONE: u32 = 120;
/// clone3 has the same number in both tables.
const NR_CLONE3: u32 = 435;

pub(super) const fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jset(k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: JSET_K,
        jt,
        jf,
        k,
    }
}

pub(super) const fn jeq(k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: JEQ_K,
        jt,
        jf,
        k,
    }
}

/// The filter program. A jump goes `1 + offset` instructions forward.
static FILTER: [sock_filter; 30] = [
    /* 0 */ stmt(LD_W_ABS, OFFSET_ARCH),
    /* 1 */ jeq(ARCH_X86_64, 1, 0), // -> 3 / 2
    /* 2 */ jeq(ARCH_I386, 14, 25), // -> 17 (i386 table) / 28 (allow)
    // 64-bit table (and x32, which numbers the same calls with bit 30 set).
    /* 3 */
    stmt(LD_W_ABS, OFFSET_NR),
    /* 4 */ jeq(NR64_IOPL, 6, 0), // -> 11
    /* 5 */ jeq(NR64_IOPL | X32_BIT, 5, 0), // -> 11
    /* 6 */ jeq(NR64_IOPERM, 5, 0), // -> 12
    /* 7 */ jeq(NR64_IOPERM | X32_BIT, 4, 0), // -> 12
    /* 8 */ jeq(NR64_CLONE, 4, 0), // -> 13
    /* 9 */ jeq(NR_CLONE3, 19, 0), // -> 29
    /* 10 */ stmt(RET_K, RET_ALLOW),
    /* 11 */ stmt(RET_K, RET_TRACE | 1),
    /* 12 */ stmt(RET_K, RET_TRACE | 2),
    /* 13 */ stmt(LD_W_ABS, OFFSET_ARG0),
    /* 14 */ jset(CLONE_UNTRACED as u32, 0, 1), // -> 15 / 16
    /* 15 */ stmt(RET_K, RET_TRACE | 5),
    /* 16 */ stmt(RET_K, RET_ALLOW),
    // i386 table.
    /* 17 */ stmt(LD_W_ABS, OFFSET_NR),
    /* 18 */ jeq(NR32_IOPL, 4, 0), // -> 23
    /* 19 */ jeq(NR32_IOPERM, 4, 0), // -> 24
    /* 20 */ jeq(NR32_CLONE, 4, 0), // -> 25
    /* 21 */ jeq(NR_CLONE3, 7, 0), // -> 29
    /* 22 */ stmt(RET_K, RET_ALLOW),
    /* 23 */ stmt(RET_K, RET_TRACE | 3),
    /* 24 */ stmt(RET_K, RET_TRACE | 4),
    /* 25 */ stmt(LD_W_ABS, OFFSET_ARG0),
    /* 26 */ jset(CLONE_UNTRACED as u32, 0, 1), // -> 27 / 28
    /* 27 */ stmt(RET_K, RET_TRACE | 6),
    /* 28 */ stmt(RET_K, RET_ALLOW),
    // clone3's flags are in memory, out of a filter's reach: ENOSYS makes the C library
    // fall back to clone (glibc, musl do), whose CLONE_UNTRACED the runner clears.
    /* 29 */
    stmt(RET_K, RET_ERRNO | ENOSYS),
];

/// Installs the filter in the calling process (the forked guest, before it runs guest
/// code). Only raw system calls: safe between `fork` and `exec`. Returns the errno on
/// failure.
pub(crate) fn install() -> Result<(), i32> {
    sys::set_no_new_privs()?;
    sys::seccomp_filter(&FILTER)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Runs the filter the way the kernel does for one system call.
    fn verdict(arch: u32, nr: u32) -> u32 {
        verdict_with(arch, nr, 0)
    }

    fn verdict_with(arch: u32, nr: u32, arg0: u32) -> u32 {
        run(&FILTER, arch, nr, [arg0, 0])
    }

    /// Runs `prog` the way the kernel does for one system call with these first two
    /// arguments (their low 32 bits); for the vsock filter's tests too.
    pub(in crate::sim::runner) fn run(
        prog: &[sock_filter],
        arch: u32,
        nr: u32,
        args: [u32; 2],
    ) -> u32 {
        const OFFSET_ARG1: u32 = OFFSET_ARG0 + 8;
        let mut acc = 0u32;
        let mut pc = 0usize;
        for _ in 0..prog.len() {
            let ins = prog[pc];
            match ins.code {
                LD_W_ABS => {
                    acc = match ins.k {
                        OFFSET_NR => nr,
                        OFFSET_ARCH => arch,
                        OFFSET_ARG0 => args[0],
                        OFFSET_ARG1 => args[1],
                        other => panic!("load of offset {other}"),
                    };
                    pc += 1;
                }
                JEQ_K => pc += 1 + usize::from(if acc == ins.k { ins.jt } else { ins.jf }),
                JSET_K => pc += 1 + usize::from(if acc & ins.k != 0 { ins.jt } else { ins.jf }),
                RET_K => return ins.k,
                other => panic!("opcode {other:#x}"),
            }
        }
        panic!("fell off the filter");
    }

    #[test]
    fn traces_exactly_iopl_and_ioperm() {
        assert_eq!(verdict(ARCH_X86_64, 172), RET_TRACE | 1);
        assert_eq!(verdict(ARCH_X86_64, 173), RET_TRACE | 2);
        assert_eq!(verdict(ARCH_X86_64, 172 | X32_BIT), RET_TRACE | 1);
        assert_eq!(verdict(ARCH_X86_64, 173 | X32_BIT), RET_TRACE | 2);
        assert_eq!(verdict(ARCH_I386, 110), RET_TRACE | 3);
        assert_eq!(verdict(ARCH_I386, 101), RET_TRACE | 4);
        for nr in [0, 1, 59, 101, 110, 174, 231, 434, 436] {
            assert_eq!(verdict(ARCH_X86_64, nr), RET_ALLOW, "x86_64 {nr}");
        }
        for nr in [0, 1, 11, 172, 173, 252] {
            assert_eq!(verdict(ARCH_I386, nr), RET_ALLOW, "i386 {nr}");
        }
        assert_eq!(verdict(0xc000_00b7, 172), RET_ALLOW, "another architecture");
        // clone: only with CLONE_UNTRACED, in either table.
        let untraced = CLONE_UNTRACED as u32;
        assert_eq!(
            verdict_with(ARCH_X86_64, 56, untraced | 0x11),
            RET_TRACE | 5
        );
        assert_eq!(
            verdict_with(ARCH_X86_64, 56, 0x0001_0f00),
            RET_ALLOW,
            "a thread"
        );
        assert_eq!(verdict_with(ARCH_I386, 120, untraced), RET_TRACE | 6);
        assert_eq!(verdict_with(ARCH_I386, 120, 0x11), RET_ALLOW, "a fork");
        assert_eq!(
            verdict_with(ARCH_X86_64, 57, untraced),
            RET_ALLOW,
            "not clone"
        );
        // clone3 fails with ENOSYS in both tables, whatever its flags.
        assert_eq!(verdict(ARCH_X86_64, 435), RET_ERRNO | ENOSYS);
        assert_eq!(verdict(ARCH_I386, 435), RET_ERRNO | ENOSYS);
        for data in 1..=6u32 {
            assert!(IoCall::from_data(u64::from(data)).is_some());
        }
        assert_eq!(IoCall::from_data(0), None);
    }
}
