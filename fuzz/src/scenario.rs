//! The input format of the `host_registers` target: a host configuration, then a sequence of
//! guest operations.
//!
//! [`Scenario::decode`] turns any byte string into a scenario and [`Scenario::encode`] is its
//! inverse for the scenarios the seed corpus is built from. Operations come in two sizes:
//! single backdoor calls with (mostly) raw registers, which reach the odd corners, and whole
//! protocol exchanges (open, send a request, receive a reply), which get the fuzzer deep into
//! a channel's state machine quickly. Channels are usually named by an index into the channels
//! the host opened earlier in the run, so the fuzzer does not have to guess ids and cookies.

use crate::bytes::{Reader, Writer};

/// Operations executed per input at most: keeps every execution short.
pub const MAX_OPS: usize = 1024;

/// Faults armed per input at most.
pub const MAX_FAULTS: u8 = 7;

/// How the host is configured (the first bytes of the input).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigSpec {
    /// Bit 0 no HB, 1 no cookies, 2 deny guestinfo, 3 endless DORECV, 4-5 mode
    /// (1 = not VMware, 2 = restricted backdoor, else VMware), 6 no GETHZ, 7 no GET_VCPU_INFO.
    pub flags: u8,
    /// Channel limit; 255 asks for `usize::MAX` (the host clamps it).
    pub channels: u8,
    /// Periodic checkpoint on every n-th payload step; 0 = off.
    pub cpt_every: u8,
    /// Cookie seed.
    pub seed: u8,
    /// One-shot faults.
    pub faults: Vec<FaultSpec>,
    /// Preset guestinfo entries.
    pub guestinfo: Vec<(Vec<u8>, ValueSpec)>,
    /// Queued TCLO commands.
    pub tclo: Vec<Vec<u8>>,
}

/// One armed fault: step (index into `Step::ALL`, mod 9), occurrence, answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultSpec {
    /// `Step::ALL[step % 9]`.
    pub step: u8,
    /// The occurrence it fires at (0 never fires).
    pub nth: u8,
    /// What the host answers.
    pub answer: AnswerSpec,
}

/// Mirror of `sim::host::Answer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum AnswerSpec {
    Cpt,
    Fail,
    Raw(u32),
    WrongMessageType(u16),
    ClaimLength(u32),
    NoPrefix,
    Phantom(u32),
    CloseChannel,
}

/// A preset guestinfo value: literal bytes, or a long run of one byte (large replies from a
/// short input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueSpec {
    /// These bytes.
    Bytes(Vec<u8>),
    /// `len16 * 16` copies of `byte` (up to 1 MiB).
    Fill {
        /// The byte repeated.
        byte: u8,
        /// Length in units of 16 bytes.
        len16: u16,
    },
}

impl ValueSpec {
    /// The value's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            ValueSpec::Bytes(b) => b.clone(),
            ValueSpec::Fill { byte, len16 } => vec![*byte; usize::from(*len16) * 16],
        }
    }
}

/// Which channel an operation talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chan {
    /// The `index % n`-th channel the host opened so far (id and cookies as the host gave
    /// them); `corrupt` flips a bit of the cookie. With no channel opened yet: id 0, no cookie.
    Known {
        /// Index into the channels opened so far (0..64).
        index: u8,
        /// Send a wrong cookie.
        corrupt: bool,
    },
    /// This id with zero cookies.
    Raw(u16),
}

/// Request prefixes a [`Op::Send`] may start with, so the fuzzer reaches every RPCI command.
pub const PREFIXES: [&[u8]; 8] = [
    b"",
    b"info-get guestinfo.",
    b"info-set guestinfo.",
    b"log ",
    b"tools.set.version ",
    b"tools.set.versiontype ",
    b"machine.id.get",
    b"info-set ",
];

