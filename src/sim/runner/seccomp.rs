//! The seccomp filter that hands `iopl` and `ioperm` to the runner: a guest's call to either
//! stops it with `PTRACE_EVENT_SECCOMP` (the runner then answers it virtually). So does a
//! `clone` with `CLONE_UNTRACED`, whose flag the runner clears so the child stays served;
//! `clone3`, whose flags the filter cannot see, fails with `ENOSYS`, so the C library falls
//! back to `clone`. A system call that sends SIGSEGV (`kill`, `tgkill`, …) stops too, so the
//! runner knows when a SIGSEGV may be a process's rather than a fault, and can skip asking
//! the kernel which it is on the common path. Every other system call is allowed untouched.
//!
//! The programs are built from rules ([`rule`]: a call number, an action, and when it
//! applies), here and in the vsock filter (`vsock/filter.rs`).

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
    /// A call that sends SIGSEGV to a process or thread, in either table: noted, then run.
    SegvSent,
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
            7 => Some(IoCall::SegvSent),
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
pub(super) const ARCH_X86_64: u32 = 0xc000_003e;
pub(super) const ARCH_I386: u32 = 0x4000_0003;
pub(super) const X32_BIT: u32 = 0x4000_0000;
pub(super) const OFFSET_NR: u32 = 0; // seccomp_data.nr
pub(super) const OFFSET_ARCH: u32 = 4; // seccomp_data.arch
pub(super) const OFFSET_ARG0: u32 = 16; // seccomp_data.args[0], its low 32 bits (little-endian)
pub(super) const OFFSET_ARG1: u32 = 24; // seccomp_data.args[1], its low 32 bits
pub(super) const OFFSET_ARG2: u32 = 32; // seccomp_data.args[2], its low 32 bits
/// The clone flag that would take a child out of the runner's sight.
pub(crate) const CLONE_UNTRACED: u64 = 0x0080_0000;

const ENOSYS: u32 = libc::ENOSYS as u32;

/// The calls the filter acts on, by table: (64-bit, i386) numbers; x32 numbers the 64-bit
/// ones with bit 30 set (its own numbers, where it has them, are the third field).
const IOPL: (u32, u32) = (172, 110);
const IOPERM: (u32, u32) = (173, 101);
const CLONE: (u32, u32) = (56, 120);
const CLONE3: (u32, u32) = (435, 435);
/// Calls that send a signal, with the argument that names it: (64-bit, x32, i386, offset).
const SIGNAL_SENDERS: [(u32, u32, u32, u32); 6] = [
    (62, 62, 37, OFFSET_ARG1),    // kill(pid, sig)
    (200, 200, 238, OFFSET_ARG1), // tkill(tid, sig)
    (234, 234, 270, OFFSET_ARG2), // tgkill(tgid, tid, sig)
    (129, 524, 178, OFFSET_ARG1), // rt_sigqueueinfo(tgid, sig, info)
    (297, 536, 335, OFFSET_ARG2), // rt_tgsigqueueinfo(tgid, tid, sig, info)
    (424, 424, 424, OFFSET_ARG1), // pidfd_send_signal(pidfd, sig, info, flags)
];

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

/// When a rule's action applies (otherwise the call is allowed).
#[derive(Clone, Copy)]
pub(super) enum When<'a> {
    Always,
    /// The argument's low 32 bits at this offset are one of these values.
    ArgIs(u32, &'a [u32]),
    /// The argument's low 32 bits at this offset have one of these bits set.
    ArgHasBits(u32, u32),
}

/// A jump over `n` instructions (each rule is short; the tests check the whole program).
pub(super) fn skip(n: usize) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

/// `if nr == nr { action, when `when` }`, falling through to the next rule otherwise; the
/// accumulator must hold the call number.
pub(super) fn rule(out: &mut Vec<sock_filter>, nr: u32, action: u32, when: When<'_>) {
    let body = match when {
        When::Always => vec![stmt(RET_K, action)],
        When::ArgIs(offset, values) => {
            let mut h = vec![stmt(LD_W_ABS, offset)];
            let n = values.len();
            for (i, &v) in values.iter().enumerate() {
                h.push(jeq(v, skip(n - i), 0));
            }
            h.push(stmt(RET_K, RET_ALLOW));
            h.push(stmt(RET_K, action));
            h
        }
        When::ArgHasBits(offset, bits) => vec![
            stmt(LD_W_ABS, offset),
            jset(bits, 1, 0),
            stmt(RET_K, RET_ALLOW),
            stmt(RET_K, action),
        ],
    };
    out.push(jeq(nr, 0, skip(body.len())));
    out.extend(body);
}

/// A program of one rule list per table: x86_64 (with x32) and i386; other architectures
/// are allowed everything.
pub(super) fn per_table(x64: Vec<sock_filter>, i386: Vec<sock_filter>) -> Vec<sock_filter> {
    let mut p = vec![stmt(LD_W_ABS, OFFSET_ARCH)];
    for (arch, rules) in [(ARCH_X86_64, x64), (ARCH_I386, i386)] {
        let mut body = vec![stmt(LD_W_ABS, OFFSET_NR)];
        body.extend(rules);
        body.push(stmt(RET_K, RET_ALLOW));
        p.push(jeq(arch, 0, skip(body.len())));
        p.extend(body);
    }
    p.push(stmt(RET_K, RET_ALLOW));
    p
}

