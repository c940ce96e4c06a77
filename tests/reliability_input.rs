//! Bad input from the caller, over every transport (in memory, and through the real
//! instructions under the simulator): refused with a typed error before anything is sent,
//! or sent and read back byte for byte where the bytes are legal.
//!
//! What is legal follows from the RPCI text format. `info-set guestinfo.KEY VALUE` ends the
//! key at the first space and takes the value as everything after that space up to the end
//! of the message, and the host reads every request only up to its first NUL. So:
//!
//! - a key must be non-empty after the optional `guestinfo.` prefix and must not contain a
//!   space or a NUL (either would end it early); the library also refuses the other ASCII
//!   whitespace (tab, newline, carriage return, form feed), which no VMX config key has;
//!   other bytes, non-UTF-8 included, go through as given;
//! - a value must not be empty (hosts do not store one) and may hold any byte but NUL:
//!   spaces (leading and trailing too), newlines, tabs, non-UTF-8 bytes, text that looks like
//!   a reply status (`1 `, `0 `, `No value found`);
//! - a `log` line must not contain NUL (the host would drop the rest of the line silently);
//! - a whole request may be at most 65,536 bytes (the host's `GUESTMSG_MAX_IN_SIZE`).

#![cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]

mod support;

use support::transport::Transport;
use vmw_backdoor::proto::{cmd, msg, MAX_GUEST_MESSAGE};
use vmw_backdoor::sim::{Host, HostConfig};
use vmw_backdoor::{BackdoorAccess, ErrorKind, RpciChannel, VmwError};

/// The calls a request makes: every backdoor call (by port or hypercall) but the probe's,
/// OPEN's and CLOSE's.
fn request_calls(host: &Host) -> u64 {
    let c = host.counters();
    let not_requests: u64 = c
        .lb_by_command
        .iter()
        .filter(|((command, sub), _)| {
            *command != cmd::MESSAGE || *sub == msg::OPEN || *sub == msg::CLOSE
        })
        .map(|(_, n)| n)
        .sum();
    c.backdoor_calls() - not_requests
}

const BAD_KEYS: [&[u8]; 16] = [
    b"",
    b"guestinfo.",
    b"GUESTINFO.",
    b"a b",
    b" a",
    b"a ",
    b"guestinfo. a",
    b"a\0b",
    b"\0",
    b"a\nb",
    b"a\n",
    b"a\r\nb",
    b"a\rb",
    b"a\tb",
    b"a\x0cb",
    b"guestinfo.a\0",
];

/// Every refusal the library makes on its own, each with the kind it must have.
fn refusals<A: BackdoorAccess>(
    c: &mut RpciChannel<A>,
) -> Vec<(String, Result<(), VmwError>, ErrorKind)> {
    let mut out = Vec::new();
    for key in BAD_KEYS {
        let k = key.escape_ascii();
        out.push((
            format!("get {k}"),
            c.get_guestinfo(key).map(drop),
            ErrorKind::InvalidInput,
        ));
        out.push((
            format!("set {k}"),
            c.set_guestinfo(key, b"v"),
            ErrorKind::InvalidInput,
        ));
    }
    let room = MAX_GUEST_MESSAGE - b"info-set guestinfo.k ".len();
    for len in [room + 1, MAX_GUEST_MESSAGE, MAX_GUEST_MESSAGE + 1, 1 << 20] {
        out.push((
            format!("set a {len}-byte value"),
            c.set_guestinfo(b"k", &vec![b'x'; len]),
            ErrorKind::TooLarge,
        ));
    }
    out.push((
        "set an empty value (hosts do not store one)".into(),
        c.set_guestinfo(b"k", b""),
        ErrorKind::InvalidInput,
    ));
    out.push((
        "set a value with NUL".into(),
        c.set_guestinfo(b"k", b"a\0b"),
        ErrorKind::InvalidInput,
    ));
    out.push((
        "set a value that is one NUL".into(),
        c.set_guestinfo(b"k", b"\0"),
        ErrorKind::InvalidInput,
    ));
    out.push((
        "log a line with NUL".into(),
        c.log("before\0after"),
        ErrorKind::InvalidInput,
    ));
    let long = "x".repeat(MAX_GUEST_MESSAGE);
    out.push((
        "log a line over the cap".into(),
        c.log(&long),
        ErrorKind::TooLarge,
    ));
    for len in [MAX_GUEST_MESSAGE + 1, 1 << 20] {
        out.push((
            format!("rpc of {len} bytes"),
            c.rpc(&vec![b'x'; len]).map(drop),
            ErrorKind::TooLarge,
        ));
    }
    out
}

