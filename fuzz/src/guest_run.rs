//! The guest-library harnesses (`reply_parser`, `request_builder`): the real RPCI and
//! message-channel code of `vmw_backdoor::erpc`, driven in memory against the host model.
//!
//! `reply_parser` makes the host hostile (one-shot `Answer::*` faults, periodic checkpoints,
//! endless DORECV, arbitrary guestinfo values up to 1 MiB, a small reply cap) and checks that
//! every call returns `Ok` or a typed error, with bounded work and memory, no channel leaked;
//! and, when no fault fired, that the answer is exactly what the host holds.
//!
//! `request_builder` gives the library arbitrary keys, values, log lines and raw commands on a
//! well-behaved host and checks that input the host would misread is refused with a typed
//! error before any backdoor call, and that everything accepted round-trips through the host
//! model's RPCI parsing byte for byte (`info-set` then `info-get`, the store, the log).
//!
//! Both drive the public `RpciChannel` over the in-memory host, shared with the harness
//! through a `RefCell` so that the harness can read the host between calls.

use std::cell::RefCell;

use vmw_backdoor::proto::MAX_GUEST_MESSAGE;
use vmw_backdoor::sim::host::Host;
use vmw_backdoor::{ErrorKind, RpciChannel, VmwError};

use crate::alloc_watch;
use crate::bytes::Reader;
use crate::host_run::host_config;
use crate::scenario::ConfigSpec;

/// Guest operations per input at most.
const MAX_GUEST_OPS: usize = 32;
/// Retries per phase in the library (`erpc::channel::CPT_TRIES`), for the work bound.
const CPT_TRIES: usize = 8;
/// The key prefix on the wire.
const GUESTINFO: &[u8] = b"guestinfo.";

/// Backdoor calls, faults and checkpoints during one library call.
#[derive(Debug, Clone, Copy, Default)]
struct Delta {
    /// The library call ran (false: opening the channel failed first, nothing to check).
    ran: bool,
    calls: u64,
    faults: u64,
    cpts: u64,
}

/// The library's channel on an in-memory host.
type Chan<'h> = RpciChannel<&'h RefCell<Host>>;

/// The host, the library's channel, and what the harness knows.
struct GuestRun<'h> {
    host: &'h RefCell<Host>,
    /// Faults fired so far: each may leave one channel behind on the host (a refused
    /// CLOSE cannot be helped by the guest).
    faults_so_far: u64,
    rpci: Option<Chan<'h>>,
    max_reply: usize,
    /// The largest single allocation allowed (host and guest).
    alloc_bound: usize,
}

impl<'h> GuestRun<'h> {
    fn new(host: &'h RefCell<Host>, config: &ConfigSpec, max_reply: Option<usize>) -> Self {
        let largest_value = config
            .guestinfo
            .iter()
            .map(|(_, v)| v.to_bytes().len())
            .max()
            .unwrap_or(0);
        let max_reply = max_reply.unwrap_or(vmw_backdoor::DEFAULT_MAX_REPLY_LEN);
        GuestRun {
            host,
            faults_so_far: 0,
            rpci: None,
            max_reply,
            alloc_bound: (1usize << 20)
                .max(MAX_GUEST_MESSAGE + 1)
                .max(largest_value + 2)
                .max(max_reply + 2),
        }
    }

    /// Opens the library's channel if it has none; returns the error if that fails, and
    /// the faults that fired meanwhile.
    fn ensure_open(&mut self) -> (Result<(), VmwError>, u64) {
        if self.rpci.is_some() {
            return (Ok(()), 0);
        }
        let c0 = self.host.borrow().counters().clone();
        let result = RpciChannel::open(self.host);
        let c1 = self.host.borrow().counters().clone();
        assert!(
            c1.lb_calls - c0.lb_calls <= 2 * CPT_TRIES as u64,
            "OPEN is retried without bound"
        );
        let faults = c1.faults_injected - c0.faults_injected;
        self.faults_so_far += faults;
        match result {
            Ok(mut rpci) => {
                rpci.set_max_reply_len(self.max_reply);
                self.rpci = Some(rpci);
                (Ok(()), faults)
            }
            Err(e) => (Err(e), faults),
        }
    }

