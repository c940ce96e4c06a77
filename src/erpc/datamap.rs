//! DataMap: the framing of RPCI over vsock, both ends of it (the library's channel and the
//! simulator's endpoint).
//!
//! A packet is a `u32` big-endian body length, then the body: entries of `u32` BE type,
//! `u32` BE field id, value. Types (open-vm-tools `lib/include/dataMap.h`): 1 INT64, written
//! as its low 32 bits BE then its high 32 bits BE (not one 64-bit BE integer); 2 STRING, a
//! `u32` BE length then the bytes, where a length of zero or less is invalid; 3 INT64LIST and
//! 4 STRINGLIST, a `u32` BE count then that many INT64s or STRINGs. Entries come in any order
//! (the sender iterates a hash map); a field id twice is an error, as is any other type.
//!
//! A guest RPC packet (`tclodefs.h`) has field 1 TYPE (1 DATA, 2 PING), 2 PAYLOAD (the RPCI
//! command, or the reply `1 …`/`0 …`) and, in a request, 3 FAST_CLOSE (the host closes the
//! connection after its reply).

use core::fmt;

/// Field ids of a guest RPC packet.
pub(crate) const FIELD_TYPE: i32 = 1;
pub(crate) const FIELD_PAYLOAD: i32 = 2;
pub(crate) const FIELD_FAST_CLOSE: i32 = 3;
/// Values of [`FIELD_TYPE`].
pub(crate) const PACKET_DATA: i64 = 1;
#[allow(dead_code)] // named for completeness; neither end sends pings
pub(crate) const PACKET_PING: i64 = 2;

/// Length of the packet header (the body length).
pub(crate) const HEADER_LEN: usize = 4;

const TYPE_INT64: u32 = 1;
const TYPE_STRING: u32 = 2;
const TYPE_INT64_LIST: u32 = 3;
const TYPE_STRING_LIST: u32 = 4;

/// One entry's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Int64(i64),
    String(Vec<u8>),
    Int64List(Vec<i64>),
    StringList(Vec<Vec<u8>>),
}

/// Why a packet could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The body ends inside an entry.
    Truncated,
    /// The header announces a body longer than the reader accepts.
    TooLarge { len: u64, cap: usize },
    /// A string (or a list count) with a length of zero or less.
    BadLength,
    /// An entry type other than the four.
    UnknownType(u32),
    /// The same field id twice.
    Duplicate(i32),
    /// A guest RPC packet without its payload, or with one of the wrong type.
    NoPayload,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("the DataMap packet ends inside an entry"),
            DecodeError::TooLarge { len, cap } => write!(
                f,
                "the DataMap packet announces {len} bytes, over the cap of {cap}"
            ),
            DecodeError::BadLength => {
                f.write_str("a DataMap string or list has a length of zero or less")
            }
            DecodeError::UnknownType(t) => write!(f, "a DataMap entry has unknown type {t}"),
            DecodeError::Duplicate(id) => write!(f, "DataMap field {id} appears twice"),
            DecodeError::NoPayload => f.write_str("the packet has no string payload (field 2)"),
        }
    }
}

/// A decoded (or to-be-encoded) DataMap, entries in the order they came or were set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DataMap {
    entries: Vec<(i32, Value)>,
}

