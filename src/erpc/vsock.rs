//! RPCI over vsock: the route vmtoolsd takes first, and the only one that reaches a command
//! a VM reserves for the privileged channel.
//!
//! A stream connection to the hypervisor (CID 0, port 976) carries a channel's requests, one
//! DataMap packet out and one back each ([`super::datamap`]). This file is the portable part:
//! the walk over source ports, the exchange and how it recovers, and when a session that fell
//! back to the backdoor tries vsock again. It is written against [`Stream`] and [`Connect`],
//! so tests drive it over socket pairs; the socket calls themselves are the platform
//! layer's (`backdoor/platform/vsock_*.rs`).

use core::fmt;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use super::channel::request_too_large;
use super::datamap::{self, DataMap, HEADER_LEN};
use super::rpci::first_word;
use crate::backdoor::vsock as socket;
use crate::proto::vsock::{PRIVILEGED_PORT_MAX, PRIVILEGED_PORT_MIN, RPCI_PORT};
use crate::proto::MAX_GUEST_MESSAGE;
use crate::{ErrorKind, VmwError};

/// How long connecting to the hypervisor may take.
///
/// VMware's endpoint is the VM's own VMX, which answers at once. Elsewhere a connect to CID 0
/// may go unanswered: a KVM guest's virtio vsock waits out the kernel's default of 2 s and
/// fails with ETIMEDOUT (measured on the development machine). This bounds what
/// [`Session::connect`](crate::Session::connect) spends there before it tries the backdoor.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);

/// How long a vsock channel waits for the host to take a request and to reply, unless told
/// otherwise ([`RpciChannel::set_reply_timeout`](crate::RpciChannel::set_reply_timeout)).
/// VMware answers an RPCI at once; this only bounds a host that took the connection and
/// then went silent.
pub(crate) const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The shortest reply timeout: zero would mean "no timeout" to the kernel.
pub(crate) const MIN_REPLY_TIMEOUT: Duration = Duration::from_millis(1);

/// Resets on connect before the walk gives up on vsock (open-vm-tools'
/// `MAX_ECONNRESET_RETRIES`): the host may still hold a port pair another connection just
/// released, but one that resets this often does not take vsock RPC at all.
const MAX_RESETS: u32 = 8;

/// Interrupted connects retried from the same port, so that a signal storm cannot keep a
/// connect going forever.
const MAX_INTERRUPTS: u32 = 8;

/// Room in a reply's body beyond its payload: the TYPE entry (16 bytes), the PAYLOAD entry's
/// head (12) and a few fields a newer host may add.
const BODY_ROOM: usize = 256;

/// The PAYLOAD and TYPE entries' framing, subtracted from a body's length to say how long
/// the reply it announces is.
const PAYLOAD_FRAMING: usize = 28;

/// Commands the host may take twice without harm: reads, and writes that set what they set
/// already (a `log` line may then appear twice). A request whose connection died after it
/// was sent is sent again only if it is one of these; any other command may have run.
const SAFE_TO_REPEAT: [&[u8]; 5] = [
    b"info-get",
    b"info-set",
    b"log",
    b"tools.set.version",
    b"machine.id.get",
];

/// The way an [`RpciChannel`](crate::RpciChannel) reaches the host, as
/// [`RpciChannel::route`](crate::RpciChannel::route) reports it.
///
/// A VM can reserve a command for the privileged route (`guest_rpc.rpci.auth.cmd.COMMAND =
/// "TRUE"` in its configuration); the other routes then get `0 Permission denied`
/// ([`ErrorKind::PermissionDenied`]), root or not.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// vsock from a source port below 1024, which only a process allowed to bind one (root,
    /// or `CAP_NET_BIND_SERVICE`) gets: the privileged channel.
    PrivilegedVsock,
    /// vsock from a port of 1024 or above: a process without that privilege.
    UnprivilegedVsock,
    /// The backdoor's message channel (command 30), whatever the I/O privilege.
    Backdoor,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Route::PrivilegedVsock => "privileged vsock",
            Route::UnprivilegedVsock => "unprivileged vsock",
            Route::Backdoor => "backdoor",
        })
    }
}

/// A connected stream to the host, as the exchange needs it.
pub(crate) trait Stream: Read + Write + fmt::Debug + Send + Sync {
    /// Whether the connection can no longer carry a request: the host closed or reset it, or
    /// sent something nobody asked for (which would be read as the next reply). Does not
    /// block.
    fn is_stale(&mut self) -> bool;
    /// Bounds every later read and write to `timeout` (not zero).
    fn set_timeout(&mut self, timeout: Duration) -> io::Result<()>;
}

/// Opens connections to the host's RPCI endpoint.
pub(crate) trait Connect: fmt::Debug + Send + Sync {
    /// A new connection, and the route it took.
    fn connect(&mut self) -> Result<(Box<dyn Stream>, Route), VmwError>;
}

/// Why one connection attempt failed, by the call that failed.
#[derive(Debug)]
#[allow(dead_code)] // without vsock (other OSes) every attempt is NoVsock
pub(crate) enum AttemptFailure {
    /// `socket` refused the address family: no vsock for this process (no kernel support,
    /// a sandbox that forbids it, another OS).
    NoVsock(io::Error),
    /// `socket` failed otherwise (out of descriptors, say).
    Socket(io::Error),
    /// `bind` of the source port failed.
    Bind(io::Error),
    /// `connect` to the hypervisor failed.
    Connect(io::Error),
}

