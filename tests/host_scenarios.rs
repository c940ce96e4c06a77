//! The host model, scenario by scenario, over every transport (`support::transport`): in
//! memory, and through real instructions under the runner. Each guest speaks through the
//! reference client (`support::reference`) with the exact registers open-vm-tools'
//! `lib/message/message.c` and `lib/include/backdoor_def.h` use, and asserts the answers;
//! the host's state is checked after it. What needs the model's internals (raw counts that
//! differ from the buffer, register soup, Debug output) is in `src/sim/host/tests.rs`.
#![cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]

mod support;

use support::guest;
use support::reference::{
    self as rc, cmd, lo16, msg, st, status::*, Chan, Error, COOKIE, HB_OK, LB_PORT, MAGIC,
    MAX_MESSAGE, RPCI, RPCI_COOKIE, TCLO,
};
use support::transport::{each_transport, Guest, Transport};
use vmw_backdoor::proto::Regs;
use vmw_backdoor::sim::{Answer, Host, HostConfig, Mode, Step};
use vmw_backdoor::Product;

/// Upper-half garbage: the host decodes only the low 32 bits.
const JUNK: u64 = 0xDEAD_BEEF_0000_0000;
/// What a receive buffer holds where the host wrote nothing.
const UNWRITTEN: u8 = 0xAA;

/// OPEN that must succeed, answering the way the protocol does (`lo16(EDX)` zero).
fn open(b: &mut Guest, ebx: u32) -> Chan {
    let r = rc::open_raw(b, ebx);
    assert_eq!(r.cx, st(SUCCESS), "OPEN {ebx:#x}: {r:?}");
    assert_eq!(lo16(r.dx), 0, "OPEN leaves lo16(EDX) zero");
    Chan::opened(&r)
}

/// A request that must get a reply.
fn rpc(b: &mut Guest, ch: Chan, request: &[u8], hb: bool) -> Vec<u8> {
    rc::rpc(b, ch, request, hb).unwrap_or_else(|e| {
        panic!("{:?}: {e:?}", String::from_utf8_lossy(request));
    })
}

fn call(b: &mut Guest, ch: Chan, sub: u16, ebx: u32) -> Regs {
    rc::call(b, ch, sub, ebx)
}

/// `rep insb` of `room` bytes: its EBX, and the bytes it wrote (none where the buffer still
/// reads `UNWRITTEN` from the end).
fn hb_in(b: &mut Guest, ch: Chan, room: usize) -> (u64, Vec<u8>) {
    let mut buf = vec![UNWRITTEN; room];
    let r = rc::hb_in(b, ch, &mut buf);
    let written = buf
        .iter()
        .rposition(|&x| x != UNWRITTEN)
        .map_or(0, |i| i + 1);
    buf.truncate(written);
    (r.bx, buf)
}

/// A MESSAGE sub-command that must fail: ECX = 0 and no other register changed.
fn refused(b: &mut Guest, ch: Chan, sub: u16, ebx: u32) {
    let before = rc::msg_regs(ch, sub, ebx);
    let mut r = before;
    b.lb(&mut r);
    assert_eq!(r, Regs { cx: 0, ..before }, "sub-command {sub} on {ch:?}");
}

// ---------------------------------------------------------------------------------------
// Low-bandwidth commands

#[test]
fn getversion_reports_version_magic_and_product() {
    for (config, product) in [
        (HostConfig::default(), 2),
        (HostConfig::default().product(Product::Workstation), 4),
    ] {
        let guest = move |b: &mut Guest| {
            let mut r = rc::lb_regs(cmd::GETVERSION, 0x1111_1111);
            r.ax |= JUNK;
            r.cx |= 0xFFFF_0000 | JUNK;
            r.dx |= JUNK;
            b.lb(&mut r);
            assert_eq!((r.ax, r.bx, r.cx), (6, MAGIC.into(), product));
            assert_eq!(
                (r.dx, r.si, r.di, r.bp),
                (0x5658 | JUNK, 0x2222_2222, 0x3333_3333, 0x4444_4444)
            );
        };
        each_transport(config, guest, |host| {
            assert_eq!(host.counters().lb_calls, 1);
        });
    }
}

#[test]
fn wrong_magic_and_unknown_commands_answer_all_ones_in_eax_only() {
    let guest = |b: &mut Guest| {
        for before in [
            Regs {
                ax: 0x1234,
                ..rc::lb_regs(cmd::GETVERSION, 5)
            },
            rc::lb_regs(0xABCD, 0x1234),
        ] {
            let mut r = before;
            b.lb(&mut r);
            assert_eq!(
                r,
                Regs {
                    ax: 0xFFFF_FFFF,
                    ..before
                }
            );
        }
    };
    each_transport(HostConfig::default(), guest, |host| {
        assert_eq!(host.counters().lb_calls, 2);
    });
}

#[test]
fn restricted_backdoor_host_answers_like_vmware_in_memory() {
    // The restriction is the runner's (privilege): tests/sim_runner.rs runs it with iopl.
    let config = HostConfig::default().mode(Mode::RestrictBackdoor);
    Transport::Memory.run(config, |b| {
        let r = rc::lb(b, cmd::GETVERSION, 0);
        assert_eq!((r.ax, r.bx, r.cx), (6, MAGIC.into(), 2));
        let ch = open(b, RPCI_COOKIE);
        assert_eq!(rpc(b, ch, b"machine.id.get", true), b"1 ");
    });
}

#[test]
fn detection_commands_answer_per_config() {
    let uuid = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
    let config = HostConfig::default()
        .hw_version(19)
        .mhz(3_000)
        .bios_uuid(uuid)
        .time(0x1_2345_6789, 250_000)
        .max_time_lag(7)
        .hz(0x2_8000_0000, 100_000_000)
        .vcpu_info(0x8);
    let run = |b: &mut Guest, c: u16| rc::lb(b, c, 0x1111_1111);
    let guest = move |b: &mut Guest| {
        let r = run(b, cmd::GETHWVERSION);
        assert_eq!(
            (r.ax, r.bx, r.cx),
            (19, MAGIC.into(), cmd::GETHWVERSION.into())
        );
        assert_eq!(run(b, cmd::GETMHZ).ax, 3_000);
        let r = run(b, cmd::GETBIOSUUID);
        assert_eq!(
            (r.ax, r.bx, r.cx, r.dx),
            (0x0403_0201, 0x0807_0605, 0x0C0B_0A09, 0x100F_0E0D)
        );
        let r = run(b, cmd::GETTIME);
        assert_eq!(
            (r.ax, r.bx, r.cx),
            (0xFFFF_FFFF, 250_000, 7),
            "seconds beyond 32 bits"
        );
        let r = run(b, cmd::GETTIMEFULL);
        assert_eq!(r.ax, MAGIC.into(), "GETTIMEFULL leaves EAX = magic");
        assert_eq!((r.si, r.dx, r.bx, r.cx), (1, 0x2345_6789, 250_000, 7));
        let r = run(b, cmd::GETHZ);
        assert_eq!((r.ax, r.bx, r.cx), (0x8000_0000, 2, 100_000_000));
        assert_eq!(run(b, cmd::GET_VCPU_INFO).ax, 0x8);
    };
    each_transport(config, guest, |_| {});

    let guest = move |b: &mut Guest| {
        let r = run(b, cmd::GETTIME);
        assert_eq!((r.ax, r.bx, r.cx), (1_000, 5, 0));
        assert_eq!(run(b, cmd::GETMHZ).ax, 2_400, "the default");
    };
    each_transport(HostConfig::default().time(1_000, 5), guest, |_| {});

    let guest = move |b: &mut Guest| {
        let r = run(b, cmd::GETHZ);
        assert_eq!(
            r,
            Regs {
                bx: 0xFFFF_FFFF,
                ..rc::lb_regs(cmd::GETHZ, 0x1111_1111)
            }
        );
        assert_eq!(run(b, cmd::GET_VCPU_INFO).ax, 0x8000_0000);
    };
    let config = HostConfig::default().no_gethz().no_vcpu_info();
    each_transport(config, guest, |host| {
        assert_eq!(host.counters().lb_calls_for(cmd::GETHZ, 0), 1);
    });
}

