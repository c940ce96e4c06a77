//! The host's end of RPCI over vsock: a guest's request packet in, the reply packet out,
//! shaped by the faults [`super::HostConfig::vsock_fault`] armed.
//!
//! The framing is open-vm-tools' DataMap (`crate::erpc::datamap`); a request is
//! `{TYPE: DATA, PAYLOAD: command[, FAST_CLOSE: 1]}` and is executed by the same RPCI
//! interpreter as the backdoor's, with the connection's privilege. The runner moves the
//! bytes; this file decides them, so it makes no system call.

use crate::erpc::datamap::{self, DataMap, FIELD_FAST_CLOSE, FIELD_TYPE, PACKET_DATA};

use super::Host;

/// The largest request body the host reads: a guest message's cap
/// ([`crate::proto::MAX_GUEST_MESSAGE`]) and room for the packet's other fields. A longer
/// one closes the connection unread.
pub(crate) const MAX_REQUEST_BODY: usize = crate::proto::MAX_GUEST_MESSAGE + 1024;

/// How the host's vsock end answers one RPC hit by [`super::HostConfig::vsock_fault`]: a
/// broken or hostile host, for testing that a guest stays safe. Every answer but the
/// normal one closes the connection after it, so a guest waiting for more bytes sees the
/// end of the stream instead of waiting for ever.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VsockFault {
    /// The reply packet is cut after this many bytes (header included).
    Truncated(usize),
    /// The header announces a body of this many bytes; the real body follows.
    ClaimLength(u32),
    /// The reply's PAYLOAD entry comes twice.
    DuplicateField,
    /// An entry of this type (none of DataMap's four) comes first.
    UnknownType(u32),
    /// A STRING entry of length zero (invalid in DataMap) comes first.
    EmptyString,
    /// The reply's payload lacks its `1 ` / `0 ` status prefix.
    NoPrefix,
    /// No reply at all: the connection is closed.
    NoReply,
    /// These bytes instead of the reply packet.
    Raw(Vec<u8>),
}

/// The vsock end's own state: faults still armed and what they are keyed on.
#[derive(Debug, Default)]
pub(super) struct Vsock {
    resets_left: u64,
    faults: Vec<(u64, VsockFault)>,
    rpcs: u64,
}

impl Vsock {
    pub(super) fn new(resets: u64, faults: Vec<(u64, VsockFault)>) -> Self {
        Vsock {
            resets_left: resets,
            faults,
            rpcs: 0,
        }
    }
}

/// What the host's end does with one request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Served {
    /// Bytes to send back (possibly none).
    pub(crate) reply: Vec<u8>,
    /// Whether to close the connection after them.
    pub(crate) close: bool,
}

impl Served {
    fn close(reply: Vec<u8>) -> Served {
        Served { reply, close: true }
    }
}

/// `body` with a new header in front.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(datamap::HEADER_LEN + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// The reply packet for `payload`, shaped by `fault`.
fn shaped(payload: &[u8], fault: Option<VsockFault>) -> Served {
    let normal = datamap::reply(payload);
    let body = normal.get(datamap::HEADER_LEN..).unwrap_or_default();
    let Some(fault) = fault else {
        return Served {
            reply: normal,
            close: false,
        };
    };
    match fault {
        VsockFault::Truncated(n) => Served::close(normal.get(..n).unwrap_or(&normal).to_vec()),
        VsockFault::ClaimLength(len) => {
            let mut out = len.to_be_bytes().to_vec();
            out.extend_from_slice(body);
            Served::close(out)
        }
        VsockFault::DuplicateField => {
            // The reply's first entry is TYPE (16 bytes); the rest is PAYLOAD.
            let payload_entry = body.get(16..).unwrap_or_default();
            Served::close(framed(&[body, payload_entry].concat()))
        }
        VsockFault::UnknownType(t) => {
            let mut b = t.to_be_bytes().to_vec();
            b.extend_from_slice(&9u32.to_be_bytes());
            b.extend_from_slice(body);
            Served::close(framed(&b))
        }
        VsockFault::EmptyString => {
            let mut b = [2u32, 9, 0].map(u32::to_be_bytes).concat();
            b.extend_from_slice(body);
            Served::close(framed(&b))
        }
        VsockFault::NoPrefix => Served::close(datamap::reply(payload.get(2..).unwrap_or_default())),
        VsockFault::NoReply => Served::close(Vec::new()),
        VsockFault::Raw(bytes) => Served::close(bytes),
    }
}

impl Host {
    /// A guest connects to the host's RPCI port: true when the connection is to be reset
    /// ([`super::HostConfig::vsock_reset_connects`]).
    pub(crate) fn vsock_connect_reset(&mut self) -> bool {
        if self.vsock.resets_left == 0 {
            return false;
        }
        self.vsock.resets_left -= 1;
        self.counters.faults_injected += 1;
        true
    }

    /// The host's end accepted a connection.
    pub(crate) fn vsock_accepted(&mut self) {
        self.counters.vsock_connections += 1;
    }

