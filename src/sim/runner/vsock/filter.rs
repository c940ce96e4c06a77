//! The second seccomp filter, for the guest's vsock calls (x86_64: the 64-bit and x32
//! tables and the i386 one, with `socketcall`).
//!
//! Without the endpoint (`HostConfig::vsock(false)`, the default), `socket(AF_VSOCK, …)`
//! fails with `EAFNOSUPPORT` in the filter itself, as on a kernel without vsock, so the
//! guest never reaches this machine's own vsock; only i386 `socketcall(SYS_SOCKET)`, whose
//! family is in memory, stops for the runner. With it, `socket(AF_VSOCK)`, every `bind`,
//! `connect`, `getsockname` and `getpeername` (their socket may be a vsock one whatever
//! the address says), the `AF_VSOCK`-level socket options and the local-CID `ioctl` stop
//! with `PTRACE_EVENT_SECCOMP`, the data naming the call ([`super::Trap`]). Every other
//! system call is allowed untouched; the base filter (`seccomp.rs`) traps disjoint calls.

#![forbid(unsafe_code)]

use std::sync::OnceLock;

use libc::sock_filter;

use super::super::seccomp::{
    jeq, stmt, ARCH_I386, ARCH_X86_64, LD_W_ABS, OFFSET_ARCH, OFFSET_ARG0, OFFSET_NR, RET_ALLOW,
    RET_ERRNO, RET_K, RET_TRACE, X32_BIT,
};
use super::{Abi, Op, Trap, AF_VSOCK, IOCTL_GET_LOCAL_CID};

/// `seccomp_data.args[1]`, its low 32 bits (little-endian).
const OFFSET_ARG1: u32 = 24;

/// `socketcall`'s call numbers (`linux/net.h`).
pub(super) const SYS_SOCKET: u32 = 1;
pub(super) const SYS_BIND: u32 = 2;
pub(super) const SYS_CONNECT: u32 = 3;
pub(super) const SYS_GETSOCKNAME: u32 = 6;
pub(super) const SYS_GETPEERNAME: u32 = 7;
pub(super) const SYS_SETSOCKOPT: u32 = 14;
pub(super) const SYS_GETSOCKOPT: u32 = 15;

/// The system calls, by table: (64-bit, x32, i386) numbers.
const CALLS: [(Op, u32, u32, u32); 8] = [
    (Op::Socket, 41, 41, 359),
    (Op::Connect, 42, 42, 362),
    (Op::Bind, 49, 49, 361),
    (Op::GetSockName, 51, 51, 367),
    (Op::GetPeerName, 52, 52, 368),
    // x32 takes the compat socket-option and ioctl entries.
    (Op::SetSockOpt, 54, 541, 366),
    (Op::GetSockOpt, 55, 542, 365),
    (Op::Ioctl, 16, 514, 54),
];
const NR32_SOCKETCALL: u32 = 102;

/// A jump over `n` instructions (each block is short; the test checks the whole program).
fn skip(n: usize) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

/// What one call does: return `action` always, or only when the 32-bit argument at
/// `offset` is one of `values`.
fn handler(action: u32, cond: Option<(u32, &[u32])>) -> Vec<sock_filter> {
    let Some((offset, values)) = cond else {
        return vec![stmt(RET_K, action)];
    };
    let mut h = vec![stmt(LD_W_ABS, offset)];
    let n = values.len();
    for (i, &v) in values.iter().enumerate() {
        h.push(jeq(v, skip(n - i), 0));
    }
    h.push(stmt(RET_K, RET_ALLOW));
    h.push(stmt(RET_K, action));
    h
}

/// `if nr == nr { handler }`, falling through to the next rule otherwise.
fn rule(out: &mut Vec<sock_filter>, nr: u32, handler: Vec<sock_filter>) {
    out.push(jeq(nr, 0, skip(handler.len())));
    out.extend(handler);
}

/// The rules of one table.
fn table(abi: Abi, on: bool) -> Vec<sock_filter> {
    let mut body = vec![stmt(LD_W_ABS, OFFSET_NR)];
    let trace = |op| RET_TRACE | Trap { abi, op }.data();
    for (op, nr64, nrx32, nr32) in CALLS {
        let action = match (op, on) {
            (Op::Socket, false) => RET_ERRNO | libc::EAFNOSUPPORT as u32,
            (_, false) => continue,
            (op, true) => trace(op),
        };
        let cond: Option<(u32, &[u32])> = match op {
            Op::Socket => Some((OFFSET_ARG0, &[AF_VSOCK as u32])),
            Op::SetSockOpt | Op::GetSockOpt => Some((OFFSET_ARG1, &[AF_VSOCK as u32])),
            Op::Ioctl => Some((OFFSET_ARG1, &[IOCTL_GET_LOCAL_CID])),
            Op::Bind | Op::Connect | Op::GetSockName | Op::GetPeerName => None,
        };
        match abi {
            Abi::X64 => {
                rule(&mut body, nr64, handler(action, cond));
                rule(&mut body, nrx32 | X32_BIT, handler(action, cond));
            }
            Abi::I386 | Abi::SocketCall => rule(&mut body, nr32, handler(action, cond)),
        }
    }
    if abi != Abi::X64 {
        let calls: &[u32] = if on {
            &[
                SYS_SOCKET,
                SYS_BIND,
                SYS_CONNECT,
                SYS_GETSOCKNAME,
                SYS_GETPEERNAME,
                SYS_SETSOCKOPT,
                SYS_GETSOCKOPT,
            ]
        } else {
            &[SYS_SOCKET]
        };
        let action = RET_TRACE
            | Trap {
                abi: Abi::SocketCall,
                op: Op::Socket, // the call number is read from EBX
            }
            .data();
        rule(
            &mut body,
            NR32_SOCKETCALL,
            handler(action, Some((OFFSET_ARG0, calls))),
        );
    }
    body.push(stmt(RET_K, RET_ALLOW));
    body
}