#[test]
fn system_clock_reads_a_plausible_time() {
    let guest = |b: &mut Guest| {
        let r = rc::lb(b, cmd::GETTIMEFULL, 0);
        let secs = (r.si << 32) | r.dx;
        assert!(secs > 1_600_000_000, "{secs}");
        assert!(r.bx < 1_000_000);
    };
    each_transport(HostConfig::default().system_clock(), guest, |_| {});
}

// ---------------------------------------------------------------------------------------
// OPEN and cookies

#[test]
fn open_returns_id_and_cookies_in_exact_registers() {
    let first = open(&mut Host::new(HostConfig::default()), RPCI_COOKIE);
    let guest = move |b: &mut Guest| {
        let a = open(b, RPCI_COOKIE);
        assert_eq!(a, first, "the same seed, the same cookies");
        let t = open(b, TCLO | COOKIE);
        assert_eq!((a.id, t.id), (0, 1));
        assert_ne!((a.high, a.low), (0, 0));
        assert_ne!((a.high, a.low), (t.high, t.low));
        let c = open(b, RPCI);
        assert_eq!((c.high, c.low), (0, 0), "cookie-less OPEN: zero cookies");
    };
    each_transport(HostConfig::default(), guest, |host| {
        assert_eq!(host.open_channels(), 3);
    });
    let guest = move |b: &mut Guest| assert_ne!(open(b, RPCI_COOKIE), first, "another seed");
    each_transport(HostConfig::default().seed(99), guest, |_| {});
}

#[test]
fn open_refuses_unknown_protocols_and_cookieless_hosts_refuse_the_flag() {
    let guest = |b: &mut Guest| {
        for bad in [0, 0x1234_5678, COOKIE, RPCI | 1] {
            let r = rc::open_raw(b, bad);
            assert_eq!(r.cx, 0, "{bad:#x}");
            assert_eq!(r.dx, LB_PORT.into(), "a failed OPEN leaves EDX");
        }
    };
    each_transport(HostConfig::default(), guest, |host| {
        assert_eq!(host.counters().channels_opened, 0);
    });

    let guest = |b: &mut Guest| {
        assert_eq!(rc::open_raw(b, RPCI_COOKIE).cx, 0, "cookie OPEN refused");
        let ch = open(b, RPCI);
        assert_eq!((ch.id, ch.high, ch.low), (0, 0, 0));
        // A cookie-less channel ignores whatever ESI/EDI hold.
        let junk = ch.cookie(0xAAAA_5555, 0x1234);
        assert_eq!(rpc(b, junk, b"machine.id.get", false), b"1 ");
        for hb in [true, false] {
            let reply = rc::rpc_once(b, b"info-get guestinfo.none", hb);
            assert_eq!(reply, Ok(b"0 No value found".to_vec()));
        }
    };
    each_transport(HostConfig::default().no_cookies(), guest, |host| {
        assert_eq!(host.counters().channels_opened, 3);
    });
}

#[test]
fn wrong_cookie_or_channel_fails_every_step_and_breaks_nothing() {
    let guest = |b: &mut Guest| {
        let ch = open(b, RPCI_COOKIE);
        let bad_cookies = [
            ch.cookie(ch.high, ch.low ^ 1),
            ch.cookie(ch.high ^ 0x8000_0000, ch.low),
            ch.cookie(ch.low, ch.high),
            ch.cookie(0, 0),
        ];
        let bad_ids = [
            Chan { id: 1, ..ch },
            Chan { id: 127, ..ch },
            Chan { id: 0xFFFF, ..ch },
        ];
        for bad in bad_cookies.into_iter().chain(bad_ids) {
            for sub in [
                msg::SENDSIZE,
                msg::SENDPAYLOAD,
                msg::RECVSIZE,
                msg::RECVPAYLOAD,
                msg::RECVSTATUS,
                msg::CLOSE,
            ] {
                refused(b, bad, sub, 4);
            }
            assert_eq!(rc::hb_out(b, bad, b"abcd").bx, 0);
            assert_eq!(hb_in(b, bad, 100), (0, vec![]));
        }
        // Upper halves of the cookie registers are ignored.
        let mut r = Regs {
            ax: u64::from(MAGIC) | JUNK,
            bx: 3 | JUNK,
            cx: rc::pack(msg::SENDSIZE, cmd::MESSAGE) | JUNK,
            dx: rc::pack(ch.id, LB_PORT) | JUNK,
            si: u64::from(ch.high) | JUNK,
            di: u64::from(ch.low) | JUNK,
            bp: 0,
        };
        b.lb(&mut r);
        assert_eq!(r.cx, st(SUCCESS | HB));
        // A wrong cookie does not disturb the send under way.
        assert_eq!(call(b, ch, msg::SENDSIZE, 4).cx, st(SUCCESS | HB));
        assert_eq!(rc::hb_out(b, bad_cookies[1], b"abcd").bx, 0);
        assert_eq!(rc::hb_out(b, ch, b"abcd").bx, HB_OK, "the real one works");
        assert_eq!(rpc(b, ch, b"info-get guestinfo.k", false), b"1 value");
    };
    let config = HostConfig::default().guestinfo("k", "value");
    each_transport(config, guest, |host| {
        assert_eq!(host.open_channels(), 1);
        assert_eq!(host.counters().rpcs, 2);
    });
}

#[test]
fn unknown_subcommands_fail_without_side_effects() {
    const SUBS: [u16; 4] = [7, 8, 0x00FF, 0xFFFF];
    let guest = |b: &mut Guest| {
        let ch = open(b, RPCI_COOKIE);
        for sub in SUBS {
            refused(b, ch, sub, 0x55);
        }
        assert_eq!(rc::close(b, ch), Ok(()), "the channel still works");
    };
    each_transport(HostConfig::default(), guest, |host| {
        for sub in SUBS {
            assert_eq!(host.counters().lb_calls_for(cmd::MESSAGE, sub), 1);
        }
        assert_eq!(host.counters().channels_opened, 1);
    });
}

// ---------------------------------------------------------------------------------------
// Message exchanges

