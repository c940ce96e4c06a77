//! Register-level tests of the host model: hand-built register sets, exact answers.

use super::*;
use crate::proto::{
    msg, pack, product, status, FLAG_COOKIE, MAX_GUEST_MESSAGE, MESSAGE_TYPE_SENDPAYLOAD,
    MESSAGE_TYPE_SENDSIZE, PROTO_RPCI, PROTO_TCLO,
};

const RPCI_COOKIE: u32 = PROTO_RPCI | FLAG_COOKIE;
/// Upper-half garbage: the host must decode only the low 32 bits.
const JUNK: u64 = 0xDEAD_BEEF_0000_0000;

/// The guest's view of an open channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Chan {
    id: u16,
    high: u32,
    low: u32,
}

fn st(bits: u16) -> u64 {
    u64::from(bits) << 16
}

fn lb_regs(command: u16) -> Regs {
    Regs {
        ax: MAGIC.into(),
        bx: 0x1111_1111,
        cx: command.into(),
        dx: LB_PORT.into(),
        si: 0x2222_2222,
        di: 0x3333_3333,
        bp: 0x4444_4444,
    }
}

/// One MESSAGE sub-command on `ch` with EBX = `bx`; returns the registers after.
fn call(host: &mut Host, ch: Chan, sub: u16, bx: u32) -> Regs {
    let mut r = Regs {
        ax: MAGIC.into(),
        bx: bx.into(),
        cx: pack(sub, cmd::MESSAGE),
        dx: pack(ch.id, LB_PORT),
        si: ch.high.into(),
        di: ch.low.into(),
        bp: 0x5555,
    };
    host.lb(&mut r);
    r
}

fn open_raw(host: &mut Host, request: u32) -> Regs {
    let mut r = Regs {
        ax: MAGIC.into(),
        bx: request.into(),
        cx: pack(msg::OPEN, cmd::MESSAGE),
        dx: LB_PORT.into(),
        ..Regs::default()
    };
    host.lb(&mut r);
    r
}

fn open(host: &mut Host, request: u32) -> Chan {
    let r = open_raw(host, request);
    assert_eq!(r.cx, st(status::SUCCESS), "OPEN failed: {r:?}");
    assert_eq!(lo16(r.dx), 0, "OPEN must leave lo16(EDX) zero");
    Chan {
        id: hi16(r.dx),
        high: lo32(r.si),
        low: lo32(r.di),
    }
}

/// `rep outsb` of `data` with the send layout (EDI = low, EBP = high).
fn hb_out(host: &mut Host, ch: Chan, data: &[u8]) -> Regs {
    hb_out_raw(host, ch, data, data.len() as u64, 0x0001_0000)
}

fn hb_out_raw(host: &mut Host, ch: Chan, data: &[u8], count: u64, bx: u32) -> Regs {
    let mut r = Regs {
        ax: MAGIC.into(),
        bx: bx.into(),
        cx: count,
        dx: pack(ch.id, HB_PORT),
        si: 0x7000_0000,
        di: ch.low.into(),
        bp: ch.high.into(),
    };
    host.rep_outsb(&mut r, data);
    r
}

/// `rep insb` of `room` bytes with the receive layout (ESI = high, EBP = low).
fn hb_in(host: &mut Host, ch: Chan, room: u64) -> (Regs, Vec<u8>) {
    let mut r = Regs {
        ax: MAGIC.into(),
        bx: 0x0001_0000,
        cx: room,
        dx: pack(ch.id, HB_PORT),
        si: ch.high.into(),
        di: 0x7000_0000,
        bp: ch.low.into(),
    };
    let bytes = host.rep_insb(&mut r);
    (r, bytes)
}

fn le_word(bytes: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    for (d, s) in w.iter_mut().zip(bytes) {
        *d = *s;
    }
    u32::from_le_bytes(w)
}

/// Sends `message` the way open-vm-tools does: SENDSIZE, then HB or 4-byte SENDPAYLOADs,
/// restarting from SENDSIZE on CPT (bounded). Returns the last status seen.
fn send(host: &mut Host, ch: Chan, message: &[u8], use_hb: bool) -> u16 {
    'retry: for _ in 0..64 {
        let r = call(host, ch, msg::SENDSIZE, message.len() as u32);
        let s = hi16(r.cx);
        if s & status::SUCCESS == 0 {
            return s;
        }
        if message.is_empty() {
            return s;
        }
        if use_hb {
            let r = hb_out(host, ch, message);
            let s = hi16(r.bx);
            if s & status::CPT != 0 {
                continue 'retry;
            }
            return s;
        }
        for chunk in message.chunks(4) {
            let r = call(host, ch, msg::SENDPAYLOAD, le_word(chunk));
            let s = hi16(r.cx);
            if s & status::CPT != 0 {
                continue 'retry;
            }
            if s & status::SUCCESS == 0 {
                return s;
            }
        }
        return status::SUCCESS;
    }
    panic!("send never got through");
}

/// Receives a reply the way open-vm-tools does, restarting from RECVSIZE on CPT (bounded).
fn recv(host: &mut Host, ch: Chan, use_hb: bool) -> Result<Option<Vec<u8>>, u16> {
    'retry: for _ in 0..64 {
        let r = call(host, ch, msg::RECVSIZE, 0);
        let s = hi16(r.cx);
        if s & status::SUCCESS == 0 {
            return Err(s);
        }
        if s & status::DORECV == 0 {
            return Ok(None);
        }
        assert_eq!(hi16(r.dx), MESSAGE_TYPE_SENDSIZE);
        let len = lo32(r.bx) as usize;
        let mut out = Vec::new();
        if use_hb && len > 0 {
            let (r, bytes) = hb_in(host, ch, len as u64);
            let s = hi16(r.bx);
            if s & status::CPT != 0 {
                continue 'retry;
            }
            if s & status::SUCCESS == 0 {
                return Err(s);
            }
            out = bytes;
        } else {
            while out.len() < len {
                let r = call(host, ch, msg::RECVPAYLOAD, 1);
                let s = hi16(r.cx);
                if s & status::CPT != 0 {
                    continue 'retry;
                }
                if s & status::SUCCESS == 0 {
                    return Err(s);
                }
                assert_eq!(hi16(r.dx), MESSAGE_TYPE_SENDPAYLOAD);
                let take = (len - out.len()).min(4);
                out.extend_from_slice(&lo32(r.bx).to_le_bytes()[..take]);
            }
        }
        let r = call(host, ch, msg::RECVSTATUS, 1);
        let s = hi16(r.cx);
        if s & status::CPT != 0 {
            continue 'retry;
        }
        if s & status::SUCCESS == 0 {
            return Err(s);
        }
        return Ok(Some(out));
    }
    panic!("receive never got through");
}

/// One RPCI request and its reply.
fn rpc(host: &mut Host, ch: Chan, request: &[u8], use_hb: bool) -> Vec<u8> {
    let s = send(host, ch, request, use_hb);
    assert_ne!(s & status::SUCCESS, 0, "send failed with status {s:#x}");
    recv(host, ch, use_hb)
        .expect("receive failed")
        .expect("no reply pending")
}

// ---------------------------------------------------------------------------------------
// Low-bandwidth commands

