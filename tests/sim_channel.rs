//! The message channel driven through the real instructions under the runner: every
//! sub-command in low and high bandwidth, cookies on and off, checkpoints, the channel
//! limit and bad guest input, with the exact registers open-vm-tools' `lib/message/message.c`
//! and `lib/include/backdoor_def.h` use.
#![cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]

mod sim_asm;

use sim_asm::*;
use vmw_backdoor::proto::Regs;
use vmw_backdoor::sim::{Answer, Host, HostConfig, Step};

/// Runs `guest` under `config`; fails the test with the guest's panic message if it did
/// not exit cleanly.
fn serve(config: HostConfig, guest: impl FnOnce()) -> Host {
    config.run(guest).expect("start the guest").expect_success()
}

#[test]
fn rpci_in_low_bandwidth_with_cookies() {
    let host = serve(HostConfig::default().guestinfo("color", "blue"), || {
        let r = Chan::open_raw(RPCI | COOKIE);
        assert_eq!(r.cx, ST_OK, "OPEN status, low half zero");
        assert_eq!(r.dx, 0, "channel 0 in hi16(EDX), low half zero");
        assert!(r.si != 0 || r.di != 0, "cookies handed out");
        let ch = Chan {
            id: r.dx >> 16,
            high: r.si,
            low: r.di,
        };

        let req = b"info-get guestinfo.color";
        let r = ch.lb(1, req.len() as u64);
        assert_eq!(r.cx, ST_OK_HB, "SENDSIZE: success, HB offered");
        for chunk in req.chunks(4) {
            let mut w = [0u8; 4];
            w[..chunk.len()].copy_from_slice(chunk);
            assert_eq!(
                ch.lb(2, u32::from_le_bytes(w).into()).cx,
                ST_OK,
                "SENDPAYLOAD"
            );
        }
        let r = ch.lb(3, 0);
        assert_eq!((r.cx, r.bx, r.dx), (ST_DORECV_HB, 6, 1 << 16), "RECVSIZE");
        let r = ch.lb(4, 1);
        assert_eq!(
            (r.cx, r.bx, r.dx),
            (ST_OK, u32::from_le_bytes(*b"1 bl").into(), 2 << 16)
        );
        let r = ch.lb(4, 1);
        assert_eq!(
            (r.cx, r.bx as u16),
            (ST_OK, u16::from_le_bytes(*b"ue")),
            "2-byte tail"
        );
        assert_eq!(ch.lb(5, 1).cx, ST_OK, "RECVSTATUS");
        assert_eq!(
            ch.lb(3, 0).cx,
            ST_OK,
            "nothing pending after the acknowledgement"
        );
        assert_eq!(ch.lb(6, 0).cx, ST_OK, "CLOSE");
        assert_eq!(ch.lb(1, 1).cx, 0, "a closed channel refuses");
    });
    let c = host.counters();
    assert_eq!(
        (
            c.channels_opened,
            c.channels_closed,
            c.channels_open(),
            c.rpcs
        ),
        (1, 1, 0, 1)
    );
    assert_eq!(c.bytes_to_host, 24);
    assert_eq!(c.bytes_to_guest, 6);
    assert_eq!(c.lb_calls_for(30, 2), 6);
}

#[test]
fn rpci_in_high_bandwidth_moves_string_registers() {
    let host = serve(HostConfig::default(), || {
        let ch = Chan::open(RPCI | COOKIE).expect("open");
        let req = b"info-set guestinfo.answer 42";
        assert_eq!(ch.lb(1, req.len() as u64).cx, ST_OK_HB);
        let r = ch.hb_send(req);
        assert_eq!(r.bx, ST_OK, "HB out status");
        assert_eq!(
            r.si,
            req.as_ptr() as u64 + req.len() as u64,
            "RSI moved past the buffer"
        );
        assert_eq!(r.cx, 0, "RCX counted down");
        assert_eq!(
            (r.di, r.bp),
            (ch.low, ch.high),
            "cookie registers untouched"
        );

        let r = ch.lb(3, 0);
        assert_eq!((r.cx, r.bx), (ST_DORECV_HB, 2));
        let mut buf = [0xAAu8; 8];
        let r = ch.hb_recv(&mut buf);
        assert_eq!(r.bx, ST_OK, "HB in status");
        assert_eq!(
            &buf, b"1 \xAA\xAA\xAA\xAA\xAA\xAA",
            "only the reply's bytes written"
        );
        assert_eq!(
            r.di,
            buf.as_ptr() as u64 + 2,
            "RDI moved past what was written"
        );
        assert_eq!(r.cx, 6, "RCX keeps the room not used");
        assert_eq!(ch.lb(5, 1).cx, ST_OK);
        assert_eq!(ch.close(), ST_OK);
    });
    assert_eq!(
        host.guestinfo()
            .get(&b"guestinfo.answer"[..])
            .map(Vec::as_slice),
        Some(&b"42"[..])
    );
    let c = host.counters();
    assert_eq!(
        (
            c.hb_out_calls,
            c.hb_in_calls,
            c.bytes_to_host,
            c.bytes_to_guest
        ),
        (1, 1, 28, 2)
    );
}

