//! What boot agents do with guestinfo, each written once: connect the best way the kernel
//! allows, read typed and encoded values, clear a key, read the OVF environment.

use std::str::FromStr;
use std::time::Instant;

use super::encoding::Encoding;
use super::vsock::{Backoff, Hypervisor, Link, Source, DEFAULT_REPLY_TIMEOUT};
use super::{Carrier, RpciChannel, Switching};
use crate::{BackdoorAccess, BackdoorGuard, ErrorKind, VmwError};

/// An RPCI channel that owns its backdoor access: what [`Session::connect`] opens, one
/// channel for all of a boot agent's reads (reopened transparently if the host drops it).
pub type Session = RpciChannel<BackdoorGuard>;

/// cloud-init's marker for a value it has read and cleared (guestinfo keys cannot be
/// deleted from the guest).
const CLEARED: &[u8] = b"---";
/// The encoding cloud-init writes beside [`CLEARED`]: blank, so "raw".
const CLEARED_ENCODING: &[u8] = b" ";
/// The key the OVF environment comes in, in both spellings tools use.
const OVF_ENV_KEYS: [&[u8]; 2] = [b"ovfEnv", b"ovfenv"];

impl Session {
    /// Opens a session the best way this process may, as vmtoolsd does: RPCI over vsock
    /// from a privileged port (root, `CAP_NET_BIND_SERVICE`), else over vsock from any port
    /// (when binding a privileged one was refused), else the backdoor: privileged access
    /// where the kernel grants it, else ring 3. [`route`](RpciChannel::route) says which.
    ///
    /// Only the privileged vsock route reaches commands a VM reserves for it
    /// (`guest_rpc.rpci.auth.cmd.info-get` and the like); the others get
    /// [`ErrorKind::PermissionDenied`] for them, whose message says what to do.
    ///
    /// The session keeps to its route while it works. When the vsock connection is lost and
    /// cannot be made again, requests go by the backdoor, and vsock is tried again after
    /// 2 s, then after twice as long each time it still fails, up to 5 minutes (open-vm-tools'
    /// delays); a session that started on the backdoor tries vsock on the same schedule.
    ///
    /// Failures of the attempts that did not work are no errors worth a warning: where there
    /// is no vsock (`Unsupported`, or nothing answers: a connect is given 250 ms), or the
    /// kernel refuses I/O privilege (`EPERM` without `CAP_SYS_RAWIO` or under lockdown,
    /// `ENOSYS` without `CONFIG_X86_IOPL_IOPERM`, `Unsupported` on arm64 and other Unix),
    /// they are logged at debug level and the next way is tried. The backdoor access is
    /// taken (without knocking) before vsock is tried, so that a session on vsock can fall
    /// back to it later.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), vmw_backdoor::VmwError> {
    /// let mut session = vmw_backdoor::Session::connect()?;
    /// let metadata = session.get_decoded_guestinfo(b"metadata")?;
    /// let userdata = session.get_decoded_guestinfo(b"userdata")?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotVmware`] outside VMware (the message keeps the reasons of every
    /// attempt); [`ErrorKind::Unsupported`] where this build has no backdoor;
    /// [`ErrorKind::NoChannel`] when the host has no channel free.
    pub fn connect() -> Result<Session, VmwError> {
        Session::connect_with(false)
    }

