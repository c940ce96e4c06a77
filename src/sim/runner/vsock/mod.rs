//! The guest's vsock, x86_64: what a Linux guest of a VMware host with
//! `vmw_vsock_vmci_transport` sees, served without this machine's vsock.
//!
//! A guest's `socket(AF_VSOCK, …)` is rewritten into an `AF_UNIX` socket of the same type
//! (its registers restored at the call's exit, where the runner notes the new socket by
//! inode). Its `bind` and `connect` never reach the kernel as such: the runner performs
//! them on a duplicate of the guest's descriptor (`pidfd_getfd`), naming the socket in
//! the abstract namespace after its vsock port (`<prefix><port>`), so the kernel itself
//! answers EADDRINUSE for a port in use and frees it when the guest closes the socket,
//! and the host's end ([`endpoint`]) reads the source port, hence the privilege, from
//! the peer's name. `getsockname`, `getpeername`, the `AF_VSOCK`-level options and
//! `/dev/vsock`'s local-CID `ioctl` are answered from the runner's record; guest memory is
//! only written where the call itself writes it. Everything else (`read`, `write`,
//! `poll`, `shutdown`, `close`, SOL_SOCKET options) is the `AF_UNIX` socket's own.
//!
//! The errors are the vsock core's (`net/vmw_vsock/af_vsock.c`) with the VMCI transport:
//! see [`Vsock::answer`]'s cases.

#![forbid(unsafe_code)]

pub(crate) mod endpoint;
pub(crate) mod filter;

use std::collections::BTreeMap;
use std::sync::Mutex;

use libc::pid_t;

use super::privilege;
use super::sys::{self, UserRegs};
use crate::proto::vsock::{HYPERVISOR_CID, RPCI_PORT};
use crate::sim::Host;

pub(crate) const AF_VSOCK: i32 = 40;
/// `IOCTL_VM_SOCKETS_GET_LOCAL_CID` on `/dev/vsock`.
pub(crate) const IOCTL_GET_LOCAL_CID: u32 = 0x7b9;
/// The guest's context id, as `/dev/vsock` reports it under the simulator.
pub(crate) const GUEST_CID: u32 = 0x564D;
/// `VMADDR_CID_ANY` and `VMADDR_PORT_ANY`.
const ANY: u32 = u32::MAX;
/// `VMADDR_CID_LOCAL`, and `VMADDR_CID_HOST` (govmomi's choice; open-vm-tools connects to
/// [`HYPERVISOR_CID`], the VMX's RPCI listener being [`RPCI_PORT`]).
const CID_LOCAL: u32 = 1;
const CID_HOST: u32 = 2;
/// Ports up to this one need `CAP_NET_BIND_SERVICE` (`LAST_RESERVED_PORT`).
const LAST_RESERVED_PORT: u32 = 1023;
const CAP_NET_BIND_SERVICE: u32 = 10;
/// Ports an auto-bind tries before EADDRNOTAVAIL (`MAX_PORT_RETRIES`).
const MAX_PORT_RETRIES: u32 = 24;
/// `sizeof(struct sockaddr_vm)` and `sizeof(struct sockaddr_storage)`.
const SOCKADDR_VM_LEN: usize = 16;
const SOCKADDR_STORAGE_LEN: usize = 128;
/// `VMADDR_FLAG_TO_HOST`, the one flag an address may carry.
const FLAG_TO_HOST: u8 = 1;
/// Socket options at level `AF_VSOCK` (`linux/vm_sockets.h`).
const SO_BUFFER_SIZE: i32 = 0;
const SO_BUFFER_MIN_SIZE: i32 = 1;
const SO_BUFFER_MAX_SIZE: i32 = 2;
const SO_CONNECT_TIMEOUT_OLD: i32 = 6;
const SO_CONNECT_TIMEOUT_NEW: i32 = 8;
/// The vsock core's defaults.
const DEFAULT_BUFFER_SIZE: u64 = 256 * 1024;
const DEFAULT_BUFFER_MIN_SIZE: u64 = 128;
const DEFAULT_CONNECT_TIMEOUT_US: u64 = 2_000_000;
/// Sockets the record keeps at most; past it the oldest are forgotten (a guest with that
/// many vsock sockets open is not a real one).
const MAX_SOCKETS: usize = 1 << 16;
/// `SOCK_MAX` and the flags `socket` takes beside the type.
const SOCK_MAX: i32 = 10;
const SOCK_TYPE_MASK: i32 = 0xf;

