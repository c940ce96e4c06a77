//! The reference client: the guest side of the backdoor protocol, written from the protocol
//! (open-vm-tools' `lib/include/backdoor_def.h` and `lib/message/message.c`) and not from
//! this crate's guest code, so the host model is never checked against the library's own
//! reading of it. Generic over any `Backdoor`: the model in memory, or instructions under the
//! runner.
//!
//! Included with `#[path]` by `tests/support/mod.rs`, `src/sim/host/tests.rs` and
//! `fuzz/src/lib.rs`; the including module provides `Backdoor` and `Regs`.

#![allow(dead_code)] // each includer takes what it needs

use super::{Backdoor, Regs};

/// `"VMXh"`: EAX of every call, EBX after GETVERSION.
pub const MAGIC: u32 = 0x564D_5868;
/// `lo16(EDX)` of a low-bandwidth call.
pub const LB_PORT: u16 = 0x5658;
/// `lo16(EDX)` of a high-bandwidth transfer.
pub const HB_PORT: u16 = 0x5659;

/// Low-bandwidth commands (`lo16(ECX)`).
pub mod cmd {
    pub const GETMHZ: u16 = 1;
    pub const GETVERSION: u16 = 10;
    pub const GETHWVERSION: u16 = 17;
    pub const GETBIOSUUID: u16 = 19;
    pub const GETTIME: u16 = 23;
    pub const MESSAGE: u16 = 30;
    pub const GETHZ: u16 = 45;
    pub const GETTIMEFULL: u16 = 46;
    pub const GET_VCPU_INFO: u16 = 68;
}

/// MESSAGE sub-commands (`hi16(ECX)`).
pub mod msg {
    pub const OPEN: u16 = 0;
    pub const SENDSIZE: u16 = 1;
    pub const SENDPAYLOAD: u16 = 2;
    pub const RECVSIZE: u16 = 3;
    pub const RECVPAYLOAD: u16 = 4;
    pub const RECVSTATUS: u16 = 5;
    pub const CLOSE: u16 = 6;
}

/// Status bits: `hi16(ECX)` after a sub-command, `hi16(EBX)` after a transfer.
pub mod status {
    pub const SUCCESS: u16 = 0x01;
    pub const DORECV: u16 = 0x02;
    pub const CLOSED: u16 = 0x04;
    pub const CPT: u16 = 0x10;
    pub const HB: u16 = 0x80;
}

/// OPEN's EBX: the protocol words (`"RPCI"`, `"TCLO"` in memory order) and the cookie flag.
pub const RPCI: u32 = 0x4943_5052;
pub const TCLO: u32 = 0x4F4C_4354;
pub const COOKIE: u32 = 0x8000_0000;
pub const RPCI_COOKIE: u32 = RPCI | COOKIE;

/// `hi16(EDX)` after RECVSIZE and after RECVPAYLOAD.
pub const TYPE_SENDSIZE: u16 = 1;
pub const TYPE_SENDPAYLOAD: u16 = 2;

/// The largest message a host takes from the guest (`GUESTMSG_MAX_IN_SIZE`).
pub const MAX_MESSAGE: usize = 65_536;

/// A transfer's EBX, and its success answer: status SUCCESS, HB command 0.
pub const HB_OK: u64 = 0x1_0000;

/// A status as the host answers it, `bits << 16`.
pub const fn st(bits: u16) -> u64 {
    (bits as u64) << 16
}

pub const fn lo16(r: u64) -> u16 {
    r as u16
}

pub const fn hi16(r: u64) -> u16 {
    (r >> 16) as u16
}

pub const fn lo32(r: u64) -> u32 {
    r as u32
}

/// `hi << 16 | lo`: command and sub-command, port and channel.
pub const fn pack(hi: u16, lo: u16) -> u64 {
    ((hi as u64) << 16) | lo as u64
}

/// Up to four bytes as the little-endian word a payload step carries.
pub fn le_word(bytes: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    for (d, s) in w.iter_mut().zip(bytes) {
        *d = *s;
    }
    u32::from_le_bytes(w)
}

/// An open channel as the guest names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Chan {
    pub id: u16,
    pub high: u32,
    pub low: u32,
}

impl Chan {
    /// The channel OPEN's answer names (id in `hi16(EDX)`, cookie in ESI:EDI).
    pub fn opened(r: &Regs) -> Chan {
        Chan {
            id: hi16(r.dx),
            high: lo32(r.si),
            low: lo32(r.di),
        }
    }

    /// The same channel named with another cookie.
    pub fn cookie(self, high: u32, low: u32) -> Chan {
        Chan { high, low, ..self }
    }
}