impl DataMap {
    /// Sets field `id` (replacing an earlier value of it).
    pub(crate) fn set(&mut self, id: i32, value: Value) {
        match self.entries.iter_mut().find(|(i, _)| *i == id) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((id, value)),
        }
    }

    /// Field `id`, if present.
    pub(crate) fn get(&self, id: i32) -> Option<&Value> {
        self.entries.iter().find(|(i, _)| *i == id).map(|(_, v)| v)
    }

    /// Field `id` as an INT64, if it is one.
    #[allow(dead_code)] // the simulator's endpoint reads a request's TYPE and FAST_CLOSE
    pub(crate) fn int64(&self, id: i32) -> Option<i64> {
        match self.get(id) {
            Some(Value::Int64(v)) => Some(*v),
            _ => None,
        }
    }

    /// Field `id` as a STRING, if it is one.
    #[allow(dead_code)] // for `payload`
    pub(crate) fn string(&self, id: i32) -> Option<&[u8]> {
        match self.get(id) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    /// The payload of a guest RPC packet, moved out of the map (a reply's value is not
    /// copied again).
    pub(crate) fn into_payload(self) -> Result<Vec<u8>, DecodeError> {
        self.entries
            .into_iter()
            .find_map(|(id, value)| match value {
                Value::String(s) if id == FIELD_PAYLOAD => Some(s),
                _ => None,
            })
            .ok_or(DecodeError::NoPayload)
    }

    /// The whole packet: header and body.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![0; HEADER_LEN];
        for (id, value) in &self.entries {
            put_u32(&mut out, type_of(value));
            put_u32(&mut out, *id as u32);
            match value {
                Value::Int64(v) => put_i64(&mut out, *v),
                Value::String(s) => put_string(&mut out, s),
                Value::Int64List(vs) => {
                    put_u32(&mut out, vs.len() as u32);
                    vs.iter().for_each(|v| put_i64(&mut out, *v));
                }
                Value::StringList(ss) => {
                    put_u32(&mut out, ss.len() as u32);
                    ss.iter().for_each(|s| put_string(&mut out, s));
                }
            }
        }
        let body_len = (out.len() - HEADER_LEN) as u32;
        out[..HEADER_LEN].copy_from_slice(&body_len.to_be_bytes());
        out
    }

    /// Reads a body (what follows the header, exactly the announced length).
    pub(crate) fn decode_body(mut body: &[u8]) -> Result<DataMap, DecodeError> {
        let mut map = DataMap::default();
        while !body.is_empty() {
            let ty = take_u32(&mut body)?;
            let id = take_u32(&mut body)? as i32;
            if map.get(id).is_some() {
                return Err(DecodeError::Duplicate(id));
            }
            let value = match ty {
                TYPE_INT64 => Value::Int64(take_i64(&mut body)?),
                TYPE_STRING => Value::String(take_string(&mut body)?),
                TYPE_INT64_LIST => {
                    let count = take_count(&mut body, 8)?;
                    Value::Int64List(
                        (0..count)
                            .map(|_| take_i64(&mut body))
                            .collect::<Result<_, _>>()?,
                    )
                }
                TYPE_STRING_LIST => {
                    let count = take_count(&mut body, 5)?;
                    Value::StringList(
                        (0..count)
                            .map(|_| take_string(&mut body))
                            .collect::<Result<_, _>>()?,
                    )
                }
                other => return Err(DecodeError::UnknownType(other)),
            };
            map.entries.push((id, value));
        }
        Ok(map)
    }
}

/// The body length a header announces, refused over `cap` before anything is allocated.
pub(crate) fn body_len(header: [u8; HEADER_LEN], cap: usize) -> Result<usize, DecodeError> {
    let len = u32::from_be_bytes(header);
    match usize::try_from(len) {
        Ok(len) if len <= cap => Ok(len),
        _ => Err(DecodeError::TooLarge {
            len: u64::from(len),
            cap,
        }),
    }
}

/// A guest RPC request packet: `{TYPE: DATA, PAYLOAD: command}`, plus `FAST_CLOSE: 1` when
/// the host should close the connection after replying. The command must not be empty (a
/// zero-length string cannot be encoded).
pub(crate) fn request(command: &[u8], fast_close: bool) -> Vec<u8> {
    debug_assert!(!command.is_empty(), "DataMap strings cannot be empty");
    let mut map = DataMap::default();
    map.set(FIELD_TYPE, Value::Int64(PACKET_DATA));
    map.set(FIELD_PAYLOAD, Value::String(command.to_vec()));
    if fast_close {
        map.set(FIELD_FAST_CLOSE, Value::Int64(1));
    }
    map.encode()
}

/// A guest RPC reply packet: `{TYPE: DATA, PAYLOAD: reply}` (the reply starts with `1 ` or
/// `0 `, so it is never empty).
#[allow(dead_code)] // the simulator's end writes replies; the library only reads them
pub(crate) fn reply(payload: &[u8]) -> Vec<u8> {
    let mut map = DataMap::default();
    map.set(FIELD_TYPE, Value::Int64(PACKET_DATA));
    map.set(FIELD_PAYLOAD, Value::String(payload.to_vec()));
    map.encode()
}

/// The payload of a guest RPC packet's body (either direction), borrowed.
#[allow(dead_code)] // the simulator's endpoint reads requests; the library moves replies out
pub(crate) fn payload(map: &DataMap) -> Result<&[u8], DecodeError> {
    map.string(FIELD_PAYLOAD).ok_or(DecodeError::NoPayload)
}

fn type_of(value: &Value) -> u32 {
    match value {
        Value::Int64(_) => TYPE_INT64,
        Value::String(_) => TYPE_STRING,
        Value::Int64List(_) => TYPE_INT64_LIST,
        Value::StringList(_) => TYPE_STRING_LIST,
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    put_u32(out, v as u32);
    put_u32(out, (v >> 32) as u32);
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s);
}

fn take_u32(body: &mut &[u8]) -> Result<u32, DecodeError> {
    let (head, rest) = body
        .split_first_chunk::<4>()
        .ok_or(DecodeError::Truncated)?;
    *body = rest;
    Ok(u32::from_be_bytes(*head))
}

fn take_i64(body: &mut &[u8]) -> Result<i64, DecodeError> {
    let low = take_u32(body)?;
    let high = take_u32(body)?;
    Ok((i64::from(high as i32) << 32) | i64::from(low))
}