    /// One request packet's body (what follows its header) on a connection that is
    /// `privileged` or not: the request executed, the reply to send. A body that is not a
    /// guest RPC request (bad DataMap, no string payload, a type other than DATA) is not
    /// answered: the connection is closed, as nothing can be replied to it. FAST_CLOSE
    /// (any nonzero value) closes the connection after the reply.
    pub(crate) fn vsock_request(&mut self, body: &[u8], privileged: bool) -> Served {
        let Ok(map) = DataMap::decode_body(body) else {
            return Served::close(Vec::new());
        };
        let (Ok(command), Some(PACKET_DATA)) = (datamap::payload(&map), map.int64(FIELD_TYPE))
        else {
            return Served::close(Vec::new());
        };
        let fast_close = map.int64(FIELD_FAST_CLOSE).is_some_and(|v| v != 0);
        self.counters.vsock_rpcs += 1;
        let reply = self.rpci.execute(command, privileged, &mut self.counters);
        self.vsock.rpcs += 1;
        let nth = self.vsock.rpcs;
        let fault = self
            .vsock
            .faults
            .iter()
            .position(|(at, _)| *at == nth)
            .map(|i| self.vsock.faults.remove(i).1);
        if fault.is_some() {
            self.counters.faults_injected += 1;
        }
        let mut served = shaped(&reply, fault);
        served.close |= fast_close;
        served
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::erpc::datamap::{body_len, DecodeError, HEADER_LEN};
    use crate::sim::HostConfig;

    fn body(packet: &[u8]) -> &[u8] {
        &packet[HEADER_LEN..]
    }

    fn decode(packet: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let len = body_len(packet[..HEADER_LEN].try_into().unwrap(), 1 << 20)?;
        let body = packet
            .get(HEADER_LEN..HEADER_LEN + len)
            .ok_or(DecodeError::Truncated)?;
        let map = DataMap::decode_body(body)?;
        datamap::payload(&map).map(<[u8]>::to_vec)
    }

    #[test]
    fn requests_run_with_the_connections_privilege() {
        let mut host = Host::new(
            HostConfig::default()
                .guestinfo("x", "v")
                .require_privileged("info-get"),
        );
        let req = datamap::request(b"info-get guestinfo.x", false);
        let s = host.vsock_request(body(&req), true);
        assert!(!s.close);
        assert_eq!(decode(&s.reply).unwrap(), b"1 v");
        let s = host.vsock_request(body(&req), false);
        assert_eq!(decode(&s.reply).unwrap(), b"0 Permission denied");
        let fast = datamap::request(b"info-get guestinfo.x", true);
        assert!(host.vsock_request(body(&fast), true).close, "FAST_CLOSE");
        let c = host.counters();
        assert_eq!((c.vsock_rpcs, c.rpcs), (3, 3));
        assert_eq!(host.rpci_requests().len(), 3);
    }

    #[test]
    fn requests_that_are_not_guest_rpcs_close_the_connection() {
        let mut host = Host::new(HostConfig::default());
        let req = datamap::request(b"log hi", false);
        for bad in [
            &body(&req)[..5],                          // truncated
            &body(&req)[..16],                         // TYPE only, no payload
            &[0, 0, 0, 7, 0, 0, 0, 2][..],             // unknown type
            &[0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 0][..], // empty string
        ] {
            let s = host.vsock_request(bad, false);
            assert_eq!(s, Served::close(Vec::new()), "{bad:?}");
        }
        let mut ping = DataMap::default();
        ping.set(FIELD_TYPE, datamap::Value::Int64(datamap::PACKET_PING));
        ping.set(
            datamap::FIELD_PAYLOAD,
            datamap::Value::String(b"log hi".to_vec()),
        );
        assert!(host.vsock_request(body(&ping.encode()), false).close);
        assert_eq!(host.counters().vsock_rpcs, 0);
        assert!(host.vmx_log().is_empty());
    }

    #[test]
    fn faults_shape_the_reply_and_close() {
        let faults = [
            (1, VsockFault::Truncated(7)),
            (2, VsockFault::ClaimLength(1 << 30)),
            (3, VsockFault::DuplicateField),
            (4, VsockFault::UnknownType(5)),
            (5, VsockFault::EmptyString),
            (6, VsockFault::NoPrefix),
            (7, VsockFault::NoReply),
            (8, VsockFault::Raw(b"xyz".to_vec())),
        ];
        let config = faults.iter().cloned().fold(
            HostConfig::default().guestinfo("x", "value"),
            |c, (n, f)| c.vsock_fault(n, f),
        );
        let mut host = Host::new(config);
        let req = datamap::request(b"info-get guestinfo.x", false);
        let mut next = || host.vsock_request(body(&req), false);
        let s = next();
        assert_eq!((s.reply.len(), s.close), (7, true));
        let s = next();
        assert_eq!(
            decode(&s.reply),
            Err(DecodeError::TooLarge {
                len: 1 << 30,
                cap: 1 << 20
            })
        );
        assert_eq!(decode(&next().reply), Err(DecodeError::Duplicate(2)));
        assert_eq!(decode(&next().reply), Err(DecodeError::UnknownType(5)));
        assert_eq!(decode(&next().reply), Err(DecodeError::BadLength));
        assert_eq!(decode(&next().reply).unwrap(), b"value");
        assert_eq!(next(), Served::close(Vec::new()));
        assert_eq!(next(), Served::close(b"xyz".to_vec()));
        let s = next();
        assert_eq!(
            (decode(&s.reply).unwrap(), s.close),
            (b"1 value".to_vec(), false)
        );
        assert_eq!(host.counters().faults_injected, 8);
    }

    #[test]
    fn resets_count_down() {
        let mut host = Host::new(HostConfig::default().vsock(true).vsock_reset_connects(2));
        assert_eq!(
            [(); 4].map(|()| host.vsock_connect_reset()),
            [true, true, false, false]
        );
        assert_eq!(host.counters().faults_injected, 2);
        assert!(!HostConfig::default().vsock_offered());
        assert!(HostConfig::default().vsock(true).vsock_offered());
        assert!(HostConfig::default()
            .require_privileged("info-get")
            .vsock_offered());
        assert!(!HostConfig::default()
            .require_privileged("info-get")
            .vsock(false)
            .vsock_offered());
    }
}
