//! What only the model's internals show: the runner's raw calls (`rep_outsb` with data that
//! does not match its count, the bytes `rep_insb` returns), register soup. The scenarios a
//! guest can play are in `tests/host_scenarios.rs`, over both transports.

use super::*;

#[path = "../../../tests/support/reference.rs"]
mod reference;

use reference::{self as rc, cmd, msg, pack, HB_OK, RPCI_COOKIE, TCLO};

#[test]
fn no_backdoor_answers_all_ones_in_eax_only() {
    // The wrong port never reaches the model under the runner; not VMware faults there.
    let before = rc::lb_regs(cmd::GETVERSION, 0x1111_1111);
    for (config, regs) in [
        (
            HostConfig::default(),
            Regs {
                dx: 0x5659,
                ..before
            },
        ),
        (HostConfig::default().mode(Mode::NotVmware), before),
    ] {
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
    let regs = Regs { cx: 0x40, ..before };
    let mut r = regs;
    assert_eq!(host.rep_insb(&mut r), vec![0xFF; 0x40]);
    assert_eq!(r, regs);
    let mut r = Regs {
        cx: u64::MAX,
        ..before
    };
    assert_eq!(
        host.rep_insb(&mut r).len(),
        1 << 20,
        "no-device fill is bounded"
    );
    let mut r = before;
    host.rep_outsb(&mut r, b"discarded");
    assert_eq!(r, before);
    let c = host.counters();
    assert_eq!((c.hb_in_calls, c.hb_out_calls), (2, 1));
    assert_eq!(host.mode(), Mode::NotVmware);
}

#[test]
fn hb_out_with_less_data_than_its_count_fails() {
    // The runner reads min(RCX, cap + 1) bytes: only a direct caller can hand over fewer.
    let mut host = Host::new(HostConfig::default());
    let ch = rc::open(&mut host, RPCI_COOKIE).unwrap();
    let request = b"info-get guestinfo.a";
    rc::call(&mut host, ch, msg::SENDSIZE, request.len() as u32);
    let mut r = rc::hb_out_regs(ch, HB_OK);
    r.cx = 20;
    host.rep_outsb(&mut r, &request[..10]);
    assert_eq!(r.bx, 0);
    assert_eq!(
        rc::hb_out(&mut host, ch, request).bx,
        HB_OK,
        "the send still stands"
    );
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
                ax: soup.pick(&[rc::MAGIC.into()]),
                bx: soup.pick(&[
                    RPCI_COOKIE.into(),
                    TCLO.into(),
                    0,
                    1,
                    4,
                    20,
                    HB_OK,
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
                    assert!(out.len() as u64 <= r.cx || rc::lo32(r.ax) != rc::MAGIC);
                }
                _ => {
                    let before = r;
                    host.lb(&mut r);
                    if rc::lo32(before.ax) == rc::MAGIC
                        && rc::lo16(before.cx) == cmd::MESSAGE
                        && rc::hi16(before.cx) == msg::OPEN
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
        assert!(cookies.len() > 1, "the soup opened channels");
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
