//! The `host_registers` harness: plays a [`Scenario`] against the host model and asserts,
//! after every single backdoor call, what the model promises whatever the registers say.
//!
//! Checked after every call:
//! - no panic (libFuzzer reports one as a crash);
//! - no single allocation larger than the largest thing the host legitimately holds
//!   (1 MiB of 0xFF for a `rep insb` without a device, a preset guestinfo value, a 64 KiB
//!   guest message), so nothing is sized by a guest register;
//! - the calls go through `Backdoor` (which sets ECX and ESI/EDI from the buffer); a
//!   high-bandwidth receive writes nothing past what it hands over, without a device 0xFF
//!   bytes;
//! - a call not addressed to the backdoor (wrong magic or port, not VMware) changes nothing
//!   but EAX (LB: 0xFFFFFFFF) and the call counter;
//! - registers the host writes hold 32-bit values; the others keep all 64 bits;
//! - counters: each call bumps exactly its own call counter, fields only grow,
//!   `channels_open()` = `channels_opened - channels_closed` =
//!   `open_channels()` ≤ the configured limit, no checkpoint or fault appears that was not
//!   configured, byte counters grow by what actually moved;
//! - when no fault fired: status registers have a zero low half; a failed LB step is
//!   ECX = 0 with no other register changed; a step with a wrong cookie, or on a channel
//!   never opened, fails; OPEN returns a fresh id below the limit and zero cookies without
//!   the cookie flag; only OPEN and CLOSE change the number of open channels;
//! - a complete RPCI reply received without faults starts with `1 ` or `0 `, and the reply to
//!   `info-get` agrees with the host's guestinfo store.
//!
//! At the end of each run: the host's retained data (guestinfo, log, TCLO answers) is within
//! its documented budgets and the stats JSON agrees with the counters.

use std::collections::{BTreeMap, BTreeSet};

use vmw_backdoor::proto::Regs;
use vmw_backdoor::sim::host::{Answer, Counters, Host, HostConfig, Mode, Step};
use vmw_backdoor::Backdoor;

use crate::alloc_watch;
// Registers' worth of channel identity for one call: the reference client's `Chan`.
use crate::reference::Chan as Target;
use crate::reference::{
    self as rc, cmd, hi16, lo16, lo32, msg, status, COOKIE, HB_OK, HB_PORT, LB_PORT, MAGIC,
    MAX_MESSAGE, RPCI, TCLO, TYPE_SENDSIZE,
};
use crate::scenario::{AnswerSpec, Chan, ConfigSpec, Op, Scenario, PREFIXES};

/// What a `rep insb` on a port without a device returns at most (the model's documented cap).
const NO_DEVICE_FILL: u64 = 1 << 20;
/// The host model's memory guards, from its documentation.
const STORE_BUDGET: usize = 16 << 20;
const LOG_BUDGET: usize = 16 << 20;
const TCLO_BUDGET: usize = 16 << 20;
/// RECVPAYLOAD / SENDPAYLOAD calls one exchange makes at most (keeps executions fast; a
/// hostile claimed length may announce 4 GiB).
const MAX_PAYLOAD_CALLS: usize = 1024;
/// Garbage for the upper halves of registers.
const UPPER_GARBAGE: u64 = 0xA5A5_5A5A_0000_0000;

/// A channel the host opened for us (no fault fired on the OPEN).
#[derive(Debug, Clone, Copy)]
struct Known {
    id: u16,
    cookie: Option<(u32, u32)>,
    rpci: bool,
}

impl Known {
    /// Whether a call naming `t` reaches this channel (right id, right cookie if any).
    fn accepts(&self, t: Target) -> bool {
        self.id == t.id && self.cookie.is_none_or(|c| c == (t.high, t.low))
    }
}

/// What the faults and checkpoints did during one call or exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Disturbance {
    faults: u64,
    cpts: u64,
}