impl AttemptFailure {
    /// The error a caller sees; `port` is the source port tried (`None`: any).
    fn into_error(self, port: Option<u32>) -> VmwError {
        let from = port.map_or_else(|| "any port".to_owned(), |p| format!("port {p}"));
        match self {
            AttemptFailure::NoVsock(e) => VmwError::io(
                ErrorKind::Unsupported,
                format!(
                    "no vsock here: socket(AF_VSOCK): {e} (a guest kernel without vsock, or a \
                     sandbox that forbids it)"
                ),
                e,
            ),
            AttemptFailure::Socket(e) => {
                VmwError::io(ErrorKind::System, format!("socket(AF_VSOCK): {e}"), e)
            }
            AttemptFailure::Bind(e) => {
                VmwError::io(ErrorKind::System, format!("binding vsock {from}: {e}"), e)
            }
            AttemptFailure::Connect(e) => VmwError::io(
                ErrorKind::NoChannel,
                format!(
                    "no RPCI endpoint took a vsock connection to the hypervisor (CID 0, port \
                     {RPCI_PORT}) from {from}: {e}: not VMware, a guest kernel whose vsock \
                     transport is not VMware's (vmw_vsock_vmci_transport), or a host with vsock \
                     RPC turned off"
                ),
                e,
            ),
        }
    }
}

/// Which source ports a connection may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// A privileged port only; a process that may not bind one gets
    /// [`ErrorKind::Privilege`].
    Privileged,
    /// A privileged port where the process may bind one, else any (open-vm-tools'
    /// `VSockCreateConn`).
    Best,
}

/// Connects by `attempt` (one socket, bound to the port given, `None` for any, then
/// connected), walking the privileged ports as open-vm-tools' `Socket_ConnectVMCI` does:
/// from 1023 down; to the next port when the bind finds the port in use or the connect is
/// reset (at most [`MAX_RESETS`] times); the same port again when a signal interrupts the
/// connect. A bind refused for lack of privilege (EACCES) ends the walk, and
/// [`Source::Best`] then connects once from any port. Any other failure ends it too: the
/// unprivileged port is only for a process that may not bind a privileged one.
pub(crate) fn connect_from<S>(
    source: Source,
    mut attempt: impl FnMut(Option<u32>) -> Result<S, AttemptFailure>,
) -> Result<(S, Route), VmwError> {
    let refused = match walk_privileged(&mut attempt) {
        Ok(stream) => return Ok((stream, Route::PrivilegedVsock)),
        Err(Walked::Failed(e)) => return Err(e),
        Err(Walked::NotPrivileged(e)) => e,
    };
    if source == Source::Privileged {
        return Err(VmwError::io(
            ErrorKind::Privilege,
            format!(
                "binding a privileged vsock port (below 1024): {refused}: run as root or with \
                 CAP_NET_BIND_SERVICE"
            ),
            refused,
        ));
    }
    log::debug!("no privileged vsock port ({refused}); connecting from any port");
    let mut interrupts = 0;
    loop {
        match attempt(None) {
            Ok(stream) => return Ok((stream, Route::UnprivilegedVsock)),
            Err(AttemptFailure::Connect(e))
                if e.kind() == io::ErrorKind::Interrupted && interrupts < MAX_INTERRUPTS =>
            {
                interrupts += 1;
            }
            Err(failure) => return Err(failure.into_error(None)),
        }
    }
}

/// How the walk over privileged ports ended without a connection.
enum Walked {
    /// The process may not bind a privileged port.
    NotPrivileged(io::Error),
    /// Anything else: vsock does not work here.
    Failed(VmwError),
}

fn walk_privileged<S>(
    attempt: &mut impl FnMut(Option<u32>) -> Result<S, AttemptFailure>,
) -> Result<S, Walked> {
    let mut resets = 0;
    let mut interrupts = 0;
    let mut port = PRIVILEGED_PORT_MAX;
    loop {
        let next = match attempt(Some(port)) {
            Ok(stream) => return Ok(stream),
            Err(AttemptFailure::Bind(e)) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(Walked::NotPrivileged(e))
            }
            Err(AttemptFailure::Bind(e)) if e.kind() == io::ErrorKind::AddrInUse => port - 1,
            Err(AttemptFailure::Connect(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                resets += 1;
                if resets == MAX_RESETS {
                    let e = AttemptFailure::Connect(e).into_error(Some(port));
                    return Err(Walked::Failed(VmwError::new(
                        ErrorKind::NoChannel,
                        format!("the host reset {MAX_RESETS} vsock connections in a row: {e}"),
                    )));
                }
                port - 1
            }
            Err(AttemptFailure::Connect(e))
                if e.kind() == io::ErrorKind::Interrupted && interrupts < MAX_INTERRUPTS =>
            {
                interrupts += 1;
                port
            }
            Err(failure) => return Err(Walked::Failed(failure.into_error(Some(port)))),
        };
        if next < PRIVILEGED_PORT_MIN {
            return Err(Walked::Failed(VmwError::new(
                ErrorKind::NoChannel,
                format!(
                    "every privileged vsock port ({PRIVILEGED_PORT_MIN} to \
                     {PRIVILEGED_PORT_MAX}) is in use"
                ),
            )));
        }
        port = next;
    }
}

