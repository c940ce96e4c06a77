//! The message channel (backdoor command 30): the channel table and the per-channel state
//! machine behind the seven low-bandwidth sub-commands and the two high-bandwidth transfers.
//!
//! A channel holds at most one guest-to-host message being sent ([`Incoming`]) and at most
//! one host-to-guest message waiting to be fetched ([`Reply`]). A complete guest message is
//! executed at once (RPCI) or recorded (TCLO), and its answer becomes the pending reply.
//!
//! Every step returns the value of its status register: `status << 16` with the low half
//! zero, in ECX for a low-bandwidth call and in EBX for a high-bandwidth one. A failed step
//! answers 0 and changes nothing else.

use super::config::{Answer, Fault, HostConfig, Step};
use super::counters::Counters;
use super::faults::Faults;
use super::rng::SplitMix64;
use super::rpci::Rpci;
use super::tclo::{Next, Stamp, Tclo};
use crate::proto::{
    hi16, lo16, lo32, msg, status, Regs, FLAG_COOKIE, HB_CMD_MESSAGE, MAX_GUEST_MESSAGE,
    MESSAGE_TYPE_SENDPAYLOAD, MESSAGE_TYPE_SENDSIZE, PROTO_RPCI, PROTO_TCLO,
};

/// What a channel carries, from the protocol number given at OPEN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    /// Guest-to-host commands, each answered with a `1 ` / `0 ` reply.
    Rpci,
    /// Host-to-guest commands, fetched by a polling guest.
    Tclo,
}

/// The two cookie halves of a channel opened with [`FLAG_COOKIE`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Cookie {
    high: u32,
    low: u32,
}

impl core::fmt::Debug for Cookie {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Cookies authenticate the channel: never print them.
        f.write_str("Cookie(..)")
    }
}

/// A guest-to-host message between SENDSIZE and its last byte.
#[derive(Debug)]
struct Incoming {
    /// Length announced by SENDSIZE (at most [`MAX_GUEST_MESSAGE`]).
    expected: usize,
    /// Bytes received so far; grows as they arrive, never beyond `expected`.
    bytes: Vec<u8>,
}

/// A host-to-guest message waiting for the guest.
#[derive(Debug)]
struct Reply {
    bytes: Vec<u8>,
    /// The length RECVSIZE announced; `None` until RECVSIZE (or after a rewind).
    announced: Option<usize>,
    /// Bytes handed to the guest since RECVSIZE.
    offset: usize,
}

impl Reply {
    fn new(bytes: Vec<u8>) -> Self {
        Reply {
            bytes,
            announced: None,
            offset: 0,
        }
    }

    /// Back to "pending, not yet announced": the guest restarts at RECVSIZE.
    fn rewind(&mut self) {
        self.announced = None;
        self.offset = 0;
    }
}

/// One open channel.
#[derive(Debug)]
pub(super) struct Channel {
    protocol: Protocol,
    cookie: Option<Cookie>,
    incoming: Option<Incoming>,
    reply: Option<Reply>,
    /// TCLO: the guest has sent a message since the last command was handed to it, so the
    /// next one may be delivered.
    tclo_armed: bool,
    /// TCLO: a command was handed to the guest and its reply has not come yet.
    tclo_awaiting: bool,
    /// The current operation was already cut by a periodic checkpoint.
    cpt_spent: bool,
}

impl Channel {
    fn new(protocol: Protocol, cookie: Option<Cookie>) -> Self {
        Channel {
            protocol,
            cookie,
            incoming: None,
            reply: None,
            tclo_armed: false,
            tclo_awaiting: false,
            cpt_spent: false,
        }
    }

    /// Undoes the half-done operation `step` belongs to.
    fn cancel(&mut self, step: Step) {
        if step.is_send() {
            self.incoming = None;
        } else if let Some(reply) = self.reply.as_mut() {
            if matches!(
                step,
                Step::RecvSize | Step::RecvPayload | Step::HbIn | Step::RecvStatus
            ) {
                reply.rewind();
            }
        }
    }
}

