//! The crate's one error type.

use std::fmt;
use std::io;

/// What went wrong, for callers that branch on it.
///
/// New kinds may be added in minor releases; match with a wildcard arm.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No VMware backdoor answered: not a VMware guest, or the backdoor access faulted
    /// (VMware with ring-3 backdoor access restricted).
    NotVmware,
    /// Raising or dropping I/O privilege (`ioperm`/`iopl`) failed; [`VmwError::raw_os_error`]
    /// has the errno.
    Privilege,
    /// The host answered with a status or message that breaks the protocol.
    Protocol,
    /// A checkpoint (snapshot, suspend, migration) cut every try of an exchange.
    Checkpoint,
    /// The host refused to open a channel: all channels busy, or messages unavailable.
    NoChannel,
    /// The host reported the channel closed (status CLOSED): it freed the id. The next call
    /// on the channel opens a fresh one.
    ChannelClosed,
    /// The host answered the command with a failure (`0 …`); the text is kept.
    HostRefused,
    /// The caller's input cannot be sent as given (a key with a space, an empty key, …).
    InvalidInput,
    /// A request or reply is larger than the protocol or the configured cap allows.
    TooLarge,
    /// A value could not be read as asked: an unknown `KEY.encoding`, bytes that are not
    /// base64 or gzip, text that is not UTF-8 or not a boolean or number, an OVF environment
    /// that is not XML.
    Decode,
    /// This platform has no VMware backdoor (not x86, or no port I/O from user space).
    Unsupported,
    /// A system call the library relies on failed (creating the probe's child process, or
    /// allocating a reply buffer); [`VmwError::raw_os_error`] has the errno when there is one.
    System,
    /// An error made from a plain message by application code (`VmwError::from("…")`), as
    /// 0.2 allowed; the library itself never returns this kind.
    Other,
}

/// VMware backdoor errors.
///
/// Carries an [`ErrorKind`], a message that says what happened and what to do, the host's
/// own reply text when the host said no, and the OS error as [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct VmwError {
    kind: ErrorKind,
    message: String,
    host_reply: Option<Vec<u8>>,
    #[source]
    os: Option<io::Error>,
}

impl VmwError {
    /// An error of `kind` with a message for people.
    pub(crate) fn new(kind: ErrorKind, message: impl fmt::Display) -> Self {
        VmwError {
            kind,
            message: message.to_string(),
            host_reply: None,
            os: None,
        }
    }

    /// An error caused by a failed system call; `errno` becomes the source.
    #[cfg_attr(
        not(all(unix, any(target_arch = "x86", target_arch = "x86_64"))),
        allow(dead_code)
    )]
    pub(crate) fn os(kind: ErrorKind, message: impl fmt::Display, errno: i32) -> Self {
        VmwError {
            os: Some(io::Error::from_raw_os_error(errno)),
            ..Self::new(kind, message)
        }
    }

    /// The host answered `0 TEXT` to `command`: keep TEXT.
    ///
    /// `command` names the request in the message (the RPCI command and key, never a value,
    /// which may be secret).
    pub(crate) fn host_refused(command: &[u8], text: &[u8]) -> Self {
        VmwError {
            host_reply: Some(text.to_vec()),
            ..Self::new(
                ErrorKind::HostRefused,
                format_args!(
                    "the host refused {}: {}",
                    Command(command),
                    String::from_utf8_lossy(text).escape_debug()
                ),
            )
        }
    }

    /// This error, its message also telling what failed before it (when a fallback failed
    /// too, both reasons matter).
    pub(crate) fn after(mut self, earlier: &VmwError) -> Self {
        self.message = format!("{}; before that: {earlier}", self.message);
        self
    }

    /// What kind of failure this is.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The host's reply text, without the `0 ` prefix, when the host refused a command.
    #[must_use]
    pub fn host_reply(&self) -> Option<&[u8]> {
        self.host_reply.as_deref()
    }

    /// The errno of a failed system call, if one caused this error.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.os.as_ref().and_then(io::Error::raw_os_error)
    }
}

/// Kept from 0.2, whose only error was a message: code that builds errors from text (`Err("…".into())`)
/// still compiles. The kind is [`ErrorKind::Other`].
/// A request's command as an error message names it.
struct Command<'a>(&'a [u8]);

impl fmt::Display for Command<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("an empty request")
        } else {
            write!(f, "`{}`", String::from_utf8_lossy(self.0).escape_debug())
        }
    }
}

impl From<&str> for VmwError {
    fn from(message: &str) -> Self {
        VmwError::new(ErrorKind::Other, message)
    }
}

/// As `From<&str>`.
impl From<String> for VmwError {
    fn from(message: String) -> Self {
        VmwError::new(ErrorKind::Other, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn error_is_thread_safe_and_static() {
        fn check<T: std::error::Error + Send + Sync + 'static>() {}
        check::<VmwError>();
    }

    #[test]
    fn os_errors_keep_errno_as_source() {
        let e = VmwError::os(ErrorKind::Privilege, "iopl: EPERM", libc::EPERM);
        assert_eq!(e.kind(), ErrorKind::Privilege);
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        assert!(e.source().is_some());
    }

    #[test]
    fn errors_from_text_compile_as_in_0_2_and_say_they_are_other() {
        fn app() -> Result<(), VmwError> {
            Err("no config found")?
        }
        let e = app().unwrap_err();
        assert_eq!(
            (e.kind(), e.to_string()),
            (ErrorKind::Other, "no config found".into())
        );
        assert_eq!(VmwError::from(String::from("x")).kind(), ErrorKind::Other);
    }

    #[test]
    fn host_refusal_keeps_the_text() {
        let e = VmwError::host_refused(b"info-get guestinfo.x", b"Permission denied");
        assert_eq!(e.kind(), ErrorKind::HostRefused);
        assert_eq!(e.host_reply(), Some(&b"Permission denied"[..]));
        assert!(e.to_string().contains("Permission denied"), "{e}");
    }
}
