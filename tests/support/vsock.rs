//! The tests' own vsock RPCI client, written from the protocol as open-vm-tools speaks it
//! (`lib/rpcChannel/simpleSocket.c`, `vsockChannel.c`, `lib/dataMap/dataMap.c`,
//! `guestrpc/tclodefs.h`), independent of the crate's: raw system calls, its own DataMap
//! bytes and numbers. For guests under the simulator (closures or the guest program).

#![allow(dead_code)]

pub const AF_VSOCK: i32 = 40;
/// `VMADDR_CID_ANY`, `VMADDR_PORT_ANY`.
pub const ANY: u32 = u32::MAX;
pub const CID_HYPERVISOR: u32 = 0;
pub const CID_LOCAL: u32 = 1;
pub const CID_HOST: u32 = 2;
pub const RPCI_PORT: u32 = 976;
/// The CID `/dev/vsock` reports under the simulator.
pub const SIM_GUEST_CID: u32 = 0x564D;
/// Socket options at level `AF_VSOCK`.
pub const SO_VM_SOCKETS_BUFFER_SIZE: i32 = 0;
pub const SO_VM_SOCKETS_CONNECT_TIMEOUT_OLD: i32 = 6;
pub const SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW: i32 = 8;

/// Whether the guest may bind ports below 1024 (root, with CAP_NET_BIND_SERVICE).
pub fn root() -> bool {
    // SAFETY: geteuid takes nothing and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Drops the guest's capabilities (root becomes nobody); nothing for a normal user.
pub fn drop_privilege() {
    if root() {
        // SAFETY: plain system calls in the guest, a process of its own.
        unsafe {
            assert_eq!(libc::setgid(65534), 0);
            assert_eq!(libc::setuid(65534), 0);
        }
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A socket descriptor, closed on drop.
#[derive(Debug, PartialEq, Eq)]
pub struct Fd(pub i32);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours.
        unsafe { libc::close(self.0) };
    }
}

/// `socket(family, kind, protocol)`.
pub fn socket_of(family: i32, kind: i32, protocol: i32) -> Result<Fd, i32> {
    // SAFETY: integer arguments.
    let fd = unsafe { libc::socket(family, kind, protocol) };
    if fd < 0 {
        Err(errno())
    } else {
        Ok(Fd(fd))
    }
}

/// A vsock stream socket.
pub fn socket() -> Result<Fd, i32> {
    socket_of(AF_VSOCK, libc::SOCK_STREAM, 0)
}

/// `struct sockaddr_vm`: family, reserved, port, cid, flags, zero.
pub fn sockaddr_vm(cid: u32, port: u32) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..2].copy_from_slice(&(AF_VSOCK as u16).to_ne_bytes());
    a[4..8].copy_from_slice(&port.to_ne_bytes());
    a[8..12].copy_from_slice(&cid.to_ne_bytes());
    a
}