/// Builds the host configuration a scenario asks for.
pub fn host_config(c: &ConfigSpec) -> HostConfig {
    let mut h = HostConfig::default()
        .seed(u64::from(c.seed).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .cpt_every(u64::from(c.cpt_every))
        .channels(if c.channels == 255 {
            usize::MAX
        } else {
            usize::from(c.channels)
        });
    if c.flags & 0x01 != 0 {
        h = h.no_hb();
    }
    if c.flags & 0x02 != 0 {
        h = h.no_cookies();
    }
    if c.flags & 0x04 != 0 {
        h = h.deny_guestinfo();
    }
    if c.flags & 0x08 != 0 {
        h = h.endless_dorecv();
    }
    h = h.mode(match (c.flags >> 4) & 3 {
        1 => Mode::NotVmware,
        2 => Mode::RestrictBackdoor,
        _ => Mode::Vmware,
    });
    if c.flags & 0x40 != 0 {
        h = h.no_gethz();
    }
    if c.flags & 0x80 != 0 {
        h = h.no_vcpu_info();
    }
    for f in &c.faults {
        let step = Step::ALL[usize::from(f.step) % Step::ALL.len()];
        let answer = match f.answer {
            AnswerSpec::Cpt => Answer::Cpt,
            AnswerSpec::Fail => Answer::Fail,
            AnswerSpec::Raw(v) => Answer::Raw(v),
            AnswerSpec::WrongMessageType(t) => Answer::WrongMessageType(t),
            AnswerSpec::ClaimLength(n) => Answer::ClaimLength(n),
            AnswerSpec::NoPrefix => Answer::NoPrefix,
            AnswerSpec::Phantom(n) => Answer::Phantom(n),
            AnswerSpec::CloseChannel => Answer::CloseChannel,
        };
        h = h.fault(step, u64::from(f.nth), answer);
    }
    for (key, value) in &c.guestinfo {
        h = h.guestinfo(key, value.to_bytes());
    }
    for t in &c.tclo {
        h = h.tclo(t);
    }
    h
}

/// What one run exercised (for tests of the harness and the seeds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// RPCI replies received whole and checked against the request.
    pub replies_checked: usize,
    /// `info-get` replies compared with the host's store.
    pub info_gets_checked: usize,
    /// RPCI requests the host executed.
    pub rpcs: u64,
    /// Channels the host opened.
    pub channels_opened: u64,
}

/// Runs one fuzz input. Panics (a crash for libFuzzer) when an invariant breaks.
pub fn run(data: &[u8]) -> Report {
    let scenario = Scenario::decode(data);
    let mut run = HostRun::new(&scenario.config);
    for op in &scenario.ops {
        run.op(op);
    }
    run.finish()
}

/// The host under test and what the harness knows about it.
struct HostRun {
    host: Host,
    /// Channels the host may hold at once.
    limit: usize,
    not_vmware: bool,
    no_cookies: bool,
    deny_guestinfo: bool,
    /// Faults configured (an upper bound on `faults_injected`).
    faults_armed: u64,
    /// Checkpoints configured as one-shot faults.
    cpt_faults_armed: u64,
    periodic_cpt: bool,
    /// The largest single allocation the host may make.
    alloc_bound: usize,
    /// Channels the host opened, oldest first (at most 64; `Chan::Known` indexes this).
    opened: Vec<Known>,
    /// The latest successful OPEN per id: the cookie that id's channel holds if it is open.
    by_id: BTreeMap<u16, Known>,
    /// Last request executed undisturbed per channel id, with the host's `rpcs` count right
    /// after it: its reply is checked only if no other request ran since.
    last_request: BTreeMap<u16, (Vec<u8>, u64)>,
    /// Channel ids a fault fired on since their last undisturbed request: a hostile answer
    /// may have changed the pending reply for good (e.g. stripped its prefix).
    tainted: BTreeSet<u16>,
    /// What was checked so far.
    report: Report,
    /// EBX of the last successful RECVSIZE (the default RCX of an HB receive).
    last_announced: u64,
    /// Configured guestinfo bytes (keys with prefix plus values).
    preset_store: usize,
}

impl HostRun {
    fn new(c: &ConfigSpec) -> Self {
        let config = host_config(c);
        let largest_value = c
            .guestinfo
            .iter()
            .map(|(_, v)| v.to_bytes().len())
            .max()
            .unwrap_or(0);
        let preset_store = {
            let mut store = BTreeMap::new();
            for (k, v) in &c.guestinfo {
                let key = if k.starts_with(b"guestinfo.") {
                    k.clone()
                } else {
                    [&b"guestinfo."[..], k].concat()
                };
                store.insert(key, v.to_bytes().len());
            }
            store.iter().map(|(k, v)| k.len() + v).sum()
        };
        alloc_watch::reset_peak();
        let host = Host::new(config);
        HostRun {
            host,
            limit: if c.channels == 255 {
                1 << 16
            } else {
                usize::from(c.channels)
            },
            not_vmware: (c.flags >> 4) & 3 == 1,
            no_cookies: c.flags & 0x02 != 0,
            deny_guestinfo: c.flags & 0x04 != 0,
            faults_armed: c.faults.len() as u64,
            cpt_faults_armed: c
                .faults
                .iter()
                .filter(|f| f.answer == AnswerSpec::Cpt)
                .count() as u64,
            periodic_cpt: c.cpt_every != 0,
            alloc_bound: (NO_DEVICE_FILL as usize)
                .max(MAX_MESSAGE + 1)
                .max(largest_value + 2),
            opened: Vec::new(),
            by_id: BTreeMap::new(),
            last_request: BTreeMap::new(),
            last_announced: 0,
            preset_store,
            report: Report::default(),
            tainted: BTreeSet::new(),
        }
    }