#[test]
fn getversion_reports_version_magic_and_product() {
    for (config, expected) in [
        (HostConfig::default(), product::ESX),
        (
            HostConfig::default().product(crate::Product::Workstation),
            product::WORKSTATION,
        ),
    ] {
        let mut host = Host::new(config);
        let mut r = lb_regs(cmd::GETVERSION);
        r.ax |= JUNK;
        r.cx |= 0xFFFF_0000 | JUNK;
        r.dx |= JUNK;
        host.lb(&mut r);
        assert_eq!(r.ax, 6);
        assert_eq!(r.bx, u64::from(MAGIC));
        assert_eq!(r.cx, u64::from(expected));
        assert_eq!(
            (r.dx, r.si, r.di, r.bp),
            (0x5658 | JUNK, 0x2222_2222, 0x3333_3333, 0x4444_4444)
        );
    }
}

#[test]
fn no_backdoor_answers_all_ones_in_eax_only() {
    let before = lb_regs(cmd::GETVERSION);
    let cases: [(HostConfig, Regs); 4] = [
        (
            HostConfig::default(),
            Regs {
                ax: 0x1234,
                ..before
            },
        ),
        (
            HostConfig::default(),
            Regs {
                dx: 0x5659,
                ..before
            },
        ),
        (
            HostConfig::default(),
            Regs {
                cx: 0xABCD,
                ..before
            },
        ),
        (HostConfig::default().mode(Mode::NotVmware), before),
    ];
    for (config, regs) in cases {
        let mut host = Host::new(config);
        let mut r = regs;
        host.lb(&mut r);
        assert_eq!(
            r,
            Regs {
                ax: 0xFFFF_FFFF,
                ..regs
            }
        );
        assert_eq!(host.counters().lb_calls, 1);
    }
    let mut host = Host::new(HostConfig::default().mode(Mode::NotVmware));
    let mut r = Regs {
        cx: 0x40,
        ..lb_regs(0)
    };
    assert_eq!(host.rep_insb(&mut r), vec![0xFF; 0x40]);
    assert_eq!(
        r,
        Regs {
            cx: 0x40,
            ..lb_regs(0)
        }
    );
    let mut r = Regs {
        cx: u64::MAX,
        ..lb_regs(0)
    };
    assert_eq!(
        host.rep_insb(&mut r).len(),
        1 << 20,
        "no-device fill is bounded"
    );
    let mut r = lb_regs(0);
    host.rep_outsb(&mut r, b"discarded");
    assert_eq!(r, lb_regs(0));
    assert_eq!(
        (host.counters().hb_in_calls, host.counters().hb_out_calls),
        (2, 1)
    );
    assert_eq!(host.mode(), Mode::NotVmware);
}

#[test]
fn restricted_backdoor_host_answers_like_vmware() {
    let mut host = Host::new(HostConfig::default().mode(Mode::RestrictBackdoor));
    let mut r = lb_regs(cmd::GETVERSION);
    host.lb(&mut r);
    assert_eq!((r.ax, r.bx, r.cx), (6, u64::from(MAGIC), 2));
    let ch = open(&mut host, RPCI_COOKIE);
    assert_eq!(rpc(&mut host, ch, b"machine.id.get", true), b"1 ");
}

#[test]
fn detection_commands_answer_per_config() {
    let uuid = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
    let mut host = Host::new(
        HostConfig::default()
            .hw_version(19)
            .mhz(3_000)
            .bios_uuid(uuid)
            .time(0x1_2345_6789, 250_000)
            .max_time_lag(7)
            .hz(0x2_8000_0000, 100_000_000)
            .vcpu_info(0x8),
    );
    let run = |host: &mut Host, c: u16| {
        let mut r = lb_regs(c);
        host.lb(&mut r);
        r
    };
    let r = run(&mut host, cmd::GETHWVERSION);
    assert_eq!(
        (r.ax, r.bx, r.cx),
        (19, u64::from(MAGIC), u64::from(cmd::GETHWVERSION))
    );
    assert_eq!(run(&mut host, cmd::GETMHZ).ax, 3_000);
    let r = run(&mut host, cmd::GETBIOSUUID);
    assert_eq!(
        (r.ax, r.bx, r.cx, r.dx),
        (0x0403_0201, 0x0807_0605, 0x0C0B_0A09, 0x100F_0E0D)
    );
    let r = run(&mut host, cmd::GETTIME);
    assert_eq!(
        (r.ax, r.bx, r.cx),
        (0xFFFF_FFFF, 250_000, 7),
        "seconds beyond 32 bits"
    );
    let r = run(&mut host, cmd::GETTIMEFULL);
    assert_eq!(r.ax, u64::from(MAGIC), "GETTIMEFULL leaves EAX = magic");
    assert_eq!((r.si, r.dx, r.bx, r.cx), (1, 0x2345_6789, 250_000, 7));
    let r = run(&mut host, cmd::GETHZ);
    assert_eq!((r.ax, r.bx, r.cx), (0x8000_0000, 2, 100_000_000));
    assert_eq!(run(&mut host, cmd::GET_VCPU_INFO).ax, 0x8);

    let mut host = Host::new(HostConfig::default().time(1_000, 5));
    let r = run(&mut host, cmd::GETTIME);
    assert_eq!((r.ax, r.bx, r.cx), (1_000, 5, 0));

    let mut host = Host::new(HostConfig::default().no_gethz().no_vcpu_info());
    let r = run(&mut host, cmd::GETHZ);
    assert_eq!(
        r,
        Regs {
            bx: 0xFFFF_FFFF,
            ..lb_regs(cmd::GETHZ)
        }
    );
    assert_eq!(run(&mut host, cmd::GET_VCPU_INFO).ax, 0x8000_0000);
    assert_eq!(host.counters().lb_calls_for(cmd::GETHZ, 0), 1);
}

#[test]
fn system_clock_reads_a_plausible_time() {
    let mut host = Host::new(HostConfig::default().system_clock());
    let mut r = lb_regs(cmd::GETTIMEFULL);
    host.lb(&mut r);
    let secs = (r.si << 32) | r.dx;
    assert!(secs > 1_600_000_000, "{secs}");
    assert!(r.bx < 1_000_000);
}

// ---------------------------------------------------------------------------------------
// OPEN and cookies

#[test]
fn open_returns_id_and_cookies_in_exact_registers() {
    let mut host = Host::new(HostConfig::default());
    let a = open(&mut host, RPCI_COOKIE);
    let b = open(&mut host, PROTO_TCLO | FLAG_COOKIE);
    assert_eq!((a.id, b.id), (0, 1));
    assert_ne!((a.high, a.low), (0, 0));
    assert_ne!((a.high, a.low), (b.high, b.low));
    let c = open(&mut host, PROTO_RPCI);
    assert_eq!(
        (c.high, c.low),
        (0, 0),
        "cookie-less OPEN returns zero cookies"
    );
    assert_eq!(host.open_channels(), 3);

    // Same seed, same cookies; another seed, others.
    let mut again = Host::new(HostConfig::default());
    assert_eq!(open(&mut again, RPCI_COOKIE), a);
    let mut other = Host::new(HostConfig::default().seed(99));
    assert_ne!(open(&mut other, RPCI_COOKIE), a);
}

