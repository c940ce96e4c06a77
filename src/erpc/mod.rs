//! Enhanced RPC: RPCI commands over a cookie-protected message channel, or over vsock.
//!
//! An [`RpciChannel`] is one RPCI channel, opened on anything that lends a
//! [`Backdoor`](crate::Backdoor): a
//! [`BackdoorGuard`] (the real instructions; [`EnhancedChan`] names that case) or, with the
//! `sim` feature, the in-memory VMware host model; or a vsock connection to the hypervisor
//! ([`RpciChannel::open_vsock`]). Each call sends one text command and reads the host's
//! reply: `1 PAYLOAD` on success, `0 TEXT` on refusal. The channel stays open between calls
//! (cheaper than one channel per command), is reopened transparently when the host dropped
//! it or an exchange failed, and is closed exactly once, by [`RpciChannel::close`] or on
//! drop.
//!
//! Layers: this module (RPCI commands, written once on `send`) → `channel.rs` (the message
//! protocol) → the backdoor's three calls, or `vsock.rs` (DataMap packets over a stream,
//! `datamap.rs`) → the platform's sockets; `rpci.rs` builds requests and splits replies.

pub(crate) mod channel;
pub(crate) mod datamap;
mod encoding;
mod guestinfo;
#[cfg(feature = "ovf")]
mod ovf;
pub(crate) mod rpci;
#[cfg(all(test, feature = "sim", target_os = "linux", target_arch = "x86_64"))]
mod tests;
pub(crate) mod vsock;

use core::fmt;
use std::time::{Duration, Instant};

use crate::proto::{GUESTINFO_PREFIX, PROTO_RPCI};
use crate::{BackdoorAccess, BackdoorGuard, ErrorKind, VmwError};
use channel::Channel;
pub use guestinfo::{guestinfo, Session};
use rpci::{
    build, first_word, guestinfo_name, reply_too_large, split_status, trim_nuls, Reply,
    REFUSAL_ROOM, STATUS_LEN,
};
pub use vsock::Route;
use vsock::{Backoff, Hypervisor, Link, Source, DEFAULT_REPLY_TIMEOUT, MIN_REPLY_TIMEOUT};

/// The reply cap a new [`RpciChannel`] starts with: 4 MiB of payload.
///
/// Well above the 1 MiB a VM's configuration allows a guestinfo value by default (so such
/// values always come through), and small enough that a confused or hostile host cannot make
/// the guest allocate without bound. Change it per channel with
/// [`RpciChannel::set_max_reply_len`].
pub const DEFAULT_MAX_REPLY_LEN: usize = 4 << 20;

/// An RPCI channel through a [`BackdoorGuard`]: the name 0.2 gave it.
pub type EnhancedChan<'a> = RpciChannel<&'a mut BackdoorGuard>;

/// An RPCI channel to the host ("enhanced RPC": the channel is opened with cookies where the
/// host supports them, so other processes cannot speak on it).
///
/// Talks through `A`: a borrowed [`BackdoorGuard`] ([`EnhancedChan`]; then it is not `Send`
/// either, since the channel talks through the guard's thread's I/O access), an owned one,
/// or any [`Backdoor`](crate::Backdoor), such as the simulator's in-memory host (borrowed,
/// or shared by several channels through a `&RefCell`).
///
/// ```no_run
/// # fn main() -> Result<(), vmw_backdoor::VmwError> {
/// let mut guard = vmw_backdoor::probe_backdoor()?;
/// let mut chan = guard.open_enhanced_chan()?;
/// chan.set_guestinfo(b"state", b"provisioned")?;
/// assert_eq!(chan.get_guestinfo(b"guestinfo.state")?.as_deref(), Some(&b"provisioned"[..]));
/// chan.close().map_err(|_| "close failed").ok();
/// # Ok(()) }
/// ```
///
/// Code written against `RpciChannel<A>` for any `A: BackdoorAccess` runs unchanged
/// against the real backdoor and, in unit tests, against `sim::Host` in memory:
///
/// ```
/// # #[cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]
/// # fn main() -> Result<(), vmw_backdoor::VmwError> {
/// use vmw_backdoor::sim::{Host, HostConfig};
/// use vmw_backdoor::{BackdoorAccess, RpciChannel, VmwError};
///
/// /// The application's own reader: the Ignition config, or an empty one.
/// fn ignition_config<A: BackdoorAccess>(chan: &mut RpciChannel<A>) -> Result<Vec<u8>, VmwError> {
///     Ok(chan.get_guestinfo(b"ignition.config.data")?.unwrap_or_default())
/// }
///
/// let mut host = Host::new(HostConfig::default().guestinfo("ignition.config.data", "{}"));
/// let mut chan = RpciChannel::open(&mut host)?;
/// assert_eq!(ignition_config(&mut chan)?, b"{}");
/// drop(chan); // closes the channel
/// assert_eq!(host.open_channels(), 0);
/// # Ok(()) }
/// # #[cfg(not(all(feature = "sim", target_os = "linux", target_arch = "x86_64")))]
/// # fn main() {}
/// ```
pub struct RpciChannel<A: BackdoorAccess> {
    access: A,
    carrier: Carrier,
    /// A [`Session`]'s way between the routes; `None` for a channel that keeps its route.
    switching: Option<Box<Switching>>,
    max_reply_len: usize,
    reply_timeout: Duration,
}