fn take_string(body: &mut &[u8]) -> Result<Vec<u8>, DecodeError> {
    let len = take_u32(body)? as i32;
    let len = usize::try_from(len)
        .ok()
        .filter(|&l| l > 0)
        .ok_or(DecodeError::BadLength)?;
    if body.len() < len {
        return Err(DecodeError::Truncated);
    }
    let (s, rest) = body.split_at(len);
    *body = rest;
    Ok(s.to_vec())
}

/// A list's count, checked against what the rest of the body can hold (`min_item` bytes an
/// item at least), so that a hostile count cannot make the reader allocate.
fn take_count(body: &mut &[u8], min_item: usize) -> Result<usize, DecodeError> {
    let count = take_u32(body)? as i32;
    let count = usize::try_from(count)
        .ok()
        .filter(|&c| c > 0)
        .ok_or(DecodeError::BadLength)?;
    if count > body.len() / min_item {
        return Err(DecodeError::Truncated);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(packet: &[u8]) -> Result<DataMap, DecodeError> {
        let header = packet[..HEADER_LEN].try_into().unwrap();
        let len = body_len(header, 1 << 20)?;
        assert_eq!(len, packet.len() - HEADER_LEN, "the header counts the body");
        DataMap::decode_body(&packet[HEADER_LEN..])
    }

    #[test]
    fn a_request_is_laid_out_as_open_vm_tools_writes_it() {
        let packet = request(b"info-get guestinfo.k", true);
        let mut expected = Vec::new();
        expected.extend_from_slice(&(16 + 12 + 20 + 16u32).to_be_bytes());
        // TYPE: INT64 1, low word then high word.
        expected.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0]);
        // PAYLOAD: STRING of 20 bytes.
        expected.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 20]);
        expected.extend_from_slice(b"info-get guestinfo.k");
        // FAST_CLOSE: INT64 1.
        expected.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(packet, expected);
        let map = decode(&packet).unwrap();
        assert_eq!(payload(&map).unwrap(), b"info-get guestinfo.k");
        assert_eq!(map.int64(FIELD_FAST_CLOSE), Some(1));
        assert_eq!(map.int64(FIELD_TYPE), Some(PACKET_DATA));
    }

    #[test]
    fn int64_is_low_word_first_and_signed() {
        for v in [0, 1, -1, i64::MIN, i64::MAX, 0x1234_5678_9abc_def0] {
            let mut map = DataMap::default();
            map.set(7, Value::Int64(v));
            let packet = map.encode();
            assert_eq!(&packet[12..16], &(v as u32).to_be_bytes());
            assert_eq!(decode(&packet).unwrap().int64(7), Some(v));
        }
    }

    #[test]
    fn every_type_round_trips_in_any_order() {
        let mut map = DataMap::default();
        map.set(FIELD_PAYLOAD, Value::String(b"1 ok".to_vec()));
        map.set(9, Value::StringList(vec![b"a".to_vec(), b"bc".to_vec()]));
        map.set(8, Value::Int64List(vec![-2, 3]));
        map.set(FIELD_TYPE, Value::Int64(PACKET_DATA));
        assert_eq!(decode(&map.encode()).unwrap(), map);
    }

    #[test]
    fn bad_packets_are_refused_with_the_reason() {
        let good = reply(b"1 value");
        let body = &good[HEADER_LEN..];
        // Cut anywhere inside an entry (16 ends the TYPE entry).
        for cut in (1..body.len()).filter(|&cut| cut != 16) {
            let err = DataMap::decode_body(&body[..cut]).unwrap_err();
            assert_eq!(err, DecodeError::Truncated, "cut at {cut}");
        }
        let mut dup = body.to_vec();
        dup.extend_from_slice(&body[..16]);
        assert_eq!(DataMap::decode_body(&dup), Err(DecodeError::Duplicate(1)));
        let mut unknown = body.to_vec();
        unknown[3] = 5;
        assert_eq!(
            DataMap::decode_body(&unknown),
            Err(DecodeError::UnknownType(5))
        );
        unknown[3] = 0;
        assert_eq!(
            DataMap::decode_body(&unknown),
            Err(DecodeError::UnknownType(0))
        );
        // A zero-length and a negative-length string.
        for len in [0u32, 0x8000_0000] {
            let mut bad = vec![0, 0, 0, 2, 0, 0, 0, 2];
            bad.extend_from_slice(&len.to_be_bytes());
            assert_eq!(DataMap::decode_body(&bad), Err(DecodeError::BadLength));
        }
        // A list count larger than the body could hold is refused before allocating.
        let huge = [0, 0, 0, 3, 0, 0, 0, 9, 0x7f, 0xff, 0xff, 0xff];
        assert_eq!(DataMap::decode_body(&huge), Err(DecodeError::Truncated));
        assert_eq!(
            body_len(u32::MAX.to_be_bytes(), 1 << 20),
            Err(DecodeError::TooLarge {
                len: u64::from(u32::MAX),
                cap: 1 << 20
            })
        );
        let no_payload = DataMap::decode_body(&body[..16]).unwrap();
        assert_eq!(payload(&no_payload), Err(DecodeError::NoPayload));
    }
}
