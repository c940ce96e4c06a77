//! The crate's one error type.

use std::fmt;
use std::io;

use crate::Route;

/// What went wrong, for callers that branch on it.
///
/// New kinds may be added in minor releases; match with a wildcard arm.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No VMware backdoor answered: not a VMware guest, or the backdoor access faulted
    /// (VMware with ring-3 backdoor access restricted).
    NotVmware,
    /// Raising or dropping I/O privilege (`ioperm`/`iopl`) failed, or a privileged vsock
    /// source port (below 1024) could not be bound; [`VmwError::raw_os_error`] has the
    /// errno.
    Privilege,
    /// The host answered with a status or message that breaks the protocol.
    Protocol,
    /// A checkpoint (snapshot, suspend, migration) cut every try of an exchange.
    Checkpoint,
    /// The host refused to open a channel: all channels busy, or messages unavailable.
    NoChannel,
    /// The host reported the channel closed (status CLOSED: it freed the id), or closed or
    /// reset a vsock connection, or sent no vsock reply within the channel's
    /// [`reply_timeout`](crate::RpciChannel::reply_timeout) (the connection is then
    /// dropped). The next call on the channel opens a fresh one.
    ChannelClosed,
    /// The host answered the command with a failure (`0 …`); the text is kept.
    HostRefused,
    /// The host answered `0 Permission denied`: the command is not allowed on this route (a
    /// VM can require the privileged vsock channel for a command,
    /// `guest_rpc.rpci.auth.cmd.COMMAND`) or not at all (the VM's isolation settings). The
    /// message says which applies and what to do; the text is kept as for
    /// [`HostRefused`](Self::HostRefused).
    PermissionDenied,
    /// The caller's input cannot be sent as given (a key with a space, an empty key, …).
    InvalidInput,
    /// A request or reply is larger than the protocol or the configured cap allows.
    TooLarge,
    /// A value could not be read as asked: an unknown `KEY.encoding`, bytes that are not
    /// base64 or gzip, text that is not UTF-8 or not a boolean or number, an OVF environment
    /// that is not XML.
    Decode,
    /// This platform has no VMware backdoor (not x86, or no port I/O from user space), or,
    /// for a vsock channel, no vsock (a kernel without `AF_VSOCK`, a sandbox that forbids
    /// it, an OS other than Linux).
    Unsupported,
    /// A system call the library relies on failed (creating the probe's child process,
    /// allocating a reply buffer, a socket call that should not fail);
    /// [`VmwError::raw_os_error`] has the errno when there is one.
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

    /// An error caused by a failed I/O call; `error` becomes the source.
    pub(crate) fn io(kind: ErrorKind, message: impl fmt::Display, error: io::Error) -> Self {
        VmwError {
            os: Some(error),
            ..Self::new(kind, message)
        }
    }

    /// The host answered `0 TEXT` to `command`, which went by `route`: keep TEXT.
    ///
    /// `command` names the request in the message (the RPCI command and key, never a value,
    /// which may be secret). `0 Permission denied` is [`ErrorKind::PermissionDenied`], with
    /// what to do on that route.
    pub(crate) fn host_refused(command: &[u8], text: &[u8], route: Route) -> Self {
        let reply = String::from_utf8_lossy(text);
        let mut message = format!(
            "the host refused {}: {}",
            Command(command),
            reply.escape_debug()
        );
        let denied = text.split(|&b| b == 0).next() == Some(PERMISSION_DENIED);
        if denied {
            message.push_str(&permission_advice(command, route));
        }
        VmwError {
            host_reply: Some(text.to_vec()),
            ..Self::new(
                if denied {
                    ErrorKind::PermissionDenied
                } else {
                    ErrorKind::HostRefused
                },
                message,
            )
        }
    }

    /// This error, its message also telling that the fallback tried after it failed too.
    pub(crate) fn with_fallback(mut self, fallback: &VmwError) -> Self {
        self.message = format!("{}; the fallback failed too: {fallback}", self.message);
        self
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

/// The host's refusal of a command the VM does not allow (open-vm-tools
/// `RPCCHANNEL_SEND_PERMISSION_DENIED`).
const PERMISSION_DENIED: &[u8] = b"Permission denied";

/// What to do about `0 Permission denied` to `command` sent by `route`.
fn permission_advice(command: &[u8], route: Route) -> String {
    let name = command.split(|&b| b == b' ').next().unwrap_or_default();
    let name = String::from_utf8_lossy(name);
    let name = name.escape_debug();
    let setting = format!(
        "the VM may allow `{name}` only over the privileged channel \
         (guest_rpc.rpci.auth.cmd.{name} = \"TRUE\" in its configuration)"
    );
    match route {
        Route::PrivilegedVsock => ". It came over the privileged vsock channel, so the VM's \
            configuration forbids it outright (its isolation.tools.* settings); only the VM's \
            owner can change that"
            .to_owned(),
        Route::UnprivilegedVsock => format!(
            ". It came over vsock from an unprivileged port: {setting}; run as root or with \
             CAP_NET_BIND_SERVICE, so that the library can connect from a privileged port"
        ),
        Route::Backdoor => format!(
            ". It came over the backdoor: {setting}; run as root or with CAP_NET_BIND_SERVICE, \
             in a guest kernel with vsock (vmw_vsock_vmci_transport), through \
             Session::connect or RpciChannel::open_vsock, so that the library can use \
             privileged vsock"
        ),
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
        let e = VmwError::host_refused(b"info-get guestinfo.x", b"No value", Route::Backdoor);
        assert_eq!(e.kind(), ErrorKind::HostRefused);
        assert_eq!(e.host_reply(), Some(&b"No value"[..]));
        assert!(e.to_string().contains("No value"), "{e}");
    }

    #[test]
    fn permission_denied_says_what_to_do_on_each_route() {
        let request = b"info-get guestinfo.x";
        for (route, advice) in [
            (Route::Backdoor, "guest_rpc.rpci.auth.cmd.info-get"),
            (Route::UnprivilegedVsock, "CAP_NET_BIND_SERVICE"),
            (Route::PrivilegedVsock, "forbids it"),
        ] {
            // As the host sends it, and with the NUL a C host may leave at the end.
            for text in [&b"Permission denied"[..], b"Permission denied\0"] {
                let e = VmwError::host_refused(request, text, route);
                assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{route:?}");
                assert_eq!(e.host_reply(), Some(text), "the host's text is kept");
                let message = e.to_string();
                assert!(message.contains("Permission denied"), "{message}");
                assert!(message.contains(advice), "{route:?}: {message}");
            }
        }
        let e = VmwError::host_refused(request, b"Permission denied here", Route::Backdoor);
        assert_eq!(e.kind(), ErrorKind::HostRefused, "only the exact refusal");
    }
}