/// The real hypervisor, through the platform's sockets.
#[derive(Debug)]
pub(crate) struct Hypervisor(pub(crate) Source);

impl Connect for Hypervisor {
    fn connect(&mut self) -> Result<(Box<dyn Stream>, Route), VmwError> {
        let (stream, route) = connect_from(self.0, |port| socket::attempt(port, CONNECT_TIMEOUT))?;
        Ok((Box::new(stream), route))
    }
}

/// How a vsock exchange failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No connection could be made. The request did not reach the host, or is one the host
    /// may take twice: another route may carry it.
    Unreachable(VmwError),
    /// The exchange failed; the request may have reached the host.
    Exchange(VmwError),
}

/// How one try of an exchange failed.
#[derive(Debug)]
enum Once {
    /// No connection.
    Unreachable(VmwError),
    /// The host closed or reset the connection; `delivered` once the whole request was
    /// written (the host may have run it).
    Lost { delivered: bool, error: VmwError },
    /// Anything else: a bad reply, a timeout, a failed system call.
    Failed(VmwError),
}

/// One channel's vsock connection: made on demand, replaced when the host dropped it, and
/// closed exactly once (dropping the stream closes its socket).
pub(crate) struct Link {
    connector: Box<dyn Connect>,
    stream: Option<Box<dyn Stream>>,
    /// The route of the newest connection.
    route: Route,
    /// Ask the host to close after each reply (one request a connection).
    fast_close: bool,
    timeout: Duration,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("route", &self.route)
            .field("connected", &self.stream.is_some())
            .field("fast_close", &self.fast_close)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Link {
    /// A link that connects at its first exchange (or [`connect`](Self::connect)).
    pub(crate) fn new(connector: Box<dyn Connect>, fast_close: bool, timeout: Duration) -> Link {
        Link {
            connector,
            stream: None,
            // Replaced by the first connection's; a channel's carrier has always connected.
            route: Route::UnprivilegedVsock,
            fast_close,
            timeout,
        }
    }

    /// A link connected now, so that the route is known (and a host without vsock found
    /// out) before the first request.
    pub(crate) fn open(
        connector: Box<dyn Connect>,
        fast_close: bool,
        timeout: Duration,
    ) -> Result<Link, VmwError> {
        let mut link = Link::new(connector, fast_close, timeout);
        link.connect()?;
        Ok(link)
    }

    /// Connects, unless a connection is open and the host has not closed it.
    pub(crate) fn connect(&mut self) -> Result<(), VmwError> {
        let stream = self.take_connection()?;
        self.stream = Some(stream);
        Ok(())
    }

    /// The connection to use now: the open one, unless the host closed it while it was
    /// idle, else a new one.
    fn take_connection(&mut self) -> Result<Box<dyn Stream>, VmwError> {
        if let Some(mut stream) = self.stream.take() {
            if !stream.is_stale() {
                return Ok(stream);
            }
            log::debug!("the host closed the idle vsock connection; connecting again");
        }
        let (mut stream, route) = self.connector.connect()?;
        set_timeout(&mut *stream, self.timeout)?;
        self.route = route;
        Ok(stream)
    }

    pub(crate) fn route(&self) -> Route {
        self.route
    }

    /// Whether a connection is open now (the next exchange makes one if not).
    pub(crate) fn is_open(&self) -> bool {
        self.stream.is_some()
    }

    /// Closes the connection, if one is open.
    pub(crate) fn close(&mut self) {
        self.stream = None;
    }

    /// Bounds reads and writes by `timeout` from now on.
    pub(crate) fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
        if let Some(stream) = &mut self.stream {
            if let Err(e) = set_timeout(&mut **stream, timeout) {
                // The next exchange connects afresh, with the new timeout.
                log::debug!("{e}; dropping the vsock connection");
                self.stream = None;
            }
        }
    }

    /// Sends `request` and returns the reply's payload (`1 …` or `0 …`, unchecked), at most
    /// `max_reply` bytes: a longer one is refused with the error `too_large` makes of its
    /// length, before it is read when its header announces it.
    ///
    /// A connection the host closed while idle is replaced before sending. When the host
    /// closes or resets the connection during the exchange, the request is sent once more on
    /// a new connection if it had not been sent whole or is [safe to
    /// repeat](SAFE_TO_REPEAT). After any failure the connection is closed (a reply left
    /// half-read would be taken for the next one); the next exchange connects again.
    pub(crate) fn exchange(
        &mut self,
        request: &[u8],
        max_reply: usize,
        too_large: &dyn Fn(usize) -> VmwError,
    ) -> Result<Vec<u8>, Failure> {
        if request.is_empty() {
            return Err(Failure::Exchange(VmwError::new(
                ErrorKind::InvalidInput,
                "an empty request cannot go over vsock: its framing (DataMap) has no empty \
                 string; send a command",
            )));
        }
        if request.len() > MAX_GUEST_MESSAGE {
            return Err(Failure::Exchange(request_too_large(request.len())));
        }
        let packet = datamap::request(request, self.fast_close);
        let lost = match self.once(&packet, max_reply, too_large) {
            Ok(reply) => return Ok(reply),
            Err(Once::Unreachable(e)) => return Err(Failure::Unreachable(e)),
            Err(Once::Failed(e)) => return Err(Failure::Exchange(e)),
            Err(Once::Lost { delivered, error }) => {
                if delivered && !SAFE_TO_REPEAT.contains(&first_word(request)) {
                    return Err(Failure::Exchange(error));
                }
                error
            }
        };
        log::debug!("{lost}; sending the request again on a new connection");
        match self.once(&packet, max_reply, too_large) {
            Ok(reply) => Ok(reply),
            Err(Once::Unreachable(e)) => Err(Failure::Unreachable(e.after(&lost))),
            Err(Once::Failed(e) | Once::Lost { error: e, .. }) => {
                Err(Failure::Exchange(e.after(&lost)))
            }
        }
    }

