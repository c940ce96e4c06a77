//! vsock on Linux: `AF_VSOCK` stream sockets to the hypervisor, for RPCI over vsock
//! (`erpc/vsock.rs` walks the source ports and runs the exchange).
//!
//! One attempt is `socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC)`, the connect timeout
//! (`SO_VM_SOCKETS_CONNECT_TIMEOUT`, optional), `bind` to the source port with
//! `VMADDR_CID_ANY`, and a blocking `connect` to CID 0, port 976. Reads and writes are
//! `recv`/`send` (with `MSG_NOSIGNAL`: a host that closed the connection must not raise
//! SIGPIPE in the caller), bounded by `SO_RCVTIMEO`/`SO_SNDTIMEO`.

use core::mem::size_of;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use crate::erpc::vsock::{AttemptFailure, Stream};
use crate::proto::vsock::{HYPERVISOR_CID, RPCI_PORT};

/// `SO_VM_SOCKETS_CONNECT_TIMEOUT` of `<linux/vm_sockets.h>` (its `_OLD` number, which takes
/// a `struct timeval` of native `long`s: libc's `timeval`), at level `AF_VSOCK`. libc does
/// not name it.
const SO_VM_SOCKETS_CONNECT_TIMEOUT: libc::c_int = 6;

/// A connected vsock socket; dropping it closes the descriptor, once.
#[derive(Debug)]
pub(crate) struct VsockStream(OwnedFd);

/// One connection attempt: a socket bound to source `port` (`None`: any) and connected to
/// the hypervisor's RPCI port, the connect bounded by `connect_timeout` where the socket
/// takes that option.
pub(crate) fn attempt(
    port: Option<u32>,
    connect_timeout: Duration,
) -> Result<VsockStream, AttemptFailure> {
    // SAFETY: socket() takes no pointers.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(if no_vsock(&e) {
            AttemptFailure::NoVsock(e)
        } else {
            AttemptFailure::Socket(e)
        });
    }
    // SAFETY: `fd` is the descriptor socket() just returned, owned by nothing else.
    let stream = VsockStream(unsafe { OwnedFd::from_raw_fd(fd) });
    // Optional: without it (a socket that only looks like vsock, under the simulator; an old
    // kernel) the kernel's own connect timeout applies, 2 s for vsock.
    let timeout = timeval(connect_timeout);
    if let Err(e) = stream.set_option(libc::AF_VSOCK, SO_VM_SOCKETS_CONNECT_TIMEOUT, &timeout) {
        log::debug!("vsock connect timeout not set ({e}); the kernel's applies");
    }
    let local = address(libc::VMADDR_CID_ANY, port.unwrap_or(libc::VMADDR_PORT_ANY));
    // SAFETY: `local` is a live sockaddr_vm and the length is its size.
    let bound = unsafe { libc::bind(fd, (&local as *const libc::sockaddr_vm).cast(), ADDR_LEN) };
    if bound != 0 {
        return Err(AttemptFailure::Bind(io::Error::last_os_error()));
    }
    let remote = address(HYPERVISOR_CID, RPCI_PORT);
    // SAFETY: as for bind.
    let connected =
        unsafe { libc::connect(fd, (&remote as *const libc::sockaddr_vm).cast(), ADDR_LEN) };
    if connected != 0 {
        return Err(AttemptFailure::Connect(io::Error::last_os_error()));
    }
    Ok(stream)
}

/// `socket` errors that mean this process has no vsock: no such family in the kernel, or a
/// sandbox (seccomp, an LSM) that forbids it.
fn no_vsock(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EAFNOSUPPORT
                | libc::EPROTONOSUPPORT
                | libc::ESOCKTNOSUPPORT
                | libc::EINVAL
                | libc::EPERM
                | libc::EACCES
                | libc::ENOSYS
        )
    )
}

const ADDR_LEN: libc::socklen_t = size_of::<libc::sockaddr_vm>() as libc::socklen_t;

fn address(cid: u32, port: u32) -> libc::sockaddr_vm {
    libc::sockaddr_vm {
        svm_family: libc::AF_VSOCK as libc::sa_family_t,
        svm_reserved1: 0,
        svm_port: port,
        svm_cid: cid,
        svm_zero: [0; 4],
    }
}

/// `d` as a `timeval`, never zero (which the kernel reads as "no timeout").
fn timeval(d: Duration) -> libc::timeval {
    let tv_sec = libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX);
    let micros = d.subsec_micros().max(u32::from(d.as_secs() == 0));
    libc::timeval {
        tv_sec,
        // Below 1,000,000: fits every suseconds_t.
        tv_usec: micros as libc::suseconds_t,
    }
}

impl VsockStream {
    fn set_option<T>(&self, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
        let len = size_of::<T>() as libc::socklen_t;
        // SAFETY: `value` points at a live T of `len` bytes, which the kernel only reads.
        let r = unsafe {
            libc::setsockopt(
                self.0.as_raw_fd(),
                level,
                name,
                (value as *const T).cast(),
                len,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// `recv` into `buf` with `flags`.
    fn recv(&self, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe {
            libc::recv(
                self.0.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                flags,
            )
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }
}

impl Read for VsockStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv(buf, 0)
    }
}

impl Write for VsockStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: `buf` is readable for its length.
        let n = unsafe {
            libc::send(
                self.0.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for VsockStream {
    fn is_stale(&mut self) -> bool {
        // Nothing to read (EAGAIN) is the only state a request may be sent in.
        match self.recv(&mut [0], libc::MSG_PEEK | libc::MSG_DONTWAIT) {
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
            Ok(_) => true,
        }
    }

    fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        let tv = timeval(timeout);
        self.set_option(libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)?;
        self.set_option(libc::SOL_SOCKET, libc::SO_SNDTIMEO, &tv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_never_zero_and_saturate() {
        let t = timeval(Duration::ZERO);
        assert_eq!((t.tv_sec, t.tv_usec), (0, 1));
        let t = timeval(Duration::from_millis(250));
        assert_eq!((t.tv_sec, t.tv_usec), (0, 250_000));
        let t = timeval(Duration::from_secs(10));
        assert_eq!((t.tv_sec, t.tv_usec), (10, 0));
        assert_eq!(timeval(Duration::MAX).tv_sec, libc::time_t::MAX);
    }
}
