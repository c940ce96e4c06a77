//! The message channel (backdoor command 0x1E): open, send, receive, close.
//!
//! Written against [`Backdoor`](crate::Backdoor), so the same code drives the real instructions and the
//! in-memory host model. Each exchange is one send then one receive:
//!
//! ```text
//! send:    SENDSIZE(len) ─┬─ HB bit ──> rep outsb (whole message)
//!                         └─ else ────> SENDPAYLOAD × ⌈len/4⌉
//! receive: RECVSIZE ─ DORECV, len ─┬─ HB bit ──> rep insb (whole reply)
//!                                  └─ else ────> RECVPAYLOAD × ⌈len/4⌉
//!          RECVSTATUS(1)            (always, even for an empty reply)
//! ```
//!
//! The HB branches are taken only where the backdoor allows high-bandwidth transfers
//! ([`Backdoor::high_bandwidth`](crate::Backdoor::high_bandwidth)): a guest whose memory the
//! host cannot read (AMD SEV, SEV-ES, SEV-SNP) moves every message by LB calls, whatever
//! the host's HB bit says.
//!
//! A checkpoint (status CPT) at any step restarts the send from SENDSIZE or the receive from
//! RECVSIZE, at most [`CPT_TRIES`] times. Any other failure leaves the host's side of the
//! channel in an unknown state, so the channel is closed and reopened before its next use.

use core::fmt;

use crate::proto::{
    cmd, hi16, lo32, msg, pack, status, Regs, FLAG_COOKIE, HB_CMD_MESSAGE, HB_PORT, LB_PORT, MAGIC,
    MAX_GUEST_MESSAGE, MESSAGE_TYPE_SENDPAYLOAD, MESSAGE_TYPE_SENDSIZE, NO_ANSWER,
};
use crate::{Backdoor, ErrorKind, VmwError};

/// Direction of a high-bandwidth transfer; the cookie halves trade places between them.
///
/// | direction | ESI | EDI | EBP |
/// |---|---|---|---|
/// | [`HbDirection::ToHost`] (`rep outsb`) | buffer | cookie low | cookie high |
/// | [`HbDirection::ToGuest`] (`rep insb`) | cookie high | buffer | cookie low |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HbDirection {
    /// Guest to host, `rep outsb`.
    ToHost,
    /// Host to guest, `rep insb`.
    ToGuest,
}

/// How many times one phase (open, send, receive, close) is started before a run of
/// checkpoints is reported as [`ErrorKind::Checkpoint`]. A checkpoint is a rare event
/// (snapshot, suspend, migration); several in a row within one exchange mean trouble.
pub(crate) const CPT_TRIES: u32 = 8;

/// An open (or once-open) message channel: the host's id and cookies.
pub(crate) struct Channel {
    protocol: u32,
    id: u16,
    /// ESI on LB calls; the second cookie half of HB calls.
    cookie_high: u32,
    /// EDI on LB calls; the second cookie half of HB calls.
    cookie_low: u32,
    cookies: bool,
    /// The host holds this channel for us: CLOSE is owed, exactly once.
    open: bool,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The cookies authenticate the channel: say whether there are any, never what.
        f.debug_struct("Channel")
            .field("protocol", &format_args!("{:#010x}", self.protocol))
            .field("id", &self.id)
            .field("cookies", &self.cookies)
            .field("open", &self.open)
            .finish()
    }
}

/// Why one phase failed: worth reopening and resending, or not.
pub(crate) enum Failure {
    /// SENDSIZE was refused (not a checkpoint): nothing was delivered, and a channel the host
    /// dropped (idle timeout, reset after restore) answers exactly this way.
    SendRefused(VmwError),
    /// Anything else.
    Other(VmwError),
}

impl From<Failure> for VmwError {
    fn from(f: Failure) -> VmwError {
        match f {
            Failure::SendRefused(e) | Failure::Other(e) => e,
        }
    }
}

/// The error for a request the host would refuse for its size (checked before sending).
pub(crate) fn request_too_large(len: usize) -> VmwError {
    VmwError::new(
        ErrorKind::TooLarge,
        format_args!("the request is {len} bytes; VMware hosts accept at most {MAX_GUEST_MESSAGE}"),
    )
}

fn protocol_error(message: impl fmt::Display) -> VmwError {
    VmwError::new(ErrorKind::Protocol, message)
}

fn checkpoints(phase: &str) -> VmwError {
    VmwError::new(
        ErrorKind::Checkpoint,
        format_args!(
            "{phase}: {CPT_TRIES} checkpoints in a row interrupted every try; retry the call \
             once the VM has finished its snapshot, suspend or migration"
        ),
    )
}