    /// One try: connect if needed, write, read. The stream is kept only after a reply, and
    /// not when the host was asked to close.
    fn once(
        &mut self,
        packet: &[u8],
        max_reply: usize,
        too_large: &dyn Fn(usize) -> VmwError,
    ) -> Result<Vec<u8>, Once> {
        let mut stream = self.take_connection().map_err(Once::Unreachable)?;
        let reply = exchange_once(&mut *stream, packet, max_reply, too_large, self.timeout)?;
        if !self.fast_close {
            self.stream = Some(stream);
        }
        Ok(reply)
    }
}

fn set_timeout(stream: &mut dyn Stream, timeout: Duration) -> Result<(), VmwError> {
    stream.set_timeout(timeout).map_err(|e| {
        VmwError::io(
            ErrorKind::System,
            format!("setting the vsock timeouts: {e}"),
            e,
        )
    })
}

/// Writes one request packet and reads one reply packet: exactly the body its header
/// announces, refused before anything is allocated when that is over `max_reply` plus the
/// room the other fields take. Returns the payload.
fn exchange_once(
    stream: &mut dyn Stream,
    packet: &[u8],
    max_reply: usize,
    too_large: &dyn Fn(usize) -> VmwError,
    timeout: Duration,
) -> Result<Vec<u8>, Once> {
    let io_failure = |e: io::Error, delivered: bool, when: &str| {
        let lost = matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::NotConnected
        );
        if lost {
            let error = VmwError::io(
                ErrorKind::ChannelClosed,
                format!("the host closed the vsock connection {when}: {e}"),
                e,
            );
            return Once::Lost { delivered, error };
        }
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            return Once::Failed(VmwError::io(
                ErrorKind::ChannelClosed,
                format!(
                    "the host did not answer within {timeout:?} ({when}), so the vsock \
                     connection was dropped; set_reply_timeout gives it longer"
                ),
                e,
            ));
        }
        Once::Failed(VmwError::io(
            ErrorKind::System,
            format!("vsock I/O {when}: {e}"),
            e,
        ))
    };
    stream
        .write_all(packet)
        .map_err(|e| io_failure(e, false, "while the request was sent"))?;
    let mut header = [0; HEADER_LEN];
    read_full(stream, &mut header).map_err(|(got, e)| {
        let when = if got == 0 {
            "before replying".to_owned()
        } else {
            format!("after {got} bytes of the reply's {HEADER_LEN}-byte header")
        };
        io_failure(e, true, &when)
    })?;
    let len = datamap::body_len(header, max_reply.saturating_add(BODY_ROOM)).map_err(|_| {
        let announced = usize::try_from(u32::from_be_bytes(header)).unwrap_or(usize::MAX);
        Once::Failed(too_large(announced.saturating_sub(PAYLOAD_FRAMING)))
    })?;
    let mut body = Vec::new();
    if body.try_reserve_exact(len).is_err() {
        return Err(Once::Failed(VmwError::new(
            ErrorKind::System,
            format!("cannot allocate {len} bytes for the host's reply"),
        )));
    }
    body.resize(len, 0);
    read_full(stream, &mut body).map_err(|(got, e)| {
        io_failure(
            e,
            true,
            &format!("after {got} of the {len} bytes its reply announced"),
        )
    })?;
    let payload = DataMap::decode_body(&body)
        .and_then(DataMap::into_payload)
        .map_err(|e| {
            Once::Failed(VmwError::new(
                ErrorKind::Protocol,
                format!("the host's vsock reply is not a guest RPC packet: {e}"),
            ))
        })?;
    if payload.len() > max_reply {
        return Err(Once::Failed(too_large(payload.len())));
    }
    Ok(payload)
}

/// Fills `buf`, retrying interrupted reads; on failure, how many bytes had come. The end of
/// the stream is `UnexpectedEof`.
fn read_full(stream: &mut dyn Stream, buf: &mut [u8]) -> Result<(), (usize, io::Error)> {
    let mut got = 0;
    while let Some(rest) = buf.get_mut(got..).filter(|rest| !rest.is_empty()) {
        match stream.read(rest) {
            Ok(0) => {
                let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "end of stream");
                return Err((got, eof));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((got, e)),
        }
    }
    Ok(())
}

/// When a session that fell back to the backdoor tries vsock again. open-vm-tools keeps to
/// the backdoor after a vsock failure for a delay that doubles with each failure, from 2 s
/// up to 5 minutes (`RPCCHANNEL_VSOCKET_RETRY_MIN_DELAY`, `_MAX_DELAY`; it doubles before
/// its first wait, so its first is 4 s), so that a guest whose vsock does not work pays a
/// failed connect now and then rather than on every request. Here the first wait is the
/// 2 s minimum, and a success starts over.
#[derive(Debug)]
pub(crate) struct Backoff {
    retry_at: Option<Instant>,
    delay: Duration,
}

