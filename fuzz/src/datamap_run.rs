//! The harness of `datamap_decoder`: the DataMap decoder of RPCI over vsock
//! (`src/erpc/datamap.rs`) on arbitrary bytes, read as a host's reply reaches the library: a
//! 4-byte header announcing the body's length, refused over the reply cap, then the body.
//!
//! The decoder is crate-private and depends on nothing else of the crate, so its own file is
//! compiled in here by path, exactly as the library compiles it.

#[allow(dead_code)] // what only the library's channel or the simulator's endpoint uses
#[path = "../../src/erpc/datamap.rs"]
mod datamap;

use datamap::{body_len, payload, DataMap, DecodeError, Value, HEADER_LEN};

use crate::alloc_watch;

/// The body cap the harness reads with: a 64 KiB reply and its fields' room, about what a
/// vsock channel with a small reply cap accepts.
const CAP: usize = 65_536 + 256;

/// One input: checks the decoder's contract and returns what it made of the input.
///
/// - a header over the cap is refused before anything is read or allocated;
/// - the body is decoded without a panic, and no single allocation is sized by a claimed
///   length or count (each is bounded by a small multiple of the body's own length);
/// - what decodes encodes back to the same bytes (entries in the order they came), with no
///   field twice, and its payload reads the same borrowed or moved out;
/// - what does not decode says why.
///
/// Returns whether the input decoded.
pub fn run(data: &[u8]) -> bool {
    check(data).is_ok()
}

/// [`run`], with what the decoder made of the input.
fn check(data: &[u8]) -> Result<DataMap, DecodeError> {
    let (header, rest) = match data.split_first_chunk::<HEADER_LEN>() {
        Some((header, rest)) => (*header, rest),
        None => return Err(DecodeError::Truncated),
    };
    alloc_watch::reset_largest();
    let len = match body_len(header, CAP) {
        Ok(len) => len,
        Err(e) => {
            assert!(u32::from_be_bytes(header) as usize > CAP, "{e}");
            assert_eq!(alloc_watch::largest(), 0, "allocated for a refused header");
            return Err(e);
        }
    };
    // A host that sends less than it announced ends the stream early: the channel never
    // decodes that, but the decoder must survive any body, so it gets what there is.
    let body = &rest[..len.min(rest.len())];
    alloc_watch::reset_largest();
    let decoded = DataMap::decode_body(body);
    let bound = 16 * body.len() + 1024;
    assert!(
        alloc_watch::largest() <= bound,
        "an allocation of {} bytes for a {}-byte body",
        alloc_watch::largest(),
        body.len()
    );
    match &decoded {
        Ok(map) => {
            let packet = map.encode();
            assert_eq!(
                &packet[HEADER_LEN..],
                body,
                "decoding and encoding round-trip"
            );
            assert_eq!(
                packet[..HEADER_LEN],
                u32::try_from(body.len()).unwrap().to_be_bytes()
            );
            assert_eq!(DataMap::decode_body(body).as_ref(), Ok(map));
            let borrowed = payload(map).map(<[u8]>::to_vec);
            assert_eq!(borrowed, map.clone().into_payload());
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    decoded
}

/// The seed corpus, by file name: what a host sends and what it must not.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut every_type = DataMap::default();
    every_type.set(datamap::FIELD_TYPE, Value::Int64(datamap::PACKET_DATA));
    every_type.set(datamap::FIELD_PAYLOAD, Value::String(b"1 value".to_vec()));
    every_type.set(7, Value::Int64List(vec![-1, 0, i64::MAX]));
    every_type.set(8, Value::StringList(vec![b"a".to_vec(), b"bc".to_vec()]));
    let reply = datamap::reply(b"1 configured");
    let mut duplicate = reply.clone();
    duplicate.extend_from_slice(&reply[HEADER_LEN..HEADER_LEN + 16]);
    let grown = u32::try_from(duplicate.len() - HEADER_LEN).unwrap();
    duplicate[..HEADER_LEN].copy_from_slice(&grown.to_be_bytes());
    vec![
        ("reply", reply),
        (
            "request_fast_close",
            datamap::request(b"info-get guestinfo.k", true),
        ),
        ("every_type", every_type.encode()),
        ("duplicate_field", duplicate),
        ("header_over_the_cap", u32::MAX.to_be_bytes().to_vec()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_decode_as_they_say() {
        let seeds: std::collections::BTreeMap<_, _> = seeds().into_iter().collect();
        let ok = |name: &str| check(&seeds[name]).unwrap();
        assert_eq!(payload(&ok("reply")).unwrap(), b"1 configured");
        assert_eq!(
            ok("request_fast_close").int64(datamap::FIELD_FAST_CLOSE),
            Some(1)
        );
        assert!(ok("every_type").get(8).is_some());
        assert_eq!(
            check(&seeds["duplicate_field"]),
            Err(DecodeError::Duplicate(1))
        );
        assert!(matches!(
            check(&seeds["header_over_the_cap"]),
            Err(DecodeError::TooLarge { .. })
        ));
    }
}