    /// Runs `f` with the channel (opened first if needed; that is not measured) and
    /// measures `f`: backdoor calls, faults, allocations, channels left open.
    fn with_chan<R>(
        &mut self,
        f: impl FnOnce(&mut Chan<'h>) -> Result<R, VmwError>,
    ) -> (Result<R, VmwError>, Delta) {
        if let (Err(e), faults) = self.ensure_open() {
            check_kind(&e, &[ErrorKind::NoChannel, ErrorKind::Checkpoint]);
            let d = Delta {
                faults,
                ..Delta::default()
            };
            return (Err(e), d);
        }
        let c0 = self.host.borrow().counters().clone();
        alloc_watch::reset_largest();
        let result = match self.rpci.as_mut() {
            Some(rpci) => f(rpci),
            None => unreachable!("ensure_open succeeded"),
        };
        let largest = alloc_watch::largest();
        assert!(
            largest <= self.alloc_bound,
            "one allocation of {largest} bytes (bound {})",
            self.alloc_bound
        );
        let c1 = self.host.borrow().counters().clone();
        let d = Delta {
            ran: true,
            calls: c1.backdoor_calls() - c0.backdoor_calls(),
            faults: c1.faults_injected - c0.faults_injected,
            cpts: c1.cpts_injected - c0.cpts_injected,
        };
        let bound = self.call_bound();
        assert!(
            d.calls <= bound,
            "{} backdoor calls for one library call (bound {bound})",
            d.calls
        );
        // The library holds one channel at most, and leaves none behind after an error
        // (unless a fault made the host refuse its CLOSE).
        self.faults_so_far += d.faults;
        let open = self.host.borrow().open_channels() as u64;
        assert!(
            open <= 1 + self.faults_so_far,
            "{open} channels open on the host after {} faults",
            self.faults_so_far
        );
        if result.is_err() && d.faults == 0 && d.cpts == 0 {
            assert!(
                open <= self.faults_so_far || self.rpci.as_ref().is_some_and(Chan::is_open),
                "a channel stays open on the host that the library no longer holds"
            );
        }
        (result, d)
    }

    /// Backdoor calls one library call may make: open (twice: once up front, once to
    /// reopen), send (twice), receive, close, each retried on checkpoints.
    fn call_bound(&self) -> u64 {
        let open = 2 * CPT_TRIES;
        let send = CPT_TRIES * (1 + 1 + MAX_GUEST_MESSAGE.div_ceil(4));
        let receive = CPT_TRIES * (2 + (self.max_reply + 2).div_ceil(4));
        (3 * open + 2 * send + receive + 2 * CPT_TRIES) as u64
    }

    fn close(&mut self) {
        let Some(rpci) = self.rpci.take() else {
            return;
        };
        let c0 = self.host.borrow().counters().clone();
        let result = rpci.close();
        if let Err(handed_back) = &result {
            assert!(
                !handed_back.is_open(),
                "a channel still counts as open after close"
            );
        }
        drop(result); // a channel handed back sends nothing more when it drops
        let c1 = self.host.borrow().counters().clone();
        assert!(c1.lb_calls - c0.lb_calls <= CPT_TRIES as u64);
        let faults = c1.faults_injected - c0.faults_injected;
        self.faults_so_far += faults;
        if faults == 0 && c1.cpts_injected == c0.cpts_injected {
            assert!(
                self.host.borrow().open_channels() as u64 <= self.faults_so_far,
                "close succeeded on a well-behaved host, the host disagrees"
            );
        }
    }
}

/// The error is one of `allowed`, and it prints.
fn check_kind(e: &VmwError, allowed: &[ErrorKind]) {
    assert!(
        allowed.contains(&e.kind()),
        "unexpected error kind {:?}: {e}",
        e.kind()
    );
    assert!(!e.to_string().is_empty());
}

/// Kinds a hostile host may cause on an exchange.
const EXCHANGE_ERRORS: [ErrorKind; 7] = [
    ErrorKind::Protocol,
    ErrorKind::Checkpoint,
    ErrorKind::NoChannel,
    ErrorKind::ChannelClosed,
    ErrorKind::HostRefused,
    ErrorKind::PermissionDenied,
    ErrorKind::TooLarge,
];

/// The key's name after an optional `guestinfo.` prefix in any case (as the library reads it),
/// or `None` when the host would misread the key (empty, whitespace, NUL).
fn key_name(key: &[u8]) -> Option<&[u8]> {
    let name = match key.get(..GUESTINFO.len()) {
        Some(p) if p.eq_ignore_ascii_case(GUESTINFO) => &key[GUESTINFO.len()..],
        _ => key,
    };
    let bad = name.is_empty() || name.iter().any(|b| b.is_ascii_whitespace() || *b == 0);
    (!bad).then_some(name)
}

/// A key chosen by the input: one of the configured ones (in some spelling) or raw bytes.
fn read_key(r: &mut Reader, config: &ConfigSpec) -> Vec<u8> {
    let b = r.u8();
    if b & 0x80 == 0 || config.guestinfo.is_empty() {
        return r.short_bytes();
    }
    let key = &config.guestinfo[usize::from(b) % config.guestinfo.len()].0;
    let name = key.strip_prefix(GUESTINFO).unwrap_or(key);
    match b & 0x60 {
        0x00 => [GUESTINFO, name].concat(),
        0x20 => [&b"GuestInfo."[..], name].concat(),
        _ => name.to_vec(),
    }
}

// ---------------------------------------------------------------------------------------
// reply_parser

/// `reply_parser`: hostile host replies. Input: host configuration (see
/// [`ConfigSpec::decode`]), reply cap in KiB (one byte), then operations: tag % 6 =
/// get / set / rpc / log / close / open.
pub fn run_reply(data: &[u8]) {
    let mut r = Reader::new(data);
    let config = ConfigSpec::decode(&mut r);
    let max_reply = usize::from(r.u8()) * 1024;
    let host = RefCell::new(Host::new(host_config(&config)));
    let mut g = GuestRun::new(&host, &config, Some(max_reply));
    let limit_zero = config.channels == 0;
    let not_vmware = (config.flags >> 4) & 3 == 1;
    let deny = config.flags & 0x04 != 0;
    for _ in 0..MAX_GUEST_OPS {
        if r.is_empty() {
            break;
        }
        match r.u8() % 6 {
            0 => {
                let key = read_key(&mut r, &config);
                let stored = key_name(&key).and_then(|n| {
                    g.host
                        .borrow()
                        .guestinfo()
                        .get(&[GUESTINFO, n].concat())
                        .cloned()
                });
                let (result, d) = g.with_chan(|c| c.get_guestinfo(&key));
                if !d.ran {
                    continue;
                }
                let valid = key_name(&key).is_some();
                match &result {
                    Err(e) if !valid => check_kind(e, &[ErrorKind::InvalidInput]),
                    Err(e) => check_kind(e, &EXCHANGE_ERRORS),
                    Ok(_) => assert!(valid, "an invalid key was accepted"),
                }
                if valid && d.faults == 0 && !limit_zero && !not_vmware {
                    // Undisturbed (checkpoints are retried): exactly what the host holds, or
                    // TooLarge when the host's reply payload (a refusal too) is over the cap.
                    let payload_len = match (&stored, deny) {
                        (_, true) => b"Permission denied".len(),
                        (Some(v), false) => v.len(),
                        (None, false) => b"No value found".len(),
                    };
                    match (&result, stored) {
                        // A channel a hostile host refused to close earlier may fill its table.
                        (Err(e), _) if g.faults_so_far > 0 && e.kind() == ErrorKind::NoChannel => {}
                        (Err(e), _) if payload_len > max_reply => {
                            assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}");
                        }
                        (Err(e), _) if deny => {
                            assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
                        }
                        (Ok(got), Some(v)) if !deny && payload_len <= max_reply => {
                            assert_eq!(got.as_deref(), Some(&v[..]), "wrong value");
                        }
                        (Ok(got), None) if !deny && payload_len <= max_reply => {
                            assert_eq!(*got, None);
                        }
                        (other, stored) => panic!(
                            "undisturbed get: {other:?} while the host holds {:?} (cap {max_reply})",
                            stored.map(|v| v.len())
                        ),
                    }
                }
            }
            1 => {
                let key = read_key(&mut r, &config);
                let value = r.short_bytes();
                let (result, d) = g.with_chan(|c| c.set_guestinfo(&key, &value));
                if !d.ran {
                    continue;
                }
                let valid = key_name(&key).is_some() && !value.contains(&0);
                match &result {
                    Err(e) if !valid => check_kind(e, &[ErrorKind::InvalidInput]),
                    Err(e) => check_kind(e, &EXCHANGE_ERRORS),
                    Ok(()) => assert!(valid, "invalid input was accepted"),
                }
                if valid && d.faults == 0 && !limit_zero && !not_vmware && !deny {
                    // A channel a hostile host refused to close earlier may fill its table.
                    let table_full = g.faults_so_far > 0
                        && matches!(&result, Err(e) if e.kind() == ErrorKind::NoChannel);
                    assert!(
                        result.is_ok() || table_full,
                        "undisturbed set failed: {result:?}"
                    );
                }
            }
            2 => {
                let request = r.short_bytes();
                let (result, d) = g.with_chan(|c| c.rpc(&request));
                if !d.ran {
                    continue;
                }
                if let Err(e) = &result {
                    check_kind(e, &EXCHANGE_ERRORS);
                }
            }
            3 => {
                let text = String::from_utf8_lossy(&r.short_bytes()).into_owned();
                let (result, d) = g.with_chan(|c| c.log(&text));
                if !d.ran {
                    continue;
                }
                if let Err(e) = &result {
                    check_kind(e, &EXCHANGE_ERRORS);
                }
            }
            4 => g.close(),
            _ => {
                let _ = g.ensure_open();
            }
        }
    }
    g.close();
}