impl Backoff {
    const MIN: Duration = Duration::from_secs(2);
    const MAX: Duration = Duration::from_secs(300);

    pub(crate) fn new() -> Backoff {
        Backoff {
            retry_at: None,
            delay: Backoff::MIN,
        }
    }

    /// vsock failed at `now`: keep to the backdoor for the current delay, and double it.
    pub(crate) fn failed(&mut self, now: Instant) {
        self.retry_at = Some(now.checked_add(self.delay).unwrap_or(now));
        self.delay = self.delay.saturating_mul(2).min(Backoff::MAX);
    }

    /// vsock works again.
    pub(crate) fn succeeded(&mut self) {
        *self = Backoff::new();
    }

    /// Whether vsock should be tried again at `now`.
    pub(crate) fn due(&self, now: Instant) -> bool {
        self.retry_at.is_some_and(|at| now >= at)
    }

    /// Makes the retry due now, for tests that do not wait.
    #[cfg(test)]
    pub(crate) fn expire(&mut self) {
        self.retry_at = self.retry_at.map(|_| Instant::now());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::erpc::rpci::{reply_too_large, STATUS_LEN};
    use std::collections::VecDeque;
    use std::os::unix::net::UnixStream;
    use std::sync::{Arc, Mutex};
    use std::thread::{self, JoinHandle};

    impl Stream for UnixStream {
        fn is_stale(&mut self) -> bool {
            if self.set_nonblocking(true).is_err() {
                return true;
            }
            // A stale stream is dropped, so what this read takes does not matter.
            let fresh =
                matches!(self.read(&mut [0]), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
            self.set_nonblocking(false).is_err() || !fresh
        }
        fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
            self.set_read_timeout(Some(timeout))?;
            self.set_write_timeout(Some(timeout))
        }
    }

    /// A host end: reads one request packet (the body's payload and whether it asks for
    /// FAST_CLOSE), or `None` at the end of the stream.
    pub(crate) fn read_request(host: &mut UnixStream) -> Option<(Vec<u8>, bool)> {
        let mut header = [0; HEADER_LEN];
        host.read_exact(&mut header).ok()?;
        let len = datamap::body_len(header, 1 << 20).unwrap();
        let mut body = vec![0; len];
        host.read_exact(&mut body).unwrap();
        let map = DataMap::decode_body(&body).unwrap();
        assert_eq!(map.int64(datamap::FIELD_TYPE), Some(datamap::PACKET_DATA));
        let fast_close = map.int64(datamap::FIELD_FAST_CLOSE) == Some(1);
        Some((map.into_payload().unwrap(), fast_close))
    }

    /// What a scripted host does with one connection.
    pub(crate) type Script = Box<dyn FnOnce(UnixStream) + Send>;

    /// Hands out connections, each served by its script on a thread of its own; counts
    /// connects. A connect with no script left fails as a connect nobody answers.
    #[derive(Clone, Default)]
    pub(crate) struct Fake {
        scripts: Arc<Mutex<VecDeque<(Route, Script)>>>,
        hosts: Arc<Mutex<Vec<JoinHandle<()>>>>,
        pub(crate) connects: Arc<Mutex<usize>>,
    }

    impl fmt::Debug for Fake {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Fake")
        }
    }

    impl Fake {
        pub(crate) fn then(
            self,
            route: Route,
            script: impl FnOnce(UnixStream) + Send + 'static,
        ) -> Self {
            self.scripts
                .lock()
                .unwrap()
                .push_back((route, Box::new(script)));
            self
        }

        pub(crate) fn connects(&self) -> usize {
            *self.connects.lock().unwrap()
        }

        /// Waits for every host thread, so that their assertions count.
        pub(crate) fn join(&self) {
            for host in self.hosts.lock().unwrap().drain(..) {
                host.join().expect("the host script");
            }
        }
    }

    impl Connect for Fake {
        fn connect(&mut self) -> Result<(Box<dyn Stream>, Route), VmwError> {
            *self.connects.lock().unwrap() += 1;
            let Some((route, script)) = self.scripts.lock().unwrap().pop_front() else {
                let e = io::Error::from(io::ErrorKind::TimedOut);
                return Err(AttemptFailure::Connect(e).into_error(Some(1023)));
            };
            let (guest, host) = UnixStream::pair().unwrap();
            self.hosts
                .lock()
                .unwrap()
                .push(thread::spawn(move || script(host)));
            Ok((Box::new(guest), route))
        }
    }

    /// A host that answers each request of its connection with what `answer` makes of it.
    pub(crate) fn serving(answer: fn(&[u8]) -> Vec<u8>) -> impl FnOnce(UnixStream) + Send {
        move |mut host| {
            while let Some((request, _)) = read_request(&mut host) {
                host.write_all(&datamap::reply(&answer(&request))).unwrap();
            }
        }
    }

    fn echo(request: &[u8]) -> Vec<u8> {
        [b"1 ", request].concat()
    }

    /// The cap check of a channel with a reply cap of `cap` payload bytes.
    fn cap_of(cap: usize) -> (usize, impl Fn(usize) -> VmwError) {
        (cap + STATUS_LEN, move |len: usize| {
            reply_too_large(len.saturating_sub(STATUS_LEN), cap)
        })
    }

    fn open_link(fake: &Fake) -> Link {
        Link::open(Box::new(fake.clone()), false, Duration::from_secs(5)).unwrap()
    }