fn build(on: bool) -> Vec<sock_filter> {
    let mut p = vec![stmt(LD_W_ABS, OFFSET_ARCH)];
    for (arch, abi) in [(ARCH_X86_64, Abi::X64), (ARCH_I386, Abi::I386)] {
        let body = table(abi, on);
        p.push(jeq(arch, 0, skip(body.len())));
        p.extend(body);
    }
    p.push(stmt(RET_K, RET_ALLOW));
    p
}

/// The program for a host with (`on`) or without the vsock endpoint. Built on first use,
/// which must be before `fork`: the child only installs it.
pub(crate) fn program(on: bool) -> &'static [sock_filter] {
    static ON: OnceLock<Vec<sock_filter>> = OnceLock::new();
    static OFF: OnceLock<Vec<sock_filter>> = OnceLock::new();
    (if on { &ON } else { &OFF }).get_or_init(|| build(on))
}

#[cfg(test)]
mod tests {
    use super::super::super::seccomp::JEQ_K;
    use super::*;

    fn verdict(prog: &[sock_filter], arch: u32, nr: u32, args: [u32; 2]) -> u32 {
        super::super::super::seccomp::tests::run(prog, arch, nr, args)
    }

    fn trace(abi: Abi, op: Op) -> u32 {
        RET_TRACE | Trap { abi, op }.data()
    }

    #[test]
    fn jumps_fit_and_land_inside() {
        for on in [false, true] {
            let p = program(on);
            assert!(p.len() < 200, "{}", p.len());
            for (i, ins) in p.iter().enumerate() {
                if ins.code == JEQ_K {
                    assert!(ins.jt < u8::MAX && ins.jf < u8::MAX);
                    assert!(i + 1 + usize::from(ins.jt.max(ins.jf)) < p.len());
                }
            }
        }
    }

    #[test]
    fn without_the_endpoint_only_vsock_sockets_fail() {
        let p = program(false);
        let enoafs = RET_ERRNO | libc::EAFNOSUPPORT as u32;
        assert_eq!(verdict(p, ARCH_X86_64, 41, [40, 1]), enoafs);
        assert_eq!(verdict(p, ARCH_X86_64, 41 | X32_BIT, [40, 1]), enoafs);
        assert_eq!(verdict(p, ARCH_I386, 359, [40, 1]), enoafs);
        for family in [1, 2, 10, 16, 39, 41] {
            assert_eq!(verdict(p, ARCH_X86_64, 41, [family, 1]), RET_ALLOW);
        }
        for nr in [16, 42, 49, 51, 54, 55] {
            assert_eq!(verdict(p, ARCH_X86_64, nr, [40, 40]), RET_ALLOW, "{nr}");
        }
        let socketcall = trace(Abi::SocketCall, Op::Socket);
        assert_eq!(verdict(p, ARCH_I386, 102, [SYS_SOCKET, 0]), socketcall);
        assert_eq!(verdict(p, ARCH_I386, 102, [SYS_CONNECT, 0]), RET_ALLOW);
        assert_eq!(verdict(p, 0xc000_00b7, 198, [40, 1]), RET_ALLOW, "aarch64");
    }

    #[test]
    fn with_the_endpoint_the_socket_calls_stop() {
        let p = program(true);
        for (op, nr64, nrx32, nr32) in CALLS {
            let args = match op {
                Op::Socket => [40, 1],
                Op::Ioctl => [3, IOCTL_GET_LOCAL_CID],
                _ => [3, 40],
            };
            assert_eq!(verdict(p, ARCH_X86_64, nr64, args), trace(Abi::X64, op));
            assert_eq!(
                verdict(p, ARCH_X86_64, nrx32 | X32_BIT, args),
                trace(Abi::X64, op)
            );
            assert_eq!(verdict(p, ARCH_I386, nr32, args), trace(Abi::I386, op));
        }
        // Not vsock: other families, levels and ioctls go straight through.
        assert_eq!(verdict(p, ARCH_X86_64, 41, [2, 1]), RET_ALLOW);
        assert_eq!(verdict(p, ARCH_X86_64, 54, [3, 1]), RET_ALLOW);
        assert_eq!(verdict(p, ARCH_X86_64, 55, [3, 6]), RET_ALLOW);
        assert_eq!(verdict(p, ARCH_X86_64, 16, [1, 0x5401]), RET_ALLOW);
        assert_eq!(verdict(p, ARCH_I386, 54, [1, 1976]), RET_ALLOW);
        for nr in [0, 1, 43, 44, 45, 288, 435] {
            assert_eq!(verdict(p, ARCH_X86_64, nr, [40, 40]), RET_ALLOW, "{nr}");
        }
        let socketcall = trace(Abi::SocketCall, Op::Socket);
        for call in [1, 2, 3, 6, 7, 14, 15] {
            assert_eq!(verdict(p, ARCH_I386, 102, [call, 0]), socketcall);
        }
        for call in [4, 5, 8, 9, 10, 11, 12, 13, 16, 17, 18, 19, 20] {
            assert_eq!(verdict(p, ARCH_I386, 102, [call, 0]), RET_ALLOW, "{call}");
        }
    }
}