/// Status register value for `bits`.
const fn st(bits: u16) -> u32 {
    (bits as u32) << 16
}

const FAIL: u32 = 0;
const OK: u32 = st(status::SUCCESS);

/// Outcome of the checks every step on an open channel starts with.
enum Pre {
    /// Answer this status register value; the step is over.
    Done(u32),
    /// The channel is valid: carry on, possibly with a hostile modifier.
    Go(Option<Answer>),
}

/// The channel table: ids are slot indexes, the lowest free one is reused first.
#[derive(Debug)]
struct Table {
    slots: Vec<Option<Channel>>,
    limit: usize,
}

impl Table {
    fn insert(&mut self, channel: Channel) -> Option<u16> {
        let index = match self.slots.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.slots.len() < self.limit => {
                self.slots.push(None);
                self.slots.len() - 1
            }
            None => return None,
        };
        let id = u16::try_from(index).ok()?;
        *self.slots.get_mut(index)? = Some(channel);
        Some(id)
    }

    fn get_mut(&mut self, id: u16) -> Option<&mut Channel> {
        self.slots.get_mut(usize::from(id))?.as_mut()
    }

    fn remove(&mut self, id: u16) -> bool {
        self.slots
            .get_mut(usize::from(id))
            .and_then(Option::take)
            .is_some()
    }
}

/// What the channel layer hands complete messages to and counts in: the rest of the host.
pub(super) struct Ends<'a> {
    /// Executes guest messages on RPCI channels.
    pub(super) rpci: &'a mut Rpci,
    /// Supplies host commands to, and records guest messages from, TCLO channels.
    pub(super) tclo: &'a mut Tclo,
    /// The host's counters.
    pub(super) counters: &'a mut Counters,
}

/// The message channel service: the channel table, the per-channel state machine behind
/// the message sub-commands and the high-bandwidth transfers, and the fault schedule and
/// cookie source that drive it.
#[derive(Debug)]
pub(super) struct Channels {
    table: Table,
    faults: Faults,
    rng: SplitMix64,
    /// High-bandwidth transfers offered ([`HostConfig::hb`]).
    hb: bool,
    /// OPEN with the cookie flag accepted ([`HostConfig::cookies`]).
    cookies: bool,
    /// RECVSTATUS keeps the reply ([`HostConfig::endless_dorecv`]).
    endless_dorecv: bool,
}

impl Channels {
    /// An empty table set up as `config` says (at most 65,536 channels), with these
    /// one-shot faults.
    pub(super) fn new(config: &HostConfig, faults: Vec<Fault>) -> Self {
        Channels {
            table: Table {
                slots: Vec::new(),
                limit: config.channels, // `HostConfig::channels` caps it at 65,536
            },
            faults: Faults::new(faults, config.cpt_every),
            rng: SplitMix64::new(config.seed.0),
            hb: config.hb,
            cookies: config.cookies,
            endless_dorecv: config.endless_dorecv,
        }
    }

    /// SUCCESS plus the HB bit when high-bandwidth transfers are offered.
    fn ok_hb(&self) -> u32 {
        if self.hb {
            st(status::SUCCESS | status::HB)
        } else {
            OK
        }
    }

    /// A low-bandwidth MESSAGE call (`lo16(ECX)` = 30), already counted and checked for
    /// magic and port.
    pub(super) fn message(&mut self, regs: &mut Regs, ends: &mut Ends<'_>) {
        let step = match hi16(regs.cx) {
            msg::OPEN => Step::Open,
            msg::SENDSIZE => Step::SendSize,
            msg::SENDPAYLOAD => Step::SendPayload,
            msg::RECVSIZE => Step::RecvSize,
            msg::RECVPAYLOAD => Step::RecvPayload,
            msg::RECVSTATUS => Step::RecvStatus,
            msg::CLOSE => Step::Close,
            _ => {
                regs.cx = u64::from(FAIL);
                return;
            }
        };
        if step == Step::Open {
            self.open(regs, ends);
            return;
        }
        let id = hi16(regs.dx);
        // Low-bandwidth layout: ESI = cookie high, EDI = cookie low.
        let modifier = match self.pre_step(step, id, lo32(regs.si), lo32(regs.di), ends) {
            Pre::Done(value) => {
                regs.cx = u64::from(value);
                return;
            }
            Pre::Go(modifier) => modifier,
        };
        let value = match step {
            Step::SendSize => self.send_size(id, lo32(regs.bx), ends),
            Step::SendPayload => self.send_payload(id, lo32(regs.bx), ends),
            Step::RecvSize => self.recv_size(id, regs, modifier, ends),
            Step::RecvPayload => self.recv_payload(id, regs, modifier, ends),
            Step::RecvStatus => self.recv_status(id),
            Step::Close => self.close(id, ends),
            Step::Open | Step::HbOut | Step::HbIn => FAIL,
        };
        regs.cx = u64::from(value);
    }