    fn exchange(link: &mut Link, request: &[u8]) -> Result<Vec<u8>, Failure> {
        let (max, too_large) = cap_of(1024);
        link.exchange(request, max, &too_large)
    }

    fn failed(r: Result<Vec<u8>, Failure>) -> VmwError {
        match r {
            Err(Failure::Exchange(e)) => e,
            other => panic!("an exchange failure, got {other:?}"),
        }
    }

    #[test]
    fn one_connection_carries_every_request_one_packet_each() {
        let fake = Fake::default().then(Route::PrivilegedVsock, serving(echo));
        let mut link = open_link(&fake);
        assert_eq!(link.route(), Route::PrivilegedVsock);
        for request in [&b"info-get guestinfo.a"[..], b"log x", b"machine.id.get"] {
            assert_eq!(exchange(&mut link, request).unwrap(), echo(request));
        }
        assert_eq!(fake.connects(), 1);
        drop(link);
        fake.join();
    }

    #[test]
    fn fast_close_asks_the_host_to_close_and_drops_the_connection() {
        let fake = Fake::default().then(Route::UnprivilegedVsock, |mut host| {
            let (request, fast_close) = read_request(&mut host).unwrap();
            assert!(fast_close, "FAST_CLOSE is asked for");
            host.write_all(&datamap::reply(&echo(&request))).unwrap();
        });
        let mut link = Link::open(Box::new(fake.clone()), true, Duration::from_secs(5)).unwrap();
        assert_eq!(
            exchange(&mut link, b"info-get guestinfo.k").unwrap(),
            b"1 info-get guestinfo.k"
        );
        assert!(!link.is_open(), "the connection is closed after the reply");
        fake.join();
    }