/// `bind` or `connect` with `addr` as the address bytes.
pub fn raw(connect: bool, fd: &Fd, addr: &[u8]) -> Result<(), i32> {
    let p = addr.as_ptr().cast::<libc::sockaddr>();
    let len = addr.len() as libc::socklen_t;
    // SAFETY: `addr` is live for the call and `len` its length.
    let r = unsafe {
        if connect {
            libc::connect(fd.0, p, len)
        } else {
            libc::bind(fd.0, p, len)
        }
    };
    if r == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

pub fn bind(fd: &Fd, cid: u32, port: u32) -> Result<(), i32> {
    raw(false, fd, &sockaddr_vm(cid, port))
}

pub fn connect(fd: &Fd, cid: u32, port: u32) -> Result<(), i32> {
    raw(true, fd, &sockaddr_vm(cid, port))
}

/// `getsockname` (`peer`: `getpeername`) as (family, cid, port).
pub fn name(fd: &Fd, peer: bool) -> Result<(u16, u32, u32), i32> {
    let mut a = [0u8; 128];
    let mut len = a.len() as libc::socklen_t;
    let p = a.as_mut_ptr().cast::<libc::sockaddr>();
    // SAFETY: `a` is a live 128-byte buffer and `len` says so.
    let r = unsafe {
        if peer {
            libc::getpeername(fd.0, p, &mut len)
        } else {
            libc::getsockname(fd.0, p, &mut len)
        }
    };
    if r != 0 {
        return Err(errno());
    }
    let w = |i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    let family = u16::from_ne_bytes([a[0], a[1]]);
    if family == AF_VSOCK as u16 {
        assert_eq!(len, 16, "sizeof(struct sockaddr_vm)");
    }
    Ok((family, w(8), w(4)))
}

/// How a connection to the host's RPCI port went.
#[derive(Debug, PartialEq, Eq)]
pub enum Connected {
    /// Connected from this source port.
    Port(Fd, u32),
    /// A privileged walk found no port it may bind (EACCES): the caller retries
    /// unprivileged, as vsockChannel.c does.
    NoPrivilege,
    /// Failed with this errno at this step.
    Failed(&'static str, i32),
}

/// Connects to the host's RPCI port (`cid`, 976) as open-vm-tools' `Socket_ConnectVMCI`
/// does: privileged, binding source ports from 1023 down (EADDRINUSE: the next port;
/// ECONNRESET on connect: the next port, at most 8 times); unprivileged, binding any port.
pub fn connect_rpci(cid: u32, privileged: bool) -> Connected {
    let mut resets = 0;
    let mut port = if privileged { 1023 } else { ANY };
    loop {
        let fd = match socket() {
            Ok(fd) => fd,
            Err(e) => return Connected::Failed("socket", e),
        };
        match bind(&fd, ANY, port) {
            Ok(()) => {}
            Err(libc::EADDRINUSE) if privileged && port > 512 => {
                port -= 1;
                continue;
            }
            Err(libc::EACCES) if privileged => return Connected::NoPrivilege,
            Err(e) => return Connected::Failed("bind", e),
        }
        match connect(&fd, cid, RPCI_PORT) {
            Ok(()) => {
                let bound = name(&fd, false).map_or(0, |(_, _, p)| p);
                return Connected::Port(fd, bound);
            }
            Err(libc::ECONNRESET) if privileged && resets < 7 => {
                resets += 1;
                port -= 1;
            }
            Err(e) => return Connected::Failed("connect", e),
        }
    }
}

/// A guest RPC request packet, byte by byte: header (body length, BE), then TYPE (INT64
/// DATA: low word, high word), PAYLOAD (STRING), and FAST_CLOSE (INT64 1) if asked.
pub fn request(command: &[u8], fast_close: bool) -> Vec<u8> {
    let be = |v: u32| v.to_be_bytes();
    let mut body = Vec::new();
    for w in [1, 1, 1, 0] {
        body.extend_from_slice(&be(w)); // type INT64, field TYPE, value 1
    }
    body.extend_from_slice(&be(2));
    body.extend_from_slice(&be(2));
    body.extend_from_slice(&be(command.len() as u32));
    body.extend_from_slice(command);
    if fast_close {
        for w in [1, 3, 1, 0] {
            body.extend_from_slice(&be(w));
        }
    }
    let mut packet = be(body.len() as u32).to_vec();
    packet.extend_from_slice(&body);
    packet
}

pub fn send_all(fd: &Fd, mut bytes: &[u8]) -> Result<(), i32> {
    while !bytes.is_empty() {
        // SAFETY: writes from a live slice.
        let n = unsafe { libc::write(fd.0, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            return Err(errno());
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

/// Reads until `buf` is full; the count read (short at the end of the stream).
pub fn recv_full(fd: &Fd, buf: &mut [u8]) -> Result<usize, i32> {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reads into the unfilled part of a live buffer.
        let n = unsafe { libc::read(fd.0, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        match n {
            0 => break,
            n if n < 0 => return Err(errno()),
            n => got += n as usize,
        }
    }
    Ok(got)
}

/// Whether the host closed the connection: reading what is left (at most 64 KiB) ends
/// at the end of the stream.
pub fn at_eof(fd: &Fd) -> bool {
    let mut b = vec![0u8; 1 << 16];
    matches!(recv_full(fd, &mut b), Ok(n) if n < b.len())
}

/// Why a reply could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum ReplyError {
    /// The stream ended after this many bytes of the packet.
    Short(usize),
    /// The header announced more than the client accepts.
    TooLong(u32),
    /// The body is not a DataMap this client accepts.
    Bad(&'static str),
}

/// Reads one reply packet and returns its payload (`1 …` / `0 …`), refusing what
/// dataMap.c refuses: duplicate fields, unknown types, non-positive string lengths.
pub fn recv_reply(fd: &Fd) -> Result<Vec<u8>, ReplyError> {
    const CAP: u32 = 1 << 20;
    let mut header = [0u8; 4];
    let n = recv_full(fd, &mut header).map_err(|_| ReplyError::Short(0))?;
    if n < 4 {
        return Err(ReplyError::Short(n));
    }
    let len = u32::from_be_bytes(header);
    if len > CAP {
        return Err(ReplyError::TooLong(len));
    }
    let mut body = vec![0u8; len as usize];
    let n = recv_full(fd, &mut body).map_err(|_| ReplyError::Short(4))?;
    if n < body.len() {
        return Err(ReplyError::Short(4 + n));
    }
    let mut rest: &[u8] = &body;
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], ReplyError> {
        if rest.len() < n {
            return Err(ReplyError::Bad("truncated entry"));
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Ok(head)
    }
    let word = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let mut seen = Vec::new();
    let mut payload = None;
    while !rest.is_empty() {
        let ty = word(take(&mut rest, 4)?);
        let id = word(take(&mut rest, 4)?);
        if seen.contains(&id) {
            return Err(ReplyError::Bad("duplicate field"));
        }
        seen.push(id);
        match ty {
            1 => {
                take(&mut rest, 8)?;
            }
            2 => {
                let n = word(take(&mut rest, 4)?) as i32;
                if n <= 0 {
                    return Err(ReplyError::Bad("string length of zero or less"));
                }
                let s = take(&mut rest, n as usize)?.to_vec();
                if id == 2 {
                    payload = Some(s);
                }
            }
            _ => return Err(ReplyError::Bad("unknown type")),
        }
    }
    payload.ok_or(ReplyError::Bad("no payload"))
}

/// One RPC on a connected socket.
pub fn rpc(fd: &Fd, command: &[u8], fast_close: bool) -> Result<Vec<u8>, ReplyError> {
    send_all(fd, &request(command, fast_close)).map_err(|_| ReplyError::Short(0))?;
    recv_reply(fd)
}

/// `setsockopt(fd, AF_VSOCK, name, bytes)`.
pub fn set_opt(fd: &Fd, name: i32, bytes: &[u8]) -> Result<(), i32> {
    // SAFETY: `bytes` is live for the call and its length given.
    let r = unsafe {
        libc::setsockopt(
            fd.0,
            AF_VSOCK,
            name,
            bytes.as_ptr().cast(),
            bytes.len() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// `getsockopt(fd, AF_VSOCK, name)` into a buffer of `room` bytes.
pub fn get_opt(fd: &Fd, name: i32, room: usize) -> Result<Vec<u8>, i32> {
    let mut buf = vec![0u8; room];
    let mut len = room as libc::socklen_t;
    // SAFETY: `buf` holds `len` bytes.
    let r = unsafe { libc::getsockopt(fd.0, AF_VSOCK, name, buf.as_mut_ptr().cast(), &mut len) };
    if r != 0 {
        return Err(errno());
    }
    buf.truncate(len as usize);
    Ok(buf)
}