/// One guest operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A low-bandwidth call with raw registers. Flags: bit 0 use the right magic, bit 1 the
    /// right port (with `dx`'s high half as channel id), bit 2 set garbage in the upper 32 bits
    /// of every register.
    LbRaw {
        /// See above.
        flags: u8,
        /// EAX when flag bit 0 is clear.
        ax: u32,
        /// EBX.
        bx: u32,
        /// ECX.
        cx: u32,
        /// EDX (low half replaced by the port when flag bit 1 is set).
        dx: u32,
        /// ESI.
        si: u32,
        /// EDI.
        di: u32,
    },
    /// One MESSAGE sub-command (`sub % 8`; 7 is not a sub-command) on a channel, EBX = `bx`.
    Msg {
        /// Sub-command.
        sub: u8,
        /// Target channel.
        chan: Chan,
        /// EBX.
        bx: u32,
    },
    /// A `rep outsb`. Flags: bit 0 raw EBX (else 0x00010000), bit 1 raw RCX (else the data
    /// length), bit 2 wrong magic. The data is `data` padded with `fill` to `len` bytes.
    HbOut {
        /// Target channel.
        chan: Chan,
        /// See above.
        flags: u8,
        /// Data length (data padded with `fill`), at most 65,537.
        len: u32,
        /// Padding byte.
        fill: u8,
        /// Leading data bytes.
        data: Vec<u8>,
        /// RCX when flag bit 1 is set.
        count: u64,
        /// EBX when flag bit 0 is set.
        bx: u32,
    },
    /// A `rep insb`. Flags: bit 0 raw EBX (else 0x00010000), bit 1 raw RCX (else the length
    /// the last RECVSIZE announced), bit 2 wrong magic.
    HbIn {
        /// Target channel.
        chan: Chan,
        /// See above.
        flags: u8,
        /// RCX when flag bit 1 is set.
        count: u64,
        /// EBX when flag bit 0 is set.
        bx: u32,
    },
    /// A whole guest-to-host message: SENDSIZE, then HB or SENDPAYLOADs.
    Send {
        /// Target channel.
        chan: Chan,
        /// Use the HB port when the host offers it.
        hb: bool,
        /// Index into [`PREFIXES`] (mod 8).
        prefix: u8,
        /// The rest of the request.
        text: Vec<u8>,
        /// Extra copies of `pad` appended (long messages, up to 65,535 + text).
        pad_len: u16,
        /// Padding byte.
        pad: u8,
    },
    /// A whole host-to-guest message: RECVSIZE, HB or RECVPAYLOADs, RECVSTATUS.
    Recv {
        /// Target channel.
        chan: Chan,
        /// Use the HB port when the host offers it.
        hb: bool,
    },
    /// OPEN: protocol `proto % 4` = RPCI, TCLO, raw `raw`, RPCI; bit 2 = cookie flag.
    Open {
        /// See above.
        proto: u8,
        /// The protocol for choice 2.
        raw: u32,
    },
    /// Any other low-bandwidth command, magic and port right.
    Cmd {
        /// `lo16(ECX)`.
        cmd: u16,
        /// EBX.
        bx: u32,
    },
}

const T_LB_RAW: u8 = 0;
const T_MSG: u8 = 1;
const T_HB_OUT: u8 = 2;
const T_HB_IN: u8 = 3;
const T_SEND: u8 = 4;
const T_RECV: u8 = 5;
const T_OPEN: u8 = 6;
const T_CMD: u8 = 7;
const OP_KINDS: u8 = 8;

/// A decoded input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scenario {
    /// The host.
    pub config: ConfigSpec,
    /// What the guest does.
    pub ops: Vec<Op>,
}

fn read_chan(r: &mut Reader) -> Chan {
    let c = r.u8();
    if c & 0x80 == 0 {
        Chan::Known {
            index: c & 0x3f,
            corrupt: c & 0x40 != 0,
        }
    } else {
        Chan::Raw(r.u16())
    }
}

fn write_chan(w: &mut Writer, c: Chan) {
    match c {
        Chan::Known { index, corrupt } => {
            w.u8((index & 0x3f) | if corrupt { 0x40 } else { 0 });
        }
        Chan::Raw(id) => {
            w.u8(0x80).u16(id);
        }
    }
}

fn read_answer(r: &mut Reader) -> AnswerSpec {
    match r.u8() % 8 {
        0 => AnswerSpec::Cpt,
        1 => AnswerSpec::Fail,
        2 => AnswerSpec::Raw(r.u32()),
        3 => AnswerSpec::WrongMessageType(r.u16()),
        4 => AnswerSpec::ClaimLength(r.u32()),
        5 => AnswerSpec::NoPrefix,
        6 => AnswerSpec::Phantom(r.u32()),
        _ => AnswerSpec::CloseChannel,
    }
}

fn write_answer(w: &mut Writer, a: AnswerSpec) {
    match a {
        AnswerSpec::Cpt => w.u8(0),
        AnswerSpec::Fail => w.u8(1),
        AnswerSpec::Raw(v) => w.u8(2).u32(v),
        AnswerSpec::WrongMessageType(v) => w.u8(3).u16(v),
        AnswerSpec::ClaimLength(v) => w.u8(4).u32(v),
        AnswerSpec::NoPrefix => w.u8(5),
        AnswerSpec::Phantom(v) => w.u8(6).u32(v),
        AnswerSpec::CloseChannel => w.u8(7),
    };
}