    // ---- the three calls, each wrapped in the generic checks ----

    /// A low-bandwidth call; returns what faults and checkpoints did during it.
    fn lb(&mut self, regs: &mut Regs) -> Disturbance {
        let before = *regs;
        let c0 = self.host.counters().clone();
        alloc_watch::reset_largest();
        self.host.lb(regs);
        self.check_alloc("lb", &before);
        let c1 = self.host.counters().clone();
        self.check_counters(&c0, &c1);
        assert_eq!(c1.lb_calls, c0.lb_calls + 1, "lb_calls");
        assert_eq!(
            (c1.hb_in_calls, c1.hb_out_calls),
            (c0.hb_in_calls, c0.hb_out_calls)
        );
        check_widths(&before, regs);
        let addressed = !self.not_vmware && lo32(before.ax) == MAGIC && lo16(before.dx) == LB_PORT;
        let accepted: u64 =
            c1.lb_by_command.values().sum::<u64>() - c0.lb_by_command.values().sum::<u64>();
        if !addressed {
            let mut expect = before;
            expect.ax = 0xFFFF_FFFF;
            assert_eq!(
                *regs, expect,
                "an LB call not for the backdoor changed registers"
            );
            assert_eq!(accepted, 0);
            assert_only_calls_changed(&c0, &c1);
            return Disturbance { faults: 0, cpts: 0 };
        }
        assert_eq!(
            accepted, 1,
            "an addressed LB call is counted once by command"
        );
        assert!(c1.bytes_to_host - c0.bytes_to_host <= 4);
        assert!(c1.bytes_to_guest - c0.bytes_to_guest <= 4);
        let d = disturbance(&c0, &c1);
        if d.faults != 0 {
            self.tainted.insert(hi16(before.dx));
        }
        if lo16(before.cx) == cmd::MESSAGE {
            self.check_message(&before, regs, &c0, &c1, d);
        } else {
            assert_only_calls_changed(&c0, &c1);
        }
        d
    }

    /// A high-bandwidth send of `data` through [`Backdoor::hb_out`] (which sets ECX and ESI
    /// from `data`).
    fn hb_out(&mut self, regs: &mut Regs, data: &[u8]) -> Disturbance {
        regs.cx = data.len() as u64;
        regs.si = data.as_ptr() as usize as u64;
        let before = *regs;
        let c0 = self.host.counters().clone();
        alloc_watch::reset_largest();
        Backdoor::hb_out(&mut self.host, regs, data);
        self.check_alloc("hb_out", &before);
        let c1 = self.host.counters().clone();
        self.check_counters(&c0, &c1);
        assert_eq!(c1.hb_out_calls, c0.hb_out_calls + 1, "hb_out_calls");
        assert_eq!((c1.lb_calls, c1.hb_in_calls), (c0.lb_calls, c0.hb_in_calls));
        check_widths(&before, regs);
        let moved = c1.bytes_to_host - c0.bytes_to_host;
        let addressed = self.hb_addressed(&before);
        if !addressed {
            assert_eq!(
                *regs, before,
                "an HB out not for the backdoor changed registers"
            );
            assert_only_calls_changed(&c0, &c1);
            return Disturbance { faults: 0, cpts: 0 };
        }
        let d = disturbance(&c0, &c1);
        if d.faults != 0 {
            self.tainted.insert(hi16(before.dx));
        }
        let ok = regs.bx == HB_OK;
        assert!(
            moved == 0 || (ok && moved == before.cx),
            "HB out moved {moved} bytes"
        );
        if d.faults == 0 {
            assert_eq!(
                lo16(regs.bx),
                0,
                "HB status with a low half: {:#x}",
                regs.bx
            );
            // Send layout: EDI = cookie low, EBP = cookie high.
            self.check_cookie_refused(hi16(before.dx), lo32(before.bp), lo32(before.di), regs.bx);
            self.check_open_count_unchanged(&c0, &c1);
        }
        d
    }