/// What carries a channel's requests.
#[derive(Debug)]
enum Carrier {
    /// The backdoor's message channel.
    Backdoor(Channel),
    /// A vsock connection.
    Vsock(Box<Link>),
}

/// How a [`Session`] changes route, as open-vm-tools' "mutable" channels do: vsock while it
/// connects; the backdoor when it does not, with vsock tried again when `backoff` says.
#[derive(Debug)]
struct Switching {
    backoff: Backoff,
    /// The vsock link, closed, while the backdoor carries the requests.
    parked: Option<Box<Link>>,
}

impl<A: BackdoorAccess> fmt::Debug for RpciChannel<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `Channel`'s Debug shows the channel id and whether it has cookies, never the cookies.
        // The access by its type only: any backdoor can carry a channel, `Debug` or not.
        f.debug_struct("RpciChannel")
            .field("access", &format_args!("{}", std::any::type_name::<A>()))
            .field("route", &self.route())
            .field("carrier", &self.carrier)
            .field("max_reply_len", &self.max_reply_len)
            .field("reply_timeout", &self.reply_timeout)
            .finish()
    }
}

impl BackdoorGuard {
    /// Opens an RPCI channel on this guard; see [`RpciChannel::open`].
    ///
    /// # Errors
    ///
    /// As [`RpciChannel::open`].
    pub fn open_enhanced_chan(&mut self) -> Result<EnhancedChan<'_>, VmwError> {
        RpciChannel::open(self)
    }
}

impl<A: BackdoorAccess> RpciChannel<A> {
    /// Opens an RPCI channel: with cookies first, then without for hosts that predate them.
    /// On a guard, knocks first if the guard has not been probed yet.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotVmware`] when the backdoor does not answer; [`ErrorKind::NoChannel`]
    /// when the host refuses a channel (all of its 8 or 128 channels in use, or no message
    /// channel at all).
    pub fn open(mut access: A) -> Result<Self, VmwError> {
        let channel = Channel::open(&mut access.backdoor()?, PROTO_RPCI)?;
        Ok(Self::with_carrier(access, Carrier::Backdoor(channel), None))
    }