    /// A high-bandwidth guest-to-host transfer addressed to the backdoor.
    pub(super) fn hb_out(&mut self, regs: &mut Regs, data: &[u8], ends: &mut Ends<'_>) {
        regs.bx = u64::from(self.hb_out_status(regs, data, ends));
    }

    fn hb_out_status(&mut self, regs: &Regs, data: &[u8], ends: &mut Ends<'_>) -> u32 {
        if !self.hb {
            return FAIL;
        }
        let id = hi16(regs.dx);
        // Send layout: EDI = cookie low, EBP = cookie high.
        match self.pre_step(Step::HbOut, id, lo32(regs.bp), lo32(regs.di), ends) {
            Pre::Done(value) => return value,
            Pre::Go(_) => {}
        }
        if !guest_hb_status_ok(regs.bx) {
            return FAIL;
        }
        let count = regs.cx;
        let Some(ch) = self.table.get_mut(id) else {
            return FAIL;
        };
        let Some(incoming) = ch.incoming.as_mut() else {
            return FAIL;
        };
        // It must follow SENDSIZE directly and move exactly the announced length.
        if !incoming.bytes.is_empty() || count != incoming.expected as u64 {
            return FAIL;
        }
        let Some(bytes) = data.get(..incoming.expected) else {
            return FAIL;
        };
        incoming.bytes = bytes.to_vec();
        ends.counters.bytes_to_host += bytes.len() as u64;
        self.complete_send(id, ends);
        OK
    }

    /// A high-bandwidth host-to-guest transfer addressed to the backdoor: the bytes to write
    /// at RDI.
    pub(super) fn hb_in(&mut self, regs: &mut Regs, ends: &mut Ends<'_>) -> Vec<u8> {
        let (value, bytes) = self.hb_in_status(regs, ends);
        regs.bx = u64::from(value);
        bytes
    }

    fn hb_in_status(&mut self, regs: &Regs, ends: &mut Ends<'_>) -> (u32, Vec<u8>) {
        if !self.hb {
            return (FAIL, Vec::new());
        }
        let id = hi16(regs.dx);
        // Receive layout: ESI = cookie high, EBP = cookie low.
        match self.pre_step(Step::HbIn, id, lo32(regs.si), lo32(regs.bp), ends) {
            Pre::Done(value) => return (value, Vec::new()),
            Pre::Go(_) => {}
        }
        if !guest_hb_status_ok(regs.bx) {
            return (FAIL, Vec::new());
        }
        let room = regs.cx;
        let Some(ch) = self.table.get_mut(id) else {
            return (FAIL, Vec::new());
        };
        let Some(reply) = ch.reply.as_mut() else {
            return (FAIL, Vec::new());
        };
        // It must follow RECVSIZE directly, and the host cannot produce bytes beyond the
        // real reply (after a claimed length). A buffer shorter than the reply gets its
        // first bytes and the rest is dropped, as hosts evidently do: OpenBSD's vmt(4) reads
        // at most 4095 bytes of any reply in one `rep insb` and then acknowledges it.
        let Some(len) = reply.announced else {
            return (FAIL, Vec::new());
        };
        if reply.offset != 0 {
            return (FAIL, Vec::new());
        }
        let served = len.min(usize::try_from(room).unwrap_or(usize::MAX));
        let Some(bytes) = reply.bytes.get(..served) else {
            return (FAIL, Vec::new());
        };
        let bytes = bytes.to_vec();
        reply.offset = len;
        ends.counters.bytes_to_guest += served as u64;
        (OK, bytes)
    }

