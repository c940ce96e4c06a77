//! The hand-made seed corpus of `host_registers`: scenarios that reach deep channel states
//! (complete exchanges over HB and LB, checkpoints, hostile answers, full channel tables,
//! TCLO), written as [`Scenario`]s and encoded into `corpus/host_registers/`.
//!
//! `cargo test` checks the committed files match this code and replays them through the
//! harness; `VMW_FUZZ_WRITE_SEEDS=1 cargo test seeds` rewrites them.

use crate::scenario::{AnswerSpec, Chan, ConfigSpec, FaultSpec, Op, Scenario, ValueSpec};

/// Steps, by their index in `Step::ALL`.
mod step {
    pub const OPEN: u8 = 0;
    pub const SENDSIZE: u8 = 1;
    pub const SENDPAYLOAD: u8 = 2;
    pub const HBOUT: u8 = 3;
    pub const RECVSIZE: u8 = 4;
    pub const RECVPAYLOAD: u8 = 5;
    pub const HBIN: u8 = 6;
    pub const RECVSTATUS: u8 = 7;
}

/// `Chan::Known` for the `i`-th channel opened.
fn ch(i: u8) -> Chan {
    Chan::Known {
        index: i,
        corrupt: false,
    }
}

fn open_rpci(cookie: bool) -> Op {
    Op::Open {
        proto: if cookie { 4 } else { 0 },
        raw: 0,
    }
}

fn open_tclo(cookie: bool) -> Op {
    Op::Open {
        proto: if cookie { 5 } else { 1 },
        raw: 0,
    }
}

/// A request: `PREFIXES[prefix]` + text.
fn send(c: Chan, hb: bool, prefix: u8, text: &[u8]) -> Op {
    Op::Send {
        chan: c,
        hb,
        prefix,
        text: text.to_vec(),
        pad_len: 0,
        pad: 0,
    }
}

fn recv(c: Chan, hb: bool) -> Op {
    Op::Recv { chan: c, hb }
}

fn close(c: Chan) -> Op {
    Op::Msg {
        sub: 6,
        chan: c,
        bx: 0,
    }
}

fn fault(step: u8, nth: u8, answer: AnswerSpec) -> FaultSpec {
    FaultSpec { step, nth, answer }
}

/// Prefix indexes into `scenario::PREFIXES`.
const RAW: u8 = 0;
const GET: u8 = 1;
const SET: u8 = 2;
const LOG: u8 = 3;
const VERSION: u8 = 4;
const MACHINE_ID: u8 = 6;