    /// A high-bandwidth receive through [`Backdoor::hb_in`] into a buffer of RCX bytes (at
    /// most the allocation bound; the trait sets ECX and EDI from it); returns the bytes the
    /// host handed over and what faults and checkpoints did.
    fn hb_in(&mut self, regs: &mut Regs) -> (Vec<u8>, Disturbance) {
        let room = usize::try_from(regs.cx)
            .unwrap_or(usize::MAX)
            .min(self.alloc_bound);
        let mut buf = vec![0u8; room];
        regs.cx = room as u64;
        regs.di = buf.as_mut_ptr() as usize as u64;
        let before = *regs;
        let c0 = self.host.counters().clone();
        alloc_watch::reset_largest();
        Backdoor::hb_in(&mut self.host, regs, &mut buf);
        self.check_alloc("hb_in", &before);
        // What the host wrote: 0xFF bytes without a device, else what it counted as handed.
        let written = if self.hb_addressed(&before) {
            let handed = self.host.counters().bytes_to_guest - c0.bytes_to_guest;
            usize::try_from(handed).unwrap_or(usize::MAX).min(room)
        } else {
            room.min(NO_DEVICE_FILL as usize)
        };
        assert!(
            buf.get(written..)
                .unwrap_or_default()
                .iter()
                .all(|&b| b == 0),
            "HB in wrote past the {written} bytes it handed over"
        );
        let bytes = buf.get(..written).unwrap_or_default().to_vec();
        let c1 = self.host.counters().clone();
        self.check_counters(&c0, &c1);
        assert_eq!(c1.hb_in_calls, c0.hb_in_calls + 1, "hb_in_calls");
        assert_eq!(
            (c1.lb_calls, c1.hb_out_calls),
            (c0.lb_calls, c0.hb_out_calls)
        );
        check_widths(&before, regs);
        assert!(
            bytes.len() as u64 <= before.cx,
            "rep insb returned {} bytes for RCX = {}",
            bytes.len(),
            before.cx
        );
        if !self.hb_addressed(&before) {
            assert_eq!(
                *regs, before,
                "an HB in not for the backdoor changed registers"
            );
            assert_only_calls_changed(&c0, &c1);
            assert_eq!(bytes.len() as u64, before.cx.min(NO_DEVICE_FILL));
            assert!(bytes.iter().all(|&b| b == 0xFF), "no device reads as 0xFF");
            return (bytes, Disturbance { faults: 0, cpts: 0 });
        }
        assert_eq!(
            c1.bytes_to_guest - c0.bytes_to_guest,
            bytes.len() as u64,
            "bytes_to_guest grew by other than what was returned"
        );
        if regs.bx != HB_OK {
            assert!(bytes.is_empty(), "a failed HB in returned bytes");
        }
        let d = disturbance(&c0, &c1);
        if d.faults != 0 {
            self.tainted.insert(hi16(before.dx));
        }
        if d.faults == 0 {
            assert_eq!(
                lo16(regs.bx),
                0,
                "HB status with a low half: {:#x}",
                regs.bx
            );
            // Receive layout: ESI = cookie high, EBP = cookie low.
            self.check_cookie_refused(hi16(before.dx), lo32(before.si), lo32(before.bp), regs.bx);
            self.check_open_count_unchanged(&c0, &c1);
        }
        (bytes, d)
    }

    // ---- checks ----

    fn hb_addressed(&self, r: &Regs) -> bool {
        !self.not_vmware && lo32(r.ax) == MAGIC && lo16(r.dx) == HB_PORT
    }

    fn check_alloc(&self, call: &str, regs: &Regs) {
        let largest = alloc_watch::largest();
        assert!(
            largest <= self.alloc_bound,
            "{call} allocated {largest} bytes at once (bound {}), regs {regs:?}",
            self.alloc_bound
        );
    }