/// Which system call table, and so which registers, a stop came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Abi {
    /// 64-bit and x32: RDI, RSI, RDX, R10, R8, R9.
    X64,
    /// i386 direct calls: EBX, ECX, EDX, ESI, EDI, EBP.
    I386,
    /// i386 `socketcall(call, args)`: the call in EBX, its arguments in memory at ECX.
    SocketCall,
}

/// The socket call that stopped the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Socket,
    Bind,
    Connect,
    GetSockName,
    GetPeerName,
    SetSockOpt,
    GetSockOpt,
    Ioctl,
}

const OPS: [Op; 8] = [
    Op::Socket,
    Op::Bind,
    Op::Connect,
    Op::GetSockName,
    Op::GetPeerName,
    Op::SetSockOpt,
    Op::GetSockOpt,
    Op::Ioctl,
];

/// A stop of the vsock filter: its `SECCOMP_RET_DATA`, `0x100 | abi << 4 | op`, apart from
/// the base filter's small numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Trap {
    pub(crate) abi: Abi,
    pub(crate) op: Op,
}

impl Trap {
    pub(crate) fn data(self) -> u32 {
        let abi = match self.abi {
            Abi::X64 => 0,
            Abi::I386 => 1,
            Abi::SocketCall => 2,
        };
        let op = OPS.iter().position(|&o| o == self.op).unwrap_or(0) as u32;
        0x100 | abi << 4 | op
    }

    pub(crate) fn from_data(data: u64) -> Option<Trap> {
        if data & !0xff != 0x100 {
            return None;
        }
        let abi = match (data >> 4) & 0xf {
            0 => Abi::X64,
            1 => Abi::I386,
            2 => Abi::SocketCall,
            _ => return None,
        };
        let op = *OPS.get((data & 0xf) as usize)?;
        Some(Trap { abi, op })
    }
}

/// The arguments of one call, wherever they came from.
#[derive(Debug, Clone, Copy)]
struct Call {
    trap: Trap,
    args: [u64; 6],
}

impl Call {
    fn arg(&self, i: usize) -> u64 {
        self.args.get(i).copied().unwrap_or(0)
    }

    /// An `int` argument (the kernel reads the low 32 bits).
    fn int(&self, i: usize) -> i32 {
        self.arg(i) as u32 as i32
    }

    /// A 32-bit process's call: its old `timeval` is two 32-bit words.
    fn compat(&self) -> bool {
        self.trap.abi != Abi::X64
    }
}

/// What the runner does with a stopped call.
enum Verdict {
    /// Nothing: the kernel runs it as the guest made it.
    Pass,
    /// The call is skipped and returns this (0 or -errno).
    Return(i64),
    /// `socket`: rewritten into an `AF_UNIX` socket of this type.
    Create { ty: i32 },
}

/// What the runner must finish when the stopped thread's call exits.
#[derive(Debug, Clone)]
pub(crate) struct AtExit {
    /// Registers as the guest left them, to put back (all but the result).
    saved: UserRegs,
    abi: Abi,
    ty: i32,
}

/// A vsock socket of the guest, as the runner records it.
#[derive(Debug, Clone)]
struct Sock {
    /// `SOCK_STREAM`, `SOCK_DGRAM` or `SOCK_SEQPACKET`.
    ty: i32,
    local: Option<(u32, u32)>,
    peer: Option<(u32, u32)>,
    buffer_size: u64,
    buffer_min: u64,
    buffer_max: u64,
    connect_timeout_us: u64,
}

impl Sock {
    fn new(ty: i32) -> Sock {
        Sock {
            ty,
            local: None,
            peer: None,
            buffer_size: DEFAULT_BUFFER_SIZE,
            buffer_min: DEFAULT_BUFFER_MIN_SIZE,
            buffer_max: DEFAULT_BUFFER_SIZE,
            connect_timeout_us: DEFAULT_CONNECT_TIMEOUT_US,
        }
    }

