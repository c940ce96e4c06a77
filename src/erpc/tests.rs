//! What needs the channel's internals. Every behaviour a user relies on is tested once, over
//! every transport (in memory and through the real instructions), in `tests/guest_channel.rs`.

use crate::sim::host::{Host, HostConfig};
use crate::RpciChannel;

#[test]
fn debug_output_never_contains_the_cookies() {
    let mut host = Host::new(HostConfig::default().seed(7));
    let rpci = RpciChannel::open(&mut host).unwrap();
    let text = format!("{rpci:?}");
    let (high, low) = rpci.cookies();
    assert!(high != 0 && low != 0);
    for cookie in [high, low] {
        assert!(!text.contains(&cookie.to_string()), "{text}");
        assert!(!text.contains(&format!("{cookie:x}")), "{text}");
        assert!(!text.contains(&format!("{cookie:X}")), "{text}");
    }
}

// The vsock route through the channel: every method written once on `send`, over a fake
// vsock host (`vsock::tests::Fake`: socket pairs served by scripts), with the in-memory host
// as the backdoor beside it.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::datamap;
use super::vsock::tests::{read_request, serving, Fake};
use super::vsock::{Backoff, Link};
use super::{Carrier, Switching};
use crate::{ErrorKind, Route};

/// A vsock host with a guestinfo store and a log, as far as these tests need one.
fn store_host(mut host: UnixStream) {
    let mut store = BTreeMap::<Vec<u8>, Vec<u8>>::new();
    while let Some((request, _)) = read_request(&mut host) {
        let text = String::from_utf8(request).unwrap();
        let reply = match text.split_once(' ') {
            Some(("info-get", key)) => match store.get(key.as_bytes()) {
                Some(v) => [b"1 ", &v[..]].concat(),
                None => b"0 No value found".to_vec(),
            },
            Some(("info-set", rest)) => {
                let (key, value) = rest.split_once(' ').unwrap();
                store.insert(key.into(), value.into());
                b"1 ".to_vec()
            }
            Some(("log", _)) => b"1 ".to_vec(),
            _ => b"0 Unknown command".to_vec(),
        };
        host.write_all(&datamap::reply(&reply)).unwrap();
    }
}

/// A channel over `fake`'s vsock, with `host` as its backdoor; a session (vsock, else the
/// backdoor) when `session`.
fn over_vsock<'h>(host: &'h mut Host, fake: &Fake, session: bool) -> RpciChannel<&'h mut Host> {
    let link = Link::open(Box::new(fake.clone()), false, Duration::from_secs(5)).unwrap();
    let switching = session.then(|| Switching {
        backoff: Backoff::new(),
        parked: None,
    });
    RpciChannel::with_carrier(host, Carrier::Vsock(Box::new(link)), switching)
}

#[test]
fn over_vsock_every_method_works_and_the_backdoor_is_not_touched() {
    let mut host = Host::new(HostConfig::default());
    let fake = Fake::default().then(Route::PrivilegedVsock, store_host);
    let mut chan = over_vsock(&mut host, &fake, false);
    assert_eq!(chan.route(), Route::PrivilegedVsock);
    chan.set_guestinfo(b"flag", b"yes").unwrap();
    assert_eq!(
        chan.get_guestinfo_bool(b"guestinfo.flag").unwrap(),
        Some(true)
    );
    assert_eq!(
        chan.get_guestinfo(b"missing").unwrap(),
        None,
        "not set is None"
    );
    chan.log("a line").unwrap();
    // This host knows no `tools.set.version`: its refusal comes back as the backdoor's would.
    let e = chan.report_agent().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::HostRefused, "{e}");
    chan.clear_guestinfo(b"flag").unwrap();
    assert_eq!(
        chan.get_decoded_guestinfo(b"flag").unwrap(),
        None,
        "cleared"
    );
    let e = chan.rpc(b"machine.id.get").unwrap_err();
    assert_eq!(
        (e.kind(), e.host_reply()),
        (ErrorKind::HostRefused, Some(&b"Unknown command"[..]))
    );
    let e = chan.rpc(b"").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(chan.is_open());
    chan.close().unwrap();
    assert_eq!(fake.connects(), 1, "one connection for everything");
    fake.join();
    assert_eq!(host.counters().backdoor_calls(), 0);
}

