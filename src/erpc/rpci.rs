//! RPCI's text layer: building requests and splitting replies, no backdoor calls.
//!
//! A request is a command and its arguments, `info-get guestinfo.KEY`; the reply is
//! `1 PAYLOAD` on success and `0 TEXT` on refusal.

use super::channel::request_too_large;
use crate::proto::{GUESTINFO_PREFIX, MAX_GUEST_MESSAGE};
use crate::{ErrorKind, VmwError};

/// The host's answer to `info-get` of a key that is not set.
pub(super) const NO_VALUE: &[u8] = b"No value found";
/// `tools.set.version` value meaning "tools not managed by VMware" (0x7FFFFFFF).
pub(super) const TOOLS_VERSION_UNMANAGED: &[u8] = b"2147483647";

/// The status prefix of every reply: `1 ` or `0 `.
pub(super) const STATUS_LEN: usize = 2;
/// Payload room a reply has whatever the cap, for a refusal's text.
pub(super) const REFUSAL_ROOM: usize = 1024;

/// A success payload of `len` bytes over the channel's `cap`.
pub(super) fn reply_too_large(len: usize, cap: usize) -> VmwError {
    VmwError::new(
        ErrorKind::TooLarge,
        format_args!(
            "the host's reply is {len} bytes, over the {cap}-byte cap; raise it with \
             set_max_reply_len if you expect replies this big"
        ),
    )
}

/// A reply, split at its status prefix.
pub(crate) enum Reply {
    /// `1 PAYLOAD`.
    Success(Vec<u8>),
    /// `0 TEXT`.
    Refused(Vec<u8>),
}

/// Splits `1 PAYLOAD` / `0 TEXT`; anything else breaks the protocol. Moves the bytes down
/// in place, no new allocation.
pub(crate) fn split_status(mut raw: Vec<u8>) -> Result<Reply, VmwError> {
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
pub(super) fn guestinfo_name(key: &[u8]) -> Result<&[u8], VmwError> {
    let name = match key.get(..GUESTINFO_PREFIX.len()) {
        Some(prefix) if prefix.eq_ignore_ascii_case(GUESTINFO_PREFIX) => {
            key.get(GUESTINFO_PREFIX.len()..).unwrap_or_default()
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
pub(super) fn build(parts: &[&[u8]]) -> Result<Vec<u8>, VmwError> {
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
pub(super) fn first_word(request: &[u8]) -> &[u8] {
    let end = request
        .iter()
        .position(|b| *b == b' ' || *b == 0)
        .unwrap_or(request.len())
        .min(64);
    request.get(..end).unwrap_or_default()
}

pub(super) fn trim_nuls(text: &[u8]) -> &[u8] {
    let end = text.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    text.get(..end).unwrap_or_default()
}