impl Channel {
    /// Opens a channel for `protocol` (RPCI or TCLO): with cookies first, then without, for
    /// hosts that predate them.
    pub(crate) fn open<B: Backdoor + ?Sized>(t: &mut B, protocol: u32) -> Result<Self, VmwError> {
        let mut last = 0;
        let mut not_implemented = false;
        for flags in [FLAG_COOKIE, 0] {
            for _ in 0..CPT_TRIES {
                let sent = Regs {
                    ax: MAGIC.into(),
                    bx: (protocol | flags).into(),
                    cx: pack(msg::OPEN, cmd::MESSAGE),
                    dx: LB_PORT.into(),
                    ..Regs::default()
                };
                let mut r = sent;
                t.lb(&mut r);
                last = hi16(r.cx);
                // A backdoor without the message command answers it as any unknown command:
                // all ones in EAX, or every register left as it was (QEMU's vmport does
                // either, by configuration).
                not_implemented = lo32(r.ax) == NO_ANSWER || r.lb_unchanged_from(&sent);
                if last & status::SUCCESS != 0 {
                    return Ok(Channel {
                        protocol,
                        id: hi16(r.dx),
                        cookie_high: lo32(r.si),
                        cookie_low: lo32(r.di),
                        cookies: flags != 0,
                        open: true,
                    });
                }
                if last & status::CPT == 0 {
                    break;
                }
            }
            // Fall back to a cookie-less channel only when the host plainly refused the
            // flag (a host older than cookies), never because checkpoints cut every try.
            if last & status::CPT != 0 {
                return Err(checkpoints("OPEN"));
            }
        }
        if not_implemented {
            return Err(VmwError::new(
                ErrorKind::NoChannel,
                "the backdoor answers GETVERSION but does not implement the message channel \
                 (backdoor command 30): not a full VMware host (QEMU's vmport, say), so no RPC, \
                 guestinfo or log is available",
            ));
        }
        Err(VmwError::new(
            ErrorKind::NoChannel,
            format_args!(
                "the host refused to open a message channel (status {last:#06x}): all its \
                 channels may be in use; close channels you no longer need and retry"
            ),
        ))
    }

    /// The cookie halves (high, low), for tests that check they are never printed.
    #[cfg(all(test, feature = "sim", target_os = "linux", target_arch = "x86_64"))]
    pub(crate) fn cookies(&self) -> (u32, u32) {
        (self.cookie_high, self.cookie_low)
    }

    /// Whether the host holds this channel (so it can be used, and will be closed).
    pub(crate) fn is_open(&self) -> bool {
        self.open
    }

    /// Opens a fresh channel in place of this closed one.
    pub(crate) fn reopen<B: Backdoor + ?Sized>(&mut self, t: &mut B) -> Result<(), VmwError> {
        debug_assert!(!self.open, "reopen of an open channel would leak it");
        *self = Channel::open(t, self.protocol)?;
        Ok(())
    }

    /// Closes the channel. Never sends CLOSE twice: afterwards the channel counts as closed
    /// whatever the host said.
    pub(crate) fn close<B: Backdoor + ?Sized>(&mut self, t: &mut B) -> Result<(), VmwError> {
        if !self.open {
            return Ok(());
        }
        self.open = false;
        for _ in 0..CPT_TRIES {
            let st = lb_status(&self.call(t, msg::CLOSE, 0));
            if st & status::SUCCESS != 0 {
                return Ok(());
            }
            if st & status::CPT == 0 {
                return Err(self.failed("CLOSE", st));
            }
        }
        Err(checkpoints("CLOSE"))
    }

    /// One request and its reply: sends `request`, returns the reply (at most `max_reply`
    /// bytes; a longer one is refused before it is fetched, with the error `too_large` makes
    /// of its length). A closed channel is reopened first; a channel the host refuses a SENDSIZE on
    /// is reopened and the request sent once more; after any other failure the channel is
    /// closed, to be reopened by the next exchange.
    pub(crate) fn exchange<B: Backdoor + ?Sized>(
        &mut self,
        t: &mut B,
        request: &[u8],
        max_reply: usize,
        too_large: &dyn Fn(usize) -> VmwError,
    ) -> Result<Vec<u8>, VmwError> {
        if request.len() > MAX_GUEST_MESSAGE {
            return Err(request_too_large(request.len()));
        }
        if !self.open {
            self.reopen(t)?;
        }
        let mut result = self.send(t, request);
        if let Err(Failure::SendRefused(e)) = &result {
            log::debug!("reopening the channel after: {e}");
            self.abandon(t);
            self.reopen(t)?;
            result = self.send(t, request);
        }
        let reply = result.and_then(|()| self.receive(t, max_reply, too_large, true));
        if reply.is_err() {
            self.abandon(t);
        }
        match reply {
            Ok(Some(reply)) => Ok(reply),
            // `receive` with a reply required answers one or an error.
            Ok(None) => Err(protocol_error("the host sent no reply")),
            Err(e) => Err(e.into()),
        }
    }