    fn connectible(&self) -> bool {
        self.ty == libc::SOCK_STREAM || self.ty == libc::SOCK_SEQPACKET
    }

    /// `vsock_update_buffer_size`: the size kept within the bounds.
    fn set_buffer_size(&mut self, v: u64) {
        self.buffer_size = v.min(self.buffer_max).max(self.buffer_min);
    }
}

/// The abstract names of one run: the host's end, and a guest socket bound to a port.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    prefix: Vec<u8>,
}

impl Names {
    /// Names no other run shares: this process, a counter, a random token (any process
    /// in the network namespace can reach an abstract name it can guess).
    pub(crate) fn new() -> Names {
        use std::hash::{BuildHasher, Hasher};
        use std::sync::atomic::{AtomicU64, Ordering};
        static RUN: AtomicU64 = AtomicU64::new(0);
        let run = RUN.fetch_add(1, Ordering::Relaxed);
        let token = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Names {
            prefix: format!("vmw-sim.{}.{run}.{token:016x}.", std::process::id()).into_bytes(),
        }
    }

    pub(crate) fn host(&self) -> Vec<u8> {
        [&self.prefix[..], b"host"].concat()
    }

    fn port(&self, port: u32) -> Vec<u8> {
        [&self.prefix[..], port.to_string().as_bytes()].concat()
    }

    /// The vsock port a guest socket's name encodes.
    pub(crate) fn port_of(&self, name: &[u8]) -> Option<u32> {
        let digits = name.strip_prefix(&self.prefix[..])?;
        std::str::from_utf8(digits).ok()?.parse().ok()
    }
}

/// The runner's side of the guest's vsock.
pub(crate) struct Vsock {
    /// The run's names, when the host offers vsock; `None`: every vsock socket fails.
    names: Option<Names>,
    /// The guest's vsock sockets, by socket inode.
    socks: BTreeMap<u64, Sock>,
    /// Where the next auto-bind starts looking.
    next_port: u32,
    /// Calls answered or rewritten.
    pub(crate) calls: u64,
}

fn errno(e: i32) -> i64 {
    -i64::from(e)
}

fn io_errno(e: &std::io::Error) -> i64 {
    errno(e.raw_os_error().unwrap_or(libc::EIO))
}

impl Vsock {
    pub(crate) fn new(names: Option<Names>) -> Vsock {
        Vsock {
            names,
            socks: BTreeMap::new(),
            next_port: LAST_RESERVED_PORT + 1,
            calls: 0,
        }
    }

    /// The guest thread `pid` stopped in the vsock filter with `trap`. `Some` when the
    /// call's exit must be seen (resume it with `PTRACE_SYSCALL`).
    pub(crate) fn on_entry(
        &mut self,
        pid: pid_t,
        trap: Trap,
        host: &Mutex<Host>,
    ) -> Option<AtExit> {
        let mut regs = sys::get_regs(pid).ok()?;
        let call = decode(pid, trap, &regs)?;
        let verdict = self.answer(pid, &call, host);
        log::debug!(
            "vsock: {pid} {:?} {:?}({:#x}, {:#x}, {:#x}): {}",
            call.trap.abi,
            call.trap.op,
            call.arg(0),
            call.arg(1),
            call.arg(2),
            match verdict {
                Verdict::Pass => "not vsock".to_string(),
                Verdict::Return(r) => format!("{r}"),
                Verdict::Create { .. } => "AF_UNIX".to_string(),
            }
        );
        match verdict {
            Verdict::Pass => None,
            Verdict::Return(ret) => {
                regs.orig_rax = u64::MAX; // skip the real system call
                regs.rax = ret as u64;
                if sys::set_regs(pid, &regs).is_ok() {
                    self.calls += 1;
                }
                None
            }
            Verdict::Create { ty } => {
                let saved = regs;
                let flags = call.int(1);
                match call.trap.abi {
                    Abi::X64 => {
                        regs.rdi = libc::AF_UNIX as u64;
                        regs.rdx = 0;
                    }
                    Abi::I386 => {
                        regs.rbx = libc::AF_UNIX as u64;
                        regs.rdx = 0;
                    }
                    Abi::SocketCall => {
                        // socketcall(SYS_SOCKET, args) becomes socket(AF_UNIX, type, 0).
                        regs.orig_rax = 359;
                        regs.rbx = libc::AF_UNIX as u64;
                        regs.rcx = u64::from(flags as u32);
                        regs.rdx = 0;
                    }
                }
                sys::set_regs(pid, &regs).ok()?;
                Some(AtExit {
                    saved,
                    abi: call.trap.abi,
                    ty,
                })
            }
        }
    }