#[test]
fn lb_exchange_exact_registers_for_every_length_mod_4() {
    const REQUEST: &[u8] = b"info-get guestinfo.v";
    for hb_offered in [true, false] {
        for len in 0..=9u8 {
            let value: Vec<u8> = (0..len).map(|i| 0xA0 + i).collect();
            let reply = [b"1 ".as_slice(), &value].concat();
            let config = if hb_offered {
                HostConfig::default()
            } else {
                HostConfig::default().no_hb()
            };
            let hb_bit = if hb_offered { HB } else { 0 };
            let guest = |b: &mut Guest| {
                let ch = open(b, RPCI_COOKIE);
                let r = call(b, ch, msg::SENDSIZE, REQUEST.len() as u32);
                assert_eq!(r.cx, st(SUCCESS | hb_bit));
                for chunk in REQUEST.chunks(4) {
                    let r = call(b, ch, msg::SENDPAYLOAD, rc::le_word(chunk));
                    assert_eq!(r.cx, st(SUCCESS));
                }
                let r = call(b, ch, msg::SENDPAYLOAD, 0x4141_4141);
                assert_eq!(r.cx, 0, "a payload beyond the announced length fails");

                let r = call(b, ch, msg::RECVSIZE, 0);
                assert_eq!(r.cx, st(SUCCESS | DORECV | hb_bit));
                assert_eq!(r.bx, reply.len() as u64);
                assert_eq!(r.dx, 0x0001_0000);
                for chunk in reply.chunks(4) {
                    let r = call(b, ch, msg::RECVPAYLOAD, 1);
                    assert_eq!(r.cx, st(SUCCESS));
                    assert_eq!(r.dx, 0x0002_0000);
                    assert_eq!(
                        r.bx,
                        u64::from(rc::le_word(chunk)),
                        "upper bytes of a short chunk are 0"
                    );
                }
                assert_eq!(call(b, ch, msg::RECVPAYLOAD, 1).cx, 0, "nothing left");
                assert_eq!(call(b, ch, msg::RECVSTATUS, 1).cx, st(SUCCESS));
                let r = call(b, ch, msg::RECVSIZE, 0);
                assert_eq!((r.cx, r.bx), (st(SUCCESS), 0), "reply consumed");
                assert_eq!(call(b, ch, msg::CLOSE, 0).cx, st(SUCCESS));
                assert_eq!(call(b, ch, msg::SENDSIZE, 1).cx, 0, "closed");
            };
            each_transport(config.guestinfo("v", &value), guest, |host| {
                let c = host.counters();
                assert_eq!(
                    (c.bytes_to_host, c.bytes_to_guest),
                    (REQUEST.len() as u64, reply.len() as u64)
                );
                assert_eq!((c.rpcs, c.channels_opened, c.channels_closed), (1, 1, 1));
                assert_eq!(c.lb_calls_for(cmd::MESSAGE, msg::SENDPAYLOAD), 6);
            });
        }
    }
}

#[test]
fn hb_exchange_exact_registers_and_recvstatus_still_needed() {
    const REQUEST: &[u8] = b"info-get guestinfo.v\0";
    for len in [1usize, 2, 3, 4, 5, 4099] {
        let value = vec![b'z'; len];
        let reply = [b"1 ".as_slice(), &value].concat();
        let n = reply.len();
        let guest = |b: &mut Guest| {
            let ch = open(b, RPCI_COOKIE);
            let r = call(b, ch, msg::SENDSIZE, REQUEST.len() as u32);
            assert_eq!(r.cx, st(SUCCESS | HB));
            assert_eq!(rc::hb_out(b, ch, REQUEST).bx, HB_OK);
            let r = call(b, ch, msg::RECVSIZE, 0);
            assert_eq!(r.cx, st(SUCCESS | DORECV | HB));
            assert_eq!(r.bx, n as u64);
            assert_eq!(hb_in(b, ch, n), (HB_OK, reply.clone()));
            // Not acknowledged yet: RECVSIZE announces it again.
            let r = call(b, ch, msg::RECVSIZE, 0);
            assert_eq!((r.cx & st(DORECV), r.bx), (st(DORECV), n as u64));
            let (_, again) = hb_in(b, ch, n + 10);
            assert_eq!(again, reply, "never more than the reply");
            assert_eq!(call(b, ch, msg::RECVSTATUS, 1).cx, st(SUCCESS));
            assert_eq!(call(b, ch, msg::RECVSIZE, 0).cx, st(SUCCESS));
        };
        let config = HostConfig::default().guestinfo("guestinfo.v", &value);
        each_transport(config, guest, |host| {
            assert_eq!(host.counters().bytes_to_guest, 2 * n as u64);
        });
    }
}

#[test]
fn hb_transfers_check_cookie_layout_length_and_ebx() {
    let guest = |b: &mut Guest| {
        let ch = open(b, RPCI_COOKIE);
        let request = b"info-get guestinfo.a";
        let swapped = ch.cookie(ch.low, ch.high);
        let out = |b: &mut Guest, data: &[u8], ebx| rc::hb_out_ebx(b, ch, data, ebx).bx;
        call(b, ch, msg::SENDSIZE, request.len() as u32);
        assert_eq!(rc::hb_out(b, swapped, request).bx, 0, "LB cookie order");
        assert_eq!(out(b, &request[..19], HB_OK), 0, "count below length");
        assert_eq!(out(b, b"info-get guestinfo.a\0", HB_OK), 0, "above length");
        assert_eq!(out(b, request, 0x1_0001), 0, "HB command 1");
        assert_eq!(out(b, request, 0), 0, "guest status 0");
        // Guest status is masked to its success bit.
        assert_eq!(out(b, request, 0xFFFF_0000), HB_OK);

        call(b, ch, msg::RECVSIZE, 0);
        assert_eq!(hb_in(b, swapped, 3), (0, vec![]), "LB cookie order");
        assert_eq!(hb_in(b, ch, 3), (HB_OK, b"1 b".to_vec()));
        assert_eq!(hb_in(b, ch, 3).0, 0, "a second HB in without RECVSIZE");
    };
    let config = HostConfig::default().guestinfo("a", "b");
    each_transport(config, guest, |host| assert_eq!(host.counters().rpcs, 1));
}

#[test]
fn a_short_hb_in_gets_the_first_bytes_and_the_rest_is_dropped() {
    // OpenBSD's vmt(4) reads at most 4095 bytes of a reply, then sends RECVSTATUS.
    let guest = |b: &mut Guest| {
        let ch = open(b, RPCI_COOKIE);
        rc::send(b, ch, b"info-get guestinfo.big", true).unwrap();
        assert_eq!(call(b, ch, msg::RECVSIZE, 0).bx, 5002);
        let (ebx, got) = hb_in(b, ch, 4095);
        assert_eq!(ebx, HB_OK);
        assert_eq!(got.len(), 4095);
        assert!(got.starts_with(b"1 xx") && got.iter().skip(2).all(|&c| c == b'x'));
        assert_eq!(
            call(b, ch, msg::RECVSTATUS, 1).cx,
            st(SUCCESS),
            "acknowledged"
        );
        assert_eq!(
            rpc(b, ch, b"info-get guestinfo.small", true),
            b"1 s",
            "in step"
        );
    };
    let config = HostConfig::default()
        .guestinfo("big", vec![b'x'; 5000])
        .guestinfo("small", "s");
    each_transport(config, guest, |host| {
        assert_eq!(host.counters().bytes_to_guest, 4095 + 3);
    });
}

#[test]
fn host_without_hb_refuses_the_hb_port_but_serves_lb() {
    let guest = |b: &mut Guest| {
        let ch = open(b, RPCI_COOKIE);
        let request = b"info-get guestinfo.a";
        assert_eq!(call(b, ch, msg::SENDSIZE, 20).cx, st(SUCCESS), "no HB bit");
        assert_eq!(rc::hb_out(b, ch, request).bx, 0);
        assert_eq!(rpc(b, ch, request, false), b"1 b");
        rc::send(b, ch, request, false).unwrap();
        let r = call(b, ch, msg::RECVSIZE, 0);
        assert_eq!((r.cx, r.bx), (st(SUCCESS | DORECV), 3), "no HB bit");
        assert_eq!(hb_in(b, ch, 3), (0, vec![]));
        assert_eq!(rc::recv(b, ch, true), Ok(Some(b"1 b".to_vec())), "over LB");
    };
    let config = HostConfig::default().no_hb().guestinfo("a", "b");
    each_transport(config, guest, |_| {});
}