#[test]
fn open_refuses_unknown_protocols_and_cookieless_hosts_refuse_the_flag() {
    let mut host = Host::new(HostConfig::default());
    for bad in [0, 0x1234_5678, FLAG_COOKIE, PROTO_RPCI | 1] {
        let r = open_raw(&mut host, bad);
        assert_eq!(r.cx, 0, "{bad:#x}");
        assert_eq!(r.dx, u64::from(LB_PORT), "a failed OPEN leaves EDX");
    }
    let mut old = Host::new(HostConfig::default().no_cookies());
    assert_eq!(open_raw(&mut old, RPCI_COOKIE).cx, 0);
    let ch = open(&mut old, PROTO_RPCI);
    assert_eq!((ch.high, ch.low), (0, 0));
    // A cookie-less channel ignores whatever ESI/EDI hold.
    let junk = Chan {
        high: 0xAAAA_5555,
        low: 0x1234,
        ..ch
    };
    assert_eq!(rpc(&mut old, junk, b"machine.id.get", false), b"1 ");
    assert_eq!(old.counters().channels_opened, 1);
}

#[test]
fn wrong_cookie_or_channel_fails_every_step_and_breaks_nothing() {
    let mut host = Host::new(HostConfig::default().guestinfo("k", "value"));
    let ch = open(&mut host, RPCI_COOKIE);
    let bad_cookies = [
        Chan {
            low: ch.low ^ 1,
            ..ch
        },
        Chan {
            high: ch.high ^ 0x8000_0000,
            ..ch
        },
        Chan {
            high: ch.low,
            low: ch.high,
            ..ch
        },
        Chan {
            high: 0,
            low: 0,
            ..ch
        },
    ];
    let bad_ids = [
        Chan { id: 1, ..ch },
        Chan { id: 127, ..ch },
        Chan { id: 0xFFFF, ..ch },
    ];
    for bad in bad_cookies.iter().chain(&bad_ids) {
        for sub in [
            msg::SENDSIZE,
            msg::SENDPAYLOAD,
            msg::RECVSIZE,
            msg::RECVPAYLOAD,
            msg::RECVSTATUS,
            msg::CLOSE,
        ] {
            let r = call(&mut host, *bad, sub, 4);
            assert_eq!(r.cx, 0, "sub {sub} on {bad:?}");
            assert_eq!(r.dx, pack(bad.id, LB_PORT), "EDX untouched on failure");
        }
        assert_eq!(hb_out(&mut host, *bad, b"abcd").bx, 0);
        let (r, bytes) = hb_in(&mut host, *bad, 100);
        assert_eq!((r.bx, bytes.len()), (0, 0));
    }
    // Upper halves of the cookie registers are ignored.
    let mut r = Regs {
        ax: u64::from(MAGIC) | JUNK,
        bx: 3 | JUNK,
        cx: pack(msg::SENDSIZE, cmd::MESSAGE) | JUNK,
        dx: pack(ch.id, LB_PORT) | JUNK,
        si: u64::from(ch.high) | JUNK,
        di: u64::from(ch.low) | JUNK,
        bp: 0,
    };
    host.lb(&mut r);
    assert_eq!(r.cx, st(status::SUCCESS | status::HB));
    // The channel still works after all that.
    assert_eq!(
        rpc(&mut host, ch, b"info-get guestinfo.k", false),
        b"1 value"
    );
    assert_eq!(host.open_channels(), 1);
}

#[test]
fn unknown_subcommands_fail_without_side_effects() {
    let mut host = Host::new(HostConfig::default());
    let ch = open(&mut host, RPCI_COOKIE);
    for sub in [7, 8, 0x00FF, 0xFFFF] {
        let r = call(&mut host, ch, sub, 1);
        let mut expected = call(
            &mut Host::new(HostConfig::default().channels(0)),
            ch,
            sub,
            1,
        );
        expected.cx = 0;
        assert_eq!(r, expected, "sub-command {sub}");
        assert_eq!(host.counters().lb_calls_for(cmd::MESSAGE, sub), 1);
    }
    assert_eq!(host.open_channels(), 1);
}

// ---------------------------------------------------------------------------------------
// Message exchanges

#[test]
fn lb_exchange_exact_registers_for_every_length_mod_4() {
    for hb_offered in [true, false] {
        for len in 0..=9usize {
            let value: Vec<u8> = (0..len as u8).map(|i| 0xA0 + i).collect();
            let config = if hb_offered {
                HostConfig::default()
            } else {
                HostConfig::default().no_hb()
            };
            let mut host = Host::new(config.guestinfo("v", &value));
            let ch = open(&mut host, RPCI_COOKIE);
            let hb_bit = if hb_offered { status::HB } else { 0 };
            let request = b"info-get guestinfo.v";

            let r = call(&mut host, ch, msg::SENDSIZE, request.len() as u32);
            assert_eq!(r.cx, st(status::SUCCESS | hb_bit));
            for chunk in request.chunks(4) {
                let r = call(&mut host, ch, msg::SENDPAYLOAD, le_word(chunk));
                assert_eq!(r.cx, st(status::SUCCESS));
            }
            let r = call(&mut host, ch, msg::SENDPAYLOAD, 0x4141_4141);
            assert_eq!(r.cx, 0, "a payload beyond the announced length fails");

            let reply = [b"1 ".as_slice(), &value].concat();
            let r = call(&mut host, ch, msg::RECVSIZE, 0);
            assert_eq!(r.cx, st(status::SUCCESS | status::DORECV | hb_bit));
            assert_eq!(r.bx, reply.len() as u64);
            assert_eq!(r.dx, 0x0001_0000);
            for chunk in reply.chunks(4) {
                let r = call(&mut host, ch, msg::RECVPAYLOAD, 1);
                assert_eq!(r.cx, st(status::SUCCESS));
                assert_eq!(r.dx, 0x0002_0000);
                assert_eq!(
                    r.bx,
                    u64::from(le_word(chunk)),
                    "upper bytes of a short chunk are 0"
                );
            }
            assert_eq!(
                call(&mut host, ch, msg::RECVPAYLOAD, 1).cx,
                0,
                "nothing left"
            );
            assert_eq!(
                call(&mut host, ch, msg::RECVSTATUS, 1).cx,
                st(status::SUCCESS)
            );
            let r = call(&mut host, ch, msg::RECVSIZE, 0);
            assert_eq!((r.cx, r.bx), (st(status::SUCCESS), 0), "reply consumed");
            assert_eq!(call(&mut host, ch, msg::CLOSE, 0).cx, st(status::SUCCESS));
            let c = host.counters();
            assert_eq!(
                (c.bytes_to_host, c.bytes_to_guest),
                (request.len() as u64, reply.len() as u64)
            );
            assert_eq!((c.rpcs, c.channels_opened, c.channels_closed), (1, 1, 1));
        }
    }
}