    fn check_counters(&self, c0: &Counters, c1: &Counters) {
        let open = self.host.open_channels();
        assert!(
            open <= self.limit,
            "{open} channels open, limit {}",
            self.limit
        );
        assert_eq!(c1.channels_open(), open as u64, "channels_open counter");
        assert_eq!(
            c1.channels_opened - c1.channels_closed,
            c1.channels_open(),
            "opened - closed != open"
        );
        for (name, a, b) in [
            ("lb_calls", c0.lb_calls, c1.lb_calls),
            ("hb_in_calls", c0.hb_in_calls, c1.hb_in_calls),
            ("hb_out_calls", c0.hb_out_calls, c1.hb_out_calls),
            ("bytes_to_host", c0.bytes_to_host, c1.bytes_to_host),
            ("bytes_to_guest", c0.bytes_to_guest, c1.bytes_to_guest),
            ("channels_opened", c0.channels_opened, c1.channels_opened),
            ("channels_closed", c0.channels_closed, c1.channels_closed),
            ("rpcs", c0.rpcs, c1.rpcs),
            ("tclo_commands", c0.tclo_commands, c1.tclo_commands),
            ("tclo_messages", c0.tclo_messages, c1.tclo_messages),
            ("cpts_injected", c0.cpts_injected, c1.cpts_injected),
            ("faults_injected", c0.faults_injected, c1.faults_injected),
        ] {
            assert!(b >= a, "counter {name} went down: {a} -> {b}");
        }
        assert!(c1.channels_opened - c0.channels_opened <= 1);
        assert!(c1.channels_closed - c0.channels_closed <= 1);
        assert!(c1.rpcs - c0.rpcs <= 1);
        assert!(
            c1.faults_injected <= self.faults_armed,
            "more faults than armed"
        );
        if !self.periodic_cpt {
            assert!(
                c1.cpts_injected <= self.cpt_faults_armed,
                "checkpoints nobody asked for"
            );
        }
        for (&(command, sub), &n) in &c1.lb_by_command {
            assert!(n >= c0.lb_calls_for(command, sub));
        }
    }

    /// With no fault: a step naming a cookie channel with the wrong cookie, or an id the
    /// host never opened, must fail (`status_reg` = 0).
    fn check_cookie_refused(&self, id: u16, high: u32, low: u32, status_reg: u64) {
        let must_fail = match self.by_id.get(&id) {
            None => true,
            Some(k) => matches!(k.cookie, Some(c) if c != (high, low)),
        };
        if must_fail {
            assert_eq!(
                status_reg, 0,
                "a step on channel {id} with a wrong cookie or never opened did not fail"
            );
        }
    }

    fn check_open_count_unchanged(&self, c0: &Counters, c1: &Counters) {
        assert_eq!(
            c0.channels_open(),
            c1.channels_open(),
            "open channels changed outside OPEN/CLOSE"
        );
    }

    /// The message-channel promises of one addressed LB MESSAGE call.
    fn check_message(
        &mut self,
        before: &Regs,
        after: &Regs,
        c0: &Counters,
        c1: &Counters,
        d: Disturbance,
    ) {
        if d.faults != 0 {
            // A hostile answer may say anything; the generic checks still hold.
            return;
        }
        let sub = hi16(before.cx);
        let st = hi16(after.cx);
        assert_eq!(lo16(after.cx), 0, "status with a low half: {:#x}", after.cx);
        if d.cpts == 0 && st & status::SUCCESS == 0 {
            let mut expect = *before;
            expect.cx = 0;
            assert_eq!(
                *after, expect,
                "a failed step must be ECX = 0 and nothing else"
            );
        }
        if sub == msg::OPEN {
            let proto = lo32(before.bx);
            if st & status::SUCCESS != 0 {
                let id = hi16(after.dx);
                assert_eq!(lo16(after.dx), 0, "OPEN's EDX low half");
                assert!(usize::from(id) < self.limit, "channel id {id} beyond limit");
                assert_eq!(c1.channels_open(), c0.channels_open() + 1);
                let wants_cookie = proto & COOKIE != 0;
                assert!(
                    !(wants_cookie && self.no_cookies),
                    "cookie OPEN on a host without cookies"
                );
                let p = proto & !COOKIE;
                assert!(p == RPCI || p == TCLO, "OPEN of protocol {p:#x} succeeded");
                let cookie = (lo32(after.si), lo32(after.di));
                if !wants_cookie {
                    assert_eq!(cookie, (0, 0), "cookies without the cookie flag");
                }
                let known = Known {
                    id,
                    cookie: wants_cookie.then_some(cookie),
                    rpci: p == RPCI,
                };
                self.by_id.insert(id, known);
                self.last_request.remove(&id);
                self.opened.retain(|k| k.id != id);
                if self.opened.len() == 64 {
                    self.opened.remove(0);
                }
                self.opened.push(known);
            } else {
                self.check_open_count_unchanged(c0, c1);
            }
            return;
        }
        // LB layout: ESI = cookie high, EDI = cookie low.
        self.check_cookie_refused(hi16(before.dx), lo32(before.si), lo32(before.di), after.cx);
        if sub == msg::CLOSE && st & status::SUCCESS != 0 {
            assert_eq!(
                c1.channels_open() + 1,
                c0.channels_open(),
                "CLOSE succeeded, count wrong"
            );
        } else {
            self.check_open_count_unchanged(c0, c1);
        }
        if sub == msg::RECVSIZE && st & status::DORECV != 0 {
            assert_eq!(hi16(after.dx), TYPE_SENDSIZE, "RECVSIZE message type");
        }
    }