// ---- register builders ----

/// A low-bandwidth command; ESI, EDI, EBP hold markers that show they were not written.
pub fn lb_regs(command: u16, ebx: u32) -> Regs {
    Regs {
        ax: MAGIC.into(),
        bx: ebx.into(),
        cx: command.into(),
        dx: LB_PORT.into(),
        si: 0x2222_2222,
        di: 0x3333_3333,
        bp: 0x4444_4444,
    }
}

/// OPEN with `ebx` = protocol | flags.
pub fn open_regs(ebx: u32) -> Regs {
    Regs {
        ax: MAGIC.into(),
        bx: ebx.into(),
        cx: pack(msg::OPEN, cmd::MESSAGE),
        dx: LB_PORT.into(),
        ..Regs::default()
    }
}

/// A MESSAGE sub-command on `ch` (LB layout: ESI cookie high, EDI cookie low).
pub fn msg_regs(ch: Chan, sub: u16, ebx: u32) -> Regs {
    Regs {
        ax: MAGIC.into(),
        bx: ebx.into(),
        cx: pack(sub, cmd::MESSAGE),
        dx: pack(ch.id, LB_PORT),
        si: ch.high.into(),
        di: ch.low.into(),
        bp: 0,
    }
}

/// `rep outsb` on `ch` (send layout: EDI cookie low, EBP cookie high); the backdoor sets
/// ESI and ECX from the buffer.
pub fn hb_out_regs(ch: Chan, ebx: u64) -> Regs {
    Regs {
        ax: MAGIC.into(),
        bx: ebx,
        cx: 0,
        dx: pack(ch.id, HB_PORT),
        si: 0,
        di: ch.low.into(),
        bp: ch.high.into(),
    }
}

/// `rep insb` on `ch` (receive layout: ESI cookie high, EBP cookie low); the backdoor sets
/// EDI and ECX from the buffer.
pub fn hb_in_regs(ch: Chan, ebx: u64) -> Regs {
    Regs {
        ax: MAGIC.into(),
        bx: ebx,
        cx: 0,
        dx: pack(ch.id, HB_PORT),
        si: ch.high.into(),
        di: 0,
        bp: ch.low.into(),
    }
}

// ---- one call each; the registers after it ----

pub fn lb<B: Backdoor + ?Sized>(b: &mut B, command: u16, ebx: u32) -> Regs {
    let mut r = lb_regs(command, ebx);
    b.lb(&mut r);
    r
}

pub fn open_raw<B: Backdoor + ?Sized>(b: &mut B, ebx: u32) -> Regs {
    let mut r = open_regs(ebx);
    b.lb(&mut r);
    r
}

pub fn call<B: Backdoor + ?Sized>(b: &mut B, ch: Chan, sub: u16, ebx: u32) -> Regs {
    let mut r = msg_regs(ch, sub, ebx);
    b.lb(&mut r);
    r
}

pub fn hb_out<B: Backdoor + ?Sized>(b: &mut B, ch: Chan, data: &[u8]) -> Regs {
    hb_out_ebx(b, ch, data, HB_OK)
}

pub fn hb_out_ebx<B: Backdoor + ?Sized>(b: &mut B, ch: Chan, data: &[u8], ebx: u64) -> Regs {
    let mut r = hb_out_regs(ch, ebx);
    b.hb_out(&mut r, data);
    r
}

pub fn hb_in<B: Backdoor + ?Sized>(b: &mut B, ch: Chan, buf: &mut [u8]) -> Regs {
    let mut r = hb_in_regs(ch, HB_OK);
    b.hb_in(&mut r, buf);
    r
}

// ---- the protocol, as open-vm-tools runs it ----

/// Why an exchange did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// A step answered this status without SUCCESS (OPEN, SENDSIZE and RECVSIZE are not
    /// retried, so CPT from them ends up here too).
    Status(u16),
    /// RECVSIZE or RECVPAYLOAD named another message type in `hi16(EDX)`.
    MessageType(u16),
    /// RECVSIZE said nothing is pending.
    NoReply,
}

/// Restarts after a checkpoint before giving up (the host cuts at most every step).
const RETRIES: usize = 64;

pub fn open<B: Backdoor + ?Sized>(b: &mut B, ebx: u32) -> Result<Chan, Error> {
    let r = open_raw(b, ebx);
    if hi16(r.cx) & status::SUCCESS == 0 {
        return Err(Error::Status(hi16(r.cx)));
    }
    Ok(Chan::opened(&r))
}