// ---------------------------------------------------------------------------------------
// request_builder

/// A key prefix spelling chosen by the input.
fn read_prefix(r: &mut Reader) -> &'static [u8] {
    match r.u8() % 4 {
        0 => b"",
        1 => b"guestinfo.",
        2 => b"GUESTINFO.",
        _ => b"GuestInfo.",
    }
}

/// Bytes from the input, optionally followed by a long run of one byte (requests at and
/// over the 64 KiB cap from a short input).
fn read_padded(r: &mut Reader) -> Vec<u8> {
    let mut v = r.short_bytes();
    let flags = r.u8();
    if flags & 1 != 0 {
        let n = usize::from(r.u16()) + usize::from(flags >> 1);
        let fill = r.u8();
        v.resize(v.len() + n, fill);
    }
    v
}

/// `request_builder`: arbitrary caller input on a well-behaved host. Input: flags (bit 0 no
/// HB, bit 1 no cookies, bit 2 a checkpoint every 3rd payload step), then operations:
/// tag % 5 = set / get / log / rpc / close.
pub fn run_request(data: &[u8]) {
    let mut r = Reader::new(data);
    let flags = r.u8();
    let config = ConfigSpec {
        flags: flags & 0x03,
        channels: 128,
        cpt_every: if flags & 0x04 != 0 { 3 } else { 0 },
        ..ConfigSpec::default()
    };
    let host = RefCell::new(Host::new(host_config(&config)));
    let mut g = GuestRun::new(&host, &config, None);
    for _ in 0..MAX_GUEST_OPS {
        if r.is_empty() {
            break;
        }
        match r.u8() % 5 {
            0 => {
                let key = [read_prefix(&mut r), &r.short_bytes()].concat();
                let value = read_padded(&mut r);
                let (result, d) = g.with_chan(|c| c.set_guestinfo(&key, &value));
                assert!(d.ran, "a well-behaved host refused a channel");
                let name = key_name(&key);
                let wire_len = name.map_or(0, |n| {
                    "info-set ".len() + GUESTINFO.len() + n.len() + 1 + value.len()
                });
                match (name, &result) {
                    (None, Err(e)) => check_kind(e, &[ErrorKind::InvalidInput]),
                    (Some(_), Err(e)) if value.is_empty() || value.contains(&0) => {
                        check_kind(e, &[ErrorKind::InvalidInput]);
                    }
                    (Some(_), Err(e)) if wire_len > MAX_GUEST_MESSAGE => {
                        check_kind(e, &[ErrorKind::TooLarge]);
                    }
                    (Some(n), Ok(())) => {
                        assert!(
                            !value.is_empty()
                                && !value.contains(&0)
                                && wire_len <= MAX_GUEST_MESSAGE
                        );
                        let full = [GUESTINFO, n].concat();
                        assert_eq!(
                            g.host.borrow().guestinfo().get(&full).map(Vec::as_slice),
                            Some(&value[..]),
                            "the host stored something else"
                        );
                        // Read it back under every spelling of the key (the bare name only
                        // when it does not itself start with the optional prefix).
                        let mut spellings = vec![full.clone(), [&b"GUESTINFO."[..], n].concat()];
                        if key_name(n) == Some(n) {
                            spellings.push(n.to_vec());
                        }
                        for spelling in spellings {
                            let (got, _) = g.with_chan(|c| c.get_guestinfo(&spelling));
                            assert_eq!(
                                got.ok().flatten().as_deref(),
                                Some(&value[..]),
                                "round trip"
                            );
                        }
                    }
                    (_, result) => panic!("set_guestinfo on a well-behaved host: {result:?}"),
                }
                if matches!(&result, Err(e) if matches!(e.kind(), ErrorKind::InvalidInput | ErrorKind::TooLarge))
                {
                    assert_eq!(d.calls, 0, "refused input still touched the backdoor");
                }
            }
            1 => {
                let key = [read_prefix(&mut r), &r.short_bytes()].concat();
                let (result, d) = g.with_chan(|c| c.get_guestinfo(&key));
                assert!(d.ran, "a well-behaved host refused a channel");
                match (key_name(&key), result) {
                    (None, Err(e)) => {
                        check_kind(&e, &[ErrorKind::InvalidInput]);
                        assert_eq!(d.calls, 0, "refused input still touched the backdoor");
                    }
                    (Some(n), Ok(got)) => {
                        let stored = g
                            .host
                            .borrow()
                            .guestinfo()
                            .get(&[GUESTINFO, n].concat())
                            .cloned();
                        assert_eq!(got, stored, "get disagrees with the store");
                    }
                    (_, result) => panic!("get_guestinfo on a well-behaved host: {result:?}"),
                }
            }
            2 => {
                let text = String::from_utf8_lossy(&read_padded(&mut r)).into_owned();
                let (result, d) = g.with_chan(|c| c.log(&text));
                assert!(d.ran, "a well-behaved host refused a channel");
                if "log ".len() + text.len() > MAX_GUEST_MESSAGE {
                    let e = result.expect_err("an over-long log line was accepted");
                    check_kind(&e, &[ErrorKind::TooLarge]);
                    assert_eq!(d.calls, 0, "refused input still touched the backdoor");
                } else {
                    match result {
                        Ok(()) => assert_eq!(
                            g.host.borrow().vmx_log().last().map(Vec::as_slice),
                            Some(text.as_bytes()),
                            "the VMX log holds something else than the line the library accepted"
                        ),
                        Err(e) => {
                            check_kind(&e, &[ErrorKind::InvalidInput]);
                            assert_eq!(d.calls, 0, "refused input still touched the backdoor");
                        }
                    }
                }
            }
            3 => {
                let request = read_padded(&mut r);
                let (result, d) = g.with_chan(|c| c.rpc(&request));
                assert!(d.ran, "a well-behaved host refused a channel");
                match result {
                    Err(e) if request.len() > MAX_GUEST_MESSAGE => {
                        check_kind(&e, &[ErrorKind::TooLarge]);
                        assert_eq!(d.calls, 0, "refused input still touched the backdoor");
                    }
                    // `info-set` of a key outside guestinfo is `0 Permission denied`.
                    Err(e) => {
                        check_kind(&e, &[ErrorKind::HostRefused, ErrorKind::PermissionDenied])
                    }
                    Ok(_) => assert!(request.len() <= MAX_GUEST_MESSAGE),
                }
            }
            _ => g.close(),
        }
    }
    g.close();
}
