//! No vsock on this OS (RPCI over vsock is implemented for Linux guests): every attempt says
//! so, and no stream can exist.

use std::io::{self, Read, Write};
use std::time::Duration;

use crate::erpc::vsock::{AttemptFailure, Stream};

/// No vsock socket exists here: the type has no value.
#[derive(Debug)]
pub(crate) enum VsockStream {}

pub(crate) fn attempt(
    _port: Option<u32>,
    _timeout: Duration,
) -> Result<VsockStream, AttemptFailure> {
    Err(AttemptFailure::NoVsock(io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "RPCI over vsock is implemented for Linux guests only, not {}",
            std::env::consts::OS
        ),
    )))
}

impl Read for VsockStream {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        match *self {}
    }
}

impl Write for VsockStream {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        match *self {}
    }
    fn flush(&mut self) -> io::Result<()> {
        match *self {}
    }
}

impl Stream for VsockStream {
    fn is_stale(&mut self) -> bool {
        match *self {}
    }
    fn set_timeout(&mut self, _: Duration) -> io::Result<()> {
        match *self {}
    }
}