#[test]
fn steps_out_of_order_fail_and_leave_the_channel_usable() {
    let guest = |b: &mut Guest| {
        let ch = open(b, RPCI_COOKIE);
        let c = |b: &mut Guest, sub, ebx| call(b, ch, sub, ebx).cx;
        assert_eq!(c(b, msg::SENDPAYLOAD, 0x41), 0, "payload before SENDSIZE");
        assert_eq!(rc::hb_out(b, ch, b"abcd").bx, 0, "HB out before SENDSIZE");
        assert_eq!(c(b, msg::RECVPAYLOAD, 1), 0, "RECVPAYLOAD before RECVSIZE");
        assert_eq!(c(b, msg::RECVSTATUS, 1), 0, "RECVSTATUS with nothing");
        assert_eq!(hb_in(b, ch, 16).0, 0, "HB in with nothing");
        // Half a send, then a receive: out of order.
        assert_eq!(c(b, msg::SENDSIZE, 8), st(SUCCESS | HB));
        assert_eq!(c(b, msg::SENDPAYLOAD, 0x6F66_6E69), st(SUCCESS));
        assert_eq!(
            c(b, msg::RECVSIZE, 0),
            0,
            "RECVSIZE in the middle of a send"
        );
        assert_eq!(
            rc::hb_out(b, ch, b"abcdefgh").bx,
            0,
            "HB out after a payload"
        );
        // A fresh SENDSIZE restarts the message.
        assert_eq!(rpc(b, ch, b"info-get guestinfo.a", false), b"1 b");
        // Reply pending but not announced: RECVSTATUS and RECVPAYLOAD fail.
        rc::send(b, ch, b"info-get guestinfo.a", false).unwrap();
        assert_eq!(c(b, msg::RECVPAYLOAD, 1), 0);
        assert_eq!(c(b, msg::RECVSTATUS, 1), 0);
        assert_eq!(rc::recv(b, ch, false), Ok(Some(b"1 b".to_vec())));
    };
    let config = HostConfig::default().guestinfo("a", "b");
    each_transport(config, guest, |host| {
        assert_eq!(host.counters().rpcs, 2, "the half send was never executed");
    });
}

#[test]
fn oversize_messages_are_refused_and_the_cap_itself_is_accepted() {
    let guest = |b: &mut Guest| {
        let ch = open(b, RPCI_COOKIE);
        for len in [MAX_MESSAGE as u32 + 1, 0x7FFF_FFFF, u32::MAX] {
            assert_eq!(call(b, ch, msg::SENDSIZE, len).cx, 0, "{len}");
        }
        assert_eq!(rc::hb_out(b, ch, &vec![b'a'; MAX_MESSAGE + 1]).bx, 0);
        // Longer than announced, and than the cap (the runner hands the host cap + 1 bytes).
        assert_eq!(
            call(b, ch, msg::SENDSIZE, MAX_MESSAGE as u32).cx,
            st(SUCCESS | HB)
        );
        assert_eq!(rc::hb_out(b, ch, &vec![b'x'; 70_000]).bx, 0);
        let mut request = b"log ".to_vec();
        request.resize(MAX_MESSAGE, b'x');
        assert_eq!(rpc(b, ch, &request, true), b"1 ");
        assert_eq!(rpc(b, ch, &request, false), b"1 ");
        // A reply has no cap.
        let mut set = b"info-set guestinfo.big ".to_vec();
        set.resize(MAX_MESSAGE, b'v');
        assert_eq!(rpc(b, ch, &set, true), b"1 ");
        let reply = rpc(b, ch, b"info-get guestinfo.big", true);
        assert_eq!(reply.len(), 2 + MAX_MESSAGE - 23);
        assert!(reply.starts_with(b"1 vvv") && reply.ends_with(b"vvv"));
    };
    each_transport(HostConfig::default(), guest, |host| {
        assert_eq!(host.vmx_log().len(), 2);
        assert_eq!(host.vmx_log()[0].len(), MAX_MESSAGE - 4);
        let big = host.guestinfo().get(&b"guestinfo.big"[..]);
        assert_eq!(big.map(Vec::len), Some(MAX_MESSAGE - 23));
    });
}

#[test]
fn new_send_drops_an_unacknowledged_reply() {
    let guest = |b: &mut Guest| {
        let ch = open(b, RPCI_COOKIE);
        // The published 0.2.4 crate: SENDSIZE, HB out, RECVSIZE, HB in, never RECVSTATUS.
        for (req, want) in [
            (&b"info-get guestinfo.a\0"[..], &b"1 1"[..]),
            (b"info-get guestinfo.b\0", b"1 22"),
        ] {
            let r = call(b, ch, msg::SENDSIZE, req.len() as u32);
            assert_eq!(r.cx & st(SUCCESS), st(SUCCESS));
            assert_eq!(rc::hb_out(b, ch, req).bx, HB_OK);
            let n = call(b, ch, msg::RECVSIZE, 0).bx as usize;
            assert_eq!(hb_in(b, ch, n).1, want);
        }
        // Even a reply never fetched at all is dropped by the next send.
        rc::send(b, ch, b"info-get guestinfo.a", true).unwrap();
        assert_eq!(rpc(b, ch, b"info-get guestinfo.b", true), b"1 22");
        assert_eq!(call(b, ch, msg::CLOSE, 0).cx, st(SUCCESS));
    };
    let config = HostConfig::default()
        .guestinfo("a", "1")
        .guestinfo("b", "22");
    each_transport(config, guest, |_| {});
}

#[test]
fn a_one_mib_reply_is_served_over_hb_and_lb() {
    let value: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let expected = [b"1 ".as_slice(), &value].concat();
    let get = |b: &mut Guest, hb| {
        let ch = open(b, RPCI_COOKIE);
        assert!(
            rpc(b, ch, b"info-get guestinfo.big", hb) == expected,
            "hb {hb}"
        );
    };
    let config = HostConfig::default().guestinfo("big", &value);
    each_transport(
        config.clone(),
        |b| get(b, true),
        |host| {
            assert_eq!(host.counters().bytes_to_guest, expected.len() as u64);
        },
    );
    // Over LB in memory only: 262,144 traps under the runner (12 s) move registers alone,
    // which the model answers the same in memory.
    let host = Transport::Memory.run(config, |b| get(b, false));
    assert_eq!(host.counters().bytes_to_guest, expected.len() as u64);
}

#[test]
fn close_frees_the_id_and_counts() {
    let guest = |b: &mut Guest| {
        let a = open(b, RPCI_COOKIE);
        open(b, RPCI_COOKIE);
        assert_eq!(call(b, a, msg::CLOSE, 0).cx, st(SUCCESS), "lo16(ECX) zero");
        assert_eq!(call(b, a, msg::CLOSE, 0).cx, 0, "closing twice fails");
        assert_eq!(call(b, a, msg::SENDSIZE, 1).cx, 0, "a closed id is dead");
        let c = open(b, RPCI_COOKIE);
        assert_eq!(c.id, a.id, "the lowest free id is reused");
        assert_ne!((c.high, c.low), (a.high, a.low), "with fresh cookies");
        let r = call(b, a, msg::SENDSIZE, 1);
        assert_eq!(r.cx, 0, "old cookies do not open the new channel");
    };
    each_transport(HostConfig::default(), guest, |host| {
        let k = host.counters();
        assert_eq!(
            (k.channels_opened, k.channels_closed, k.channels_open()),
            (3, 1, 2)
        );
        assert_eq!(host.open_channels(), 2);
    });
}