    /// Counts the occurrence, applies a one-shot fault or a periodic checkpoint, checks
    /// the channel id and cookie.
    fn pre_step(&mut self, step: Step, id: u16, high: u32, low: u32, ends: &mut Ends<'_>) -> Pre {
        let forced = self.faults.occurrence(step);
        let valid = self.channel_ok(id, high, low);
        if let Some(answer) = forced {
            ends.counters.faults_injected += 1;
            let value = match answer {
                Answer::Cpt => {
                    ends.counters.cpts_injected += 1;
                    st(status::CPT)
                }
                Answer::Fail => FAIL,
                Answer::Raw(value) => value,
                Answer::CloseChannel => {
                    if valid && self.table.remove(id) {
                        ends.counters.channels_closed += 1;
                    }
                    return Pre::Done(st(status::CLOSED));
                }
                modifier => {
                    return if valid {
                        Pre::Go(Some(modifier))
                    } else {
                        Pre::Done(FAIL)
                    };
                }
            };
            if let Some(ch) = self.table.get_mut(id).filter(|_| valid) {
                ch.cancel(step);
            }
            return Pre::Done(value);
        }
        if !valid {
            return Pre::Done(FAIL);
        }
        if step.is_payload() {
            let Some(ch) = self.table.get_mut(id) else {
                return Pre::Done(FAIL);
            };
            if self.faults.periodic_cpt(ch.cpt_spent) {
                ch.cpt_spent = true;
                ch.cancel(step);
                ends.counters.cpts_injected += 1;
                return Pre::Done(st(status::CPT));
            }
        }
        Pre::Go(None)
    }

    /// The channel is open and the cookie (if it has one) matches.
    fn channel_ok(&mut self, id: u16, high: u32, low: u32) -> bool {
        match self.table.get_mut(id) {
            Some(ch) => ch.cookie.map_or(true, |c| c.high == high && c.low == low),
            None => false,
        }
    }

    /// OPEN: EBX = protocol | optional cookie flag.
    fn open(&mut self, regs: &mut Regs, ends: &mut Ends<'_>) {
        if let Some(answer) = self.faults.occurrence(Step::Open) {
            ends.counters.faults_injected += 1;
            let value = match answer {
                Answer::Cpt => {
                    ends.counters.cpts_injected += 1;
                    st(status::CPT)
                }
                Answer::Raw(value) => value,
                _ => FAIL,
            };
            regs.cx = u64::from(value);
            return;
        }
        let request = lo32(regs.bx);
        let wants_cookie = request & FLAG_COOKIE != 0;
        let protocol = match request & !FLAG_COOKIE {
            PROTO_RPCI => Protocol::Rpci,
            PROTO_TCLO => Protocol::Tclo,
            _ => {
                regs.cx = u64::from(FAIL);
                return;
            }
        };
        if wants_cookie && !self.cookies {
            regs.cx = u64::from(FAIL);
            return;
        }
        let cookie = if wants_cookie {
            let r = self.rng.next_u64();
            Some(Cookie {
                high: (r >> 32) as u32,
                low: r as u32,
            })
        } else {
            None
        };
        let Some(id) = self.table.insert(Channel::new(protocol, cookie)) else {
            regs.cx = u64::from(FAIL);
            return;
        };
        ends.counters.channels_opened += 1;
        regs.cx = u64::from(OK);
        regs.dx = u64::from(id) << 16;
        regs.si = u64::from(cookie.map_or(0, |c| c.high));
        regs.di = u64::from(cookie.map_or(0, |c| c.low));
    }