#[test]
fn hb_exchange_exact_registers_and_recvstatus_still_needed() {
    for len in [1usize, 2, 3, 4, 5, 4099] {
        let value = vec![b'z'; len];
        let mut host = Host::new(HostConfig::default().guestinfo("guestinfo.v", &value));
        let ch = open(&mut host, RPCI_COOKIE);
        let request = b"info-get guestinfo.v\0";
        let r = call(&mut host, ch, msg::SENDSIZE, request.len() as u32);
        assert_eq!(r.cx, st(status::SUCCESS | status::HB));
        let r = hb_out(&mut host, ch, request);
        assert_eq!(r.bx, 0x0001_0000);
        let r = call(&mut host, ch, msg::RECVSIZE, 0);
        assert_eq!(r.cx, st(status::SUCCESS | status::DORECV | status::HB));
        let n = lo32(r.bx) as u64;
        assert_eq!(n, 2 + len as u64);
        let (r, bytes) = hb_in(&mut host, ch, n);
        assert_eq!(r.bx, 0x0001_0000);
        assert_eq!(bytes, [b"1 ".as_slice(), &value].concat());
        // Not acknowledged yet: RECVSIZE announces it again.
        let r = call(&mut host, ch, msg::RECVSIZE, 0);
        assert_eq!((r.cx & st(status::DORECV), r.bx), (st(status::DORECV), n));
        let (_, again) = hb_in(&mut host, ch, n + 10);
        assert_eq!(again.len() as u64, n, "never more than the reply");
        assert_eq!(
            call(&mut host, ch, msg::RECVSTATUS, 1).cx,
            st(status::SUCCESS)
        );
        assert_eq!(
            call(&mut host, ch, msg::RECVSIZE, 0).cx,
            st(status::SUCCESS)
        );
        assert_eq!(host.counters().bytes_to_guest, 2 * n);
    }
}

#[test]
fn hb_transfers_check_cookie_layout_length_and_ebx() {
    let mut host = Host::new(HostConfig::default().guestinfo("a", "b"));
    let ch = open(&mut host, RPCI_COOKIE);
    let request = b"info-get guestinfo.a";
    let swapped = Chan {
        high: ch.low,
        low: ch.high,
        ..ch
    };
    call(&mut host, ch, msg::SENDSIZE, request.len() as u32);
    assert_eq!(
        hb_out(&mut host, swapped, request).bx,
        0,
        "LB cookie order on HB out"
    );
    assert_eq!(
        hb_out_raw(&mut host, ch, request, 19, 0x1_0000).bx,
        0,
        "count below length"
    );
    assert_eq!(
        hb_out_raw(&mut host, ch, request, 21, 0x1_0000).bx,
        0,
        "count above length"
    );
    assert_eq!(
        hb_out_raw(&mut host, ch, &request[..10], 20, 0x1_0000).bx,
        0,
        "short data"
    );
    assert_eq!(
        hb_out_raw(&mut host, ch, request, 20, 0x1_0001).bx,
        0,
        "HB command 1"
    );
    assert_eq!(
        hb_out_raw(&mut host, ch, request, 20, 0).bx,
        0,
        "guest status 0"
    );
    assert_eq!(host.counters().rpcs, 0);
    // Guest status is masked to its success bit.
    assert_eq!(
        hb_out_raw(&mut host, ch, request, 20, 0xFFFF_0000).bx,
        0x1_0000
    );
    assert_eq!(host.counters().rpcs, 1);

    call(&mut host, ch, msg::RECVSIZE, 0);
    let swapped_in = Chan {
        high: ch.low,
        low: ch.high,
        ..ch
    };
    let (r, bytes) = hb_in(&mut host, swapped_in, 3);
    assert_eq!((r.bx, bytes.len()), (0, 0), "LB cookie order on HB in");
    let (r, bytes) = hb_in(&mut host, ch, 2);
    assert_eq!(
        (r.bx, bytes.len()),
        (0, 0),
        "RCX smaller than the reply fails"
    );
    let (r, bytes) = hb_in(&mut host, ch, 3);
    assert_eq!((r.bx, bytes), (0x1_0000, b"1 b".to_vec()));
    let (r, _) = hb_in(&mut host, ch, 3);
    assert_eq!(r.bx, 0, "a second HB in without RECVSIZE fails");
}

#[test]
fn host_without_hb_refuses_the_hb_port_but_serves_lb() {
    let mut host = Host::new(HostConfig::default().no_hb().guestinfo("a", "b"));
    let ch = open(&mut host, RPCI_COOKIE);
    let request = b"info-get guestinfo.a";
    assert_eq!(
        call(&mut host, ch, msg::SENDSIZE, 20).cx,
        st(status::SUCCESS)
    );
    let mut r = Regs {
        ax: MAGIC.into(),
        bx: 0x1_0000,
        cx: 20,
        dx: pack(ch.id, HB_PORT),
        si: 0x1000,
        di: ch.low.into(),
        bp: ch.high.into(),
    };
    host.rep_outsb(&mut r, request);
    assert_eq!(r.bx, 0);
    assert_eq!(rpc(&mut host, ch, request, false), b"1 b");
    send(&mut host, ch, request, false);
    let r = call(&mut host, ch, msg::RECVSIZE, 0);
    assert_eq!(r.cx, st(status::SUCCESS | status::DORECV));
    let (r, bytes) = hb_in(&mut host, ch, 3);
    assert_eq!((r.bx, bytes.len()), (0, 0));
}

#[test]
fn steps_out_of_order_fail_and_leave_the_channel_usable() {
    let mut host = Host::new(HostConfig::default().guestinfo("a", "b"));
    let ch = open(&mut host, RPCI_COOKIE);
    assert_eq!(
        call(&mut host, ch, msg::SENDPAYLOAD, 0x41).cx,
        0,
        "payload before SENDSIZE"
    );
    assert_eq!(
        hb_out(&mut host, ch, b"abcd").bx,
        0,
        "HB out before SENDSIZE"
    );
    assert_eq!(
        call(&mut host, ch, msg::RECVPAYLOAD, 1).cx,
        0,
        "RECVPAYLOAD before RECVSIZE"
    );
    assert_eq!(
        call(&mut host, ch, msg::RECVSTATUS, 1).cx,
        0,
        "RECVSTATUS with nothing"
    );
    assert_eq!(hb_in(&mut host, ch, 16).0.bx, 0, "HB in with nothing");
    // Half a send, then a receive: out of order.
    call(&mut host, ch, msg::SENDSIZE, 8);
    call(&mut host, ch, msg::SENDPAYLOAD, 0x6F66_6E69);
    assert_eq!(call(&mut host, ch, msg::RECVSIZE, 0).cx, 0);
    assert_eq!(
        hb_out(&mut host, ch, b"abcdefgh").bx,
        0,
        "HB out after a SENDPAYLOAD"
    );
    // Reply pending but not announced: RECVSTATUS and RECVPAYLOAD fail.
    assert_eq!(rpc(&mut host, ch, b"info-get guestinfo.a", false), b"1 b");
    send(&mut host, ch, b"info-get guestinfo.a", false);
    assert_eq!(call(&mut host, ch, msg::RECVPAYLOAD, 1).cx, 0);
    assert_eq!(call(&mut host, ch, msg::RECVSTATUS, 1).cx, 0);
    assert_eq!(recv(&mut host, ch, false), Ok(Some(b"1 b".to_vec())));
    assert_eq!(host.counters().rpcs, 2, "the half send was never executed");
}