#[test]
fn high_bandwidth_walking_downwards() {
    serve(HostConfig::default().guestinfo("k", "abc"), || {
        let ch = Chan::open(RPCI | COOKIE).expect("open");
        // With DF set, `rep outsb` reads RSI, RSI-1, ...: store the request reversed.
        let req = b"info-get guestinfo.k";
        let mut rev = req.to_vec();
        rev.reverse();
        assert_eq!(ch.lb(1, req.len() as u64).cx, ST_OK_HB);
        let last = rev.as_ptr() as u64 + rev.len() as u64 - 1;
        let mut r = Regs {
            ax: MAGIC,
            bx: ST_OK,
            cx: req.len() as u64,
            dx: (ch.id << 16) | HB_PORT,
            si: last,
            di: ch.low,
            bp: ch.high,
        };
        hb_out_down(&mut r);
        assert_eq!((r.bx, r.cx, r.si), (ST_OK, 0, last - req.len() as u64));
        assert_eq!(ch.lb(3, 0).bx, 5, "reply `1 abc`");
        let mut buf = [0u8; 5];
        let end = buf.as_mut_ptr() as u64 + 4;
        let mut r = Regs {
            ax: MAGIC,
            bx: ST_OK,
            cx: 5,
            dx: (ch.id << 16) | HB_PORT,
            si: ch.high,
            di: end,
            bp: ch.low,
        };
        hb_in_down(&mut r);
        assert_eq!((r.bx, r.cx, r.di), (ST_OK, 0, end - 5));
        assert_eq!(&buf, b"cba 1", "written downwards from RDI");
    });
}

#[test]
fn cookies_off_on_the_host() {
    let host = serve(HostConfig::default().no_cookies(), || {
        assert_eq!(Chan::open_raw(RPCI | COOKIE).cx, 0, "cookie OPEN refused");
        let r = Chan::open_raw(RPCI);
        assert_eq!(
            (r.cx, r.dx, r.si, r.di),
            (ST_OK, 0, 0, 0),
            "cookie-less OPEN: zero cookies"
        );
        assert_eq!(
            rpc(b"info-get guestinfo.none", true).unwrap(),
            b"0 No value found"
        );
        assert_eq!(
            rpc(b"info-get guestinfo.none", false).unwrap(),
            b"0 No value found"
        );
    });
    assert_eq!(host.counters().channels_opened, 3);
}

#[test]
fn cookie_less_channel_on_a_cookie_host() {
    serve(HostConfig::default(), || {
        let ch = Chan::open(RPCI).expect("open without cookie");
        assert_eq!((ch.high, ch.low), (0, 0));
        // Any cookie registers are accepted on a channel opened without one.
        let odd = Chan {
            high: 0x1234,
            low: 0x5678,
            ..ch
        };
        odd.send(b"log from a cookie-less channel", true).unwrap();
        assert_eq!(odd.recv(true).unwrap().unwrap(), b"1 ");
    });
}