impl Scenario {
    /// Decodes any input.
    pub fn decode(data: &[u8]) -> Scenario {
        let mut r = Reader::new(data);
        let config = ConfigSpec::decode(&mut r);
        let mut ops = Vec::new();
        while !r.is_empty() && ops.len() < MAX_OPS {
            ops.push(read_op(&mut r));
        }
        Scenario { config, ops }
    }

    /// Encodes a scenario so that [`Scenario::decode`] gives it back (for the seed corpus).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        self.config.encode(&mut w);
        for op in &self.ops {
            write_op(&mut w, op);
        }
        w.out
    }
}

impl ConfigSpec {
    /// Reads a host configuration (the first bytes of every target's input).
    pub fn decode(r: &mut Reader) -> ConfigSpec {
        let mut config = ConfigSpec {
            flags: r.u8(),
            channels: r.u8(),
            cpt_every: r.u8(),
            seed: r.u8(),
            ..ConfigSpec::default()
        };
        for _ in 0..(r.u8() % (MAX_FAULTS + 1)) {
            config.faults.push(FaultSpec {
                step: r.u8(),
                nth: r.u8(),
                answer: read_answer(r),
            });
        }
        for _ in 0..(r.u8() % 4) {
            let key = r.short_bytes();
            let value = match r.u8() {
                0 => ValueSpec::Bytes(r.short_bytes()),
                _ => ValueSpec::Fill {
                    byte: r.u8(),
                    len16: r.u16(),
                },
            };
            config.guestinfo.push((key, value));
        }
        for _ in 0..(r.u8() % 4) {
            config.tclo.push(r.short_bytes());
        }
        config
    }

    /// Writes what [`ConfigSpec::decode`] reads.
    pub fn encode(&self, w: &mut Writer) {
        w.u8(self.flags)
            .u8(self.channels)
            .u8(self.cpt_every)
            .u8(self.seed);
        w.u8(self.faults.len() as u8);
        for f in &self.faults {
            w.u8(f.step).u8(f.nth);
            write_answer(w, f.answer);
        }
        w.u8(self.guestinfo.len() as u8);
        for (key, value) in &self.guestinfo {
            w.short_bytes(key);
            match value {
                ValueSpec::Bytes(b) => {
                    w.u8(0).short_bytes(b);
                }
                ValueSpec::Fill { byte, len16 } => {
                    w.u8(1).u8(*byte).u16(*len16);
                }
            }
        }
        w.u8(self.tclo.len() as u8);
        for t in &self.tclo {
            w.short_bytes(t);
        }
    }
}

fn read_op(r: &mut Reader) -> Op {
    match r.u8() % OP_KINDS {
        T_LB_RAW => Op::LbRaw {
            flags: r.u8(),
            ax: r.u32(),
            bx: r.u32(),
            cx: r.u32(),
            dx: r.u32(),
            si: r.u32(),
            di: r.u32(),
        },
        T_MSG => Op::Msg {
            sub: r.u8() % 8,
            chan: read_chan(r),
            bx: r.u32(),
        },
        T_HB_OUT => {
            let chan = read_chan(r);
            let flags = r.u8();
            let len = u32::from(r.u16()) + u32::from(r.u8() % 3);
            let fill = r.u8();
            let data = r.short_bytes();
            let count = if flags & 2 != 0 { r.u64() } else { 0 };
            let bx = if flags & 1 != 0 { r.u32() } else { 0 };
            Op::HbOut {
                chan,
                flags,
                len,
                fill,
                data,
                count,
                bx,
            }
        }
        T_HB_IN => {
            let chan = read_chan(r);
            let flags = r.u8();
            let count = if flags & 2 != 0 { r.u64() } else { 0 };
            let bx = if flags & 1 != 0 { r.u32() } else { 0 };
            Op::HbIn {
                chan,
                flags,
                count,
                bx,
            }
        }
        T_SEND => {
            let chan = read_chan(r);
            let b = r.u8();
            let text = r.short_bytes();
            let (pad_len, pad) = if b & 0x10 != 0 {
                (r.u16(), r.u8())
            } else {
                (0, 0)
            };
            Op::Send {
                chan,
                hb: b & 0x08 != 0,
                prefix: b & 0x07,
                text,
                pad_len,
                pad,
            }
        }
        T_RECV => Op::Recv {
            chan: read_chan(r),
            hb: r.u8() & 1 != 0,
        },
        T_OPEN => {
            let proto = r.u8();
            let raw = if proto % 4 == 2 { r.u32() } else { 0 };
            Op::Open { proto, raw }
        }
        _ => Op::Cmd {
            cmd: r.u16(),
            bx: r.u32(),
        },
    }
}