#[test]
fn oversize_messages_are_refused_and_the_cap_itself_is_accepted() {
    let mut host = Host::new(HostConfig::default());
    let ch = open(&mut host, RPCI_COOKIE);
    for len in [MAX_GUEST_MESSAGE as u32 + 1, 0x7FFF_FFFF, u32::MAX] {
        assert_eq!(call(&mut host, ch, msg::SENDSIZE, len).cx, 0, "{len}");
    }
    let data = vec![b'a'; MAX_GUEST_MESSAGE + 1];
    call(&mut host, ch, msg::SENDSIZE, MAX_GUEST_MESSAGE as u32 + 1);
    assert_eq!(hb_out(&mut host, ch, &data).bx, 0);
    let mut request = b"log ".to_vec();
    request.resize(MAX_GUEST_MESSAGE, b'x');
    assert_eq!(rpc(&mut host, ch, &request, true), b"1 ");
    assert_eq!(rpc(&mut host, ch, &request, false), b"1 ");
    assert_eq!(host.vmx_log().len(), 2);
    assert_eq!(host.vmx_log()[0].len(), MAX_GUEST_MESSAGE - 4);
}

#[test]
fn new_send_drops_an_unacknowledged_reply() {
    // The published 0.2.4 crate: SENDSIZE, HB out, RECVSIZE, HB in, never RECVSTATUS.
    let mut host = Host::new(
        HostConfig::default()
            .guestinfo("a", "1")
            .guestinfo("b", "22"),
    );
    let ch = open(&mut host, RPCI_COOKIE);
    for (req, want) in [
        (&b"info-get guestinfo.a\0"[..], &b"1 1"[..]),
        (b"info-get guestinfo.b\0", b"1 22"),
    ] {
        assert_eq!(
            call(&mut host, ch, msg::SENDSIZE, req.len() as u32).cx & st(1),
            st(1)
        );
        assert_eq!(hb_out(&mut host, ch, req).bx, 0x1_0000);
        let n = call(&mut host, ch, msg::RECVSIZE, 0).bx;
        assert_eq!(hb_in(&mut host, ch, n).1, want);
    }
    // Even a reply never fetched at all is dropped by the next send.
    send(&mut host, ch, b"info-get guestinfo.a", true);
    assert_eq!(rpc(&mut host, ch, b"info-get guestinfo.b", true), b"1 22");
    assert_eq!(call(&mut host, ch, msg::CLOSE, 0).cx, st(1));
}

#[test]
fn a_one_mib_reply_is_served_over_hb_and_lb() {
    let value: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut host = Host::new(HostConfig::default().guestinfo("big", &value));
    let ch = open(&mut host, RPCI_COOKIE);
    let expected = [b"1 ".as_slice(), &value].concat();
    assert_eq!(
        rpc(&mut host, ch, b"info-get guestinfo.big", true),
        expected
    );
    assert_eq!(
        rpc(&mut host, ch, b"info-get guestinfo.big", false),
        expected
    );
    assert_eq!(host.counters().bytes_to_guest, 2 * expected.len() as u64);
}

#[test]
fn close_frees_the_id_and_counts() {
    let mut host = Host::new(HostConfig::default());
    let a = open(&mut host, RPCI_COOKIE);
    let b = open(&mut host, RPCI_COOKIE);
    let r = call(&mut host, a, msg::CLOSE, 0);
    assert_eq!(r.cx, st(status::SUCCESS));
    assert_eq!(lo16(r.cx), 0);
    assert_eq!(
        call(&mut host, a, msg::CLOSE, 0).cx,
        0,
        "closing twice fails"
    );
    assert_eq!(
        call(&mut host, a, msg::SENDSIZE, 1).cx,
        0,
        "a closed id is dead"
    );
    let c = open(&mut host, RPCI_COOKIE);
    assert_eq!(c.id, a.id, "the lowest free id is reused");
    assert_ne!((c.high, c.low), (a.high, a.low), "with fresh cookies");
    assert_eq!(
        call(&mut host, a, msg::SENDSIZE, 1).cx,
        0,
        "old cookies do not open the new channel"
    );
    assert_eq!(host.open_channels(), 2);
    let _ = b;
    let k = host.counters();
    assert_eq!(
        (k.channels_opened, k.channels_closed, k.channels_open()),
        (3, 1, 2)
    );
}

#[test]
fn channel_limit_8_and_128() {
    for limit in [8usize, 128] {
        let config = if limit == 128 {
            HostConfig::default()
        } else {
            HostConfig::default().channels(8)
        };
        let mut host = Host::new(config);
        let chans: Vec<Chan> = (0..limit).map(|_| open(&mut host, RPCI_COOKIE)).collect();
        assert_eq!(chans.last().map(|c| usize::from(c.id)), Some(limit - 1));
        assert_eq!(
            open_raw(&mut host, RPCI_COOKIE).cx,
            0,
            "channel {} of {limit}",
            limit + 1
        );
        assert_eq!(open_raw(&mut host, PROTO_RPCI).cx, 0);
        assert_eq!(host.open_channels(), limit);
        call(&mut host, chans[3], msg::CLOSE, 0);
        assert_eq!(open(&mut host, PROTO_TCLO).id, 3);
        assert_eq!(open_raw(&mut host, RPCI_COOKIE).cx, 0);
    }
    let mut none = Host::new(HostConfig::default().channels(0));
    assert_eq!(open_raw(&mut none, PROTO_RPCI).cx, 0);
}

#[test]
fn guest_status_is_masked_to_its_success_bit() {
    let mut host = Host::new(HostConfig::default().guestinfo("a", "abcdef"));
    let ch = open(&mut host, RPCI_COOKIE);
    send(&mut host, ch, b"info-get guestinfo.a", false);
    call(&mut host, ch, msg::RECVSIZE, 0);
    let r = call(&mut host, ch, msg::RECVPAYLOAD, 0xFFFF_FFFF);
    assert_eq!(
        (r.cx, r.bx),
        (st(1), u64::from(u32::from_le_bytes(*b"1 ab")))
    );
    // Bit 0 clear: the guest reports a failed reception; the reply is dropped.
    let r = call(&mut host, ch, msg::RECVPAYLOAD, 0xFFFF_FFFE);
    assert_eq!((r.cx, r.bx), (st(1), 0));
    assert_eq!(
        call(&mut host, ch, msg::RECVSIZE, 0).cx,
        st(1),
        "nothing pending any more"
    );
    // RECVSTATUS 0 drops the reply as well.
    send(&mut host, ch, b"info-get guestinfo.a", false);
    call(&mut host, ch, msg::RECVSIZE, 0);
    assert_eq!(call(&mut host, ch, msg::RECVSTATUS, 0).cx, st(1));
    assert_eq!(call(&mut host, ch, msg::RECVSIZE, 0).cx, st(1));
}

// ---------------------------------------------------------------------------------------
// Checkpoints and faults

