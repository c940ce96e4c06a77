//! Enhanced RPC: RPCI commands over a cookie-protected message channel.
//!
//! An [`RpciChannel`] is one RPCI channel, opened on anything that lends a
//! [`Backdoor`](crate::Backdoor): a
//! [`BackdoorGuard`] (the real instructions; [`EnhancedChan`] names that case) or, with the
//! `sim` feature, the in-memory VMware host model. Each call sends one text command and reads
//! the host's reply: `1 PAYLOAD` on success, `0 TEXT` on refusal. The channel stays open
//! between calls (cheaper than one channel per command), is reopened transparently when the
//! host dropped it or an exchange failed, and is closed exactly once, by
//! [`RpciChannel::close`] or on drop.
//!
//! Layers: this module (RPCI commands) → `channel.rs` (the message protocol) → the
//! backdoor's three calls; `rpci.rs` builds requests and splits replies.

pub(crate) mod channel;
pub(crate) mod datamap;
mod encoding;
mod guestinfo;
#[cfg(feature = "ovf")]
mod ovf;
pub(crate) mod rpci;
#[cfg(all(test, feature = "sim", target_os = "linux", target_arch = "x86_64"))]
mod tests;

use core::fmt;

use crate::proto::{GUESTINFO_PREFIX, PROTO_RPCI};
use crate::{BackdoorAccess, BackdoorGuard, ErrorKind, VmwError};
use channel::Channel;
pub use guestinfo::{guestinfo, Session};
use rpci::{
    build, first_word, guestinfo_name, reply_too_large, split_status, trim_nuls, Reply,
    REFUSAL_ROOM, STATUS_LEN,
};

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
    channel: Channel,
    max_reply_len: usize,
}

impl<A: BackdoorAccess> fmt::Debug for RpciChannel<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `Channel`'s Debug shows the channel id and whether it has cookies, never the cookies.
        // The access by its type only: any backdoor can carry a channel, `Debug` or not.
        f.debug_struct("RpciChannel")
            .field("access", &format_args!("{}", std::any::type_name::<A>()))
            .field("channel", &self.channel)
            .field("max_reply_len", &self.max_reply_len)
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
        Ok(RpciChannel {
            access,
            channel,
            max_reply_len: DEFAULT_MAX_REPLY_LEN,
        })
    }

    /// Closes the channel. Once CLOSE was sent the channel counts as closed whatever the host
    /// answered, so CLOSE is never sent twice. On an error the channel is handed back:
    /// dropping it then sends nothing more, unless the backdoor itself could not be reached
    /// (the guard's access is gone), in which case the drop tries the CLOSE once again.
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
    /// The request goes out as given, without a trailing NUL.
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
    /// [`ErrorKind::HostRefused`] with the text of a `0 …` reply ([`VmwError::host_reply`]);
    /// [`ErrorKind::TooLarge`] for a request over 65,536 bytes (nothing is sent) or a reply
    /// over [`max_reply_len`](Self::max_reply_len); protocol, checkpoint and channel errors as
    /// [`ErrorKind`] describes.
    pub fn rpc(&mut self, request: &[u8]) -> Result<Vec<u8>, VmwError> {
        match self.send(request)? {
            Reply::Success(payload) => Ok(payload),
            Reply::Refused(text) => Err(VmwError::host_refused(first_word(request), &text)),
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
    /// [`ErrorKind::HostRefused`] when the host refuses (e.g. "Permission denied" where the VM
    /// restricts `info-get`); others as for [`rpc`](Self::rpc).
    pub fn get_guestinfo(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, VmwError> {
        let name = guestinfo_name(key)?;
        let request = build(&[b"info-get ", GUESTINFO_PREFIX, name])?;
        match self.send(&request)? {
            Reply::Success(value) => Ok(Some(value)),
            Reply::Refused(text) if trim_nuls(&text) == rpci::NO_VALUE => Ok(None),
            Reply::Refused(text) => Err(VmwError::host_refused(&request, &text)),
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
    /// [`ErrorKind::HostRefused`] when the host refuses (e.g.
    /// `isolation.tools.setinfo.disable`).
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

    /// Whether the host holds the channel now (it is reopened on the next call if not).
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.channel.is_open()
    }

    /// Sends a command whose success payload does not matter; on refusal the error names the
    /// first `label_len` bytes of the request (never a value).
    fn expect_success(&mut self, request: &[u8], label_len: usize) -> Result<(), VmwError> {
        match self.send(request)? {
            Reply::Success(_) => Ok(()),
            Reply::Refused(text) => Err(VmwError::host_refused(
                request.get(..label_len).unwrap_or(request),
                &text,
            )),
        }
    }

    /// One exchange; the only place an RPC reaches the backdoor.
    fn send(&mut self, request: &[u8]) -> Result<Reply, VmwError> {
        let mut backdoor = self.access.backdoor()?;
        // The cap is on a success's payload. Refusals and "No value found" are not values: a
        // reply always has room for them, so a small cap does not turn them into TooLarge.
        let cap = self.max_reply_len;
        let wire_cap = cap.max(REFUSAL_ROOM).saturating_add(STATUS_LEN);
        let too_large = |wire_len: usize| reply_too_large(wire_len.saturating_sub(STATUS_LEN), cap);
        let raw = self
            .channel
            .exchange(&mut backdoor, request, wire_cap, &too_large)?;
        match split_status(raw)? {
            Reply::Success(payload) if payload.len() > cap => {
                Err(too_large(payload.len() + STATUS_LEN))
            }
            reply => Ok(reply),
        }
    }

    fn close_channel(&mut self) -> Result<(), VmwError> {
        if !self.channel.is_open() {
            return Ok(());
        }
        self.channel.close(&mut self.access.backdoor()?)
    }

    /// The channel's cookies, for tests that check they are never printed.
    #[cfg(all(test, feature = "sim", target_os = "linux", target_arch = "x86_64"))]
    pub(crate) fn cookies(&self) -> (u32, u32) {
        self.channel.cookies()
    }
}

impl<A: BackdoorAccess> Drop for RpciChannel<A> {
    fn drop(&mut self) {
        if let Err(e) = self.close_channel() {
            log::warn!("closing the RPCI channel on drop: {e}");
        }
    }
}