    /// Opens an RPCI channel over vsock: a connection to the hypervisor (CID 0, port 976)
    /// from a privileged source port (1023 down) where this process may bind one (root, or
    /// `CAP_NET_BIND_SERVICE`), else from any port, as vmtoolsd connects; [`route`] says
    /// which. The backdoor is not touched: `access` is only kept for [`access`] (pass
    /// [`access_backdoor`](crate::access_backdoor)`()?`, which does not knock, or any
    /// [`BackdoorAccess`]).
    ///
    /// Every method works as over the backdoor, except that an empty request is refused
    /// ([`ErrorKind::InvalidInput`]: vsock's framing has no empty string). The connection
    /// is kept for the channel's life; one the host closed is replaced. When the host closes
    /// or resets it during an exchange, the request is sent again on a new connection if it
    /// had not been sent whole, or if it is a command the host may take twice (`info-get`,
    /// `info-set`, `log`, `tools.set.version`, `machine.id.get`: a `log` line may then
    /// appear twice); any other command may have run, and its error is returned. A reply
    /// that takes longer than [`reply_timeout`] drops the connection. Closing the channel
    /// closes the socket.
    ///
    /// Linux only (`AF_VSOCK`, and in the guest kernel VMware's transport,
    /// `vmw_vsock_vmci_transport`). The connect is given 250 ms, so where nothing answers
    /// (a KVM guest's virtio vsock waits 2 s otherwise) this fails fast.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), vmw_backdoor::VmwError> {
    /// use vmw_backdoor::{Route, Session};
    ///
    /// let mut session = Session::open_vsock(vmw_backdoor::access_backdoor()?)?;
    /// if session.route() != Route::PrivilegedVsock {
    ///     eprintln!("not privileged: a VM that reserves info-get will refuse it");
    /// }
    /// let config = session.get_guestinfo(b"ignition.config.data")?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Unsupported`] where this process has no vsock (another OS, a kernel
    /// without `AF_VSOCK`, a sandbox that forbids it); [`ErrorKind::NoChannel`] when nothing
    /// takes the connection (not VMware, a guest kernel whose vsock transport is not
    /// VMware's, a host with vsock RPC turned off) or every privileged port is in use;
    /// [`ErrorKind::System`] when a socket call fails otherwise. The errno is kept
    /// ([`VmwError::raw_os_error`]).
    ///
    /// [`route`]: Self::route
    /// [`access`]: Self::access
    /// [`reply_timeout`]: Self::reply_timeout
    pub fn open_vsock(access: A) -> Result<Self, VmwError> {
        Self::vsock(access, Source::Best)
    }

    /// Opens an RPCI channel over vsock from a privileged source port only, so that every
    /// request goes by [`Route::PrivilegedVsock`]; otherwise as
    /// [`open_vsock`](Self::open_vsock).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Privilege`] (errno EACCES) when this process may not bind a port below
    /// 1024: run it as root or with `CAP_NET_BIND_SERVICE`; others as for
    /// [`open_vsock`](Self::open_vsock).
    pub fn open_privileged_vsock(access: A) -> Result<Self, VmwError> {
        Self::vsock(access, Source::Privileged)
    }

    fn vsock(access: A, source: Source) -> Result<Self, VmwError> {
        let link = Link::open(Box::new(Hypervisor(source)), false, DEFAULT_REPLY_TIMEOUT)?;
        Ok(Self::with_carrier(
            access,
            Carrier::Vsock(Box::new(link)),
            None,
        ))
    }

    fn with_carrier(access: A, carrier: Carrier, switching: Option<Switching>) -> Self {
        RpciChannel {
            access,
            carrier,
            switching: switching.map(Box::new),
            max_reply_len: DEFAULT_MAX_REPLY_LEN,
            reply_timeout: DEFAULT_REPLY_TIMEOUT,
        }
    }

    /// Closes the channel. Once CLOSE was sent the channel counts as closed whatever the host
    /// answered, so CLOSE is never sent twice. On an error the channel is handed back:
    /// dropping it then sends nothing more, unless the backdoor itself could not be reached
    /// (the guard's access is gone), in which case the drop tries the CLOSE once again. A
    /// vsock channel closes its socket, which cannot fail.
    pub fn close(mut self) -> Result<(), Self> {
        match self.close_channel() {
            Ok(()) => Ok(()),
            Err(e) => {
                log::warn!("closing the RPCI channel: {e}");
                Err(self)
            }
        }
    }