    // ---- operations ----

    fn target(&self, chan: Chan) -> (Target, Option<Known>) {
        match chan {
            Chan::Known { index, corrupt } => match self
                .opened
                .get(usize::from(index) % self.opened.len().max(1))
            {
                Some(k) => {
                    let (high, low) = k.cookie.unwrap_or((0, 0));
                    let low = if corrupt { low ^ 1 } else { low };
                    (
                        Target {
                            id: k.id,
                            high,
                            low,
                        },
                        Some(*k),
                    )
                }
                None => (
                    Target {
                        id: 0,
                        high: 0,
                        low: 0,
                    },
                    None,
                ),
            },
            Chan::Raw(id) => (
                Target {
                    id,
                    high: 0,
                    low: 0,
                },
                self.by_id.get(&id).copied(),
            ),
        }
    }

    fn msg(&mut self, t: Target, sub: u16, bx: u32) -> (Regs, Disturbance) {
        let mut r = rc::msg_regs(t, sub, bx);
        let d = self.lb(&mut r);
        (r, d)
    }

    fn op(&mut self, op: &Op) {
        match op {
            Op::LbRaw {
                flags,
                ax,
                bx,
                cx,
                dx,
                si,
                di,
            } => {
                let upper = if flags & 4 != 0 { UPPER_GARBAGE } else { 0 };
                let ax = if flags & 1 != 0 { MAGIC } else { *ax };
                let dx = if flags & 2 != 0 {
                    (dx & 0xFFFF_0000) | u32::from(LB_PORT)
                } else {
                    *dx
                };
                let mut r = Regs {
                    ax: upper | u64::from(ax),
                    bx: upper | u64::from(*bx),
                    cx: upper | u64::from(*cx),
                    dx: upper | u64::from(dx),
                    si: upper | u64::from(*si),
                    di: upper | u64::from(*di),
                    bp: upper,
                };
                self.lb(&mut r);
            }
            Op::Msg { sub, chan, bx } => {
                let (t, _) = self.target(*chan);
                self.msg(t, u16::from(*sub), *bx);
            }
            Op::Open { proto, raw } => {
                let p = match proto % 4 {
                    1 => TCLO,
                    2 => *raw,
                    _ => RPCI,
                };
                let flag = if proto & 4 != 0 { COOKIE } else { 0 };
                self.lb(&mut rc::open_regs(p | flag));
            }
            Op::Cmd { cmd: c, bx } => {
                self.lb(&mut rc::lb_regs(*c, *bx));
            }
            Op::HbOut {
                chan,
                flags,
                len,
                fill,
                data,
                count,
                bx,
            } => {
                let (t, _) = self.target(*chan);
                let mut bytes = data.clone();
                bytes.resize((*len as usize).max(data.len()), *fill);
                let mut r = rc::hb_out_regs(t, if flags & 1 != 0 { (*bx).into() } else { HB_OK });
                if flags & 4 != 0 {
                    r.ax = (MAGIC ^ 1).into();
                }
                let count = if flags & 2 != 0 {
                    *count
                } else {
                    bytes.len() as u64
                };
                // The runner hands over at most MAX_MESSAGE + 1 bytes, and never more
                // than RCX.
                let shown = bytes
                    .len()
                    .min(MAX_MESSAGE + 1)
                    .min(usize::try_from(count).unwrap_or(usize::MAX));
                self.hb_out(&mut r, &bytes[..shown]);
            }
            Op::HbIn {
                chan,
                flags,
                count,
                bx,
            } => {
                let (t, _) = self.target(*chan);
                let mut r = rc::hb_in_regs(t, if flags & 1 != 0 { (*bx).into() } else { HB_OK });
                if flags & 4 != 0 {
                    r.ax = (MAGIC ^ 1).into();
                }
                r.cx = if flags & 2 != 0 {
                    *count
                } else {
                    self.last_announced
                };
                self.hb_in(&mut r);
            }
            Op::Send {
                chan,
                hb,
                prefix,
                text,
                pad_len,
                pad,
            } => {
                let mut request = PREFIXES[usize::from(*prefix) % PREFIXES.len()].to_vec();
                request.extend_from_slice(text);
                request.resize(request.len() + usize::from(*pad_len), *pad);
                self.send(*chan, *hb, &request);
            }
            Op::Recv { chan, hb } => self.recv(*chan, *hb),
        }
    }