fn build() -> Vec<sock_filter> {
    let trace = |call: u32| RET_TRACE | call;
    let untraced = When::ArgHasBits(OFFSET_ARG0, CLONE_UNTRACED as u32);
    // clone3's flags are in memory, out of a filter's reach: ENOSYS makes the C library
    // fall back to clone (glibc, musl do), whose CLONE_UNTRACED the runner clears.
    let enosys = RET_ERRNO | ENOSYS;
    const SEGV: [u32; 1] = [libc::SIGSEGV as u32];
    let mut x64 = Vec::new();
    for x32 in [0, X32_BIT] {
        rule(&mut x64, IOPL.0 | x32, trace(1), When::Always);
        rule(&mut x64, IOPERM.0 | x32, trace(2), When::Always);
    }
    rule(&mut x64, CLONE.0, trace(5), untraced);
    rule(&mut x64, CLONE3.0, enosys, When::Always);
    let mut i386 = Vec::new();
    rule(&mut i386, IOPL.1, trace(3), When::Always);
    rule(&mut i386, IOPERM.1, trace(4), When::Always);
    rule(&mut i386, CLONE.1, trace(6), untraced);
    rule(&mut i386, CLONE3.1, enosys, When::Always);
    for (nr64, nrx32, nr32, offset) in SIGNAL_SENDERS {
        let when = When::ArgIs(offset, &SEGV);
        rule(&mut x64, nr64, trace(7), when);
        rule(&mut x64, nrx32 | X32_BIT, trace(7), when);
        rule(&mut i386, nr32, trace(7), when);
    }
    per_table(x64, i386)
}

/// The program, built on first use, which must be before `fork` ([`install`] only
/// installs it).
pub(crate) fn program() -> &'static [sock_filter] {
    static PROGRAM: std::sync::OnceLock<Vec<sock_filter>> = std::sync::OnceLock::new();
    PROGRAM.get_or_init(build)
}

/// Installs `program` ([`program`], built before the fork) in the calling process (the
/// forked guest, before it runs guest code). Only raw system calls: safe between `fork`
/// and `exec`. Returns the errno on failure.
pub(crate) fn install(program: &'static [sock_filter]) -> Result<(), i32> {
    sys::set_no_new_privs()?;
    sys::seccomp_filter(program)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Runs the filter the way the kernel does for one system call.
    fn verdict(arch: u32, nr: u32) -> u32 {
        verdict_with(arch, nr, 0)
    }

    fn verdict_with(arch: u32, nr: u32, arg0: u32) -> u32 {
        run(program(), arch, nr, &[arg0])
    }

    /// Runs `prog` the way the kernel does for one system call with these first arguments
    /// (their low 32 bits; missing ones are 0); for the vsock filter's tests too.
    pub(in crate::sim::runner) fn run(
        prog: &[sock_filter],
        arch: u32,
        nr: u32,
        args: &[u32],
    ) -> u32 {
        let arg = |i: usize| args.get(i).copied().unwrap_or(0);
        let mut acc = 0u32;
        let mut pc = 0usize;
        for _ in 0..prog.len() {
            let ins = prog[pc];
            match ins.code {
                LD_W_ABS => {
                    acc = match ins.k {
                        OFFSET_NR => nr,
                        OFFSET_ARCH => arch,
                        OFFSET_ARG0 => arg(0),
                        OFFSET_ARG1 => arg(1),
                        OFFSET_ARG2 => arg(2),
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
        for data in 1..=7u32 {
            assert!(IoCall::from_data(u64::from(data)).is_some());
        }
        assert_eq!(IoCall::from_data(0), None);
    }

    #[test]
    fn stops_the_calls_that_send_sigsegv_and_no_other_signal() {
        let segv = libc::SIGSEGV as u32;
        let sent = RET_TRACE | 7;
        let p = program();
        // kill, tkill, rt_sigqueueinfo, pidfd_send_signal name the signal in the second
        // argument; tgkill and rt_tgsigqueueinfo in the third.
        for (arch, nr) in [(ARCH_X86_64, 62), (ARCH_X86_64, 200), (ARCH_X86_64, 129)] {
            assert_eq!(run(p, arch, nr, &[1, segv]), sent, "{nr}");
            assert_eq!(run(p, arch, nr, &[1, 2]), RET_ALLOW, "{nr} SIGINT");
        }
        for nr in [62 | X32_BIT, 524 | X32_BIT, 424 | X32_BIT] {
            assert_eq!(run(p, ARCH_X86_64, nr, &[1, segv]), sent, "x32 {nr}");
        }
        for (arch, nr) in [(ARCH_X86_64, 234), (ARCH_X86_64, 297), (ARCH_I386, 270)] {
            assert_eq!(run(p, arch, nr, &[1, 2, segv]), sent, "{nr}");
            assert_eq!(
                run(p, arch, nr, &[1, segv, 9]),
                RET_ALLOW,
                "{nr}: tid, SIGKILL"
            );
        }
        for nr in [37, 238, 178, 424] {
            assert_eq!(run(p, ARCH_I386, nr, &[1, segv]), sent, "i386 {nr}");
        }
        assert_eq!(
            run(p, ARCH_X86_64, 424, &[3, segv]),
            sent,
            "pidfd_send_signal"
        );
        assert_eq!(run(p, 0xc000_00b7, 129, &[1, segv]), RET_ALLOW, "aarch64");
    }

    #[test]
    fn jumps_fit_and_land_inside() {
        let p = program();
        for (i, ins) in p.iter().enumerate() {
            if ins.code == JEQ_K || ins.code == JSET_K {
                assert!(ins.jt < u8::MAX && ins.jf < u8::MAX);
                assert!(i + 1 + usize::from(ins.jt.max(ins.jf)) < p.len());
            }
        }
    }
}