#[test]
fn channel_limit_8_and_128() {
    for (config, limit) in [
        (HostConfig::default().channels(8), 8u16),
        (HostConfig::default(), 128),
    ] {
        let guest = |b: &mut Guest| {
            let chans: Vec<Chan> = (0..limit).map(|_| open(b, RPCI_COOKIE)).collect();
            let ids: Vec<u16> = chans.iter().map(|c| c.id).collect();
            assert_eq!(ids, (0..limit).collect::<Vec<_>>());
            for ebx in [RPCI_COOKIE, RPCI, TCLO | COOKIE] {
                let r = rc::open_raw(b, ebx);
                assert_eq!(r.cx, 0, "channel {} of {limit}", limit + 1);
            }
            assert_eq!(call(b, chans[3], msg::CLOSE, 0).cx, st(SUCCESS));
            assert_eq!(open(b, TCLO).id, 3, "the lowest free id");
            assert_eq!(rc::open_raw(b, RPCI_COOKIE).cx, 0);
        };
        each_transport(config, guest, |host| {
            let c = host.counters();
            let limit = u64::from(limit);
            assert_eq!(
                (c.channels_opened, c.channels_closed, c.channels_open()),
                (limit + 1, 1, limit)
            );
            assert_eq!(host.open_channels() as u64, limit);
        });
    }
    let guest = |b: &mut Guest| assert_eq!(rc::open_raw(b, RPCI).cx, 0);
    each_transport(HostConfig::default().channels(0), guest, |_| {});
}

#[test]
fn guest_status_is_masked_to_its_success_bit() {
    let guest = |b: &mut Guest| {
        let ch = open(b, RPCI_COOKIE);
        rc::send(b, ch, b"info-get guestinfo.a", false).unwrap();
        call(b, ch, msg::RECVSIZE, 0);
        let r = call(b, ch, msg::RECVPAYLOAD, 0xFFFF_FFFF);
        assert_eq!((r.cx, r.bx), (st(1), u32::from_le_bytes(*b"1 ab").into()));
        // Bit 0 clear: the guest reports a failed reception; the reply is dropped.
        let r = call(b, ch, msg::RECVPAYLOAD, 0xFFFF_FFFE);
        assert_eq!((r.cx, r.bx), (st(1), 0));
        let r = call(b, ch, msg::RECVSIZE, 0);
        assert_eq!(r.cx, st(1), "nothing pending any more");
        // RECVSTATUS 0 drops the reply as well.
        rc::send(b, ch, b"info-get guestinfo.a", false).unwrap();
        call(b, ch, msg::RECVSIZE, 0);
        assert_eq!(call(b, ch, msg::RECVSTATUS, 0).cx, st(1));
        assert_eq!(call(b, ch, msg::RECVSIZE, 0).cx, st(1));
    };
    let config = HostConfig::default().guestinfo("a", "abcdef");
    each_transport(config, guest, |_| {});
}

#[test]
fn info_set_and_get_over_lb_for_every_tail() {
    let guest = |b: &mut Guest| {
        for value in ["a", "ab", "abc", "abcd", "abcde"] {
            let set = format!("info-set guestinfo.v{} {value}", value.len());
            assert_eq!(rc::rpc_once(b, set.as_bytes(), false), Ok(b"1 ".to_vec()));
            let get = format!("info-get guestinfo.v{}", value.len());
            let reply = rc::rpc_once(b, get.as_bytes(), false);
            assert_eq!(reply, Ok(format!("1 {value}").into_bytes()));
        }
    };
    each_transport(HostConfig::default(), guest, |host| {
        let v3 = host.guestinfo().get(&b"guestinfo.v3"[..]);
        assert_eq!(v3.map(Vec::as_slice), Some(&b"abc"[..]));
    });
}

// ---------------------------------------------------------------------------------------
// Checkpoints and faults

#[test]
fn periodic_checkpoints_cut_and_guests_that_retry_get_through() {
    for n in 1..=6 {
        for hb in [false, true] {
            let guest = |b: &mut Guest| {
                let ch = open(b, RPCI_COOKIE);
                for i in 0..5 {
                    let set = format!("info-set guestinfo.k{i} some value {i}");
                    assert_eq!(rpc(b, ch, set.as_bytes(), hb), b"1 ");
                    let get = rpc(b, ch, b"info-get guestinfo.a", hb);
                    assert_eq!(get, b"1 0123456789");
                }
            };
            let config = HostConfig::default()
                .cpt_every(n)
                .guestinfo("a", "0123456789");
            each_transport(config, guest, |host| {
                let c = host.counters();
                assert_eq!(c.rpcs, 10, "each request executed once (n={n}, hb={hb})");
                assert!(c.cpts_injected > 0, "n={n} hb={hb}");
                assert_eq!(host.guestinfo().len(), 6);
            });
        }
    }
}

#[test]
fn checkpoint_answer_is_cpt_alone_and_cancels_the_send() {
    let guest = |b: &mut Guest| {
        let ch = open(b, RPCI_COOKIE);
        let request = b"info-set guestinfo.x y";
        let word = |i: usize| rc::le_word(&request[i..]);
        call(b, ch, msg::SENDSIZE, request.len() as u32);
        assert_eq!(call(b, ch, msg::SENDPAYLOAD, word(0)).cx, st(1));
        assert_eq!(call(b, ch, msg::SENDPAYLOAD, word(4)).cx, st(CPT));
        let r = call(b, ch, msg::SENDPAYLOAD, word(8));
        assert_eq!(r.cx, 0, "send discarded");
    };
    each_transport(HostConfig::default().cpt_every(2), guest, |host| {
        assert_eq!(
            (host.counters().rpcs, host.counters().cpts_injected),
            (0, 1)
        );
    });
}

#[test]
fn a_checkpoint_at_every_call_cuts_each_payload_step_once() {
    let guest = |b: &mut Guest| {
        let ch = open(b, RPCI_COOKIE);
        // LB send: the first payload step is cut; the retry from SENDSIZE goes through.
        assert_eq!(call(b, ch, msg::SENDSIZE, 3).cx, st(SUCCESS | HB));
        let r = call(b, ch, msg::SENDPAYLOAD, u32::from_le_bytes(*b"log\0"));
        assert_eq!(r.cx, st(CPT));
        assert_eq!(
            call(b, ch, msg::SENDPAYLOAD, 0).cx,
            0,
            "the cut send is gone"
        );
        rc::send(b, ch, b"log", false).unwrap();
        // LB receive: the first RECVPAYLOAD is cut; restart from RECVSIZE.
        assert_eq!(call(b, ch, msg::RECVSIZE, 0).cx, st(SUCCESS | DORECV | HB));
        assert_eq!(call(b, ch, msg::RECVPAYLOAD, 1).cx, st(CPT));
        assert_eq!(rc::recv(b, ch, false), Ok(Some(b"1 ".to_vec())));
        // HB: the transfer itself is cut, the retry succeeds.
        assert_eq!(call(b, ch, msg::SENDSIZE, 3).cx, st(SUCCESS | HB));
        assert_eq!(rc::hb_out(b, ch, b"log").bx, st(CPT));
        rc::send(b, ch, b"log", true).unwrap();
        assert_eq!(call(b, ch, msg::RECVSIZE, 0).cx, st(SUCCESS | DORECV | HB));
        assert_eq!(hb_in(b, ch, 2), (st(CPT), vec![]));
        assert_eq!(rc::recv(b, ch, true), Ok(Some(b"1 ".to_vec())));
        assert_eq!(rc::close(b, ch), Ok(()));
    };
    each_transport(HostConfig::default().cpt_every(1), guest, |host| {
        assert_eq!(host.counters().cpts_injected, 4);
        assert_eq!(host.vmx_log().len(), 2, "each message executed once");
    });
}