    /// SENDSIZE, then the payload by HB (if asked and offered) or SENDPAYLOADs.
    fn send(&mut self, chan: Chan, hb: bool, request: &[u8]) {
        let (t, known) = self.target(chan);
        let start = self.host.counters().clone();
        let len = u32::try_from(request.len()).unwrap_or(u32::MAX);
        let (r, _) = self.msg(t, msg::SENDSIZE, len);
        let st = hi16(r.cx);
        if st & status::SUCCESS == 0 || request.is_empty() {
            self.after_send(t, known, &start, request);
            return;
        }
        if hb && st & status::HB != 0 {
            let mut r = rc::hb_out_regs(t, HB_OK);
            let shown = request.len().min(MAX_MESSAGE + 1);
            self.hb_out(&mut r, &request[..shown]);
        } else {
            for chunk in request.chunks(4).take(MAX_PAYLOAD_CALLS) {
                let (r, _) = self.msg(t, msg::SENDPAYLOAD, rc::le_word(chunk));
                if hi16(r.cx) & status::SUCCESS == 0 {
                    break;
                }
            }
        }
        self.after_send(t, known, &start, request);
    }

    /// Remembers a request the host executed undisturbed on a channel we opened.
    fn after_send(&mut self, t: Target, known: Option<Known>, start: &Counters, request: &[u8]) {
        let end = self.host.counters();
        let undisturbed = disturbance(start, end) == Disturbance { faults: 0, cpts: 0 };
        let valid = known.is_some_and(|k| k.accepts(t));
        if undisturbed && valid && end.rpcs == start.rpcs + 1 {
            self.last_request.insert(t.id, (request.to_vec(), end.rpcs));
            self.tainted.remove(&t.id);
        } else {
            self.last_request.remove(&t.id);
        }
    }

    /// RECVSIZE, then HB (if asked and offered) or RECVPAYLOADs, then RECVSTATUS.
    fn recv(&mut self, chan: Chan, hb: bool) {
        let (t, known) = self.target(chan);
        let start = self.host.counters().clone();
        let (r, size_d) = self.msg(t, msg::RECVSIZE, 0);
        let st = hi16(r.cx);
        if st & status::SUCCESS == 0 || st & status::DORECV == 0 {
            return;
        }
        let len = u64::from(lo32(r.bx));
        self.last_announced = len;
        let mut reply = Vec::new();
        let mut complete = false;
        if len == 0 {
            complete = true;
        } else if hb && st & status::HB != 0 {
            let mut r = rc::hb_in_regs(t, HB_OK);
            r.cx = len;
            let (bytes, d) = self.hb_in(&mut r);
            // (A hostile RECVSIZE, e.g. `Phantom` over a reply an earlier RECVSIZE announced,
            // may claim a length the transfer then does not match.)
            if r.bx == HB_OK && d.faults == 0 && size_d.faults == 0 {
                assert_eq!(bytes.len() as u64, len, "HB in success with a short reply");
                reply = bytes;
                complete = true;
            }
        } else {
            let mut left = len;
            let mut calls = 0;
            while left > 0 && calls < MAX_PAYLOAD_CALLS {
                let (r, _) = self.msg(t, msg::RECVPAYLOAD, status::SUCCESS.into());
                calls += 1;
                if hi16(r.cx) & status::SUCCESS == 0 {
                    break;
                }
                let take = left.min(4) as usize;
                reply.extend_from_slice(&lo32(r.bx).to_le_bytes()[..take]);
                left -= take as u64;
            }
            complete = left == 0;
        }
        let (r, _) = self.msg(t, msg::RECVSTATUS, status::SUCCESS.into());
        let acked = hi16(r.cx) & status::SUCCESS != 0;
        let end = self.host.counters().clone();
        let undisturbed = disturbance(&start, &end) == Disturbance { faults: 0, cpts: 0 };
        let valid = known.is_some_and(|k| k.accepts(t));
        if !(complete && acked && undisturbed && valid) || self.tainted.contains(&t.id) {
            return;
        }
        let Some(k) = known else { return };
        if !k.rpci {
            return;
        }
        assert!(
            reply.starts_with(b"1 ") || reply.starts_with(b"0 "),
            "RPCI reply without a status prefix: {:?}",
            reply.get(..16).unwrap_or(&reply).escape_ascii().to_string()
        );
        self.report.replies_checked += 1;
        let request = match self.last_request.get(&t.id) {
            Some((request, rpcs)) if *rpcs == start.rpcs => Some(request.clone()),
            _ => None,
        };
        if let Some(request) = request {
            self.check_reply(&request, &reply);
        }
    }