#[test]
fn periodic_checkpoints_cut_and_guests_that_retry_get_through() {
    for n in 1..=6 {
        for use_hb in [false, true] {
            let mut host = Host::new(
                HostConfig::default()
                    .cpt_every(n)
                    .guestinfo("a", "0123456789"),
            );
            let ch = open(&mut host, RPCI_COOKIE);
            for i in 0..5 {
                let set = format!("info-set guestinfo.k{i} some value {i}");
                assert_eq!(rpc(&mut host, ch, set.as_bytes(), use_hb), b"1 ");
                assert_eq!(
                    rpc(&mut host, ch, b"info-get guestinfo.a", use_hb),
                    b"1 0123456789"
                );
            }
            let c = host.counters();
            assert_eq!(
                c.rpcs, 10,
                "every request executed exactly once (n={n}, hb={use_hb})"
            );
            assert!(c.cpts_injected > 0, "n={n} hb={use_hb}");
            assert_eq!(host.guestinfo().len(), 6);
        }
    }
}

#[test]
fn checkpoint_answer_is_cpt_alone_and_cancels_the_send() {
    let mut host = Host::new(HostConfig::default().cpt_every(2));
    let ch = open(&mut host, RPCI_COOKIE);
    let request = b"info-set guestinfo.x y";
    call(&mut host, ch, msg::SENDSIZE, request.len() as u32);
    assert_eq!(
        call(&mut host, ch, msg::SENDPAYLOAD, le_word(request)).cx,
        st(1)
    );
    let r = call(&mut host, ch, msg::SENDPAYLOAD, le_word(&request[4..]));
    assert_eq!(r.cx, st(status::CPT));
    assert_eq!(
        call(&mut host, ch, msg::SENDPAYLOAD, le_word(&request[8..])).cx,
        0,
        "send discarded"
    );
    assert_eq!(host.counters().rpcs, 0);
    assert_eq!(host.counters().cpts_injected, 1);
}

#[test]
fn one_shot_cpt_at_every_step() {
    for step in Step::ALL {
        for use_hb in [false, true] {
            let mut host = Host::new(HostConfig::default().guestinfo("a", "0123456789").fault(
                step,
                1,
                Answer::Cpt,
            ));
            let r = open_raw(&mut host, RPCI_COOKIE);
            let ch = if step == Step::Open {
                assert_eq!(r.cx, st(status::CPT));
                open(&mut host, RPCI_COOKIE)
            } else {
                Chan {
                    id: hi16(r.dx),
                    high: lo32(r.si),
                    low: lo32(r.di),
                }
            };
            let s = send(&mut host, ch, b"info-set guestinfo.b 1", use_hb);
            if step == Step::SendSize {
                // OVT does not retry a SENDSIZE failure: the guest sees CPT, nothing ran.
                assert_eq!(s, status::CPT);
                assert_eq!(host.counters().rpcs, 0);
                send(&mut host, ch, b"info-set guestinfo.b 1", use_hb);
            }
            let reply = recv(&mut host, ch, use_hb);
            if step == Step::RecvSize {
                assert_eq!(reply, Err(status::CPT));
                let _ = recv(&mut host, ch, use_hb);
            } else {
                assert_eq!(reply, Ok(Some(b"1 ".to_vec())), "{step:?} hb={use_hb}");
            }
            let r = call(&mut host, ch, msg::CLOSE, 0);
            if step == Step::Close {
                assert_eq!(r.cx, st(status::CPT));
                assert_eq!(
                    host.open_channels(),
                    1,
                    "a cut CLOSE leaves the channel open"
                );
            } else {
                assert_eq!(r.cx, st(1));
            }
            let c = host.counters();
            let applicable = !matches!((step, use_hb), (Step::HbOut | Step::HbIn, false))
                && !matches!(
                    (step, use_hb),
                    (Step::SendPayload | Step::RecvPayload, true)
                );
            assert_eq!(
                c.cpts_injected,
                u64::from(applicable),
                "{step:?} hb={use_hb}"
            );
            assert_eq!(c.rpcs, 1, "{step:?} hb={use_hb}: executed exactly once");
            assert_eq!(
                host.guestinfo().get(&b"guestinfo.b"[..]).map(Vec::as_slice),
                Some(&b"1"[..])
            );
        }
    }
}

#[test]
fn one_shot_fault_hits_the_kth_occurrence_only() {
    let mut host = Host::new(
        HostConfig::default()
            .fault(Step::RecvStatus, 2, Answer::Fail)
            .guestinfo("a", "b"),
    );
    let ch = open(&mut host, RPCI_COOKIE);
    assert_eq!(rpc(&mut host, ch, b"info-get guestinfo.a", false), b"1 b");
    send(&mut host, ch, b"info-get guestinfo.a", false);
    assert_eq!(recv(&mut host, ch, false), Err(0));
    // The failed step rewound the receive: the reply is still there.
    assert_eq!(recv(&mut host, ch, false), Ok(Some(b"1 b".to_vec())));
    let c = host.counters();
    assert_eq!((c.faults_injected, c.cpts_injected), (1, 0));
}

