//! Enhanced RPC: RPCI commands over a cookie-protected message channel.
//!
//! An [`EnhancedChan`] is one RPCI channel, opened on a [`BackdoorGuard`]. Each call sends one
//! text command and reads the host's reply: `1 PAYLOAD` on success, `0 TEXT` on refusal.
//! The channel stays open between calls (cheaper than one channel per command), is reopened
//! transparently when the host dropped it or an exchange failed, and is closed exactly once,
//! by [`EnhancedChan::close`] or on drop.

mod channel;
mod rpci;
#[cfg(all(test, feature = "sim", target_os = "linux", target_arch = "x86_64"))]
mod tests;

use core::fmt;

use crate::{BackdoorGuard, VmwError};
use rpci::Rpci;

/// The reply cap a new [`EnhancedChan`] starts with: 4 MiB of payload.
///
/// Well above the 1 MiB a VM's configuration allows a guestinfo value by default (so such
/// values always come through), and small enough that a confused or hostile host cannot make
/// the guest allocate without bound. Change it per channel with
/// [`EnhancedChan::set_max_reply_len`].
pub const DEFAULT_MAX_REPLY_LEN: usize = 4 << 20;

/// An RPCI channel to the host ("enhanced RPC": the channel is opened with cookies where the
/// host supports them, so other processes cannot speak on it).
///
/// Borrows its [`BackdoorGuard`] mutably, and so is not `Send` either: the channel talks
/// through the guard's thread's I/O access.
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
pub struct EnhancedChan<'a> {
    guard: &'a mut BackdoorGuard,
    rpci: Rpci,
}

impl fmt::Debug for EnhancedChan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `Rpci`'s Debug shows the channel id and whether it has cookies, never the cookies.
        f.debug_struct("EnhancedChan")
            .field("guard", &self.guard)
            .field("rpci", &self.rpci)
            .finish()
    }
}

impl<'a> EnhancedChan<'a> {
    /// Opens an RPCI channel: with cookies first, then without for hosts that predate them.
    /// Knocks first if the guard has not been probed yet.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotVmware`](crate::ErrorKind::NotVmware) when the backdoor does not
    /// answer; [`ErrorKind::NoChannel`](crate::ErrorKind::NoChannel) when the host refuses a
    /// channel (all of its 8 or 128 channels in use, or messages disabled).
    pub fn open(guard: &'a mut BackdoorGuard) -> Result<Self, VmwError> {
        let rpci = Rpci::open(&mut guard.transport()?)?;
        Ok(EnhancedChan { guard, rpci })
    }

    /// Closes the channel. Afterwards it is closed whatever the host answered, so CLOSE is
    /// never sent twice; on an error the channel is handed back (dropping it sends nothing).
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
    /// [`ErrorKind::HostRefused`](crate::ErrorKind::HostRefused) with the text of a `0 …`
    /// reply ([`VmwError::host_reply`]); [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge)
    /// for a request over 65,536 bytes (nothing is sent) or a reply over
    /// [`max_reply_len`](Self::max_reply_len); protocol, checkpoint and channel errors as
    /// [`ErrorKind`](crate::ErrorKind) describes.
    pub fn rpc(&mut self, request: &[u8]) -> Result<Vec<u8>, VmwError> {
        self.rpci.rpc(&mut self.guard.transport()?, request)
    }