    /// The reply to an `info-get` agrees with the host's store.
    fn check_reply(&mut self, request: &[u8], reply: &[u8]) {
        let request = request.split(|&b| b == 0).next().unwrap_or_default();
        let Some(key) = request.strip_prefix(b"info-get ") else {
            return;
        };
        let expect = match self.host.guestinfo().get(key) {
            _ if self.deny_guestinfo => b"0 Permission denied".to_vec(),
            Some(value) if key.starts_with(b"guestinfo.") => [&b"1 "[..], value].concat(),
            _ => b"0 No value found".to_vec(),
        };
        assert!(reply == expect, "info-get reply disagrees with the store");
        self.report.info_gets_checked += 1;
    }

    fn finish(mut self) -> Report {
        let store: usize = self
            .host
            .guestinfo()
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        assert!(
            store <= self.preset_store + STORE_BUDGET,
            "guestinfo store {store} bytes"
        );
        let log: usize = self.host.vmx_log().iter().map(Vec::len).sum();
        assert!(log <= LOG_BUDGET, "vmx log {log} bytes");
        let tclo: usize = self.host.tclo_replies().iter().map(Vec::len).sum();
        assert!(tclo <= TCLO_BUDGET, "tclo replies {tclo} bytes");
        let c = self.host.counters();
        let json = self.host.stats_json();
        assert!(json.starts_with('{') && json.ends_with("]}"), "{json}");
        for (key, value) in [
            ("lb_calls", c.lb_calls),
            ("channels_open_at_exit", c.channels_open()),
            ("rpcs", c.rpcs),
        ] {
            assert!(
                json.contains(&format!("\"{key}\":{value},")),
                "{key} in {json}"
            );
        }
        let peak = alloc_watch::peak();
        assert!(peak < 512 << 20, "peak heap {peak} bytes in one run");
        self.report.rpcs = c.rpcs;
        self.report.channels_opened = c.channels_opened;
        self.report
    }
}

fn disturbance(c0: &Counters, c1: &Counters) -> Disturbance {
    Disturbance {
        faults: c1.faults_injected - c0.faults_injected,
        cpts: c1.cpts_injected - c0.cpts_injected,
    }
}

/// Registers the host wrote hold 32-bit values; the others are untouched.
fn check_widths(before: &Regs, after: &Regs) {
    for (name, b, a) in [
        ("ax", before.ax, after.ax),
        ("bx", before.bx, after.bx),
        ("cx", before.cx, after.cx),
        ("dx", before.dx, after.dx),
        ("si", before.si, after.si),
        ("di", before.di, after.di),
        ("bp", before.bp, after.bp),
    ] {
        assert!(
            a == b || a <= u64::from(u32::MAX),
            "{name} written with 64 bits: {a:#x}"
        );
    }
}

/// Only the call counters moved.
fn assert_only_calls_changed(c0: &Counters, c1: &Counters) {
    let mut c = c1.clone();
    c.lb_calls = c0.lb_calls;
    c.hb_in_calls = c0.hb_in_calls;
    c.hb_out_calls = c0.hb_out_calls;
    c.lb_by_command = c0.lb_by_command.clone();
    assert_eq!(&c, c0, "a call without effect changed counters");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_host_round_trips_a_guestinfo_value() {
        use crate::scenario::ValueSpec;
        let s = Scenario {
            config: ConfigSpec {
                channels: 8,
                guestinfo: vec![(b"k".to_vec(), ValueSpec::Bytes(b"v".to_vec()))],
                ..ConfigSpec::default()
            },
            ops: vec![
                Op::Open { proto: 4, raw: 0 },
                Op::Send {
                    chan: Chan::Known {
                        index: 0,
                        corrupt: false,
                    },
                    hb: true,
                    prefix: 1,
                    text: b"k".to_vec(),
                    pad_len: 0,
                    pad: 0,
                },
                Op::Recv {
                    chan: Chan::Known {
                        index: 0,
                        corrupt: false,
                    },
                    hb: false,
                },
            ],
        };
        let report = run(&s.encode());
        assert_eq!(report.info_gets_checked, 1, "{report:?}");
    }
}