#[test]
fn one_shot_cpt_at_every_step() {
    const REQUEST: &[u8] = b"info-set guestinfo.b 1";
    for step in Step::ALL {
        for hb in [false, true] {
            let guest = |b: &mut Guest| {
                let r = rc::open_raw(b, RPCI_COOKIE);
                let ch = if step == Step::Open {
                    assert_eq!(r.cx, st(CPT));
                    open(b, RPCI_COOKIE)
                } else {
                    Chan::opened(&r)
                };
                let sent = rc::send(b, ch, REQUEST, hb);
                if step == Step::SendSize {
                    // OVT does not retry a SENDSIZE failure: the guest sees CPT.
                    assert_eq!(sent, Err(Error::Status(CPT)));
                    rc::send(b, ch, REQUEST, hb).unwrap();
                } else {
                    assert_eq!(sent, Ok(()), "{step:?} hb={hb}");
                }
                let reply = rc::recv(b, ch, hb);
                if step == Step::RecvSize {
                    assert_eq!(reply, Err(Error::Status(CPT)));
                    let _ = rc::recv(b, ch, hb);
                } else {
                    assert_eq!(reply, Ok(Some(b"1 ".to_vec())), "{step:?} hb={hb}");
                }
                let r = call(b, ch, msg::CLOSE, 0);
                let want = if step == Step::Close { CPT } else { SUCCESS };
                assert_eq!(r.cx, st(want));
            };
            let config =
                HostConfig::default()
                    .guestinfo("a", "0123456789")
                    .fault(step, 1, Answer::Cpt);
            each_transport(config, guest, |host| {
                if step == Step::Close {
                    assert_eq!(host.open_channels(), 1, "a cut CLOSE leaves it open");
                }
                let c = host.counters();
                let applicable = !matches!(
                    (step, hb),
                    (Step::HbOut | Step::HbIn, false)
                        | (Step::SendPayload | Step::RecvPayload, true)
                );
                assert_eq!(c.cpts_injected, u64::from(applicable), "{step:?} hb={hb}");
                assert_eq!(c.rpcs, 1, "{step:?} hb={hb}: executed exactly once");
                let b = host.guestinfo().get(&b"guestinfo.b"[..]);
                assert_eq!(b.map(Vec::as_slice), Some(&b"1"[..]));
            });
        }
    }
}

#[test]
fn one_shot_checkpoint_on_recvstatus_makes_the_guest_receive_again() {
    let guest = |b: &mut Guest| {
        let ch = open(b, RPCI_COOKIE);
        rc::send(b, ch, b"info-get guestinfo.x", true).unwrap();
        assert_eq!(call(b, ch, msg::RECVSIZE, 0).bx, 16);
        assert_eq!(hb_in(b, ch, 16), (HB_OK, b"0 No value found".to_vec()));
        let r = call(b, ch, msg::RECVSTATUS, 1);
        assert_eq!(r.cx, st(CPT), "acknowledgement cut");
        let again = rc::recv(b, ch, true);
        assert_eq!(again, Ok(Some(b"0 No value found".to_vec())));
    };
    let config = HostConfig::default().fault(Step::RecvStatus, 1, Answer::Cpt);
    each_transport(config, guest, |host| {
        let c = host.counters();
        assert_eq!((c.cpts_injected, c.faults_injected), (1, 1));
    });
}

#[test]
fn one_shot_fault_hits_the_kth_occurrence_only() {
    let guest = |b: &mut Guest| {
        let ch = open(b, RPCI_COOKIE);
        assert_eq!(rpc(b, ch, b"info-get guestinfo.a", false), b"1 b");
        rc::send(b, ch, b"info-get guestinfo.a", false).unwrap();
        assert_eq!(rc::recv(b, ch, false), Err(Error::Status(0)));
        // The failed step rewound the receive: the reply is still there.
        assert_eq!(rc::recv(b, ch, false), Ok(Some(b"1 b".to_vec())));
    };
    let config = HostConfig::default()
        .fault(Step::RecvStatus, 2, Answer::Fail)
        .guestinfo("a", "b");
    each_transport(config, guest, |host| {
        let c = host.counters();
        assert_eq!((c.faults_injected, c.cpts_injected), (1, 0));
    });
}

#[test]
fn hostile_answers() {
    const GET: &[u8] = b"info-get guestinfo.a";
    let config = || HostConfig::default().guestinfo("a", "abcdef");
    let reply = || Ok(Some(b"1 abcdef".to_vec()));

    // Wrong message type after RECVSIZE and after RECVPAYLOAD.
    let guest = |b: &mut Guest| {
        let ch = open(b, RPCI_COOKIE);
        rc::send(b, ch, GET, false).unwrap();
        let r = call(b, ch, msg::RECVSIZE, 0);
        assert_eq!((r.cx, r.bx, r.dx), (st(0x83), 8, 0x0003_0000));
        let r = call(b, ch, msg::RECVPAYLOAD, 1);
        assert_eq!((r.cx, r.dx), (st(1), 0));
    };
    let hostile = config()
        .fault(Step::RecvSize, 1, Answer::WrongMessageType(3))
        .fault(Step::RecvPayload, 1, Answer::WrongMessageType(0));
    each_transport(hostile, guest, |_| {});

    // Over-long claimed length: zeros past the real bytes over LB, failure over HB.
    let guest = |b: &mut Guest| {
        let ch = open(b, RPCI_COOKIE);
        rc::send(b, ch, GET, false).unwrap();
        assert_eq!(call(b, ch, msg::RECVSIZE, 0).bx, 12);
        assert_eq!(hb_in(b, ch, 12).0, 0);
        let words: Vec<u64> = (0..3)
            .map(|_| call(b, ch, msg::RECVPAYLOAD, 1).bx)
            .collect();
        assert_eq!(words, [0x6261_2031, 0x6665_6463, 0]);
        assert_eq!(call(b, ch, msg::RECVPAYLOAD, 1).cx, 0);
    };
    let hostile = config().fault(Step::RecvSize, 1, Answer::ClaimLength(12));
    each_transport(hostile, guest, |_| {});

    // A reply without its status prefix.
    let guest = |b: &mut Guest| {
        let ch = open(b, RPCI_COOKIE);
        rc::send(b, ch, GET, true).unwrap();
        assert_eq!(rc::recv(b, ch, true), Ok(Some(b"abcdef".to_vec())));
    };
    let hostile = config().fault(Step::RecvSize, 1, Answer::NoPrefix);
    each_transport(hostile, guest, |_| {});

    // DORECV with nothing behind it.
    let guest = |b: &mut Guest| {
        let ch = open(b, RPCI_COOKIE);
        let r = call(b, ch, msg::RECVSIZE, 0);
        assert_eq!((r.cx, r.bx, r.dx), (st(0x83), 40, 0x1_0000));
        assert_eq!(call(b, ch, msg::RECVPAYLOAD, 1).cx, 0);
        assert_eq!(hb_in(b, ch, 40).0, 0);
    };
    let hostile = config().fault(Step::RecvSize, 1, Answer::Phantom(40));
    each_transport(hostile, guest, |_| {});

    // A phantom RECVSIZE over a reply an earlier RECVSIZE announced: the payload steps
    // after it still fail (the old announcement does not carry over), and a fresh RECVSIZE
    // then serves the real reply.
    let guest = |b: &mut Guest| {
        let ch = open(b, RPCI_COOKIE);
        rc::send(b, ch, GET, true).unwrap();
        assert_eq!(call(b, ch, msg::RECVSIZE, 0).bx, 8);
        assert_eq!(call(b, ch, msg::RECVSIZE, 0).bx, 0xFE00_0000);
        assert_eq!(hb_in(b, ch, 8).0, 0);
        assert_eq!(call(b, ch, msg::RECVPAYLOAD, 1).cx, 0);
        assert_eq!(rc::recv(b, ch, true), reply());
    };
    let hostile = config().fault(Step::RecvSize, 2, Answer::Phantom(0xFE00_0000));
    each_transport(hostile, guest, |_| {});

    // Garbage HB status, then a normal transfer.
    let guest = |b: &mut Guest| {
        let ch = open(b, RPCI_COOKIE);
        rc::send(b, ch, GET, true).unwrap();
        call(b, ch, msg::RECVSIZE, 0);
        assert_eq!(hb_in(b, ch, 8), (0xFFFF_FFFF, vec![]));
        assert_eq!(rc::recv(b, ch, true), reply());
    };
    let hostile = config().fault(Step::HbIn, 1, Answer::Raw(0xFFFF_FFFF));
    each_transport(hostile, guest, |_| {});

    // The host closes the channel under the guest.
    let guest = |b: &mut Guest| {
        let ch = open(b, RPCI_COOKIE);
        assert_eq!(rpc(b, ch, GET, false), b"1 abcdef");
        assert_eq!(call(b, ch, msg::SENDSIZE, 4).cx, st(CLOSED));
        assert_eq!(call(b, ch, msg::SENDSIZE, 4).cx, 0);
    };
    let hostile = config().fault(Step::SendSize, 2, Answer::CloseChannel);
    each_transport(hostile, guest, |host| {
        assert_eq!(host.open_channels(), 0);
        assert_eq!(host.counters().channels_closed, 1);
        assert_eq!(host.counters().faults_injected, 1);
    });

    // Endless DORECV: acknowledged replies come back.
    let guest = |b: &mut Guest| {
        let ch = open(b, RPCI_COOKIE);
        rc::send(b, ch, GET, false).unwrap();
        for _ in 0..3 {
            assert_eq!(rc::recv(b, ch, true), reply());
        }
    };
    each_transport(config().endless_dorecv(), guest, |_| {});
}