    /// One turn of a TCLO channel: sends `message` (the previous command's reply, or an
    /// empty "I am here"), then takes the host's next command, if it has one (RECVSIZE
    /// without DORECV, or with length 0, is no command). A closed channel is reopened
    /// first; nothing is resent. After a failure the channel is closed, as for
    /// [`Channel::exchange`], and the caller decides when to reopen it.
    pub(crate) fn poll<B: Backdoor + ?Sized>(
        &mut self,
        t: &mut B,
        message: &[u8],
        max_command: usize,
        too_large: &dyn Fn(usize) -> VmwError,
    ) -> Result<Option<Vec<u8>>, VmwError> {
        if message.len() > MAX_GUEST_MESSAGE {
            return Err(request_too_large(message.len()));
        }
        if !self.open {
            self.reopen(t)?;
        }
        let result = self
            .send(t, message)
            .and_then(|()| self.receive(t, max_command, too_large, false));
        if result.is_err() {
            self.abandon(t);
        }
        Ok(result?.filter(|command| !command.is_empty()))
    }

    /// Sends one message and nothing else (a TCLO reply when the agent stops: the host's
    /// next command is left unread). After a failure the channel is closed.
    pub(crate) fn send_message<B: Backdoor + ?Sized>(
        &mut self,
        t: &mut B,
        message: &[u8],
    ) -> Result<(), VmwError> {
        if message.len() > MAX_GUEST_MESSAGE {
            return Err(request_too_large(message.len()));
        }
        if !self.open {
            self.reopen(t)?;
        }
        let sent = self.send(t, message);
        if sent.is_err() {
            self.abandon(t);
        }
        sent.map_err(VmwError::from)
    }

    /// The error for `step` answering status `st`. A host that says CLOSED has freed the id
    /// (and may hand it to someone else): the channel counts as closed, no CLOSE is owed.
    fn failed(&mut self, step: &str, st: u16) -> VmwError {
        if st & status::CLOSED != 0 {
            self.open = false;
            return VmwError::new(
                ErrorKind::ChannelClosed,
                format_args!("{step}: the host closed the channel (status {st:#06x})"),
            );
        }
        protocol_error(format_args!("{step} failed (status {st:#06x})"))
    }

    /// Closes after a failed exchange; the exchange's error is what the caller reports.
    fn abandon<B: Backdoor + ?Sized>(&mut self, t: &mut B) {
        if let Err(e) = self.close(t) {
            log::debug!("closing the channel after a failed exchange: {e}");
        }
    }

    /// One LB message call: sub-command `sub`, argument `bx`, this channel's id and cookies.
    fn call<B: Backdoor + ?Sized>(&self, t: &mut B, sub: u16, bx: u32) -> Regs {
        let mut r = Regs {
            ax: MAGIC.into(),
            bx: bx.into(),
            cx: pack(sub, cmd::MESSAGE),
            dx: pack(self.id, LB_PORT),
            si: self.cookie_high.into(),
            di: self.cookie_low.into(),
            ..Regs::default()
        };
        t.lb(&mut r);
        r
    }

    /// Registers for an HB transfer; the cookie halves sit where the instruction leaves room.
    fn hb_regs(&self, direction: HbDirection) -> Regs {
        let (si, di, bp) = match direction {
            HbDirection::ToHost => (0, self.cookie_low, self.cookie_high),
            HbDirection::ToGuest => (self.cookie_high, 0, self.cookie_low),
        };
        Regs {
            ax: MAGIC.into(),
            bx: pack(status::SUCCESS, HB_CMD_MESSAGE),
            dx: pack(self.id, HB_PORT),
            si: si.into(),
            di: di.into(),
            bp: bp.into(),
            ..Regs::default()
        }
    }