    /// The rewritten `socket` of `pid` returned: its registers put back, the new socket
    /// recorded.
    pub(crate) fn on_exit(&mut self, pid: pid_t, at: AtExit) {
        let Ok(regs) = sys::get_regs(pid) else {
            return;
        };
        let fd = match at.abi {
            Abi::X64 => regs.rax as i64,
            Abi::I386 | Abi::SocketCall => i64::from(regs.rax as u32 as i32),
        };
        let mut back = at.saved;
        back.rax = regs.rax;
        if sys::set_regs(pid, &back).is_err() {
            return;
        }
        self.calls += 1;
        let Ok(fd) = i32::try_from(fd) else { return };
        if fd < 0 {
            return;
        }
        if let Some(ino) = socket_inode(pid, fd) {
            if self.socks.len() >= MAX_SOCKETS {
                self.socks.pop_first();
            }
            self.socks.insert(ino, Sock::new(at.ty));
        }
    }

    /// The guest's vsock socket behind `fd`, if it is one.
    fn sock(&mut self, pid: pid_t, fd: i32) -> Option<&mut Sock> {
        if self.socks.is_empty() {
            return None;
        }
        let ino = socket_inode(pid, fd)?;
        self.socks.get_mut(&ino)
    }

    /// What becomes of `call`:
    ///
    /// | call | answer |
    /// |---|---|
    /// | `socket(AF_VSOCK, …)` without the endpoint | EAFNOSUPPORT (after the kernel's EINVAL for bad flags or a type ≥ `SOCK_MAX`) |
    /// | `socket` with a protocol other than 0 or `PF_VSOCK`, a type other than stream, datagram, seqpacket | EPROTONOSUPPORT, ESOCKTNOSUPPORT |
    /// | `bind`/`connect` with a bad address (length under 16 or over 128, another family, unknown flags) | EINVAL; unreadable: EFAULT |
    /// | `bind` of a bound socket; to a CID other than `VMADDR_CID_ANY` or the guest's | EINVAL; EADDRNOTAVAIL |
    /// | `bind` to a port ≤ 1023 without `CAP_NET_BIND_SERVICE`; to a port in use | EACCES; EADDRINUSE |
    /// | `bind` to `VMADDR_PORT_ANY`, or `connect` of an unbound socket | the next free port from 1024 (24 tries, then EADDRNOTAVAIL) |
    /// | `connect` of a connected socket; of a seqpacket one; to CID 1 | EISCONN; ESOCKTNOSUPPORT (VMCI has none); ENETUNREACH |
    /// | `connect` to CID 0 or 2, port 976 | 0, connected to the host's end (ECONNRESET for a [reset](crate::sim::HostConfig::vsock_reset_connects)) |
    /// | `connect` to any other CID or port | ECONNRESET: nothing listens there |
    /// | `bind`/`connect` of a datagram socket | EOPNOTSUPP: VMCI datagrams are not modelled |
    fn answer(&mut self, pid: pid_t, call: &Call, host: &Mutex<Host>) -> Verdict {
        match call.trap.op {
            Op::Socket => self.socket(call),
            Op::Bind => self.bind(pid, call),
            Op::Connect => self.connect(pid, call, host),
            Op::GetSockName | Op::GetPeerName => self.getname(pid, call),
            Op::SetSockOpt => self.setsockopt(pid, call),
            Op::GetSockOpt => self.getsockopt(pid, call),
            Op::Ioctl => local_cid(pid, call),
        }
    }