/// Every seed, by file name.
pub fn all() -> Vec<(&'static str, Scenario)> {
    let c0 = ch(0);
    vec![
        (
            "rpci_hb_round_trip",
            Scenario {
                config: ConfigSpec {
                    channels: 128,
                    guestinfo: vec![(
                        b"ignition.config.data".to_vec(),
                        ValueSpec::Bytes(b"eyJpZ25pdGlvbiI6e319".to_vec()),
                    )],
                    ..ConfigSpec::default()
                },
                ops: vec![
                    open_rpci(true),
                    send(c0, true, GET, b"ignition.config.data"),
                    recv(c0, true),
                    send(c0, true, SET, b"state provisioned"),
                    recv(c0, true),
                    send(c0, true, GET, b"state"),
                    recv(c0, true),
                    send(c0, true, LOG, b"hello from the guest"),
                    recv(c0, true),
                    send(c0, true, VERSION, b"2147483647"),
                    recv(c0, true),
                    send(c0, true, MACHINE_ID, b""),
                    recv(c0, true),
                    send(c0, true, GET, b"absent"),
                    recv(c0, true),
                    close(c0),
                ],
            },
        ),
        (
            "rpci_lb_no_hb",
            Scenario {
                config: ConfigSpec {
                    flags: 0x01,
                    channels: 128,
                    ..ConfigSpec::default()
                },
                ops: vec![
                    open_rpci(true),
                    open_rpci(false),
                    send(c0, false, SET, b"odd abc"),
                    recv(c0, false),
                    send(ch(1), false, GET, b"odd"),
                    recv(ch(1), false),
                    send(c0, false, RAW, b"info-set guestinfo.bin \xff\x01\0tail"),
                    recv(c0, false),
                    send(c0, false, GET, b"bin"),
                    recv(c0, false),
                    send(c0, false, RAW, b"tools.capability.statechange "),
                    recv(c0, false),
                    close(c0),
                    close(ch(1)),
                ],
            },
        ),
        (
            "old_host_8_channels",
            Scenario {
                config: ConfigSpec {
                    flags: 0x02,
                    channels: 8,
                    ..ConfigSpec::default()
                },
                ops: {
                    let mut ops = vec![open_rpci(true)];
                    ops.extend((0..9).map(|_| open_rpci(false)));
                    ops.push(close(ch(3)));
                    ops.push(close(ch(3)));
                    ops.push(open_tclo(false));
                    ops.push(send(ch(7), false, GET, b"x"));
                    ops.push(recv(ch(7), false));
                    ops
                },
            },
        ),
        (
            "checkpoints",
            Scenario {
                config: ConfigSpec {
                    channels: 128,
                    cpt_every: 3,
                    faults: vec![
                        fault(step::SENDPAYLOAD, 1, AnswerSpec::Cpt),
                        fault(step::RECVSTATUS, 1, AnswerSpec::Cpt),
                        fault(step::HBIN, 1, AnswerSpec::Cpt),
                        fault(step::HBOUT, 2, AnswerSpec::Fail),
                        fault(step::OPEN, 2, AnswerSpec::Cpt),
                    ],
                    guestinfo: vec![(b"k".to_vec(), ValueSpec::Bytes(b"value-7".to_vec()))],
                    ..ConfigSpec::default()
                },
                ops: vec![
                    open_rpci(true),
                    open_rpci(true),
                    open_rpci(true),
                    send(c0, false, GET, b"k"),
                    send(c0, false, GET, b"k"),
                    recv(c0, false),
                    recv(c0, false),
                    send(c0, true, GET, b"k"),
                    recv(c0, true),
                    recv(c0, true),
                    send(c0, true, SET, b"k v2"),
                    send(c0, true, SET, b"k v2"),
                    recv(c0, true),
                    send(c0, true, GET, b"k"),
                    recv(c0, false),
                ],
            },
        ),
        (
            "hostile_host",
            Scenario {
                config: ConfigSpec {
                    channels: 128,
                    flags: 0x08,
                    faults: vec![
                        fault(step::RECVSIZE, 1, AnswerSpec::ClaimLength(u32::MAX)),
                        fault(step::RECVPAYLOAD, 2, AnswerSpec::WrongMessageType(7)),
                        fault(step::RECVSIZE, 3, AnswerSpec::NoPrefix),
                        fault(step::RECVSIZE, 5, AnswerSpec::Phantom(4096)),
                        fault(step::SENDSIZE, 5, AnswerSpec::CloseChannel),
                        fault(step::HBIN, 1, AnswerSpec::Raw(0x0001_0000)),
                        fault(step::RECVSIZE, 6, AnswerSpec::ClaimLength(3)),
                    ],
                    guestinfo: vec![(b"k".to_vec(), ValueSpec::Bytes(b"secret".to_vec()))],
                    ..ConfigSpec::default()
                },
                ops: vec![
                    open_rpci(true),
                    send(c0, true, GET, b"k"),
                    recv(c0, true),
                    recv(c0, false),
                    recv(c0, true),
                    recv(c0, false),
                    recv(c0, false),
                    recv(c0, true),
                    send(c0, false, GET, b"k"),
                    send(c0, false, GET, b"k"),
                    send(c0, false, GET, b"k"),
                    send(c0, false, GET, b"k"),
                    recv(c0, false),
                    open_rpci(true),
                    send(ch(1), true, GET, b"k"),
                    recv(ch(1), true),
                ],
            },
        ),
        (
            "tclo_poll",
            Scenario {
                config: ConfigSpec {
                    channels: 128,
                    tclo: vec![b"reset".to_vec(), b"ping".to_vec(), b"OS_Halt".to_vec()],
                    ..ConfigSpec::default()
                },
                ops: vec![
                    open_tclo(true),
                    send(c0, false, RAW, b""),
                    recv(c0, false),
                    send(c0, true, RAW, b"OK ATR toolbox"),
                    recv(c0, true),
                    send(c0, false, RAW, b"OK "),
                    recv(c0, false),
                    send(c0, false, RAW, b"OK "),
                    recv(c0, false),
                    close(c0),
                ],
            },
        ),
        (
            "raw_registers",
            Scenario {
                config: ConfigSpec {
                    channels: 255,
                    flags: 0x40 | 0x80,
                    ..ConfigSpec::default()
                },
                ops: {
                    let mut ops: Vec<Op> = [10u16, 17, 1, 19, 23, 46, 45, 68, 0xFFFF]
                        .iter()
                        .map(|&c| Op::Cmd {
                            cmd: c,
                            bx: !0x564D_5868,
                        })
                        .collect();
                    ops.push(Op::LbRaw {
                        flags: 7,
                        ax: 0,
                        bx: 0xC943_5052,
                        cx: 0x0000_001E,
                        dx: 0,
                        si: 0,
                        di: 0,
                    });
                    ops.push(Op::LbRaw {
                        flags: 6,
                        ax: 0x564D_5869,
                        bx: 0,
                        cx: 0x0003_001E,
                        dx: 0,
                        si: 0,
                        di: 0,
                    });
                    ops.push(Op::Msg {
                        sub: 7,
                        chan: c0,
                        bx: 0,
                    });
                    ops.push(Op::Msg {
                        sub: 3,
                        chan: Chan::Known {
                            index: 0,
                            corrupt: true,
                        },
                        bx: 0,
                    });
                    ops.push(Op::HbIn {
                        chan: Chan::Raw(0xFFFF),
                        flags: 2 | 4,
                        count: 1 << 40,
                        bx: 0,
                    });
                    ops.push(Op::HbOut {
                        chan: c0,
                        flags: 1 | 2,
                        len: 16,
                        fill: 0,
                        data: b"0123".to_vec(),
                        count: u64::MAX,
                        bx: 0x0001_0001,
                    });
                    ops
                },
            },
        ),
        (
            "not_vmware",
            Scenario {
                config: ConfigSpec {
                    flags: 0x10,
                    channels: 8,
                    ..ConfigSpec::default()
                },
                ops: vec![
                    Op::Cmd { cmd: 10, bx: 0 },
                    open_rpci(true),
                    send(c0, true, GET, b"k"),
                    Op::HbIn {
                        chan: c0,
                        flags: 2,
                        count: 1 << 40,
                        bx: 0,
                    },
                    Op::HbIn {
                        chan: c0,
                        flags: 2,
                        count: 17,
                        bx: 0,
                    },
                ],
            },
        ),
        (
            "big_messages",
            Scenario {
                config: ConfigSpec {
                    channels: 128,
                    guestinfo: vec![(
                        b"big".to_vec(),
                        ValueSpec::Fill {
                            byte: b'x',
                            len16: 0xFFFF,
                        },
                    )],
                    ..ConfigSpec::default()
                },
                ops: vec![
                    open_rpci(true),
                    send(c0, true, GET, b"big"),
                    recv(c0, true),
                    send(c0, false, GET, b"big"),
                    recv(c0, false),
                    Op::Send {
                        chan: c0,
                        hb: true,
                        prefix: SET,
                        text: b"fill ".to_vec(),
                        // Prefix 19 + "fill " 5 + pad: exactly the 65,536-byte cap.
                        pad_len: u16::MAX - 23,
                        pad: b'v',
                    },
                    recv(c0, true),
                    send(c0, true, GET, b"fill"),
                    recv(c0, true),
                    Op::Send {
                        chan: c0,
                        hb: true,
                        prefix: SET,
                        text: b"over ".to_vec(),
                        pad_len: 65_535,
                        pad: b'v',
                    },
                    recv(c0, true),
                    Op::HbOut {
                        chan: c0,
                        flags: 0,
                        len: 65_537,
                        fill: b'z',
                        data: Vec::new(),
                        count: 0,
                        bx: 0,
                    },
                ],
            },
        ),
    ]
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::host_run;

    fn dir(target: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target)
    }

    /// The committed seed files are exactly what this module encodes (set
    /// `VMW_FUZZ_WRITE_SEEDS=1` to rewrite them), and they reach what they were made for.
    #[test]
    fn host_registers_seeds_are_current_and_reach_deep_states() {
        let dir = dir("host_registers");
        let write = std::env::var_os("VMW_FUZZ_WRITE_SEEDS").is_some();
        let mut total = 0;
        for (name, scenario) in all() {
            let bytes = scenario.encode();
            assert_eq!(
                Scenario::decode(&bytes),
                scenario,
                "{name} does not decode back"
            );
            let path = dir.join(name);
            if write {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            }
            let on_disk = std::fs::read(&path).unwrap_or_default();
            assert!(
                on_disk == bytes,
                "{} is stale: VMW_FUZZ_WRITE_SEEDS=1 cargo test",
                path.display()
            );
            total += bytes.len();
            let report = host_run::run(&bytes);
            match name {
                "rpci_hb_round_trip" => assert_eq!(report.info_gets_checked, 3, "{report:?}"),
                "rpci_lb_no_hb" => assert_eq!(report.info_gets_checked, 2, "{report:?}"),
                "old_host_8_channels" => assert_eq!(report.channels_opened, 9, "{report:?}"),
                "big_messages" => assert!(report.info_gets_checked >= 2, "{report:?}"),
                "tclo_poll" => assert_eq!(report.rpcs, 0, "{report:?}"),
                "not_vmware" => assert_eq!(report.channels_opened, 0, "{report:?}"),
                _ => assert!(
                    report.rpcs > 0 || name == "raw_registers",
                    "{name}: {report:?}"
                ),
            }
        }
        assert!(total < 20_000, "seed corpus {total} bytes");
    }

    /// Every file under `corpus/host_registers` and `regressions/host_registers` (including
    /// whatever a fuzzing run added) passes the harness.
    #[test]
    fn host_registers_corpus_and_regressions_replay() {
        let regressions = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions/host_registers");
        for d in [dir("host_registers"), regressions] {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                host_run::run(&std::fs::read(&path).unwrap());
            }
        }
    }
}