    fn send<B: Backdoor + ?Sized>(&mut self, t: &mut B, message: &[u8]) -> Result<(), Failure> {
        // `exchange` checked the length against the host's 64 KiB cap.
        let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
        'attempt: for _ in 0..CPT_TRIES {
            let st = lb_status(&self.call(t, msg::SENDSIZE, len));
            if st & status::SUCCESS == 0 {
                if st & status::CPT != 0 {
                    continue;
                }
                return Err(Failure::SendRefused(self.failed("SENDSIZE", st)));
            }
            if message.is_empty() {
                return Ok(());
            }
            if st & status::HB != 0 && t.high_bandwidth() {
                let mut r = self.hb_regs(HbDirection::ToHost);
                t.hb_out(&mut r, message);
                match hb_status(&r) {
                    s if s & status::SUCCESS != 0 => return Ok(()),
                    s if s & status::CPT != 0 => continue,
                    s => return Err(Failure::Other(self.failed("high-bandwidth send", s))),
                }
            }
            for chunk in message.chunks(4) {
                let mut word = [0u8; 4];
                for (w, b) in word.iter_mut().zip(chunk) {
                    *w = *b;
                }
                let st = lb_status(&self.call(t, msg::SENDPAYLOAD, u32::from_le_bytes(word)));
                if st & status::SUCCESS == 0 {
                    if st & status::CPT != 0 {
                        continue 'attempt;
                    }
                    return Err(Failure::Other(self.failed("SENDPAYLOAD", st)));
                }
            }
            return Ok(());
        }
        Err(Failure::Other(checkpoints("sending the request")))
    }

    /// Receives the pending message; without DORECV that is an error when `required` (an
    /// RPCI reply), and `None` otherwise (a TCLO poll with no command).
    fn receive<B: Backdoor + ?Sized>(
        &mut self,
        t: &mut B,
        max_reply: usize,
        too_large: &dyn Fn(usize) -> VmwError,
        required: bool,
    ) -> Result<Option<Vec<u8>>, Failure> {
        let mut reply = Vec::new();
        'attempt: for _ in 0..CPT_TRIES {
            let r = self.call(t, msg::RECVSIZE, 0);
            let st = lb_status(&r);
            if st & status::SUCCESS == 0 {
                if st & status::CPT != 0 {
                    continue;
                }
                return Err(Failure::Other(self.failed("RECVSIZE", st)));
            }
            if st & status::DORECV == 0 {
                if !required {
                    return Ok(None);
                }
                return Err(Failure::Other(protocol_error(
                    "the host sent no reply (RECVSIZE without DORECV)",
                )));
            }
            if hi16(r.dx) != MESSAGE_TYPE_SENDSIZE {
                return Err(Failure::Other(protocol_error(format_args!(
                    "RECVSIZE answered message type {} instead of {MESSAGE_TYPE_SENDSIZE}",
                    hi16(r.dx)
                ))));
            }
            let len = usize::try_from(lo32(r.bx)).unwrap_or(usize::MAX);
            if len > max_reply {
                return Err(Failure::Other(too_large(len)));
            }
            reply.clear();
            if reply.try_reserve_exact(len).is_err() {
                return Err(Failure::Other(VmwError::new(
                    ErrorKind::System,
                    format_args!("cannot allocate {len} bytes for the host's reply"),
                )));
            }
            reply.resize(len, 0);
            if len > 0 {
                if st & status::HB != 0 && t.high_bandwidth() {
                    let mut r = self.hb_regs(HbDirection::ToGuest);
                    t.hb_in(&mut r, &mut reply);
                    match hb_status(&r) {
                        s if s & status::SUCCESS != 0 => {}
                        s if s & status::CPT != 0 => continue,
                        s => return Err(Failure::Other(self.failed("high-bandwidth receive", s))),
                    }
                } else {
                    for chunk in reply.chunks_mut(4) {
                        let r = self.call(t, msg::RECVPAYLOAD, status::SUCCESS.into());
                        let st = lb_status(&r);
                        if st & status::SUCCESS == 0 {
                            if st & status::CPT != 0 {
                                continue 'attempt;
                            }
                            return Err(Failure::Other(self.failed("RECVPAYLOAD", st)));
                        }
                        if hi16(r.dx) != MESSAGE_TYPE_SENDPAYLOAD {
                            return Err(Failure::Other(protocol_error(format_args!(
                                "RECVPAYLOAD answered message type {} instead of \
                                 {MESSAGE_TYPE_SENDPAYLOAD}",
                                hi16(r.dx)
                            ))));
                        }
                        // The last chunk may be 1..=3 bytes: take only those.
                        for (b, w) in chunk.iter_mut().zip(lo32(r.bx).to_le_bytes()) {
                            *b = w;
                        }
                    }
                }
            }
            let st = lb_status(&self.call(t, msg::RECVSTATUS, status::SUCCESS.into()));
            if st & status::SUCCESS != 0 {
                return Ok(Some(reply));
            }
            if st & status::CPT == 0 {
                return Err(Failure::Other(self.failed("RECVSTATUS", st)));
            }
        }
        Err(Failure::Other(checkpoints("receiving the reply")))
    }
}

/// The status of an LB message call, `hi16(ECX)`.
fn lb_status(r: &Regs) -> u16 {
    hi16(r.cx)
}

/// The status of an HB transfer, `hi16(EBX)`.
fn hb_status(r: &Regs) -> u16 {
    hi16(r.bx)
}