    /// Reads a guestinfo value (`info-get guestinfo.KEY`); `Ok(None)` when it is not set.
    ///
    /// `key` may carry the `guestinfo.` prefix or not: `b"metadata"` and
    /// `b"guestinfo.metadata"` name the same value. The value comes back as raw bytes.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for an empty key or one
    /// with whitespace or NUL; [`ErrorKind::HostRefused`](crate::ErrorKind::HostRefused) when
    /// the host refuses (e.g. "Permission denied" where the VM restricts `info-get`); others
    /// as for [`rpc`](Self::rpc).
    pub fn get_guestinfo(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, VmwError> {
        self.rpci.get_guestinfo(&mut self.guard.transport()?, key)
    }

    /// Sets a guestinfo value (`info-set guestinfo.KEY VALUE`); the key as for
    /// [`get_guestinfo`](Self::get_guestinfo).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a bad key or a value
    /// containing NUL; [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) when the whole
    /// command exceeds 65,536 bytes; [`ErrorKind::HostRefused`](crate::ErrorKind::HostRefused)
    /// when the host refuses (e.g. `isolation.tools.setinfo.disable`).
    pub fn set_guestinfo(&mut self, key: &[u8], value: &[u8]) -> Result<(), VmwError> {
        self.rpci
            .set_guestinfo(&mut self.guard.transport()?, key, value)
    }

    /// Writes a line to the VM's log (`vmware.log`), as `log TEXT`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for text containing NUL
    /// (the host would silently drop everything after it; nothing is sent); others as for
    /// [`rpc`](Self::rpc).
    pub fn log(&mut self, msg: &str) -> Result<(), VmwError> {
        self.rpci.log(&mut self.guard.transport()?, msg)
    }

    /// Tells the host that guest tools are present but not managed by VMware
    /// (`tools.set.version 2147483647`).
    ///
    /// # Errors
    ///
    /// As for [`rpc`](Self::rpc).
    pub fn report_agent(&mut self) -> Result<(), VmwError> {
        self.rpci.report_agent(&mut self.guard.transport()?)
    }

    /// The longest reply payload accepted, in bytes; [`DEFAULT_MAX_REPLY_LEN`] (4 MiB)
    /// unless changed. A longer reply fails with
    /// [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) before anything is allocated.
    pub fn max_reply_len(&self) -> usize {
        self.rpci.max_reply_len()
    }

    /// Sets the longest reply payload accepted (see [`max_reply_len`](Self::max_reply_len)).
    pub fn set_max_reply_len(&mut self, len: usize) {
        self.rpci.set_max_reply_len(len);
    }

    fn close_channel(&mut self) -> Result<(), VmwError> {
        if !self.rpci.is_open() {
            return Ok(());
        }
        self.rpci.close(&mut self.guard.transport()?)
    }
}

impl Drop for EnhancedChan<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.close_channel() {
            log::warn!("closing the RPCI channel on drop: {e}");
        }
    }
}

/// Not part of the API (feature `sim`, hidden, no semver promise): the RPCI layer over any
/// [`Transport`](crate::proto::Transport), so the fuzz targets in `fuzz/` can drive the real
/// channel code in memory against the host model (`sim::host::Host` implements `Transport`).
#[cfg(feature = "sim")]
#[doc(hidden)]
#[derive(Debug)]
pub struct TransportRpci(Rpci);

#[cfg(feature = "sim")]
#[doc(hidden)]
impl TransportRpci {
    /// As [`EnhancedChan::open`], over `t`.
    pub fn open<T: crate::proto::Transport + ?Sized>(t: &mut T) -> Result<Self, VmwError> {
        Rpci::open(t).map(TransportRpci)
    }

    /// As [`EnhancedChan::rpc`], over `t`.
    pub fn rpc<T: crate::proto::Transport + ?Sized>(
        &mut self,
        t: &mut T,
        request: &[u8],
    ) -> Result<Vec<u8>, VmwError> {
        self.0.rpc(t, request)
    }

    /// As [`EnhancedChan::get_guestinfo`], over `t`.
    pub fn get_guestinfo<T: crate::proto::Transport + ?Sized>(
        &mut self,
        t: &mut T,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, VmwError> {
        self.0.get_guestinfo(t, key)
    }

    /// As [`EnhancedChan::set_guestinfo`], over `t`.
    pub fn set_guestinfo<T: crate::proto::Transport + ?Sized>(
        &mut self,
        t: &mut T,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), VmwError> {
        self.0.set_guestinfo(t, key, value)
    }

    /// As [`EnhancedChan::log`], over `t`.
    pub fn log<T: crate::proto::Transport + ?Sized>(
        &mut self,
        t: &mut T,
        text: &str,
    ) -> Result<(), VmwError> {
        self.0.log(t, text)
    }

    /// As [`EnhancedChan::close`], over `t` (the channel counts as closed afterwards).
    pub fn close<T: crate::proto::Transport + ?Sized>(
        &mut self,
        t: &mut T,
    ) -> Result<(), VmwError> {
        self.0.close(t)
    }

    /// As [`EnhancedChan::set_max_reply_len`].
    pub fn set_max_reply_len(&mut self, len: usize) {
        self.0.set_max_reply_len(len);
    }

    /// Whether the host holds the channel.
    pub fn is_open(&self) -> bool {
        self.0.is_open()
    }
}