    /// SENDSIZE: EBX = length of the guest's next message.
    fn send_size(&mut self, id: u16, len: u32, ends: &mut Ends<'_>) -> u32 {
        let ok = self.ok_hb();
        let Some(ch) = self.table.get_mut(id) else {
            return FAIL;
        };
        let len = len as usize;
        if len > MAX_GUEST_MESSAGE {
            ch.incoming = None;
            return FAIL;
        }
        // A reply the guest never acknowledged is dropped: real hosts let a guest move on
        // (the published 0.2.4 crate never sends RECVSTATUS).
        ch.reply = None;
        ch.incoming = Some(Incoming {
            expected: len,
            bytes: Vec::new(),
        });
        if len == 0 {
            self.complete_send(id, ends);
        }
        ok
    }

    /// SENDPAYLOAD: EBX = the next 1..4 bytes, little-endian.
    fn send_payload(&mut self, id: u16, word: u32, ends: &mut Ends<'_>) -> u32 {
        let Some(ch) = self.table.get_mut(id) else {
            return FAIL;
        };
        let Some(incoming) = ch.incoming.as_mut() else {
            return FAIL;
        };
        let take = incoming
            .expected
            .saturating_sub(incoming.bytes.len())
            .min(4);
        let word = word.to_le_bytes();
        let Some(chunk) = word.get(..take).filter(|c| !c.is_empty()) else {
            return FAIL;
        };
        incoming.bytes.extend_from_slice(chunk);
        let complete = incoming.bytes.len() >= incoming.expected;
        ends.counters.bytes_to_host += take as u64;
        if complete {
            self.complete_send(id, ends);
        }
        OK
    }

    /// A guest message is complete: execute it (RPCI) or record it (TCLO).
    fn complete_send(&mut self, id: u16, ends: &mut Ends<'_>) {
        let Some(ch) = self.table.get_mut(id) else {
            return;
        };
        let Some(incoming) = ch.incoming.take() else {
            return;
        };
        ch.cpt_spent = false;
        match ch.protocol {
            Protocol::Rpci => {
                // The backdoor is never the privileged channel, even for root.
                let answer = ends.rpci.execute(&incoming.bytes, false, ends.counters);
                if let Some(ch) = self.table.get_mut(id) {
                    ch.reply = Some(Reply::new(answer));
                }
            }
            Protocol::Tclo => {
                ch.tclo_armed = true;
                let answering = std::mem::take(&mut ch.tclo_awaiting);
                ends.counters.tclo_messages += 1;
                let at = Stamp {
                    rpcs: ends.rpci.requests.len(),
                    calls: ends.counters.backdoor_calls(),
                };
                ends.tclo.guest_message(incoming.bytes, answering, at);
            }
        }
    }

    /// RECVSIZE: is a message waiting, and how long is it?
    fn recv_size(
        &mut self,
        id: u16,
        regs: &mut Regs,
        modifier: Option<Answer>,
        ends: &mut Ends<'_>,
    ) -> u32 {
        let dorecv = st(status::DORECV) | self.ok_hb();
        let Some(ch) = self.table.get_mut(id) else {
            return FAIL;
        };
        if ch.incoming.is_some() {
            // A send is half done: out of order.
            return FAIL;
        }
        if ch.protocol == Protocol::Tclo && ch.tclo_armed && ch.reply.is_none() {
            let at = Stamp {
                rpcs: ends.rpci.requests.len(),
                calls: ends.counters.backdoor_calls(),
            };
            match ends.tclo.next(at) {
                Some(Next::Command(command)) => {
                    ch.tclo_armed = false;
                    ch.tclo_awaiting = true;
                    ch.reply = Some(Reply::new(command));
                    ends.counters.tclo_commands += 1;
                }
                Some(Next::Close) => {
                    // The host drops the channel under the guest.
                    if self.table.remove(id) {
                        ends.counters.channels_closed += 1;
                    }
                    return st(status::CLOSED);
                }
                None => {}
            }
        }
        let Some(ch) = self.table.get_mut(id) else {
            return FAIL;
        };
        let phantom = match (&modifier, ch.reply.as_mut()) {
            (Some(Answer::Phantom(n)), reply) => {
                // An earlier announcement must not carry over: the payload steps after a
                // phantom fail, as documented, even when a real reply is pending.
                if let Some(reply) = reply {
                    reply.rewind();
                }
                Some(*n)
            }
            (Some(Answer::ClaimLength(n)), None) => Some(*n),
            (_, None) => {
                regs.bx = 0;
                return OK;
            }
            (_, Some(reply)) => {
                if modifier == Some(Answer::NoPrefix)
                    && (reply.bytes.starts_with(b"1 ") || reply.bytes.starts_with(b"0 "))
                {
                    reply.bytes.drain(..2);
                }
                let real = u32::try_from(reply.bytes.len()).unwrap_or(u32::MAX);
                let len = match modifier {
                    Some(Answer::ClaimLength(n)) => n,
                    _ => real,
                };
                reply.announced = Some(len as usize);
                reply.offset = 0;
                regs.bx = u64::from(len);
                None
            }
        };
        if let Some(n) = phantom {
            regs.bx = u64::from(n);
        }
        let kind = match modifier {
            Some(Answer::WrongMessageType(t)) => t,
            _ => MESSAGE_TYPE_SENDSIZE,
        };
        regs.dx = u64::from(kind) << 16;
        dorecv
    }