#[test]
fn over_vsock_the_reply_must_start_with_a_status_and_respect_the_cap() {
    let mut host = Host::new(HostConfig::default());
    for bad in [&b"x"[..], b"1", b"2 ok", b"10"] {
        let fake = Fake::default().then(Route::PrivilegedVsock, move |mut h: UnixStream| {
            read_request(&mut h).unwrap();
            h.write_all(&datamap::reply(bad)).unwrap();
        });
        let mut chan = over_vsock(&mut host, &fake, false);
        let e = chan.get_guestinfo(b"k").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol, "{bad:?}: {e}");
        drop(chan);
        fake.join();
    }
    // A refusal's text always comes through; a value over the cap does not.
    fn long(request: &[u8]) -> Vec<u8> {
        let fill = if request.ends_with(b"big") {
            b'v'
        } else {
            b'r'
        };
        let status = if fill == b'v' { b"1 " } else { b"0 " };
        [&status[..], &[fill; 1000]].concat()
    }
    let fake = Fake::default().then(Route::PrivilegedVsock, serving(long));
    let mut chan = over_vsock(&mut host, &fake, false);
    chan.set_max_reply_len(10);
    let e = chan.get_guestinfo(b"refused").unwrap_err();
    assert_eq!(
        (e.kind(), e.host_reply().map(<[u8]>::len)),
        (ErrorKind::HostRefused, Some(1000))
    );
    // The refusal left the connection usable; the value over the cap closes it.
    let e = chan.get_guestinfo(b"big").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}");
    drop(chan);
    fake.join();
}

#[test]
fn permission_denied_is_its_own_kind_and_says_what_to_do_on_the_route() {
    fn denied(_: &[u8]) -> Vec<u8> {
        b"0 Permission denied".to_vec()
    }
    let mut host = Host::new(HostConfig::default().deny_guestinfo());
    for (route, advice) in [
        (Route::UnprivilegedVsock, "CAP_NET_BIND_SERVICE"),
        (Route::PrivilegedVsock, "forbids it"),
    ] {
        let fake = Fake::default().then(route, serving(denied));
        let mut chan = over_vsock(&mut host, &fake, false);
        let e = chan.get_guestinfo(b"k").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
        assert_eq!(e.host_reply(), Some(&b"Permission denied"[..]));
        assert!(e.to_string().contains(advice), "{route}: {e}");
        let e = chan.set_guestinfo(b"k", b"v").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
        drop(chan);
        fake.join();
    }
    // The backdoor's refusal names the setting that reserves the command for vsock.
    let mut chan = RpciChannel::open(&mut host).unwrap();
    let e = chan.get_guestinfo(b"k").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(
        e.to_string().contains("guest_rpc.rpci.auth.cmd.info-get"),
        "{e}"
    );
}

#[test]
fn a_session_falls_back_to_the_backdoor_and_goes_back_to_vsock_later() {
    let mut host = Host::new(HostConfig::default().guestinfo("k", "by backdoor"));
    let hang_up = |mut h: UnixStream| {
        read_request(&mut h).unwrap();
    };
    fn by_vsock(_: &[u8]) -> Vec<u8> {
        b"1 by vsock".to_vec()
    }
    // Lost, and no new connection: the backdoor carries the request.
    let fake = Fake::default().then(Route::PrivilegedVsock, hang_up);
    let mut chan = over_vsock(&mut host, &fake, true);
    assert_eq!(
        chan.get_guestinfo(b"k").unwrap().as_deref(),
        Some(&b"by backdoor"[..])
    );
    assert_eq!(chan.route(), Route::Backdoor);
    fake.join();
    // Before the backoff has passed, vsock is not tried.
    let fake = fake.then(Route::PrivilegedVsock, serving(by_vsock));
    assert_eq!(
        chan.get_guestinfo(b"k").unwrap().as_deref(),
        Some(&b"by backdoor"[..])
    );
    assert_eq!(fake.connects(), 2, "the open and the one reconnect");
    // Then it is, and the session stays there; the backdoor channel is closed.
    chan.switching.as_mut().unwrap().backoff.expire();
    assert_eq!(
        chan.get_guestinfo(b"k").unwrap().as_deref(),
        Some(&b"by vsock"[..])
    );
    assert_eq!(chan.route(), Route::PrivilegedVsock);
    assert_eq!(chan.access().open_channels(), 0);
    drop(chan);
    fake.join();
    assert_eq!(host.open_channels(), 0);
    // A channel opened over vsock on purpose does not fall back.
    let fake = Fake::default().then(Route::PrivilegedVsock, hang_up);
    let mut chan = over_vsock(&mut host, &fake, false);
    let e = chan.get_guestinfo(b"k").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoChannel, "{e}");
    assert_eq!(chan.route(), Route::PrivilegedVsock);
    drop(chan);
    fake.join();
}

#[test]
fn a_session_whose_backdoor_fails_too_keeps_the_vsock_error() {
    let mut host = Host::new(HostConfig::default().mode(crate::sim::host::Mode::NotVmware));
    let fake = Fake::default();
    // Connected once (by the open below), then nothing answers.
    let fake = fake.then(Route::PrivilegedVsock, |mut h: UnixStream| {
        read_request(&mut h).unwrap();
    });
    let mut chan = over_vsock(&mut host, &fake, true);
    let e = chan.get_guestinfo(b"k").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoChannel, "{e}");
    assert!(e.to_string().contains("the fallback failed too"), "{e}");
    assert_eq!(
        chan.route(),
        Route::PrivilegedVsock,
        "vsock is tried again next"
    );
    drop(chan);
    fake.join();
}