    fn socket(&self, call: &Call) -> Verdict {
        if call.int(0) != AF_VSOCK {
            return Verdict::Pass;
        }
        let (kind, protocol) = (call.int(1), call.int(2));
        let ty = kind & SOCK_TYPE_MASK;
        if kind & !(SOCK_TYPE_MASK | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) != 0
            || ty >= SOCK_MAX
        {
            return Verdict::Return(errno(libc::EINVAL));
        }
        if self.names.is_none() {
            return Verdict::Return(errno(libc::EAFNOSUPPORT));
        }
        if protocol != 0 && protocol != AF_VSOCK {
            return Verdict::Return(errno(libc::EPROTONOSUPPORT));
        }
        match ty {
            libc::SOCK_STREAM | libc::SOCK_DGRAM | libc::SOCK_SEQPACKET => Verdict::Create { ty },
            _ => Verdict::Return(errno(libc::ESOCKTNOSUPPORT)),
        }
    }

    fn bind(&mut self, pid: pid_t, call: &Call) -> Verdict {
        let Some(names) = self.names.clone() else {
            return Verdict::Pass;
        };
        let mut next_port = self.next_port;
        let Some(sock) = self.sock(pid, call.int(0)) else {
            return Verdict::Pass;
        };
        let (cid, port) = match read_sockaddr_vm(pid, call.arg(1), call.int(2)) {
            Ok(a) => a,
            Err(e) => return Verdict::Return(errno(e)),
        };
        if sock.ty == libc::SOCK_DGRAM {
            return Verdict::Return(errno(libc::EOPNOTSUPP));
        }
        if sock.local.is_some() {
            return Verdict::Return(errno(libc::EINVAL));
        }
        if cid != ANY && cid != GUEST_CID {
            return Verdict::Return(errno(libc::EADDRNOTAVAIL));
        }
        if port != ANY
            && port <= LAST_RESERVED_PORT
            && !privilege::has_capability(pid, CAP_NET_BIND_SERVICE)
        {
            return Verdict::Return(errno(libc::EACCES));
        }
        let ret = match bind_port(pid, call.int(0), &names, port, &mut next_port) {
            Ok(port) => {
                sock.local = Some((cid, port));
                0
            }
            Err(e) => e,
        };
        self.next_port = next_port;
        Verdict::Return(ret)
    }

    fn connect(&mut self, pid: pid_t, call: &Call, host: &Mutex<Host>) -> Verdict {
        let Some(names) = self.names.clone() else {
            return Verdict::Pass;
        };
        let mut next_port = self.next_port;
        let fd = call.int(0);
        let Some(sock) = self.sock(pid, fd) else {
            return Verdict::Pass;
        };
        if sock.peer.is_some() {
            return Verdict::Return(errno(libc::EISCONN));
        }
        let (cid, port) = match read_sockaddr_vm(pid, call.arg(1), call.int(2)) {
            Ok(a) => a,
            Err(e) => return Verdict::Return(errno(e)),
        };
        match sock.ty {
            libc::SOCK_DGRAM => return Verdict::Return(errno(libc::EOPNOTSUPP)),
            libc::SOCK_SEQPACKET => return Verdict::Return(errno(libc::ESOCKTNOSUPPORT)),
            _ => {}
        }
        if cid == CID_LOCAL {
            return Verdict::Return(errno(libc::ENETUNREACH));
        }
        let ret = (|| {
            if sock.local.is_none() {
                let port = bind_port(pid, fd, &names, ANY, &mut next_port).map_err(Some)?;
                sock.local = Some((ANY, port));
            }
            let to_host = (cid == HYPERVISOR_CID || cid == CID_HOST) && port == RPCI_PORT;
            if !to_host || lock(host).vsock_connect_reset() {
                return Err(Some(errno(libc::ECONNRESET)));
            }
            let dup = guest_fd(pid, fd).map_err(|e| Some(io_errno(&e)))?;
            sys::connect_abstract(&dup, &names.host()).map_err(|e| Some(io_errno(&e)))?;
            // Counted here, when the guest's call returns, not when the endpoint gets to it.
            lock(host).vsock_accepted();
            sock.peer = Some((cid, port));
            Ok::<(), Option<i64>>(())
        })();
        self.next_port = next_port;
        Verdict::Return(match ret {
            Ok(()) => 0,
            Err(e) => e.unwrap_or(errno(libc::EIO)),
        })
    }