#[test]
fn wrong_cookie_and_wrong_channel_are_refused() {
    serve(HostConfig::default(), || {
        let ch = Chan::open(RPCI | COOKIE).expect("open");
        let bad_high = Chan {
            high: ch.high ^ 1,
            ..ch
        };
        let bad_low = Chan {
            low: ch.low ^ 0x8000_0000,
            ..ch
        };
        let other = Chan {
            id: ch.id + 1,
            ..ch
        };
        for c in [bad_high, bad_low, other] {
            let r = c.lb(1, 4);
            assert_eq!((r.cx, r.bx), (0, 4), "refused, nothing else changed");
            assert_eq!(c.lb(6, 0).cx, 0, "cannot close it either");
        }
        assert_eq!(ch.lb(1, 4).cx, ST_OK_HB);
        let r = bad_low.hb_send(b"abcd");
        assert_eq!(r.bx, 0, "HB out with a wrong cookie");
        assert_eq!(ch.hb_send(b"abcd").bx, ST_OK, "the real cookie still works");
        assert_eq!(ch.close(), ST_OK);
    });
}

#[test]
fn steps_out_of_order_are_refused() {
    serve(HostConfig::default(), || {
        let ch = Chan::open(RPCI | COOKIE).expect("open");
        assert_eq!(ch.lb(2, 0x6161_6161).cx, 0, "SENDPAYLOAD before SENDSIZE");
        assert_eq!(ch.lb(4, 1).cx, 0, "RECVPAYLOAD before RECVSIZE");
        assert_eq!(ch.lb(5, 1).cx, 0, "RECVSTATUS with nothing received");
        let mut buf = [0u8; 4];
        assert_eq!(ch.hb_recv(&mut buf).bx, 0, "HB in before RECVSIZE");
        assert_eq!(ch.hb_send(b"ab").bx, 0, "HB out before SENDSIZE");
        assert_eq!(ch.lb(1, 8).cx, ST_OK_HB);
        assert_eq!(ch.lb(2, 0x6f6c_6f6c).cx, ST_OK);
        assert_eq!(ch.lb(3, 0).cx, 0, "RECVSIZE in the middle of a send");
        assert_eq!(ch.hb_send(b"abcd").bx, 0, "HB out after a payload step");
        // A fresh SENDSIZE restarts the message.
        ch.send(b"log again", false).unwrap();
        assert_eq!(ch.recv(false).unwrap().unwrap(), b"1 ");
    });
}

#[test]
fn unknown_sub_commands_fail() {
    let host = serve(HostConfig::default(), || {
        let ch = Chan::open(RPCI | COOKIE).expect("open");
        for sub in [7u64, 8, 0xffff] {
            let r = ch.lb(sub, 0x55);
            assert_eq!((r.ax, r.bx, r.cx), (MAGIC, 0x55, 0), "sub-command {sub}");
        }
        assert_eq!(ch.close(), ST_OK);
    });
    assert_eq!(host.counters().lb_calls_for(30, 7), 1);
}

#[test]
fn oversize_messages_are_refused() {
    let host = serve(HostConfig::default(), || {
        let ch = Chan::open(RPCI | COOKIE).expect("open");
        assert_eq!(ch.lb(1, 65_537).cx, 0, "SENDSIZE over 64 KiB");
        // RCX larger than announced (and than the cap): the runner hands the host at most
        // cap + 1 bytes, and the host refuses.
        let big = vec![b'x'; 70_000];
        assert_eq!(ch.lb(1, 65_536).cx, ST_OK_HB);
        let r = ch.hb_send(&big);
        assert_eq!(r.bx, 0, "HB out longer than announced");
        assert_eq!(
            (r.cx, r.si),
            (0, big.as_ptr() as u64 + 70_000),
            "the string op still completes"
        );
        // Exactly 64 KiB is accepted, in one HB transfer.
        let mut msg = b"info-set guestinfo.big ".to_vec();
        msg.resize(65_536, b'v');
        ch.send(&msg, true).unwrap();
        assert_eq!(ch.recv(true).unwrap().unwrap(), b"1 ");
        // And read back through HB: a reply has no cap.
        ch.send(b"info-get guestinfo.big", true).unwrap();
        let reply = ch.recv(true).unwrap().unwrap();
        assert_eq!(reply.len(), 2 + 65_536 - 23);
        assert!(reply.starts_with(b"1 vvv") && reply.ends_with(b"vvv"));
        assert_eq!(ch.close(), ST_OK);
    });
    assert_eq!(
        host.guestinfo().get(&b"guestinfo.big"[..]).map(Vec::len),
        Some(65_536 - 23)
    );
}