#[test]
fn bad_keys_values_and_sizes_are_refused_before_the_backdoor_is_touched() {
    for t in Transport::library() {
        let host = t.run(HostConfig::default().guestinfo("k", "v"), |b| {
            let mut c = RpciChannel::open(b).unwrap();
            let refused = refusals(&mut c);
            for (what, result, kind) in &refused {
                let e = result.as_ref().expect_err(what);
                assert_eq!(e.kind(), *kind, "{what}: {e}");
            }
            assert_eq!(refused.len(), 2 * BAD_KEYS.len() + 4 + 3 + 2 + 2);
            // Refusals cost nothing, not even the channel: one good request, one exchange.
            assert_eq!(c.get_guestinfo(b"k").unwrap().as_deref(), Some(&b"v"[..]));
        });
        // SENDSIZE, rep outsb, RECVSIZE, rep insb, RECVSTATUS of the one good request.
        assert_eq!(request_calls(&host), 5);
        assert_eq!(host.counters().rpcs, 1);
        assert_eq!(host.guestinfo().len(), 1, "nothing was set");
        assert!(host.vmx_log().is_empty(), "nothing was logged");
    }
}

/// Legal but awkward values: each must come back exactly as set.
const VALUES: [&[u8]; 13] = [
    b" ",
    b"  leading and trailing  ",
    b"two words",
    b"line one\nline two\n",
    b"\r\n",
    b"tab\there",
    b"\xff\xfe\x80 not UTF-8 \xc3\x28",
    b"1 looks like success",
    b"0 looks like a refusal",
    b"No value found",
    b"guestinfo.k v",
    b"\x01\x02\x03\x7f",
    b"=",
];

#[test]
fn legal_awkward_keys_and_values_round_trip_byte_for_byte() {
    let all_bytes: Vec<u8> = (1..=255).collect();
    let keys: [&[u8]; 5] = [b"k", b"a.b-c_d", b"a=b", b"\xffkey\xfe", b"UPPER.lower"];
    for t in Transport::library() {
        let host = t.run(HostConfig::default(), |b| {
            let mut c = RpciChannel::open(b).unwrap();
            for key in keys {
                for value in VALUES.iter().copied().chain([&all_bytes[..]]) {
                    c.set_guestinfo(key, value).unwrap();
                    let back = c.get_guestinfo(key).unwrap();
                    assert_eq!(
                        back.as_deref(),
                        Some(value),
                        "{} = {}",
                        key.escape_ascii(),
                        value.escape_ascii()
                    );
                }
            }
            // The prefix is optional and matched in any case: these name one key.
            c.set_guestinfo(b"GuestInfo.same", b"1").unwrap();
            assert_eq!(
                c.get_guestinfo(b"same").unwrap().as_deref(),
                Some(&b"1"[..])
            );
            assert_eq!(
                c.get_guestinfo(b"guestinfo.same").unwrap().as_deref(),
                Some(&b"1"[..])
            );
            c.log("a log line\twith a tab, spaces  and \u{e9}").unwrap();
            c.log("").unwrap();
        });
        let store = host.guestinfo();
        assert_eq!(
            store.get(&b"guestinfo.\xffkey\xfe"[..]).map(Vec::as_slice),
            Some(&(1..=255).collect::<Vec<u8>>()[..]),
            "non-UTF-8 key, every byte but NUL as the value"
        );
        assert!(store.contains_key(&b"guestinfo.same"[..]));
        assert_eq!(
            host.vmx_log(),
            [
                "a log line\twith a tab, spaces  and \u{e9}"
                    .as_bytes()
                    .to_vec(),
                Vec::new()
            ]
        );
        assert_eq!(host.open_channels(), 0);
    }
}