/// Seeds of the guest-library targets, written byte by byte in the formats
/// `guest_run::run_reply` and `guest_run::run_request` read.
pub mod guest {
    use super::{fault, step};
    use crate::bytes::Writer;
    use crate::scenario::{AnswerSpec, ConfigSpec, ValueSpec};

    /// A `reply_parser` operation.
    enum R<'a> {
        /// get of configured key `i` (with the prefix).
        GetKnown(u8),
        Get(&'a [u8]),
        SetKnown(u8, &'a [u8]),
        Rpc(&'a [u8]),
        Log(&'a [u8]),
        Close,
        Open,
    }

    fn reply(config: ConfigSpec, cap_kib: u8, ops: &[R]) -> Vec<u8> {
        let mut w = Writer::default();
        config.encode(&mut w);
        w.u8(cap_kib);
        for op in ops {
            match op {
                R::GetKnown(i) => w.u8(0).u8(0x80 | i),
                R::Get(k) => w.u8(0).u8(0).short_bytes(k),
                R::SetKnown(i, v) => w.u8(1).u8(0x80 | i).short_bytes(v),
                R::Rpc(q) => w.u8(2).short_bytes(q),
                R::Log(t) => w.u8(3).short_bytes(t),
                R::Close => w.u8(4),
                R::Open => w.u8(5),
            };
        }
        w.out
    }

    fn preset(values: &[(&[u8], ValueSpec)]) -> Vec<(Vec<u8>, ValueSpec)> {
        values
            .iter()
            .map(|(k, v)| (k.to_vec(), v.clone()))
            .collect()
    }

    /// `reply_parser` seeds by file name.
    pub fn reply_parser() -> Vec<(&'static str, Vec<u8>)> {
        use R::*;
        let kv = preset(&[
            (b"k", ValueSpec::Bytes(b"value-7".to_vec())),
            (b"guestinfo.empty", ValueSpec::Bytes(Vec::new())),
        ]);
        vec![
            (
                "well_behaved",
                reply(
                    ConfigSpec {
                        channels: 128,
                        guestinfo: kv.clone(),
                        ..ConfigSpec::default()
                    },
                    64,
                    &[
                        GetKnown(0),
                        GetKnown(1),
                        Get(b"absent"),
                        SetKnown(0, b"new value"),
                        GetKnown(0),
                        Rpc(b"machine.id.get"),
                        Rpc(b"no.such.command"),
                        Log(b"hello"),
                        Close,
                        GetKnown(0),
                    ],
                ),
            ),
            (
                "lb_checkpoints",
                reply(
                    ConfigSpec {
                        flags: 0x01,
                        channels: 8,
                        cpt_every: 3,
                        faults: vec![
                            fault(step::RECVPAYLOAD, 2, AnswerSpec::Cpt),
                            fault(step::RECVSTATUS, 1, AnswerSpec::Cpt),
                            fault(step::SENDPAYLOAD, 1, AnswerSpec::Cpt),
                            fault(step::OPEN, 1, AnswerSpec::Cpt),
                        ],
                        guestinfo: kv.clone(),
                        ..ConfigSpec::default()
                    },
                    64,
                    &[GetKnown(0), SetKnown(0, b"abc"), GetKnown(0), GetKnown(1)],
                ),
            ),
            (
                "hostile",
                reply(
                    ConfigSpec {
                        flags: 0x08,
                        channels: 128,
                        faults: vec![
                            fault(step::RECVSIZE, 1, AnswerSpec::ClaimLength(u32::MAX)),
                            fault(step::RECVSIZE, 2, AnswerSpec::NoPrefix),
                            fault(step::RECVSIZE, 3, AnswerSpec::WrongMessageType(9)),
                            fault(step::RECVSIZE, 4, AnswerSpec::Phantom(100)),
                            fault(step::SENDSIZE, 5, AnswerSpec::CloseChannel),
                            fault(step::HBIN, 5, AnswerSpec::Raw(0xFFFF_FFFF)),
                            fault(step::RECVSIZE, 7, AnswerSpec::ClaimLength(60_000)),
                        ],
                        guestinfo: kv.clone(),
                        ..ConfigSpec::default()
                    },
                    255,
                    &[
                        GetKnown(0),
                        GetKnown(0),
                        GetKnown(0),
                        GetKnown(0),
                        GetKnown(0),
                        GetKnown(0),
                        GetKnown(0),
                        GetKnown(0),
                    ],
                ),
            ),
            (
                "big_and_capped",
                reply(
                    ConfigSpec {
                        flags: 0x01,
                        channels: 128,
                        guestinfo: preset(&[
                            (
                                b"big",
                                ValueSpec::Fill {
                                    byte: b'x',
                                    len16: 0xFFFF,
                                },
                            ),
                            (
                                b"mid",
                                ValueSpec::Fill {
                                    byte: b'y',
                                    len16: 4000,
                                },
                            ),
                        ]),
                        ..ConfigSpec::default()
                    },
                    63,
                    &[GetKnown(0), GetKnown(1), GetKnown(0)],
                ),
            ),
            (
                "no_channel",
                reply(
                    ConfigSpec {
                        channels: 0,
                        flags: 0x04,
                        ..ConfigSpec::default()
                    },
                    1,
                    &[Open, Get(b"k"), Log(b"x"), Close],
                ),
            ),
        ]
    }

    /// A `request_builder` operation.
    enum Q<'a> {
        /// set (prefix choice, key, value, extra copies of a byte)
        Set(u8, &'a [u8], &'a [u8], u16, u8),
        Get(u8, &'a [u8]),
        Log(&'a [u8], u16),
        Rpc(&'a [u8], u16),
        Close,
    }

    fn padded(w: &mut Writer, v: &[u8], pad: u16, fill: u8) {
        w.short_bytes(v);
        if pad == 0 {
            w.u8(0);
        } else {
            w.u8(1).u16(pad).u8(fill);
        }
    }

    fn request(flags: u8, ops: &[Q]) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(flags);
        for op in ops {
            match op {
                Q::Set(p, k, v, pad, fill) => {
                    w.u8(0).u8(*p).short_bytes(k);
                    padded(&mut w, v, *pad, *fill);
                }
                Q::Get(p, k) => {
                    w.u8(1).u8(*p).short_bytes(k);
                }
                Q::Log(t, pad) => {
                    w.u8(2);
                    padded(&mut w, t, *pad, b'.');
                }
                Q::Rpc(q, pad) => {
                    w.u8(3);
                    padded(&mut w, q, *pad, b' ');
                }
                Q::Close => {
                    w.u8(4);
                }
            }
        }
        w.out
    }

    /// `request_builder` seeds by file name.
    pub fn request_builder() -> Vec<(&'static str, Vec<u8>)> {
        use Q::*;
        vec![
            (
                "round_trips",
                request(
                    0,
                    &[
                        Set(2, b"key", b"  spaced value \xff\x01 ", 0, 0),
                        Get(0, b"key"),
                        Set(1, b"empty", b"", 0, 0),
                        Get(3, b"empty"),
                        Set(0, b"guestinfo.twice", b"x", 0, 0),
                        Get(0, b"absent"),
                        Log(b"hello from the guest", 0),
                        Rpc(b"machine.id.get", 0),
                        Rpc(b"", 0),
                        Close,
                        Get(1, b"key"),
                    ],
                ),
            ),
            (
                "bad_keys",
                request(
                    0x01,
                    &[
                        Set(0, b"", b"v", 0, 0),
                        Set(1, b"", b"v", 0, 0),
                        Set(0, b"a b", b"v", 0, 0),
                        Set(0, b"a\0b", b"v", 0, 0),
                        Set(0, b"a\nb", b"v", 0, 0),
                        Set(0, b"a\tb", b"v", 0, 0),
                        Set(0, b"ok", b"nul\0inside", 0, 0),
                        Get(2, b""),
                        Get(0, b"x y"),
                        Set(0, b"a\x0bb", b"vertical tab", 0, 0),
                        Get(0, b"a\x0bb"),
                    ],
                ),
            ),
            (
                "at_the_cap",
                request(
                    0x04,
                    &[
                        // 9 + 10 + 3 + 1 + 10 + 65,503 = 65,536 bytes: just fits.
                        Set(1, b"cap", b"0123456789", 65_503, b'v'),
                        Get(1, b"cap"),
                        Set(1, b"cap", b"0123456789", 65_504, b'v'),
                        Log(b"", 65_532),
                        Log(b"", 65_533),
                        Rpc(b"", 65_535),
                        Rpc(b"xy", 65_535),
                    ],
                ),
            ),
        ]
    }
}

#[cfg(test)]
mod guest_tests {
    use std::path::Path;

    use crate::guest_run;

    fn check(target: &str, seeds: Vec<(&'static str, Vec<u8>)>, run: fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target);
        let write = std::env::var_os("VMW_FUZZ_WRITE_SEEDS").is_some();
        for (name, bytes) in seeds {
            let path = dir.join(name);
            if write {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            }
            let on_disk = std::fs::read(&path).unwrap_or_default();
            assert!(
                on_disk == bytes,
                "{} is stale: VMW_FUZZ_WRITE_SEEDS=1 cargo test",
                path.display()
            );
            run(&bytes);
        }
        let regressions = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("regressions")
            .join(target);
        for d in [dir, regressions] {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                if path.extension().is_none() {
                    run(&std::fs::read(&path).unwrap());
                }
            }
        }
    }

    #[test]
    fn reply_parser_seeds_and_regressions_replay() {
        check(
            "reply_parser",
            super::guest::reply_parser(),
            guest_run::run_reply,
        );
    }

    #[test]
    fn datamap_decoder_seeds_and_regressions_replay() {
        check("datamap_decoder", crate::datamap_run::seeds(), |data| {
            crate::datamap_run::run(data);
        });
    }

    #[test]
    fn request_builder_seeds_and_regressions_replay() {
        check(
            "request_builder",
            super::guest::request_builder(),
            guest_run::run_request,
        );
    }
}