    /// Sends any RPCI command and returns the payload of the host's `1 …` reply.
    ///
    /// The request goes out as given, without a trailing NUL. Over vsock an empty request
    /// is refused (see [`open_vsock`](Self::open_vsock)).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), vmw_backdoor::VmwError> {
    /// let mut guard = vmw_backdoor::probe_backdoor()?;
    /// let mut chan = guard.open_enhanced_chan()?;
    /// let id = chan.rpc(b"machine.id.get")?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::HostRefused`] with the text of a `0 …` reply ([`VmwError::host_reply`]),
    /// [`ErrorKind::PermissionDenied`] when that text is `Permission denied` (the VM does not
    /// allow the command on this [`route`](Self::route));
    /// [`ErrorKind::TooLarge`] for a request over 65,536 bytes (nothing is sent) or a reply
    /// over [`max_reply_len`](Self::max_reply_len); protocol, checkpoint and channel errors as
    /// [`ErrorKind`] describes.
    pub fn rpc(&mut self, request: &[u8]) -> Result<Vec<u8>, VmwError> {
        match self.send(request)? {
            Reply::Success(payload) => Ok(payload),
            Reply::Refused(text) => Err(self.refused(first_word(request), &text)),
        }
    }

    /// Reads a guestinfo value (`info-get guestinfo.KEY`); `Ok(None)` when it is not set.
    ///
    /// `key` may carry the `guestinfo.` prefix or not: `b"metadata"` and
    /// `b"guestinfo.metadata"` name the same value. The value comes back as raw bytes.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for an empty key or one with whitespace or NUL;
    /// [`ErrorKind::PermissionDenied`] where the VM restricts `info-get` (to the privileged
    /// vsock route, or altogether); [`ErrorKind::HostRefused`] when the host refuses
    /// otherwise; others as for [`rpc`](Self::rpc).
    pub fn get_guestinfo(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, VmwError> {
        let name = guestinfo_name(key)?;
        let request = build(&[b"info-get ", GUESTINFO_PREFIX, name])?;
        match self.send(&request)? {
            Reply::Success(value) => Ok(Some(value)),
            Reply::Refused(text) if trim_nuls(&text) == rpci::NO_VALUE => Ok(None),
            Reply::Refused(text) => Err(self.refused(&request, &text)),
        }
    }

    /// Sets a guestinfo value (`info-set guestinfo.KEY VALUE`); the key as for
    /// [`get_guestinfo`](Self::get_guestinfo).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for a bad key, an empty value (hosts do not store one) or
    /// a value containing NUL;
    /// [`ErrorKind::TooLarge`] when the whole command exceeds 65,536 bytes;
    /// [`ErrorKind::PermissionDenied`] where the VM restricts `info-set` (to the privileged
    /// vsock route, or altogether); [`ErrorKind::HostRefused`] when the host refuses
    /// otherwise (e.g. `isolation.tools.setinfo.disable`).
    pub fn set_guestinfo(&mut self, key: &[u8], value: &[u8]) -> Result<(), VmwError> {
        let name = guestinfo_name(key)?;
        if value.is_empty() {
            return Err(VmwError::new(
                ErrorKind::InvalidInput,
                "VMware hosts do not store an empty guestinfo value; to clear a key, write a \
                 placeholder (clear_guestinfo writes cloud-init's `---`)",
            ));
        }
        if value.contains(&0) {
            return Err(VmwError::new(
                ErrorKind::InvalidInput,
                "a guestinfo value cannot contain a NUL byte: the host stops reading there",
            ));
        }
        let request = build(&[b"info-set ", GUESTINFO_PREFIX, name, b" ", value])?;
        self.expect_success(
            &request,
            b"info-set ".len() + GUESTINFO_PREFIX.len() + name.len(),
        )
    }

    /// Writes a line to the VM's log (`vmware.log`), as `log TEXT`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for text containing NUL (the host would silently drop
    /// everything after it; nothing is sent); others as for [`rpc`](Self::rpc).
    pub fn log(&mut self, msg: &str) -> Result<(), VmwError> {
        // The host reads a request up to its first NUL: the rest of the line would be lost
        // without a word.
        if msg.contains('\0') {
            return Err(VmwError::new(
                ErrorKind::InvalidInput,
                "a log line cannot contain a NUL character: the host stops reading there",
            ));
        }
        let request = build(&[b"log ", msg.as_bytes()])?;
        self.expect_success(&request, b"log".len())
    }

    /// Tells the host that guest tools are present but not managed by VMware
    /// (`tools.set.version 2147483647`).
    ///
    /// # Errors
    ///
    /// As for [`rpc`](Self::rpc).
    pub fn report_agent(&mut self) -> Result<(), VmwError> {
        let request = build(&[b"tools.set.version ", rpci::TOOLS_VERSION_UNMANAGED])?;
        self.expect_success(&request, request.len())
    }

    /// The longest reply payload accepted, in bytes; [`DEFAULT_MAX_REPLY_LEN`] (4 MiB)
    /// unless changed. A longer value fails with [`ErrorKind::TooLarge`], before anything
    /// is fetched or allocated when it is over 1 KiB. The cap is on values only: a refusal's
    /// text and a missing key's "No value found" always come through, whatever the cap.
    #[must_use]
    pub fn max_reply_len(&self) -> usize {
        self.max_reply_len
    }

    /// Sets the longest reply payload accepted (see [`max_reply_len`](Self::max_reply_len)).
    pub fn set_max_reply_len(&mut self, len: usize) {
        self.max_reply_len = len;
    }

    /// What the channel talks through: the guard, or the in-memory host (whose counters a
    /// test may want to read while the channel is open).
    #[must_use]
    pub fn access(&self) -> &A {
        &self.access
    }

    /// What the channel talks through, mutably (to change an in-memory host mid-test, or to
    /// run a guard's low-bandwidth commands between RPCs).
    pub fn access_mut(&mut self) -> &mut A {
        &mut self.access
    }

    /// Whether the host holds the channel (or the vsock connection is open) now; it is
    /// reopened on the next call if not.
    #[must_use]
    pub fn is_open(&self) -> bool {
        match &self.carrier {
            Carrier::Backdoor(channel) => channel.is_open(),
            Carrier::Vsock(link) => link.is_open(),
        }
    }

    /// The way this channel reaches the host now. A [`Session`] from
    /// [`connect`](Session::connect) may change it: to the backdoor when vsock fails, back
    /// to vsock when it works again.
    #[must_use]
    pub fn route(&self) -> Route {
        match &self.carrier {
            Carrier::Backdoor(_) => Route::Backdoor,
            Carrier::Vsock(link) => link.route(),
        }
    }

    /// How long a vsock channel waits for the host to take a request and to reply: 10 s
    /// unless changed. The backdoor needs none (each call is a trap the host answers before
    /// the guest runs on).
    #[must_use]
    pub fn reply_timeout(&self) -> Duration {
        self.reply_timeout
    }

    /// Sets the [`reply_timeout`](Self::reply_timeout), at least 1 ms. A host that does not
    /// answer in time gets [`ErrorKind::ChannelClosed`], and its connection is dropped (the
    /// next call connects again).
    pub fn set_reply_timeout(&mut self, timeout: Duration) {
        self.reply_timeout = timeout.max(MIN_REPLY_TIMEOUT);
        if let Carrier::Vsock(link) = &mut self.carrier {
            link.set_timeout(self.reply_timeout);
        }
    }

    /// Sends a command whose success payload does not matter; on refusal the error names the
    /// first `label_len` bytes of the request (never a value).
    fn expect_success(&mut self, request: &[u8], label_len: usize) -> Result<(), VmwError> {
        match self.send(request)? {
            Reply::Success(_) => Ok(()),
            Reply::Refused(text) => {
                Err(self.refused(request.get(..label_len).unwrap_or(request), &text))
            }
        }
    }

    /// The error for the host's `0 TEXT` to `command`, which went by this channel's route.
    fn refused(&self, command: &[u8], text: &[u8]) -> VmwError {
        VmwError::host_refused(command, text, self.route())
    }

    /// One exchange; the only place an RPC reaches the host.
    fn send(&mut self, request: &[u8]) -> Result<Reply, VmwError> {
        // The cap is on a success's payload. Refusals and "No value found" are not values: a
        // reply always has room for them, so a small cap does not turn them into TooLarge.
        let cap = self.max_reply_len;
        let wire_cap = cap.max(REFUSAL_ROOM).saturating_add(STATUS_LEN);
        let too_large = |wire_len: usize| reply_too_large(wire_len.saturating_sub(STATUS_LEN), cap);
        let raw = self.carry(request, wire_cap, &too_large)?;
        match split_status(raw)? {
            Reply::Success(payload) if payload.len() > cap => {
                Err(too_large(payload.len() + STATUS_LEN))
            }
            reply => Ok(reply),
        }
    }

    /// The request to the host and its raw reply, by the channel's route. A [`Session`]
    /// whose vsock connection cannot be made again carries the request by the backdoor.
    fn carry(
        &mut self,
        request: &[u8],
        wire_cap: usize,
        too_large: &dyn Fn(usize) -> VmwError,
    ) -> Result<Vec<u8>, VmwError> {
        self.back_to_vsock_when_due();
        let unreachable = match &mut self.carrier {
            Carrier::Backdoor(channel) => {
                return channel.exchange(&mut self.access.backdoor()?, request, wire_cap, too_large)
            }
            Carrier::Vsock(link) => match link.exchange(request, wire_cap, too_large) {
                Ok(reply) => return Ok(reply),
                Err(vsock::Failure::Exchange(e)) => return Err(e),
                Err(vsock::Failure::Unreachable(e)) => e,
            },
        };
        if self.switching.is_none() {
            return Err(unreachable);
        }
        // As open-vm-tools: the backdoor, and vsock again later. Where the backdoor does not
        // answer either (a TDX guest), the vsock error is the one that matters, and the next
        // request tries vsock again.
        let mut channel = match self
            .access
            .backdoor()
            .and_then(|mut b| Channel::open(&mut b, PROTO_RPCI))
        {
            Ok(channel) => channel,
            Err(e) => return Err(unreachable.with_fallback(&e)),
        };
        log::debug!("{unreachable}; carrying requests by the backdoor for now");
        let reply = self
            .access
            .backdoor()
            .and_then(|mut b| channel.exchange(&mut b, request, wire_cap, too_large));
        let vsock = core::mem::replace(&mut self.carrier, Carrier::Backdoor(channel));
        if let (Some(switching), Carrier::Vsock(link)) = (&mut self.switching, vsock) {
            switching.parked = Some(link);
            switching.backoff.failed(Instant::now());
        }
        reply
    }

    /// A [`Session`] on the backdoor whose backoff has passed tries vsock again, and stays
    /// there if it connects.
    fn back_to_vsock_when_due(&mut self) {
        let Some(switching) = &mut self.switching else {
            return;
        };
        let Some(link) = switching.parked.as_mut() else {
            return;
        };
        if !switching.backoff.due(Instant::now()) {
            return;
        }
        link.set_timeout(self.reply_timeout);
        if let Err(e) = link.connect() {
            log::debug!("vsock still fails ({e}); staying on the backdoor");
            switching.backoff.failed(Instant::now());
            return;
        }
        log::debug!("vsock works again: carrying requests by {}", link.route());
        switching.backoff.succeeded();
        let Some(link) = switching.parked.take() else {
            return;
        };
        if let Carrier::Backdoor(mut channel) =
            core::mem::replace(&mut self.carrier, Carrier::Vsock(link))
        {
            if channel.is_open() {
                let closed = self
                    .access
                    .backdoor()
                    .and_then(|mut b| channel.close(&mut b));
                if let Err(e) = closed {
                    log::debug!("closing the backdoor channel for vsock: {e}");
                }
            }
        }
    }

    fn close_channel(&mut self) -> Result<(), VmwError> {
        match &mut self.carrier {
            Carrier::Backdoor(channel) if channel.is_open() => {
                channel.close(&mut self.access.backdoor()?)
            }
            Carrier::Backdoor(_) => Ok(()),
            Carrier::Vsock(link) => {
                link.close();
                Ok(())
            }
        }
    }

    /// The channel's cookies, for tests that check they are never printed.
    #[cfg(all(test, feature = "sim", target_os = "linux", target_arch = "x86_64"))]
    pub(crate) fn cookies(&self) -> (u32, u32) {
        match &self.carrier {
            Carrier::Backdoor(channel) => channel.cookies(),
            Carrier::Vsock(_) => (0, 0),
        }
    }
}

impl<A: BackdoorAccess> Drop for RpciChannel<A> {
    fn drop(&mut self) {
        if let Err(e) = self.close_channel() {
            log::warn!("closing the RPCI channel on drop: {e}");
        }
    }
}