    fn getname(&mut self, pid: pid_t, call: &Call) -> Verdict {
        let peer = call.trap.op == Op::GetPeerName;
        let Some(sock) = self.sock(pid, call.int(0)) else {
            return Verdict::Pass;
        };
        let addr = if peer {
            match sock.peer {
                Some(a) => a,
                None => return Verdict::Return(errno(libc::ENOTCONN)),
            }
        } else {
            sock.local.unwrap_or((ANY, ANY))
        };
        let mut bytes = [0u8; SOCKADDR_VM_LEN];
        bytes[..2].copy_from_slice(&(AF_VSOCK as u16).to_ne_bytes());
        bytes[4..8].copy_from_slice(&addr.1.to_ne_bytes());
        bytes[8..12].copy_from_slice(&addr.0.to_ne_bytes());
        Verdict::Return(write_sized(pid, call.arg(1), call.arg(2), &bytes, false))
    }

    fn setsockopt(&mut self, pid: pid_t, call: &Call) -> Verdict {
        let compat = call.compat();
        let Some(sock) = self.sock(pid, call.int(0)).filter(|s| s.connectible()) else {
            return Verdict::Pass;
        };
        let (name, val, len) = (call.int(2), call.arg(3), call.int(4));
        if len < 0 {
            return Verdict::Return(errno(libc::EINVAL));
        }
        let read = |n: usize| -> Result<Vec<u8>, i64> {
            if (len as usize) < n {
                return Err(errno(libc::EINVAL));
            }
            let mut buf = vec![0; n];
            if sys::read_mem(pid, val, &mut buf) < n {
                return Err(errno(libc::EFAULT));
            }
            Ok(buf)
        };
        let word = |b: &[u8], i: usize| -> u64 {
            let mut w = [0u8; 8];
            w.copy_from_slice(b.get(i * 8..i * 8 + 8).unwrap_or(&[0; 8]));
            u64::from_ne_bytes(w)
        };
        let ret = match name {
            SO_BUFFER_SIZE | SO_BUFFER_MIN_SIZE | SO_BUFFER_MAX_SIZE => read(8).map(|b| {
                let v = word(&b, 0);
                match name {
                    SO_BUFFER_SIZE => sock.set_buffer_size(v),
                    SO_BUFFER_MIN_SIZE => {
                        sock.buffer_min = v;
                        sock.set_buffer_size(sock.buffer_size);
                    }
                    _ => {
                        sock.buffer_max = v;
                        sock.set_buffer_size(sock.buffer_size);
                    }
                }
            }),
            SO_CONNECT_TIMEOUT_OLD | SO_CONNECT_TIMEOUT_NEW => {
                let short = compat && name == SO_CONNECT_TIMEOUT_OLD;
                let tv = if short {
                    read(8).map(|b| {
                        let half = |i: usize| {
                            let mut h = [0u8; 4];
                            h.copy_from_slice(&b[i * 4..i * 4 + 4]);
                            i64::from(i32::from_ne_bytes(h))
                        };
                        (half(0), half(1))
                    })
                } else {
                    read(16).map(|b| (word(&b, 0) as i64, word(&b, 1) as i64))
                };
                tv.and_then(|(sec, usec)| {
                    if !(0..1_000_000).contains(&usec) || !(0..1 << 40).contains(&sec) {
                        return Err(errno(libc::ERANGE));
                    }
                    let us = sec as u64 * 1_000_000 + usec as u64;
                    sock.connect_timeout_us = if us == 0 {
                        DEFAULT_CONNECT_TIMEOUT_US
                    } else {
                        us
                    };
                    Ok(())
                })
            }
            _ => Err(errno(libc::ENOPROTOOPT)),
        };
        Verdict::Return(ret.map_or_else(|e| e, |()| 0))
    }