#[test]
fn periodic_checkpoints_cut_payload_steps() {
    let host = serve(HostConfig::default().cpt_every(1), || {
        let ch = Chan::open(RPCI | COOKIE).expect("open");
        // LB send: the first payload step is cut; the retry from SENDSIZE goes through.
        assert_eq!(ch.lb(1, 3).cx, ST_OK_HB);
        assert_eq!(ch.lb(2, u32::from_le_bytes(*b"log\0").into()).cx, ST_CPT);
        assert_eq!(ch.lb(2, 0).cx, 0, "the cut send is gone");
        ch.send(b"log", false).unwrap();
        // LB receive: the first RECVPAYLOAD is cut; restart from RECVSIZE.
        assert_eq!(ch.lb(3, 0).cx, ST_DORECV_HB);
        assert_eq!(ch.lb(4, 1).cx, ST_CPT);
        assert_eq!(ch.recv(false).unwrap().unwrap(), b"1 ");
        // HB: the transfer itself is cut, the retry succeeds.
        assert_eq!(ch.lb(1, 3).cx, ST_OK_HB);
        assert_eq!(ch.hb_send(b"log").bx, ST_CPT);
        ch.send(b"log", true).unwrap();
        assert_eq!(ch.lb(3, 0).cx, ST_DORECV_HB);
        let mut buf = [0u8; 2];
        assert_eq!(ch.hb_recv(&mut buf).bx, ST_CPT);
        assert_eq!(ch.recv(true).unwrap().unwrap(), b"1 ");
        assert_eq!(ch.close(), ST_OK);
    });
    assert_eq!(host.counters().cpts_injected, 4);
    assert_eq!(host.vmx_log().len(), 2, "each message executed once");
}

#[test]
fn one_shot_checkpoint_on_recvstatus() {
    let host = serve(
        HostConfig::default().fault(Step::RecvStatus, 1, Answer::Cpt),
        || {
            let ch = Chan::open(RPCI | COOKIE).expect("open");
            ch.send(b"info-get guestinfo.x", true).unwrap();
            assert_eq!(ch.lb(3, 0).bx, 16);
            let mut buf = [0u8; 16];
            assert_eq!(ch.hb_recv(&mut buf).bx, ST_OK);
            assert_eq!(ch.lb(5, 1).cx, ST_CPT, "acknowledgement cut");
            assert_eq!(
                ch.recv(true).unwrap().unwrap(),
                b"0 No value found",
                "received again"
            );
        },
    );
    assert_eq!(
        (
            host.counters().cpts_injected,
            host.counters().faults_injected
        ),
        (1, 1)
    );
}

#[test]
fn channel_limit() {
    let host = serve(HostConfig::default().channels(8), || {
        let chans: Vec<Chan> = (0..8)
            .map(|_| Chan::open(RPCI | COOKIE).expect("open"))
            .collect();
        let ids: Vec<u64> = chans.iter().map(|c| c.id).collect();
        assert_eq!(ids, (0..8).collect::<Vec<_>>());
        assert_eq!(Chan::open_raw(TCLO | COOKIE).cx, 0, "ninth channel refused");
        assert_eq!(chans[3].close(), ST_OK);
        assert_eq!(
            Chan::open(TCLO | COOKIE).expect("a slot is free").id,
            3,
            "lowest free id reused"
        );
    });
    let c = host.counters();
    assert_eq!(
        (c.channels_opened, c.channels_closed, c.channels_open()),
        (9, 1, 8)
    );
}

#[test]
fn no_high_bandwidth_on_an_old_host() {
    serve(HostConfig::default().no_hb(), || {
        let ch = Chan::open(RPCI | COOKIE).expect("open");
        assert_eq!(ch.lb(1, 4).cx, ST_OK, "SENDSIZE without the HB bit");
        assert_eq!(ch.hb_send(b"ping").bx, 0, "HB refused");
        ch.send(b"log x", false).unwrap();
        let r = ch.lb(3, 0);
        assert_eq!((r.cx, r.bx), (ST_DORECV, 2), "RECVSIZE without the HB bit");
        assert_eq!(ch.recv(false).unwrap().unwrap(), b"1 ");
    });
}