// ---------------------------------------------------------------------------------------
// TCLO, RPCI, counters

#[test]
fn tclo_delivers_one_command_per_poll_after_each_guest_message() {
    let guest = |b: &mut Guest| {
        let ch = open(b, TCLO | COOKIE);
        let none = rc::recv(b, ch, false);
        assert_eq!(none, Ok(None), "nothing before the guest's first message");
        let r = call(b, ch, msg::SENDSIZE, 0);
        assert_eq!(r.cx, st(SUCCESS | HB), "the first poll: an empty message");
        assert_eq!(rc::recv(b, ch, false), Ok(Some(b"reset".to_vec())));
        let none = rc::recv(b, ch, false);
        assert_eq!(none, Ok(None), "one command per guest message");
        rc::send(b, ch, b"OK ATR toolbox", true).unwrap();
        assert_eq!(rc::recv(b, ch, true), Ok(Some(b"ping".to_vec())));
        rc::send(b, ch, b"OK ", false).unwrap();
        assert_eq!(rc::recv(b, ch, false), Ok(None));
        assert_eq!(rc::recv(b, ch, true), Ok(None), "queue drained");
        assert_eq!(rc::close(b, ch), Ok(()));
    };
    let config = HostConfig::default().tclo("reset").tclo("ping");
    each_transport(config, guest, |host| {
        assert_eq!(
            host.tclo_replies(),
            [b"OK ATR toolbox".to_vec(), b"OK ".to_vec()]
        );
        assert_eq!(host.tclo_pending(), 0);
        let c = host.counters();
        assert_eq!((c.tclo_commands, c.tclo_messages, c.rpcs), (2, 3, 0));
    });
}

#[test]
fn tclo_script_closes_the_channel_where_asked_and_records_each_exchange() {
    let guest = |b: &mut Guest| {
        let ch = open(b, TCLO | COOKIE);
        rc::send(b, ch, b"", true).unwrap();
        assert_eq!(rc::recv(b, ch, true), Ok(Some(b"reset".to_vec())));
        let side = open(b, RPCI_COOKIE);
        let unified = rpc(b, side, b"vmx.capability.unified_loop toolbox\0", true);
        assert_eq!(unified, b"1 ");
        assert_eq!(rc::close(b, side), Ok(()));
        rc::send(b, ch, b"OK ATR toolbox", true).unwrap();
        // The script's close: the channel is gone, its id free.
        let r = call(b, ch, msg::RECVSIZE, 0);
        assert_eq!(r.cx, st(CLOSED), "RECVSIZE answers CLOSED: {r:?}");
        refused(b, ch, msg::SENDSIZE, 0);
        // A new channel: the empty send, then the script goes on.
        let ch = open(b, TCLO | COOKIE);
        assert_eq!(
            rc::recv(b, ch, true),
            Ok(None),
            "nothing before the first message"
        );
        rc::send(b, ch, b"", true).unwrap();
        assert_eq!(rc::recv(b, ch, true), Ok(Some(b"ping".to_vec())));
        rc::send(b, ch, b"OK ", true).unwrap();
        assert_eq!(rc::close(b, ch), Ok(()));
    };
    let config = HostConfig::default()
        .tclo("reset")
        .tclo_close()
        .tclo("ping");
    each_transport(config, guest, |host| {
        let x = host.tclo_exchanges();
        assert_eq!(x.len(), 2);
        assert_eq!(
            (x[0].command.as_slice(), x[0].reply.as_deref()),
            (&b"reset"[..], Some(&b"OK ATR toolbox"[..]))
        );
        assert_eq!(
            (x[0].rpcs_before_command, x[0].rpcs_before_reply),
            (0, 1),
            "one side message"
        );
        assert!(x[0].calls_before_reply > x[0].calls_before_command);
        assert_eq!(x[1].reply.as_deref(), Some(&b"OK "[..]));
        assert_eq!(host.tools_unified_loop(), Some(&b"toolbox"[..]));
        assert_eq!(
            host.rpci_requests(),
            [b"vmx.capability.unified_loop toolbox\0".to_vec()]
        );
        assert_eq!(host.tclo_log(), b"reset\tOK ATR toolbox\nping\tOK \n");
        assert_eq!(
            host.rpci_log(),
            b"vmx.capability.unified_loop toolbox\\x00\n"
        );
        assert!(host.tools_running());
        assert_eq!(host.tclo_pending(), 0);
    });
}

#[test]
fn tools_rpci_commands_are_answered_and_kept() {
    let guest = |b: &mut Guest| {
        let ch = open(b, RPCI_COOKIE);
        for (request, hb) in [
            (&b"tools.capability.statechange "[..], true),
            (b"tools.capability.hgfs_server toolbox 1\0", false),
            (b"tools.os.statechange.status 1 2\0", true),
            (b"SetGuestInfo  1 node-1\0", false),
            (b"SetGuestInfo  10 \0\0\0\x03\0\0\0\x01", true),
            (b"vmbackup.eventSet req.done 0 \0", true),
        ] {
            assert_eq!(rpc(b, ch, request, hb), b"1 ", "{}", request.escape_ascii());
        }
        assert_eq!(
            rpc(b, ch, b"SetGuestInfo  99 x", true),
            b"0 Unknown command"
        );
        assert_eq!(rc::close(b, ch), Ok(()));
    };
    each_transport(HostConfig::default(), guest, |host| {
        let caps = host.tools_capabilities();
        assert_eq!(caps.get(&b"statechange"[..]), Some(&None));
        assert_eq!(
            caps.get(&b"hgfs_server"[..]),
            Some(&Some(b"toolbox 1".to_vec()))
        );
        assert_eq!(host.tools_state_changes(), [b"1 2".to_vec()]);
        let info = host.guest_info_reported();
        assert_eq!(info.get(&1).map(Vec::as_slice), Some(&b"node-1"[..]));
        assert_eq!(
            info.get(&10).map(Vec::as_slice),
            Some(&b"\0\0\0\x03\0\0\0\x01"[..]),
            "binary, whole"
        );
        assert_eq!(host.backup_events(), [b"req.done 0 ".to_vec()]);
        assert_eq!(host.rpci_requests().len(), 7);
    });
}