    fn getsockopt(&mut self, pid: pid_t, call: &Call) -> Verdict {
        let compat = call.compat();
        let Some(sock) = self.sock(pid, call.int(0)).filter(|s| s.connectible()) else {
            return Verdict::Pass;
        };
        let name = call.int(2);
        let value: Vec<u8> = match name {
            SO_BUFFER_SIZE => sock.buffer_size.to_ne_bytes().to_vec(),
            SO_BUFFER_MIN_SIZE => sock.buffer_min.to_ne_bytes().to_vec(),
            SO_BUFFER_MAX_SIZE => sock.buffer_max.to_ne_bytes().to_vec(),
            SO_CONNECT_TIMEOUT_OLD | SO_CONNECT_TIMEOUT_NEW => {
                let (sec, usec) = (
                    sock.connect_timeout_us / 1_000_000,
                    sock.connect_timeout_us % 1_000_000,
                );
                if compat && name == SO_CONNECT_TIMEOUT_OLD {
                    [(sec as u32).to_ne_bytes(), (usec as u32).to_ne_bytes()].concat()
                } else {
                    [sec.to_ne_bytes(), usec.to_ne_bytes()].concat()
                }
            }
            _ => return Verdict::Return(errno(libc::ENOPROTOOPT)),
        };
        Verdict::Return(write_sized(pid, call.arg(3), call.arg(4), &value, true))
    }
}

fn lock(host: &Mutex<Host>) -> std::sync::MutexGuard<'_, Host> {
    host.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes `value` to `addr` and its length to the `int` at `len_at`, as `getsockname`
/// (`exact`: false; a shorter buffer gets the start, the full length is reported) and
/// `getsockopt` (`exact`: a shorter buffer is EINVAL) do. Returns 0 or -errno.
fn write_sized(pid: pid_t, addr: u64, len_at: u64, value: &[u8], exact: bool) -> i64 {
    let mut raw = [0u8; 4];
    if sys::read_mem(pid, len_at, &mut raw) < 4 {
        return errno(libc::EFAULT);
    }
    let len = i32::from_ne_bytes(raw);
    if len < 0 || (exact && (len as usize) < value.len()) {
        return errno(libc::EINVAL);
    }
    let n = (len as usize).min(value.len());
    let full = value.len() as i32;
    let written = if exact { n as i32 } else { full };
    if !value
        .get(..n)
        .is_some_and(|v| v.is_empty() || sys::write_mem(pid, addr, v))
        || !sys::write_mem(pid, len_at, &written.to_ne_bytes())
    {
        return errno(libc::EFAULT);
    }
    0
}

/// `ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid)` on `/dev/vsock`: the guest's CID.
fn local_cid(pid: pid_t, call: &Call) -> Verdict {
    let is_dev_vsock = std::fs::read_link(format!("/proc/{pid}/fd/{}", call.int(0)))
        .is_ok_and(|p| p == std::path::Path::new("/dev/vsock"));
    if !is_dev_vsock || call.arg(1) as u32 != IOCTL_GET_LOCAL_CID {
        return Verdict::Pass;
    }
    if sys::write_mem(pid, call.arg(2), &GUEST_CID.to_ne_bytes()) {
        Verdict::Return(0)
    } else {
        Verdict::Return(errno(libc::EFAULT))
    }
}

/// The call's arguments: from registers, or for `socketcall` from guest memory (`None`
/// when that cannot be read or names another call: the kernel then runs it as it is).
fn decode(pid: pid_t, trap: Trap, regs: &UserRegs) -> Option<Call> {
    let args = match trap.abi {
        Abi::X64 => [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9],
        Abi::I386 => [regs.rbx, regs.rcx, regs.rdx, regs.rsi, regs.rdi, regs.rbp]
            .map(|r| u64::from(r as u32)),
        Abi::SocketCall => {
            let op = match regs.rbx as u32 {
                filter::SYS_SOCKET => Op::Socket,
                filter::SYS_BIND => Op::Bind,
                filter::SYS_CONNECT => Op::Connect,
                filter::SYS_GETSOCKNAME => Op::GetSockName,
                filter::SYS_GETPEERNAME => Op::GetPeerName,
                filter::SYS_SETSOCKOPT => Op::SetSockOpt,
                filter::SYS_GETSOCKOPT => Op::GetSockOpt,
                _ => return None,
            };
            let mut raw = [0u8; 24];
            if sys::read_mem(pid, u64::from(regs.rcx as u32), &mut raw) < raw.len() {
                return None;
            }
            let mut args = [0u64; 6];
            for (a, w) in args.iter_mut().zip(raw.chunks_exact(4)) {
                *a = u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
            }
            return Some(Call {
                trap: Trap { abi: trap.abi, op },
                args,
            });
        }
    };
    Some(Call { trap, args })
}