    /// [`Session::connect`]; with `fast_close`, each vsock request asks the host to close
    /// the connection after its reply (for one request, as vmtoolsd's one-shot sends).
    fn connect_with(fast_close: bool) -> Result<Session, VmwError> {
        let (mut guard, refused) = match crate::access_backdoor_privileged() {
            Ok(guard) => (guard, None),
            // Unsupported: no I/O privilege here (arm64, non-Linux Unix), or no backdoor at
            // all, which the unprivileged access then says itself.
            Err(e) if !matches!(e.kind(), ErrorKind::Privilege | ErrorKind::Unsupported) => {
                return Err(e)
            }
            Err(privileged) => {
                log::debug!("privileged backdoor access refused ({privileged}); using ring 3");
                let guard = crate::access_backdoor().map_err(|e| e.after(&privileged))?;
                (guard, Some(privileged))
            }
        };
        let mut backoff = Backoff::new();
        let source = Box::new(Hypervisor(Source::Best));
        let mut link = Link::new(source, fast_close, DEFAULT_REPLY_TIMEOUT);
        if let Err(vsock) = link.connect() {
            log::debug!("no vsock RPC ({vsock}); using the backdoor");
            backoff.failed(Instant::now());
            if let Err(e) = guard.probe_vmware_backdoor() {
                let e = e.after(&vsock);
                return Err(match &refused {
                    Some(privileged) => e.after(privileged),
                    None => e,
                });
            }
            let mut session = RpciChannel::open(guard)?;
            session.switching = Some(Box::new(Switching {
                backoff,
                parked: Some(Box::new(link)),
            }));
            return Ok(session);
        }
        let switching = Switching {
            backoff,
            parked: None,
        };
        Ok(RpciChannel::with_carrier(
            guard,
            Carrier::Vsock(Box::new(link)),
            Some(switching),
        ))
    }
}