#[test]
fn low_bandwidth_tails_of_every_length() {
    let host = serve(HostConfig::default(), || {
        for value in ["a", "ab", "abc", "abcd", "abcde"] {
            let set = format!("info-set guestinfo.v{} {value}", value.len());
            assert_eq!(rpc(set.as_bytes(), false).unwrap(), b"1 ");
            let get = format!("info-get guestinfo.v{}", value.len());
            assert_eq!(
                rpc(get.as_bytes(), false).unwrap(),
                format!("1 {value}").as_bytes()
            );
        }
    });
    assert_eq!(
        host.guestinfo()
            .get(&b"guestinfo.v3"[..])
            .map(Vec::as_slice),
        Some(&b"abc"[..])
    );
}

#[test]
fn rpci_commands_reach_the_host() {
    let host = serve(HostConfig::default().machine_id("vm-42"), || {
        assert_eq!(rpc(b"log hello from the guest", true).unwrap(), b"1 ");
        assert_eq!(rpc(b"tools.set.version 2147483647\0", true).unwrap(), b"1 ");
        assert_eq!(rpc(b"machine.id.get", false).unwrap(), b"1 vm-42");
        assert_eq!(rpc(b"no.such.command", true).unwrap(), b"0 Unknown command");
    });
    assert_eq!(host.vmx_log(), [b"hello from the guest".to_vec()]);
    assert_eq!(host.tools_version(), Some(&b"2147483647"[..]));
}

#[test]
fn guestinfo_can_be_denied() {
    serve(
        HostConfig::default().guestinfo("k", "v").deny_guestinfo(),
        || {
            assert_eq!(
                rpc(b"info-get guestinfo.k", true).unwrap(),
                b"0 Permission denied"
            );
            assert_eq!(
                rpc(b"info-set guestinfo.k w", false).unwrap(),
                b"0 Permission denied"
            );
        },
    );
}

#[test]
fn tclo_commands_are_delivered_and_answered() {
    let host = serve(HostConfig::default().tclo("reset").tclo("ping"), || {
        let ch = Chan::open(TCLO | COOKIE).expect("open TCLO");
        // The first poll: an empty message, then RECVSIZE.
        ch.send(b"", true).unwrap();
        assert_eq!(ch.recv(true).unwrap().unwrap(), b"reset");
        ch.send(b"OK ATR toolbox", true).unwrap();
        assert_eq!(ch.recv(false).unwrap().unwrap(), b"ping");
        ch.send(b"OK ", false).unwrap();
        assert_eq!(ch.recv(true).unwrap(), None, "queue drained");
        assert_eq!(ch.close(), ST_OK);
    });
    assert_eq!(
        host.tclo_replies(),
        [b"OK ATR toolbox".to_vec(), b"OK ".to_vec()]
    );
    assert_eq!(host.counters().tclo_commands, 2);
}

#[test]
fn out_instead_of_in_works_like_the_published_crate() {
    let host = serve(
        HostConfig::default().product(vmw_backdoor::Product::Workstation),
        || {
            let mut r = Regs {
                ax: MAGIC,
                bx: !MAGIC & 0xffff_ffff,
                cx: 10,
                dx: LB_PORT,
                ..Regs::default()
            };
            lb_out(&mut r);
            assert_eq!(
                (r.ax, r.bx, r.cx),
                (6, MAGIC, 4),
                "GETVERSION through `out`: workstation"
            );
        },
    );
    assert_eq!(host.counters().lb_calls, 1);
}

#[test]
fn unknown_commands_and_wrong_magic() {
    serve(HostConfig::default(), || {
        let r = lb_cmd(0x7777, 0x1234);
        assert_eq!(
            (r.ax, r.bx, r.cx),
            (0xffff_ffff, 0x1234, 0x7777),
            "unknown command"
        );
        let mut r = Regs {
            ax: 0x1111,
            bx: 5,
            cx: 10,
            dx: LB_PORT,
            ..Regs::default()
        };
        lb_in(&mut r);
        assert_eq!((r.ax, r.bx), (0xffff_ffff, 5), "wrong magic: no device");
    });
}