/// The `sockaddr_vm` at `addr` (`len` bytes, as the guest gave it): (CID, port), or the
/// errno `bind` and `connect` give (EINVAL for a bad length, family or flag, EFAULT for
/// memory that cannot be read).
fn read_sockaddr_vm(pid: pid_t, addr: u64, len: i32) -> Result<(u32, u32), i32> {
    let len = usize::try_from(len)
        .ok()
        .filter(|&l| l <= SOCKADDR_STORAGE_LEN)
        .ok_or(libc::EINVAL)?;
    let mut buf = vec![0u8; len];
    if sys::read_mem(pid, addr, &mut buf) < len {
        return Err(libc::EFAULT);
    }
    let word = |i: usize| u32::from_ne_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    if len < SOCKADDR_VM_LEN
        || u16::from_ne_bytes([buf[0], buf[1]]) != AF_VSOCK as u16
        || buf[12] & !FLAG_TO_HOST != 0
    {
        return Err(libc::EINVAL);
    }
    Ok((word(8), word(4)))
}

/// A duplicate of guest thread `pid`'s descriptor `fd`.
fn guest_fd(pid: pid_t, fd: i32) -> std::io::Result<std::os::fd::OwnedFd> {
    // A thread's own pidfd (Linux 6.9) reaches its descriptor table even when it is not
    // its process's; older kernels take the thread group's.
    let pidfd = match sys::pidfd_open(pid, true) {
        Ok(p) => p,
        Err(_) => sys::pidfd_open(thread_group(pid).unwrap_or(pid), false)?,
    };
    sys::pidfd_getfd(&pidfd, fd)
}

/// The thread group (process) of thread `tid`.
fn thread_group(tid: pid_t) -> Option<pid_t> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))?
        .trim()
        .parse()
        .ok()
}

/// Binds the guest's socket `fd` to vsock port `port` (`ANY`: the next free one from
/// `next`); returns the port or -errno.
fn bind_port(pid: pid_t, fd: i32, names: &Names, port: u32, next: &mut u32) -> Result<u32, i64> {
    let dup = guest_fd(pid, fd).map_err(|e| io_errno(&e))?;
    if port != ANY {
        return sys::bind_abstract(&dup, &names.port(port))
            .map(|()| port)
            .map_err(|e| io_errno(&e));
    }
    for _ in 0..MAX_PORT_RETRIES {
        if *next <= LAST_RESERVED_PORT || *next == ANY {
            *next = LAST_RESERVED_PORT + 1;
        }
        let port = *next;
        *next += 1;
        match sys::bind_abstract(&dup, &names.port(port)) {
            Ok(()) => return Ok(port),
            Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => continue,
            Err(e) => return Err(io_errno(&e)),
        }
    }
    Err(errno(libc::EADDRNOTAVAIL))
}

/// The inode of the socket behind `pid`'s descriptor `fd` (`socket:[N]`).
fn socket_inode(pid: pid_t, fd: i32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let s = link.to_str()?;
    s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trap_data_round_trips_and_stays_clear_of_the_base_filter() {
        for abi in [Abi::X64, Abi::I386, Abi::SocketCall] {
            for op in OPS {
                let t = Trap { abi, op };
                assert_eq!(Trap::from_data(u64::from(t.data())), Some(t));
            }
        }
        for data in [0, 1, 6, 0xff, 0x130, 0x108, 0x200] {
            assert_eq!(Trap::from_data(data), None, "{data:#x}");
        }
    }

    #[test]
    fn names_encode_the_port() {
        let n = Names::new();
        assert_eq!(n.port_of(&n.port(1023)), Some(1023));
        assert_eq!(n.port_of(&n.host()), None);
        assert_ne!(Names::new().prefix, n.prefix, "each run its own names");
        assert!(n.host().len() < 100, "fits sun_path");
    }

    #[test]
    fn buffer_sizes_stay_within_their_bounds() {
        let mut s = Sock::new(libc::SOCK_STREAM);
        s.set_buffer_size(1);
        assert_eq!(s.buffer_size, DEFAULT_BUFFER_MIN_SIZE);
        s.set_buffer_size(u64::MAX);
        assert_eq!(s.buffer_size, DEFAULT_BUFFER_SIZE);
    }
}