#[test]
fn hostile_answers() {
    let config = || HostConfig::default().guestinfo("a", "abcdef");
    // Wrong message type after RECVSIZE and after RECVPAYLOAD.
    let mut host = Host::new(
        config()
            .fault(Step::RecvSize, 1, Answer::WrongMessageType(3))
            .fault(Step::RecvPayload, 1, Answer::WrongMessageType(0)),
    );
    let ch = open(&mut host, RPCI_COOKIE);
    send(&mut host, ch, b"info-get guestinfo.a", false);
    let r = call(&mut host, ch, msg::RECVSIZE, 0);
    assert_eq!((r.cx, r.bx, r.dx), (st(0x83), 8, 0x0003_0000));
    let r = call(&mut host, ch, msg::RECVPAYLOAD, 1);
    assert_eq!((r.cx, r.dx), (st(1), 0));

    // Over-long claimed length: zeros past the real bytes over LB, failure over HB.
    let mut host = Host::new(config().fault(Step::RecvSize, 1, Answer::ClaimLength(12)));
    let ch = open(&mut host, RPCI_COOKIE);
    send(&mut host, ch, b"info-get guestinfo.a", false);
    let r = call(&mut host, ch, msg::RECVSIZE, 0);
    assert_eq!(r.bx, 12);
    assert_eq!(hb_in(&mut host, ch, 12).0.bx, 0);
    let words: Vec<u64> = (0..3)
        .map(|_| call(&mut host, ch, msg::RECVPAYLOAD, 1).bx)
        .collect();
    assert_eq!(words, [0x6261_2031, 0x6665_6463, 0]);
    assert_eq!(call(&mut host, ch, msg::RECVPAYLOAD, 1).cx, 0);

    // A reply without its status prefix.
    let mut host = Host::new(config().fault(Step::RecvSize, 1, Answer::NoPrefix));
    let ch = open(&mut host, RPCI_COOKIE);
    send(&mut host, ch, b"info-get guestinfo.a", true);
    assert_eq!(recv(&mut host, ch, true), Ok(Some(b"abcdef".to_vec())));

    // DORECV with nothing behind it.
    let mut host = Host::new(config().fault(Step::RecvSize, 1, Answer::Phantom(40)));
    let ch = open(&mut host, RPCI_COOKIE);
    let r = call(&mut host, ch, msg::RECVSIZE, 0);
    assert_eq!((r.cx, r.bx, r.dx), (st(0x83), 40, 0x1_0000));
    assert_eq!(call(&mut host, ch, msg::RECVPAYLOAD, 1).cx, 0);
    assert_eq!(hb_in(&mut host, ch, 40).0.bx, 0);

    // A phantom RECVSIZE over a reply that an earlier RECVSIZE announced: the payload steps
    // after it still fail (the old announcement does not carry over), and a fresh RECVSIZE
    // then serves the real reply.
    let mut host = Host::new(config().fault(Step::RecvSize, 2, Answer::Phantom(0xFE00_0000)));
    let ch = open(&mut host, RPCI_COOKIE);
    send(&mut host, ch, b"info-get guestinfo.a", true);
    assert_eq!(call(&mut host, ch, msg::RECVSIZE, 0).bx, 8);
    assert_eq!(call(&mut host, ch, msg::RECVSIZE, 0).bx, 0xFE00_0000);
    assert_eq!(hb_in(&mut host, ch, 8).0.bx, 0);
    assert_eq!(call(&mut host, ch, msg::RECVPAYLOAD, 1).cx, 0);
    assert_eq!(recv(&mut host, ch, true), Ok(Some(b"1 abcdef".to_vec())));

    // Garbage HB status, then a normal transfer.
    let mut host = Host::new(config().fault(Step::HbIn, 1, Answer::Raw(0xFFFF_FFFF)));
    let ch = open(&mut host, RPCI_COOKIE);
    send(&mut host, ch, b"info-get guestinfo.a", true);
    call(&mut host, ch, msg::RECVSIZE, 0);
    let (r, bytes) = hb_in(&mut host, ch, 8);
    assert_eq!((r.bx, bytes.len()), (0xFFFF_FFFF, 0));
    assert_eq!(recv(&mut host, ch, true), Ok(Some(b"1 abcdef".to_vec())));

    // The host closes the channel under the guest.
    let mut host = Host::new(config().fault(Step::SendSize, 2, Answer::CloseChannel));
    let ch = open(&mut host, RPCI_COOKIE);
    assert_eq!(
        rpc(&mut host, ch, b"info-get guestinfo.a", false),
        b"1 abcdef"
    );
    assert_eq!(call(&mut host, ch, msg::SENDSIZE, 4).cx, st(status::CLOSED));
    assert_eq!(call(&mut host, ch, msg::SENDSIZE, 4).cx, 0);
    assert_eq!(host.open_channels(), 0);
    assert_eq!(host.counters().channels_closed, 1);
    assert_eq!(host.counters().faults_injected, 1);

    // Endless DORECV: acknowledged replies come back.
    let mut host = Host::new(config().endless_dorecv());
    let ch = open(&mut host, RPCI_COOKIE);
    send(&mut host, ch, b"info-get guestinfo.a", false);
    for _ in 0..3 {
        assert_eq!(recv(&mut host, ch, true), Ok(Some(b"1 abcdef".to_vec())));
    }
}

// ---------------------------------------------------------------------------------------
// TCLO

#[test]
fn tclo_delivers_one_command_per_poll_after_each_guest_message() {
    let mut host = Host::new(HostConfig::default().tclo("reset").tclo("ping"));
    let ch = open(&mut host, PROTO_TCLO | FLAG_COOKIE);
    assert_eq!(
        recv(&mut host, ch, false),
        Ok(None),
        "nothing before the guest's first message"
    );
    assert_eq!(
        send(&mut host, ch, b"", false),
        status::SUCCESS | status::HB
    );
    assert_eq!(recv(&mut host, ch, false), Ok(Some(b"reset".to_vec())));
    assert_eq!(
        recv(&mut host, ch, false),
        Ok(None),
        "one command per guest message"
    );
    send(&mut host, ch, b"OK ATR toolbox", true);
    assert_eq!(recv(&mut host, ch, true), Ok(Some(b"ping".to_vec())));
    send(&mut host, ch, b"OK ", false);
    assert_eq!(recv(&mut host, ch, false), Ok(None));
    assert_eq!(
        host.tclo_replies(),
        [b"OK ATR toolbox".to_vec(), b"OK ".to_vec()]
    );
    assert_eq!(host.tclo_pending(), 0);
    let c = host.counters();
    assert_eq!((c.tclo_commands, c.tclo_messages, c.rpcs), (2, 3, 0));
}

// ---------------------------------------------------------------------------------------
// Counters, Backdoor, robustness

#[test]
fn counters_and_stats_json_follow_a_known_script() {
    let mut host = Host::new(HostConfig::default().guestinfo("a", "bc"));
    let mut r = lb_regs(cmd::GETVERSION);
    host.lb(&mut r);
    let ch = open(&mut host, RPCI_COOKIE);
    rpc(&mut host, ch, b"info-get guestinfo.a", true); // 20 bytes out, 4 in
    rpc(&mut host, ch, b"log hi", false); // 6 out, 2 in
    let _keep = open(&mut host, PROTO_RPCI);
    call(&mut host, ch, msg::CLOSE, 0);
    let c = host.counters().clone();
    assert_eq!(c.lb_calls, 1 + 2 + (1 + 1 + 1) + (1 + 2 + 1 + 1 + 1) + 1);
    assert_eq!((c.hb_out_calls, c.hb_in_calls), (1, 1));
    assert_eq!((c.bytes_to_host, c.bytes_to_guest), (26, 6));
    assert_eq!(
        (c.channels_opened, c.channels_closed, c.channels_open()),
        (2, 1, 1)
    );
    assert_eq!((c.rpcs, c.cpts_injected), (2, 0));
    assert_eq!(c.lb_calls_for(cmd::MESSAGE, msg::OPEN), 2);
    assert_eq!(c.lb_calls_for(cmd::MESSAGE, msg::SENDPAYLOAD), 2);
    assert_eq!(c.lb_calls_for(cmd::GETVERSION, 0), 1);
    let json = host.stats_json();
    for kv in [
        "\"lb_calls\":13",
        "\"hb_in_calls\":1",
        "\"hb_out_calls\":1",
        "\"bytes_to_host\":26",
        "\"bytes_to_guest\":6",
        "\"channels_opened\":2",
        "\"channels_closed\":1",
        "\"channels_open_at_exit\":1",
        "\"rpcs\":2",
        "\"cpts_injected\":0",
    ] {
        assert!(json.contains(kv), "{kv} not in {json}");
    }
}

#[test]
fn transport_impl_moves_buffers() {
    let mut host = Host::new(HostConfig::default().guestinfo("a", "xyz"));
    let ch = open(&mut host, RPCI_COOKIE);
    let request = b"info-get guestinfo.a";
    call(&mut host, ch, msg::SENDSIZE, request.len() as u32);
    let mut r = Regs {
        ax: MAGIC.into(),
        bx: 0x1_0000,
        dx: pack(ch.id, HB_PORT),
        di: ch.low.into(),
        bp: ch.high.into(),
        ..Regs::default()
    };
    Backdoor::hb_out(&mut host, &mut r, request);
    assert_eq!(r.bx, 0x1_0000);
    assert_eq!(call(&mut host, ch, msg::RECVSIZE, 0).bx, 5);
    let mut buf = [0u8; 5];
    let mut r = Regs {
        ax: MAGIC.into(),
        bx: 0x1_0000,
        dx: pack(ch.id, HB_PORT),
        si: ch.high.into(),
        bp: ch.low.into(),
        ..Regs::default()
    };
    Backdoor::hb_in(&mut host, &mut r, &mut buf);
    assert_eq!((r.bx, &buf), (0x1_0000, b"1 xyz"));
    let mut r = lb_regs(cmd::GETMHZ);
    Backdoor::lb(&mut host, &mut r);
    assert_eq!(r.ax, 2_400);
}

