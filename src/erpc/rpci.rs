//! RPCI: text commands from guest to host over a message channel, replies `1 …` or `0 …`.
//!
//! [`Rpci`] is the whole command layer written against [`Transport`]; the public
//! [`EnhancedChan`](super::EnhancedChan) lends it the real instructions.

use core::fmt;

use super::channel::{request_too_large, Channel};
use super::DEFAULT_MAX_REPLY_LEN;
use crate::proto::{Transport, MAX_GUEST_MESSAGE, PROTO_RPCI};
use crate::{ErrorKind, VmwError};

/// The prefix every guestinfo key carries on the wire.
const GUESTINFO: &[u8] = b"guestinfo.";
/// The host's answer to `info-get` of a key that is not set.
const NO_VALUE: &[u8] = b"No value found";
/// `tools.set.version` value meaning "tools not managed by VMware" (0x7FFFFFFF).
const TOOLS_VERSION_UNMANAGED: &[u8] = b"2147483647";

/// A reply, split at its status prefix.
enum Reply {
    /// `1 PAYLOAD`.
    Success(Vec<u8>),
    /// `0 TEXT`.
    Refused(Vec<u8>),
}

/// An RPCI channel and its reply cap.
pub(crate) struct Rpci {
    channel: Channel,
    max_reply_len: usize,
}

impl fmt::Debug for Rpci {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rpci")
            .field("channel", &self.channel)
            .field("max_reply_len", &self.max_reply_len)
            .finish()
    }
}

impl Rpci {
    /// Opens an RPCI channel.
    pub(crate) fn open<T: Transport + ?Sized>(t: &mut T) -> Result<Self, VmwError> {
        Ok(Rpci {
            channel: Channel::open(t, PROTO_RPCI)?,
            max_reply_len: DEFAULT_MAX_REPLY_LEN,
        })
    }

    pub(crate) fn is_open(&self) -> bool {
        self.channel.is_open()
    }

    pub(crate) fn close<T: Transport + ?Sized>(&mut self, t: &mut T) -> Result<(), VmwError> {
        self.channel.close(t)
    }

    pub(crate) fn max_reply_len(&self) -> usize {
        self.max_reply_len
    }

    pub(crate) fn set_max_reply_len(&mut self, len: usize) {
        self.max_reply_len = len;
    }

    /// Any command: the payload of `1 …`, or [`ErrorKind::HostRefused`] with the text of `0 …`.
    pub(crate) fn rpc<T: Transport + ?Sized>(
        &mut self,
        t: &mut T,
        request: &[u8],
    ) -> Result<Vec<u8>, VmwError> {
        match self.send(t, request)? {
            Reply::Success(payload) => Ok(payload),
            Reply::Refused(text) => Err(VmwError::host_refused(first_word(request), &text)),
        }
    }