#[test]
fn rpci_side_effects_are_visible_through_the_accessors() {
    let guest = |b: &mut Guest| {
        // A cookie-less channel on a host that offers cookies, named with any cookie.
        let ch = open(b, RPCI);
        assert_eq!((ch.high, ch.low), (0, 0));
        let ch = ch.cookie(0x1234, 0x5678);
        for (request, hb, want) in [
            (&b"log first line\0"[..], false, &b"1 "[..]),
            (b"tools.set.versiontype 12389 4\0", true, b"1 "),
            (b"tools.set.version 1", true, b"1 "),
            (b"tools.set.version 2147483647\0", true, b"1 "),
            (b"machine.id.get", false, b"1 vm-7"),
            (b"info-set guestinfo.new \xff\xfe", true, b"1 "),
            (b"no.such.command", true, b"0 Unknown command"),
        ] {
            assert_eq!(rpc(b, ch, request, hb), want);
        }
    };
    let config = HostConfig::default()
        .machine_id("vm-7")
        .guestinfo("guestinfo.g", "v");
    each_transport(config, guest, |host| {
        assert_eq!(host.vmx_log(), [b"first line".to_vec()]);
        assert_eq!(host.tools_version(), Some(&b"2147483647"[..]));
        assert_eq!(host.tools_version_type(), Some(&b"12389 4"[..]));
        let new = host.guestinfo().get(&b"guestinfo.new"[..]);
        assert_eq!(new.map(Vec::as_slice), Some(&b"\xff\xfe"[..]));
        assert_eq!(host.guestinfo().len(), 2);
    });

    let guest = |b: &mut Guest| {
        let ch = open(b, RPCI_COOKIE);
        let denied = b"0 Permission denied";
        assert_eq!(rpc(b, ch, b"info-get guestinfo.g", true), denied);
        assert_eq!(rpc(b, ch, b"info-set guestinfo.g w", false), denied);
    };
    let config = HostConfig::default().deny_guestinfo().guestinfo("g", "v");
    each_transport(config, guest, |host| {
        let g = host.guestinfo().get(&b"guestinfo.g"[..]);
        assert_eq!(g.map(Vec::as_slice), Some(&b"v"[..]));
    });
}

#[test]
fn log_lines_past_the_budget_are_counted_as_dropped() {
    let guest = |b: &mut Guest| {
        let ch = open(b, RPCI);
        let line = [b"log ".as_slice(), &[b'x'; 65_000]].concat();
        for _ in 0..300 {
            assert_eq!(rpc(b, ch, &line, true), b"1 ");
        }
    };
    each_transport(HostConfig::default(), guest, |host| {
        let dropped = host.counters().vmx_log_dropped;
        assert!(dropped > 0, "16 MiB of log is kept, not 19");
        assert_eq!(host.vmx_log().len() as u64 + dropped, 300);
        let json = host.stats_json();
        assert!(
            json.contains(&format!("\"vmx_log_dropped\":{dropped},")),
            "{json}"
        );
    });
}

#[test]
fn counters_and_stats_json_follow_a_known_script() {
    let guest = |b: &mut Guest| {
        rc::lb(b, cmd::GETVERSION, 0);
        let ch = open(b, RPCI_COOKIE);
        rpc(b, ch, b"info-get guestinfo.a", true); // 20 bytes out, 4 in
        rpc(b, ch, b"log hi", false); // 6 out, 2 in
        open(b, RPCI);
        call(b, ch, msg::CLOSE, 0);
    };
    let config = HostConfig::default().guestinfo("a", "bc");
    each_transport(config, guest, |host| {
        let c = host.counters();
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
    });
}

// ---------------------------------------------------------------------------------------
// Instructions only: what the runner's emulation of the instruction adds

#[test]
fn string_instructions_move_their_registers() {
    let host = Transport::HandAsm.run(HostConfig::default(), |b| {
        let ch = open(b, RPCI_COOKIE);
        let req = b"info-set guestinfo.answer 42";
        call(b, ch, msg::SENDSIZE, req.len() as u32);
        let r = rc::hb_out(b, ch, req);
        assert_eq!(r.bx, HB_OK);
        assert_eq!(r.si, req.as_ptr() as u64 + req.len() as u64, "RSI past it");
        assert_eq!(r.cx, 0, "RCX counted down");
        assert_eq!((r.di, r.bp), (ch.low.into(), ch.high.into()), "cookie kept");

        assert_eq!(call(b, ch, msg::RECVSIZE, 0).bx, 2);
        let mut buf = [UNWRITTEN; 8];
        let r = rc::hb_in(b, ch, &mut buf);
        assert_eq!(r.bx, HB_OK);
        assert_eq!(
            &buf, b"1 \xAA\xAA\xAA\xAA\xAA\xAA",
            "only the reply's bytes"
        );
        assert_eq!(r.di, buf.as_ptr() as u64 + 2, "RDI past what was written");
        assert_eq!(r.cx, 6, "RCX keeps the room not used");
        assert_eq!(call(b, ch, msg::RECVSTATUS, 1).cx, st(SUCCESS));

        // Refused by the host, the instruction still completes.
        let big = vec![b'x'; 70_000];
        call(b, ch, msg::SENDSIZE, MAX_MESSAGE as u32);
        let r = rc::hb_out(b, ch, &big);
        assert_eq!((r.bx, r.cx, r.si), (0, 0, big.as_ptr() as u64 + 70_000));
    });
    let answer = host.guestinfo().get(&b"guestinfo.answer"[..]);
    assert_eq!(answer.map(Vec::as_slice), Some(&b"42"[..]));
    let c = host.counters();
    assert_eq!((c.hb_out_calls, c.hb_in_calls), (2, 1));
    assert_eq!((c.bytes_to_host, c.bytes_to_guest), (28, 2));
}

#[test]
fn high_bandwidth_walking_downwards() {
    let config = HostConfig::default().guestinfo("k", "abc");
    Transport::HandAsm.run(config, |b| {
        let ch = open(b, RPCI_COOKIE);
        // With DF set, `rep outsb` reads RSI, RSI-1, ...: store the request reversed.
        let req = b"info-get guestinfo.k";
        let mut rev = req.to_vec();
        rev.reverse();
        call(b, ch, msg::SENDSIZE, req.len() as u32);
        let last = rev.as_ptr() as u64 + rev.len() as u64 - 1;
        let mut r = rc::hb_out_regs(ch, HB_OK);
        (r.cx, r.si) = (req.len() as u64, last);
        guest::rep_outsb_down(&mut r);
        assert_eq!((r.bx, r.cx, r.si), (HB_OK, 0, last - req.len() as u64));
        assert_eq!(call(b, ch, msg::RECVSIZE, 0).bx, 5, "reply `1 abc`");
        let mut buf = [0u8; 5];
        let end = buf.as_mut_ptr() as u64 + 4;
        let mut r = rc::hb_in_regs(ch, HB_OK);
        (r.cx, r.di) = (5, end);
        guest::rep_insb_down(&mut r);
        assert_eq!((r.bx, r.cx, r.di), (HB_OK, 0, end - 5));
        assert_eq!(&buf, b"cba 1", "written downwards from RDI");
    });
}

#[test]
fn out_instead_of_in_works_like_the_published_crate() {
    let config = HostConfig::default().product(Product::Workstation);
    let host = Transport::HandAsm.run(config, |_| {
        let mut r = rc::lb_regs(cmd::GETVERSION, !MAGIC);
        guest::lb_out(&mut r);
        let got = (r.ax, r.bx, r.cx);
        assert_eq!(got, (6, MAGIC.into(), 4), "GETVERSION through `out`");
    });
    assert_eq!(host.counters().lb_calls, 1);
}