#[test]
fn host_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Host>();
    assert_send::<HostConfig>();
}

/// Tiny xorshift for the soup (independent of the host's own generator).
struct Soup(u64);

impl Soup {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Mostly plausible values, sometimes garbage.
    fn pick(&mut self, plausible: &[u64]) -> u64 {
        let r = self.next();
        if r % 8 == 0 || plausible.is_empty() {
            self.next()
        } else {
            plausible[(r >> 8) as usize % plausible.len()]
        }
    }
}

#[test]
fn random_register_soup_never_panics_and_keeps_invariants() {
    for seed in 1..=4u64 {
        let mut soup = Soup(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let config = HostConfig::default()
            .channels(6)
            .tclo("reset")
            .tclo("ping")
            .guestinfo("a", "b")
            .cpt_every(seed * 3)
            .fault(Step::RecvSize, 5, Answer::ClaimLength(u32::MAX))
            .fault(Step::HbIn, 3, Answer::Phantom(9));
        let config = if seed % 2 == 0 {
            config.no_hb()
        } else {
            config
        };
        let mut host = Host::new(config);
        let mut cookies: Vec<(u64, u64)> = vec![(0, 0)];
        for _ in 0..20_000 {
            let (high, low) = cookies[soup.next() as usize % cookies.len()];
            let sub = soup.pick(&[0, 1, 2, 3, 4, 5, 6, 7]);
            let mut r = Regs {
                ax: soup.pick(&[MAGIC.into()]),
                bx: soup.pick(&[
                    RPCI_COOKIE.into(),
                    PROTO_TCLO.into(),
                    0,
                    1,
                    4,
                    20,
                    0x1_0000,
                    u64::from(u32::from_le_bytes(*b"log ")),
                ]),
                cx: soup.pick(&[pack(sub as u16, cmd::MESSAGE), 10, 19, 45, 46, 4, 20]),
                dx: soup.pick(&[0x5658, 0x1_5658, 0x2_5658, 0x5659, 0x1_5659, 0x5_5659]),
                si: soup.pick(&[high, 0]),
                di: soup.pick(&[low, 0]),
                bp: soup.pick(&[high, low]),
            };
            match soup.next() % 4 {
                0 => {
                    let n = soup.next() as usize % 70;
                    let data = vec![b'l'; n];
                    host.rep_outsb(&mut r, &data);
                }
                1 => {
                    let out = host.rep_insb(&mut r);
                    assert!(out.len() as u64 <= r.cx || lo32(r.ax) != MAGIC);
                }
                _ => {
                    let before = r;
                    host.lb(&mut r);
                    if lo32(before.ax) == MAGIC
                        && lo16(before.cx) == cmd::MESSAGE
                        && hi16(before.cx) == 0
                        && r.cx != 0
                    {
                        cookies.push((r.si, r.di));
                    }
                }
            }
            let c = host.counters();
            assert!(host.open_channels() <= 6);
            assert_eq!(
                c.channels_opened - c.channels_closed,
                host.open_channels() as u64
            );
        }
        let json = host.stats_json();
        assert!(json.starts_with('{') && json.ends_with('}'));
        assert_eq!(host.counters().backdoor_calls(), 20_000);
    }
}

#[test]
fn debug_output_hides_the_cookie_seed() {
    let seed: u64 = 0x1234_5678_9abc_def0;
    let shown = format!("{:?}", HostConfig::default().seed(seed));
    assert!(shown.contains("seed: Seed(..)"), "{shown}");
    for form in [format!("{seed}"), format!("{seed:x}"), format!("{seed:X}")] {
        assert!(!shown.contains(&form), "{shown}");
    }
}

#[test]
fn debug_output_summarizes_guestinfo_values() {
    let config = HostConfig::default().guestinfo("big", vec![b'x'; 1 << 20]);
    let shown = format!("{config:?}");
    assert!(shown.len() < 1000, "{} bytes of Debug", shown.len());
    assert!(shown.contains("1 keys, 1048576 value bytes"), "{shown}");
}

#[test]
fn log_lines_past_the_budget_are_counted_as_dropped() {
    let mut host = Host::new(HostConfig::default());
    let ch = open(&mut host, PROTO_RPCI);
    let line = [b"log ".as_slice(), &[b'x'; 65_000]].concat();
    for _ in 0..300 {
        assert_eq!(rpc(&mut host, ch, &line, true), b"1 ");
    }
    let dropped = host.counters().vmx_log_dropped;
    assert!(dropped > 0, "16 MiB of log is kept, not 19");
    assert_eq!(host.vmx_log().len() as u64 + dropped, 300);
    assert!(
        host.stats_json()
            .contains(&format!("\"vmx_log_dropped\":{dropped},")),
        "{}",
        host.stats_json()
    );
}

#[test]
fn rpci_side_effects_are_visible_through_the_accessors() {
    let mut host = Host::new(
        HostConfig::default()
            .machine_id("vm-7")
            .guestinfo("guestinfo.g", "v"),
    );
    // A cookie-less channel on a host that offers cookies.
    let ch = open(&mut host, PROTO_RPCI);
    assert_eq!((ch.high, ch.low), (0, 0));
    assert_eq!(rpc(&mut host, ch, b"log first line\0", false), b"1 ");
    assert_eq!(
        rpc(&mut host, ch, b"tools.set.versiontype 12389 4\0", true),
        b"1 "
    );
    assert_eq!(
        rpc(&mut host, ch, b"tools.set.version 2147483647", true),
        b"1 "
    );
    assert_eq!(rpc(&mut host, ch, b"machine.id.get", false), b"1 vm-7");
    assert_eq!(
        rpc(&mut host, ch, b"info-set guestinfo.new \xff\xfe", true),
        b"1 "
    );
    assert_eq!(
        rpc(&mut host, ch, b"no.such.command", true),
        b"0 Unknown command"
    );
    assert_eq!(host.vmx_log(), [b"first line".to_vec()]);
    assert_eq!(host.tools_version(), Some(&b"2147483647"[..]));
    assert_eq!(host.tools_version_type(), Some(&b"12389 4"[..]));
    assert_eq!(
        host.guestinfo()
            .get(&b"guestinfo.new"[..])
            .map(Vec::as_slice),
        Some(&b"\xff\xfe"[..])
    );
    assert_eq!(host.guestinfo().len(), 2);

    let mut denied = Host::new(HostConfig::default().deny_guestinfo().guestinfo("g", "v"));
    let ch = open(&mut denied, RPCI_COOKIE);
    assert_eq!(
        rpc(&mut denied, ch, b"info-get guestinfo.g", true),
        b"0 Permission denied"
    );
    assert_eq!(
        rpc(&mut denied, ch, b"info-set guestinfo.g w", false),
        b"0 Permission denied"
    );
    assert_eq!(
        denied
            .guestinfo()
            .get(&b"guestinfo.g"[..])
            .map(Vec::as_slice),
        Some(&b"v"[..])
    );
}