    /// `info-get guestinfo.KEY`; `None` when the host has no value.
    pub(crate) fn get_guestinfo<T: Transport + ?Sized>(
        &mut self,
        t: &mut T,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, VmwError> {
        let name = guestinfo_name(key)?;
        let request = build(&[b"info-get ", GUESTINFO, name])?;
        match self.send(t, &request)? {
            Reply::Success(value) => Ok(Some(value)),
            Reply::Refused(text) if trim_nuls(&text) == NO_VALUE => Ok(None),
            Reply::Refused(text) => Err(VmwError::host_refused(&request, &text)),
        }
    }

    /// `info-set guestinfo.KEY VALUE`.
    pub(crate) fn set_guestinfo<T: Transport + ?Sized>(
        &mut self,
        t: &mut T,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), VmwError> {
        let name = guestinfo_name(key)?;
        if value.contains(&0) {
            return Err(VmwError::new(
                ErrorKind::InvalidInput,
                "a guestinfo value cannot contain a NUL byte: the host stops reading there",
            ));
        }
        let request = build(&[b"info-set ", GUESTINFO, name, b" ", value])?;
        self.expect_success(
            t,
            &request,
            b"info-set ".len() + GUESTINFO.len() + name.len(),
        )
    }

    /// `log TEXT`, a line in the VM's `vmware.log`.
    pub(crate) fn log<T: Transport + ?Sized>(
        &mut self,
        t: &mut T,
        text: &str,
    ) -> Result<(), VmwError> {
        // The host reads a request up to its first NUL: the rest of the line would be lost
        // without a word.
        if text.contains('\0') {
            return Err(VmwError::new(
                ErrorKind::InvalidInput,
                "a log line cannot contain a NUL character: the host stops reading there",
            ));
        }
        let request = build(&[b"log ", text.as_bytes()])?;
        self.expect_success(t, &request, b"log".len())
    }

    /// `tools.set.version 2147483647`: tools present, not managed by VMware.
    pub(crate) fn report_agent<T: Transport + ?Sized>(
        &mut self,
        t: &mut T,
    ) -> Result<(), VmwError> {
        let request = build(&[b"tools.set.version ", TOOLS_VERSION_UNMANAGED])?;
        self.expect_success(t, &request, request.len())
    }

    /// Sends a command whose success payload does not matter; on refusal the error names the
    /// first `label_len` bytes of the request (never a value).
    fn expect_success<T: Transport + ?Sized>(
        &mut self,
        t: &mut T,
        request: &[u8],
        label_len: usize,
    ) -> Result<(), VmwError> {
        match self.send(t, request)? {
            Reply::Success(_) => Ok(()),
            Reply::Refused(text) => Err(VmwError::host_refused(
                request.get(..label_len).unwrap_or(request),
                &text,
            )),
        }
    }

    /// The channel's cookies, for tests that check they are never printed.
    #[cfg(test)]
    pub(crate) fn cookies(&self) -> (u32, u32) {
        self.channel.cookies()
    }

    fn send<T: Transport + ?Sized>(
        &mut self,
        t: &mut T,
        request: &[u8],
    ) -> Result<Reply, VmwError> {
        // The cap is on the payload; the wire reply carries two more bytes of status.
        let raw = self
            .channel
            .exchange(t, request, self.max_reply_len.saturating_add(2))?;
        split_status(raw)
    }
}

/// Splits `1 PAYLOAD` / `0 TEXT`; anything else breaks the protocol. Moves the bytes down
/// in place, no new allocation.
fn split_status(mut raw: Vec<u8>) -> Result<Reply, VmwError> {
    let success = match raw.get(..2) {
        Some(b"1 ") => true,
        Some(b"0 ") => false,
        _ => {
            let head = raw.get(..16).unwrap_or(&raw);
            return Err(VmwError::new(
                ErrorKind::Protocol,
                format_args!(
                    "the host's reply \"{}\" does not start with \"1 \" or \"0 \"",
                    head.escape_ascii()
                ),
            ));
        }
    };
    raw.drain(..2);
    Ok(if success {
        Reply::Success(raw)
    } else {
        Reply::Refused(raw)
    })
}

/// The key's name after `guestinfo.` (the prefix is optional, in any case).
fn guestinfo_name(key: &[u8]) -> Result<&[u8], VmwError> {
    let name = match key.get(..GUESTINFO.len()) {
        Some(prefix) if prefix.eq_ignore_ascii_case(GUESTINFO) => {
            key.get(GUESTINFO.len()..).unwrap_or_default()
        }
        _ => key,
    };
    if name.is_empty() {
        return Err(VmwError::new(
            ErrorKind::InvalidInput,
            "empty guestinfo key: name the value, as in \"guestinfo.metadata\" or \"metadata\"",
        ));
    }
    if let Some(b) = name.iter().find(|b| b.is_ascii_whitespace() || **b == 0) {
        return Err(VmwError::new(
            ErrorKind::InvalidInput,
            format_args!(
                "the guestinfo key \"{}\" contains {:?}, which the host reads as the end of the \
                 key",
                key.escape_ascii(),
                char::from(*b)
            ),
        ));
    }
    Ok(name)
}

/// Concatenates a request in one allocation, refusing what the host would refuse.
fn build(parts: &[&[u8]]) -> Result<Vec<u8>, VmwError> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > MAX_GUEST_MESSAGE {
        return Err(request_too_large(len));
    }
    let mut request = Vec::with_capacity(len);
    for p in parts {
        request.extend_from_slice(p);
    }
    Ok(request)
}

/// The command name of a raw request, for error messages (arguments may be secret).
fn first_word(request: &[u8]) -> &[u8] {
    let end = request
        .iter()
        .position(|b| *b == b' ' || *b == 0)
        .unwrap_or(request.len())
        .min(64);
    request.get(..end).unwrap_or_default()
}

fn trim_nuls(text: &[u8]) -> &[u8] {
    let end = text.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    text.get(..end).unwrap_or_default()
}