fn write_op(w: &mut Writer, op: &Op) {
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
            w.u8(T_LB_RAW)
                .u8(*flags)
                .u32(*ax)
                .u32(*bx)
                .u32(*cx)
                .u32(*dx)
                .u32(*si)
                .u32(*di);
        }
        Op::Msg { sub, chan, bx } => {
            w.u8(T_MSG).u8(*sub);
            write_chan(w, *chan);
            w.u32(*bx);
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
            w.u8(T_HB_OUT);
            write_chan(w, *chan);
            let len = (*len).min(65_537);
            let base = len.min(u32::from(u16::MAX));
            w.u8(*flags).u16(base as u16).u8((len - base) as u8);
            w.u8(*fill).short_bytes(data);
            if flags & 2 != 0 {
                w.u64(*count);
            }
            if flags & 1 != 0 {
                w.u32(*bx);
            }
        }
        Op::HbIn {
            chan,
            flags,
            count,
            bx,
        } => {
            w.u8(T_HB_IN);
            write_chan(w, *chan);
            w.u8(*flags);
            if flags & 2 != 0 {
                w.u64(*count);
            }
            if flags & 1 != 0 {
                w.u32(*bx);
            }
        }
        Op::Send {
            chan,
            hb,
            prefix,
            text,
            pad_len,
            pad,
        } => {
            w.u8(T_SEND);
            write_chan(w, *chan);
            let padded = *pad_len != 0;
            w.u8((prefix & 7) | if *hb { 0x08 } else { 0 } | if padded { 0x10 } else { 0 });
            w.short_bytes(text);
            if padded {
                w.u16(*pad_len).u8(*pad);
            }
        }
        Op::Recv { chan, hb } => {
            w.u8(T_RECV);
            write_chan(w, *chan);
            w.u8(u8::from(*hb));
        }
        Op::Open { proto, raw } => {
            w.u8(T_OPEN).u8(*proto);
            if proto % 4 == 2 {
                w.u32(*raw);
            }
        }
        Op::Cmd { cmd, bx } => {
            w.u8(T_CMD).u16(*cmd).u32(*bx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_decode_gives_the_scenario_back() {
        let s = Scenario {
            config: ConfigSpec {
                flags: 0x41,
                channels: 8,
                cpt_every: 3,
                seed: 9,
                faults: vec![
                    FaultSpec {
                        step: 4,
                        nth: 1,
                        answer: AnswerSpec::ClaimLength(99),
                    },
                    FaultSpec {
                        step: 8,
                        nth: 2,
                        answer: AnswerSpec::CloseChannel,
                    },
                ],
                guestinfo: vec![
                    (b"k".to_vec(), ValueSpec::Bytes(b"v".to_vec())),
                    (
                        b"guestinfo.big".to_vec(),
                        ValueSpec::Fill { byte: 7, len16: 9 },
                    ),
                ],
                tclo: vec![b"reset".to_vec()],
            },
            ops: vec![
                Op::Open { proto: 4, raw: 0 },
                Op::Open {
                    proto: 2,
                    raw: 0x1234,
                },
                Op::Send {
                    chan: Chan::Known {
                        index: 0,
                        corrupt: false,
                    },
                    hb: true,
                    prefix: 1,
                    text: b"k".to_vec(),
                    pad_len: 3,
                    pad: b'x',
                },
                Op::Recv {
                    chan: Chan::Raw(3),
                    hb: false,
                },
                Op::HbOut {
                    chan: Chan::Known {
                        index: 1,
                        corrupt: true,
                    },
                    flags: 3,
                    len: 65_537,
                    fill: 1,
                    data: b"abc".to_vec(),
                    count: u64::MAX,
                    bx: 5,
                },
                Op::HbIn {
                    chan: Chan::Raw(0),
                    flags: 2,
                    count: 1 << 40,
                    bx: 0,
                },
                Op::Msg {
                    sub: 5,
                    chan: Chan::Raw(1),
                    bx: 1,
                },
                Op::LbRaw {
                    flags: 7,
                    ax: 1,
                    bx: 2,
                    cx: 3,
                    dx: 4,
                    si: 5,
                    di: 6,
                },
                Op::Cmd { cmd: 10, bx: 0 },
            ],
        };
        assert_eq!(Scenario::decode(&s.encode()), s);
    }

    #[test]
    fn any_input_decodes_within_the_op_bound() {
        assert_eq!(Scenario::decode(&[]).ops.len(), 0);
        let noise: Vec<u8> = (0..20_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        assert!(Scenario::decode(&noise).ops.len() <= MAX_OPS);
    }
}