    /// RECVPAYLOAD: EBX in = the guest's status, out = the next 1..4 reply bytes.
    fn recv_payload(
        &mut self,
        id: u16,
        regs: &mut Regs,
        modifier: Option<Answer>,
        ends: &mut Ends<'_>,
    ) -> u32 {
        let guest_ok = lo32(regs.bx) & u32::from(status::SUCCESS) != 0;
        let Some(ch) = self.table.get_mut(id) else {
            return FAIL;
        };
        let Some(reply) = ch.reply.as_mut() else {
            return FAIL;
        };
        let Some(len) = reply.announced else {
            return FAIL;
        };
        if !guest_ok {
            // The guest reports a failed reception and gives up on this reply.
            ch.reply = None;
            ch.cpt_spent = false;
            regs.bx = 0;
            return OK;
        }
        let take = len.saturating_sub(reply.offset).min(4);
        if take == 0 {
            return FAIL;
        }
        let mut word = [0u8; 4];
        for (i, slot) in word.iter_mut().enumerate().take(take) {
            // Past the real bytes (a claimed length) the host serves zeros.
            *slot = reply.bytes.get(reply.offset + i).copied().unwrap_or(0);
        }
        reply.offset += take;
        ends.counters.bytes_to_guest += take as u64;
        regs.bx = u64::from(u32::from_le_bytes(word));
        let kind = match modifier {
            Some(Answer::WrongMessageType(t)) => t,
            _ => MESSAGE_TYPE_SENDPAYLOAD,
        };
        regs.dx = u64::from(kind) << 16;
        OK
    }

    /// RECVSTATUS: the guest acknowledges (EBX = 1) or rejects (EBX = 0) the reply; either
    /// way the host is done with it.
    fn recv_status(&mut self, id: u16) -> u32 {
        let endless = self.endless_dorecv;
        let Some(ch) = self.table.get_mut(id) else {
            return FAIL;
        };
        match ch.reply.as_mut() {
            Some(reply) if reply.announced.is_some() => {
                if endless {
                    reply.rewind();
                } else {
                    ch.reply = None;
                }
                ch.cpt_spent = false;
                OK
            }
            _ => FAIL,
        }
    }

    /// CLOSE: the id is free again.
    fn close(&mut self, id: u16, ends: &mut Ends<'_>) -> u32 {
        if self.table.remove(id) {
            ends.counters.channels_closed += 1;
            OK
        } else {
            FAIL
        }
    }
}

/// EBX of a high-bandwidth call: command MESSAGE in `lo16`, guest status SUCCESS in `hi16`
/// (masked to its success bit, as hosts do).
fn guest_hb_status_ok(bx: u64) -> bool {
    lo16(bx) == HB_CMD_MESSAGE && hi16(bx) & status::SUCCESS != 0
}