/// Reads one guestinfo value in one call: connect ([`Session::connect`]), read, close.
/// `Ok(None)` when the key is not set. Over vsock the request asks the host to close the
/// connection after replying (`FAST_CLOSE`, as vmtoolsd's one-shot sends). For more than
/// one key, keep a [`Session`].
///
/// ```no_run
/// # fn main() -> Result<(), vmw_backdoor::VmwError> {
/// if let Some(hostname) = vmw_backdoor::guestinfo("hostname")? {
///     println!("{}", String::from_utf8_lossy(&hostname));
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// Those of [`Session::connect`] and [`RpciChannel::get_guestinfo`].
pub fn guestinfo(key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, VmwError> {
    Session::connect_with(true)?.get_guestinfo(key.as_ref())
}

impl<A: BackdoorAccess> RpciChannel<A> {
    /// Reads a guestinfo value as UTF-8 text; `Ok(None)` when it is not set.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Decode`] when the value is not UTF-8; others as for
    /// [`get_guestinfo`](Self::get_guestinfo).
    pub fn get_guestinfo_string(&mut self, key: &[u8]) -> Result<Option<String>, VmwError> {
        let Some(value) = self.get_guestinfo(key)? else {
            return Ok(None);
        };
        String::from_utf8(value).map(Some).map_err(|e| {
            VmwError::new(
                ErrorKind::Decode,
                format_args!(
                    "guestinfo \"{}\" is not UTF-8 text (byte {})",
                    key.escape_ascii(),
                    e.utf8_error().valid_up_to()
                ),
            )
        })
    }

    /// Reads a guestinfo value as a boolean: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`,
    /// `t`/`f`, `y`/`n`, in any case and with surrounding whitespace. `Ok(None)` when it is
    /// not set, so a default is `.map(|v| v.unwrap_or(false))`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Decode`] for any other text; others as for
    /// [`get_guestinfo`](Self::get_guestinfo).
    pub fn get_guestinfo_bool(&mut self, key: &[u8]) -> Result<Option<bool>, VmwError> {
        const TRUE: [&str; 6] = ["1", "t", "true", "y", "yes", "on"];
        const FALSE: [&str; 6] = ["0", "f", "false", "n", "no", "off"];
        self.get_guestinfo_parsed_with(key, "a boolean", |text| {
            let is = |words: &[&str]| words.iter().any(|w| text.eq_ignore_ascii_case(w));
            match (is(&TRUE), is(&FALSE)) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            }
        })
    }

    /// Reads a guestinfo value with [`FromStr`] (integers, addresses, ...), surrounding
    /// whitespace ignored. `Ok(None)` when it is not set.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), vmw_backdoor::VmwError> {
    /// let mut session = vmw_backdoor::Session::connect()?;
    /// let retries: u32 = session.get_guestinfo_parsed(b"agent.retries")?.unwrap_or(3);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Decode`] when the text does not parse as `T`; others as for
    /// [`get_guestinfo`](Self::get_guestinfo).
    pub fn get_guestinfo_parsed<T: FromStr>(&mut self, key: &[u8]) -> Result<Option<T>, VmwError> {
        self.get_guestinfo_parsed_with(key, std::any::type_name::<T>(), |text| text.parse().ok())
    }

    fn get_guestinfo_parsed_with<T>(
        &mut self,
        key: &[u8],
        what: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<Option<T>, VmwError> {
        let Some(text) = self.get_guestinfo_string(key)? else {
            return Ok(None);
        };
        parse(text.trim()).map(Some).ok_or_else(|| {
            VmwError::new(
                ErrorKind::Decode,
                format_args!("guestinfo \"{}\" is not {what}", key.escape_ascii()),
            )
        })
    }

    /// Reads `KEY` decoded as `KEY.encoding` says, the convention of cloud-init, Ignition,
    /// afterburn and Bottlerocket: absent or blank means raw; `base64`/`b64`;
    /// `gzip+base64`, `gz+base64`, `gzip+b64`, `gz+b64`; `gzip`/`gz` (gzip bytes as
    /// stored); any case. `Ok(None)` when the key is not set or holds cloud-init's cleared
    /// marker `---` (see [`clear_guestinfo`](Self::clear_guestinfo)).
    ///
    /// Decoding needs the `encoding` feature; without it only raw values are returned. The
    /// decoded value is capped like a reply, at [`max_reply_len`](Self::max_reply_len)
    /// bytes: a small gzip that inflates without end costs at most that much memory.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Decode`] for an unknown encoding (the message names it) or bytes that do
    /// not decode; [`ErrorKind::TooLarge`] for a value that inflates past the cap;
    /// [`ErrorKind::Unsupported`] for an encoded value without the `encoding` feature;
    /// others as for [`get_guestinfo`](Self::get_guestinfo).
    pub fn get_decoded_guestinfo(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, VmwError> {
        let Some(value) = self.get_guestinfo(key)? else {
            return Ok(None);
        };
        if value == CLEARED {
            return Ok(None);
        }
        let encoding = self.get_guestinfo(&encoding_key(key))?;
        Encoding::parse(encoding.as_deref())?
            .decode(value, self.max_reply_len)
            .map(Some)
    }

    /// Clears a guestinfo value the way cloud-init does, since the guest cannot delete a key:
    /// `KEY` becomes `---` and `KEY.encoding` a blank. [`get_decoded_guestinfo`] reads such a
    /// key as not set.
    ///
    /// [`get_decoded_guestinfo`]: Self::get_decoded_guestinfo
    ///
    /// # Errors
    ///
    /// As for [`set_guestinfo`](Self::set_guestinfo).
    pub fn clear_guestinfo(&mut self, key: &[u8]) -> Result<(), VmwError> {
        self.set_guestinfo(key, CLEARED)?;
        self.set_guestinfo(&encoding_key(key), CLEARED_ENCODING)
    }

    /// The OVF environment document vSphere gives a vApp (`guestinfo.ovfEnv`, also spelt
    /// `ovfenv`), as raw XML; `Ok(None)` when there is none.
    ///
    /// # Errors
    ///
    /// As for [`get_guestinfo`](Self::get_guestinfo).
    pub fn ovf_environment(&mut self) -> Result<Option<Vec<u8>>, VmwError> {
        for key in OVF_ENV_KEYS {
            if let Some(xml) = self.get_guestinfo(key)? {
                return Ok(Some(xml));
            }
        }
        Ok(None)
    }

    /// The properties of the OVF environment's `PropertySection` (`oe:key` → `oe:value`);
    /// `Ok(None)` when the VM has no OVF environment. Needs the `ovf` feature.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Decode`] when the document is not well-formed XML; others as for
    /// [`get_guestinfo`](Self::get_guestinfo).
    #[cfg(feature = "ovf")]
    #[cfg_attr(docsrs, doc(cfg(feature = "ovf")))]
    pub fn ovf_properties(
        &mut self,
    ) -> Result<Option<std::collections::BTreeMap<String, String>>, VmwError> {
        match self.ovf_environment()? {
            Some(xml) => super::ovf::properties(&xml).map(Some),
            None => Ok(None),
        }
    }
}

/// `KEY.encoding`, with the key as given (prefixed or not).
fn encoding_key(key: &[u8]) -> Vec<u8> {
    [key, b".encoding"].concat()
}