    #[test]
    fn closing_closes_the_socket() {
        let (tx, rx) = std::sync::mpsc::channel();
        let fake = Fake::default().then(Route::PrivilegedVsock, move |mut host| {
            // The guest's close is the end of this end's stream.
            tx.send(host.read(&mut [0; 16]).unwrap()).unwrap();
        });
        let mut link = open_link(&fake);
        link.close();
        assert!(!link.is_open());
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            0,
            "EOF at the host"
        );
        fake.join();
    }

    /// A host that reads one request and writes `raw` (then closes).
    fn answering_raw(raw: Vec<u8>) -> impl FnOnce(UnixStream) + Send {
        move |mut host| {
            read_request(&mut host).unwrap();
            host.write_all(&raw).unwrap();
        }
    }

    #[test]
    fn bad_replies_are_typed_errors() {
        let good = datamap::reply(b"1 value");
        let mut duplicate = good.clone();
        duplicate.extend_from_slice(&good[HEADER_LEN..HEADER_LEN + 16]);
        let grown = u32::try_from(duplicate.len() - HEADER_LEN).unwrap();
        duplicate[..HEADER_LEN].copy_from_slice(&grown.to_be_bytes());
        let mut unknown_type = good.clone();
        unknown_type[HEADER_LEN + 3] = 9;
        let mut empty_string = datamap::reply(b"1 ");
        empty_string.truncate(HEADER_LEN + 16 + 8);
        empty_string.extend_from_slice(&0u32.to_be_bytes());
        empty_string[..HEADER_LEN].copy_from_slice(&28u32.to_be_bytes());
        let no_payload = [&16u32.to_be_bytes()[..], &good[HEADER_LEN..HEADER_LEN + 16]].concat();
        for (what, raw, kind, says) in [
            (
                "a duplicate field",
                duplicate,
                ErrorKind::Protocol,
                "appears twice",
            ),
            (
                "an unknown type",
                unknown_type,
                ErrorKind::Protocol,
                "unknown type 9",
            ),
            (
                "an empty string",
                empty_string,
                ErrorKind::Protocol,
                "zero or less",
            ),
            (
                "no payload",
                no_payload,
                ErrorKind::Protocol,
                "no string payload",
            ),
            (
                "nothing",
                Vec::new(),
                ErrorKind::ChannelClosed,
                "before replying",
            ),
            (
                "half a header",
                good[..2].to_vec(),
                ErrorKind::ChannelClosed,
                "2 bytes of",
            ),
            (
                "half a body",
                good[..good.len() - 3].to_vec(),
                ErrorKind::ChannelClosed,
                "announced",
            ),
        ] {
            // A command the host may not take twice: one connection, no second try.
            let fake = Fake::default().then(Route::PrivilegedVsock, answering_raw(raw));
            let mut link = open_link(&fake);
            let e = failed(exchange(&mut link, b"vmx.set_option a b"));
            assert_eq!(e.kind(), kind, "{what}: {e}");
            assert!(e.to_string().contains(says), "{what}: {e}");
            assert!(!link.is_open(), "{what}: the connection is dropped");
            assert_eq!(fake.connects(), 1, "{what}");
            fake.join();
        }
    }

    #[test]
    fn an_oversized_reply_is_refused_from_its_header_before_anything_is_read() {
        for announced in [u32::MAX, 2048 + 28 + 257] {
            let fake = Fake::default().then(Route::PrivilegedVsock, move |mut host| {
                read_request(&mut host).unwrap();
                // The header alone: a body that is never sent must never be waited for.
                host.write_all(&announced.to_be_bytes()).unwrap();
                let _ = host.read(&mut [0; 1]);
            });
            let mut link = open_link(&fake);
            let (max, too_large) = cap_of(2048);
            let e = failed(link.exchange(b"info-get guestinfo.k", max, &too_large));
            assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}");
            assert!(e.to_string().contains("2048-byte cap"), "{e}");
            drop(link);
            fake.join();
        }
        // Within the body's room but a payload over the cap: refused after decoding.
        let long = [b"1 ".as_slice(), &[b'x'; 2049]].concat();
        let fake =
            Fake::default().then(Route::PrivilegedVsock, answering_raw(datamap::reply(&long)));
        let mut link = open_link(&fake);
        let (max, too_large) = cap_of(2048);
        let e = failed(link.exchange(b"info-get guestinfo.k", max, &too_large));
        assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}");
        fake.join();
    }

    #[test]
    fn a_lost_connection_is_replaced_once_for_a_request_safe_to_repeat() {
        let hang_up = |mut host: UnixStream| {
            read_request(&mut host).unwrap();
        };
        // Safe to repeat: a second connection gets the answer.
        let fake = Fake::default()
            .then(Route::PrivilegedVsock, hang_up)
            .then(Route::UnprivilegedVsock, serving(echo));
        let mut link = open_link(&fake);
        assert_eq!(
            exchange(&mut link, b"info-set guestinfo.k v").unwrap(),
            b"1 info-set guestinfo.k v"
        );
        assert_eq!(
            (fake.connects(), link.route()),
            (2, Route::UnprivilegedVsock)
        );
        drop(link);
        fake.join();
        // Lost twice: no third connection, and both reasons are told.
        let fake = Fake::default()
            .then(Route::PrivilegedVsock, hang_up)
            .then(Route::PrivilegedVsock, hang_up);
        let mut link = open_link(&fake);
        let e = failed(exchange(&mut link, b"info-get guestinfo.k"));
        assert_eq!(e.kind(), ErrorKind::ChannelClosed, "{e}");
        assert!(e.to_string().contains("before that"), "{e}");
        assert_eq!(fake.connects(), 2);
        fake.join();
        // Not known to be safe: the host may have run it, so it is not sent again.
        let fake = Fake::default().then(Route::PrivilegedVsock, hang_up);
        let mut link = open_link(&fake);
        let e = failed(exchange(&mut link, b"tools.capability.x 1"));
        assert_eq!(e.kind(), ErrorKind::ChannelClosed, "{e}");
        assert_eq!(fake.connects(), 1);
        fake.join();
        // Lost and no new connection: another route may carry it.
        let fake = Fake::default().then(Route::PrivilegedVsock, hang_up);
        let mut link = open_link(&fake);
        match exchange(&mut link, b"info-get guestinfo.k") {
            Err(Failure::Unreachable(e)) => assert_eq!(e.kind(), ErrorKind::NoChannel, "{e}"),
            other => panic!("unreachable, got {other:?}"),
        }
        fake.join();
    }

    #[test]
    fn a_connection_the_host_closed_while_idle_is_replaced_before_sending() {
        let (closed, was_closed) = std::sync::mpsc::channel();
        let fake = Fake::default()
            .then(Route::PrivilegedVsock, move |mut host: UnixStream| {
                let (request, _) = read_request(&mut host).unwrap();
                host.write_all(&datamap::reply(&echo(&request))).unwrap();
                // Then stops sending, as a host that drops idle connections; a request
                // written now would still be taken by the socket, and never answered.
                host.shutdown(std::net::Shutdown::Write).unwrap();
                closed.send(()).unwrap();
                assert_eq!(
                    read_request(&mut host),
                    None,
                    "no request on a closed connection"
                );
            })
            .then(Route::PrivilegedVsock, serving(echo));
        let mut link = open_link(&fake);
        assert!(exchange(&mut link, b"tools.capability.a 1").is_ok());
        was_closed.recv().unwrap();
        // A command that must not be sent twice still gets through: the closed connection is
        // found before anything is sent on it.
        let reply = exchange(&mut link, b"tools.capability.b 1").unwrap();
        assert_eq!(reply, b"1 tools.capability.b 1");
        assert_eq!(fake.connects(), 2);
        drop(link);
        fake.join();
    }

    #[test]
    fn a_silent_host_times_out() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let fake = Fake::default().then(Route::PrivilegedVsock, move |mut host| {
            read_request(&mut host).unwrap();
            // Holds the connection open, silent, until the guest has given up.
            let _ = rx.recv();
        });
        let mut link =
            Link::open(Box::new(fake.clone()), false, Duration::from_millis(50)).unwrap();
        let e = failed(exchange(&mut link, b"info-get guestinfo.k"));
        assert_eq!(e.kind(), ErrorKind::ChannelClosed, "{e}");
        assert!(e.to_string().contains("set_reply_timeout"), "{e}");
        assert!(!link.is_open());
        tx.send(()).unwrap();
        fake.join();
    }

    #[test]
    fn requests_vsock_cannot_carry_are_refused_before_connecting() {
        let fake = Fake::default().then(Route::PrivilegedVsock, |_| {});
        let mut link = open_link(&fake);
        let e = failed(exchange(&mut link, b""));
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        let e = failed(exchange(&mut link, &vec![b'x'; MAX_GUEST_MESSAGE + 1]));
        assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}");
        assert_eq!(fake.connects(), 1, "only the open");
        drop(link);
        fake.join();
    }

    /// A scripted socket layer: each attempt's outcome by source port.
    fn walk(
        source: Source,
        outcome: impl Fn(Option<u32>, usize) -> Result<(), AttemptFailure>,
    ) -> (Result<Route, VmwError>, Vec<Option<u32>>) {
        let mut tried = Vec::new();
        let result = connect_from(source, |port| {
            tried.push(port);
            outcome(port, tried.len())
        });
        (result.map(|((), route)| route), tried)
    }

    fn os(errno: i32) -> io::Error {
        io::Error::from_raw_os_error(errno)
    }

    #[test]
    fn the_privileged_walk_goes_down_from_1023_past_ports_in_use_and_resets() {
        let (r, tried) = walk(Source::Best, |port, n| match (port, n) {
            (Some(1023 | 1022), _) => Err(AttemptFailure::Bind(os(libc::EADDRINUSE))),
            (Some(1021), _) => Err(AttemptFailure::Connect(os(libc::ECONNRESET))),
            (Some(1020), 4) => Err(AttemptFailure::Connect(os(libc::EINTR))),
            _ => Ok(()),
        });
        assert_eq!(r.unwrap(), Route::PrivilegedVsock);
        // An interrupted connect is tried again from the same port.
        assert_eq!(
            tried,
            [Some(1023), Some(1022), Some(1021), Some(1020), Some(1020)]
        );
    }

    #[test]
    fn eight_resets_give_up_on_vsock() {
        let (r, tried) = walk(Source::Best, |_, _| {
            Err(AttemptFailure::Connect(os(libc::ECONNRESET)))
        });
        let e = r.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoChannel, "{e}");
        assert_eq!(
            tried,
            (1016..=1023).rev().map(Some).collect::<Vec<_>>(),
            "8 ports, no unprivileged try"
        );
    }

    #[test]
    fn eacces_on_bind_means_unprivileged() {
        let refused = |port: Option<u32>, _| match port {
            Some(_) => Err(AttemptFailure::Bind(os(libc::EACCES))),
            None => Ok(()),
        };
        let (r, tried) = walk(Source::Best, refused);
        assert_eq!(
            (r.unwrap(), tried),
            (Route::UnprivilegedVsock, vec![Some(1023), None])
        );
        let (r, tried) = walk(Source::Privileged, refused);
        let e = r.unwrap_err();
        assert_eq!(
            (e.kind(), e.raw_os_error()),
            (ErrorKind::Privilege, Some(libc::EACCES)),
            "{e}"
        );
        assert_eq!(tried, [Some(1023)]);
    }

    #[test]
    fn every_other_failure_ends_the_walk_with_its_kind() {
        for (failure, kind) in [
            (
                AttemptFailure::NoVsock(os(libc::EAFNOSUPPORT)),
                ErrorKind::Unsupported,
            ),
            (AttemptFailure::Socket(os(libc::EMFILE)), ErrorKind::System),
            (
                AttemptFailure::Bind(os(libc::EADDRNOTAVAIL)),
                ErrorKind::System,
            ),
            (
                AttemptFailure::Connect(os(libc::ETIMEDOUT)),
                ErrorKind::NoChannel,
            ),
            (
                AttemptFailure::Connect(os(libc::ENODEV)),
                ErrorKind::NoChannel,
            ),
            (
                AttemptFailure::Connect(os(libc::ECONNREFUSED)),
                ErrorKind::NoChannel,
            ),
        ] {
            let errno = match &failure {
                AttemptFailure::NoVsock(e)
                | AttemptFailure::Socket(e)
                | AttemptFailure::Bind(e)
                | AttemptFailure::Connect(e) => e.raw_os_error(),
            };
            let once = std::cell::Cell::new(Some(failure));
            let (r, tried) = walk(Source::Best, |_, _| Err(once.take().expect("one attempt")));
            let e = r.unwrap_err();
            assert_eq!((e.kind(), e.raw_os_error()), (kind, errno), "{e}");
            assert_eq!(tried, [Some(1023)]);
        }
        // Every port in use.
        let (r, tried) = walk(Source::Best, |_, _| {
            Err(AttemptFailure::Bind(os(libc::EADDRINUSE)))
        });
        assert_eq!(r.unwrap_err().kind(), ErrorKind::NoChannel);
        assert_eq!(tried.len(), 1023);
    }

    #[test]
    fn interrupts_are_retried_a_bounded_number_of_times() {
        let (r, tried) = walk(Source::Best, |_, _| {
            Err(AttemptFailure::Connect(os(libc::EINTR)))
        });
        assert_eq!(r.unwrap_err().kind(), ErrorKind::NoChannel);
        assert_eq!(tried, vec![Some(1023); 1 + MAX_INTERRUPTS as usize]);
    }

    #[test]
    fn the_backoff_doubles_from_2_s_to_5_minutes_and_starts_over() {
        let t0 = Instant::now();
        let mut b = Backoff::new();
        assert!(!b.due(t0 + Duration::from_secs(1000)), "nothing failed yet");
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..10 {
            b.failed(now);
            let wait = b.retry_at.unwrap() - now;
            assert!(!b.due(now + wait - Duration::from_millis(1)));
            assert!(b.due(now + wait));
            waits.push(wait.as_secs());
            now += wait;
        }
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        b.succeeded();
        b.failed(now);
        assert_eq!((b.retry_at.unwrap() - now).as_secs(), 2);
    }
}