/// SENDSIZE, then one HB transfer (if `hb` and offered) or 4-byte SENDPAYLOADs; a
/// checkpoint during the payload restarts from SENDSIZE.
pub fn send<B: Backdoor + ?Sized>(
    b: &mut B,
    ch: Chan,
    message: &[u8],
    hb: bool,
) -> Result<(), Error> {
    let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
    'retry: for _ in 0..RETRIES {
        let s = hi16(call(b, ch, msg::SENDSIZE, len).cx);
        if s & status::SUCCESS == 0 {
            return Err(Error::Status(s));
        }
        if message.is_empty() {
            return Ok(());
        }
        if hb && s & status::HB != 0 {
            let s = hi16(hb_out(b, ch, message).bx);
            return match s {
                _ if s & status::CPT != 0 => continue 'retry,
                _ if s & status::SUCCESS == 0 => Err(Error::Status(s)),
                _ => Ok(()),
            };
        }
        for chunk in message.chunks(4) {
            let s = hi16(call(b, ch, msg::SENDPAYLOAD, le_word(chunk)).cx);
            if s & status::CPT != 0 {
                continue 'retry;
            }
            if s & status::SUCCESS == 0 {
                return Err(Error::Status(s));
            }
        }
        return Ok(());
    }
    Err(Error::Status(status::CPT))
}

/// RECVSIZE, then one HB transfer (if `hb` and offered) or RECVPAYLOADs, then RECVSTATUS 1;
/// a checkpoint after RECVSIZE restarts from RECVSIZE. `None`: nothing pending.
pub fn recv<B: Backdoor + ?Sized>(b: &mut B, ch: Chan, hb: bool) -> Result<Option<Vec<u8>>, Error> {
    'retry: for _ in 0..RETRIES {
        let r = call(b, ch, msg::RECVSIZE, 0);
        let s = hi16(r.cx);
        if s & status::SUCCESS == 0 {
            return Err(Error::Status(s));
        }
        if s & status::DORECV == 0 {
            return Ok(None);
        }
        if hi16(r.dx) != TYPE_SENDSIZE {
            return Err(Error::MessageType(hi16(r.dx)));
        }
        let len = lo32(r.bx) as usize;
        let mut out = vec![0u8; len];
        if hb && s & status::HB != 0 && len > 0 {
            let s = hi16(hb_in(b, ch, &mut out).bx);
            if s & status::CPT != 0 {
                continue 'retry;
            }
            if s & status::SUCCESS == 0 {
                return Err(Error::Status(s));
            }
        } else {
            for chunk in out.chunks_mut(4) {
                let r = call(b, ch, msg::RECVPAYLOAD, status::SUCCESS.into());
                let s = hi16(r.cx);
                if s & status::CPT != 0 {
                    continue 'retry;
                }
                if s & status::SUCCESS == 0 {
                    return Err(Error::Status(s));
                }
                if hi16(r.dx) != TYPE_SENDPAYLOAD {
                    return Err(Error::MessageType(hi16(r.dx)));
                }
                let n = chunk.len();
                chunk.copy_from_slice(&lo32(r.bx).to_le_bytes()[..n]);
            }
        }
        let s = hi16(call(b, ch, msg::RECVSTATUS, status::SUCCESS.into()).cx);
        if s & status::CPT != 0 {
            continue 'retry;
        }
        if s & status::SUCCESS == 0 {
            return Err(Error::Status(s));
        }
        return Ok(Some(out));
    }
    Err(Error::Status(status::CPT))
}

pub fn close<B: Backdoor + ?Sized>(b: &mut B, ch: Chan) -> Result<(), Error> {
    let s = hi16(call(b, ch, msg::CLOSE, 0).cx);
    if s & status::SUCCESS == 0 {
        return Err(Error::Status(s));
    }
    Ok(())
}

/// One request and its reply on `ch`.
pub fn rpc<B: Backdoor + ?Sized>(
    b: &mut B,
    ch: Chan,
    request: &[u8],
    hb: bool,
) -> Result<Vec<u8>, Error> {
    send(b, ch, request, hb)?;
    recv(b, ch, hb)?.ok_or(Error::NoReply)
}

/// One request on a channel of its own: a cookie channel, or a plain one where the host
/// refuses cookies.
pub fn rpc_once<B: Backdoor + ?Sized>(
    b: &mut B,
    request: &[u8],
    hb: bool,
) -> Result<Vec<u8>, Error> {
    let ch = open(b, RPCI_COOKIE).or_else(|_| open(b, RPCI))?;
    let reply = rpc(b, ch, request, hb);
    close(b, ch)?;
    reply
}
