//! The Guest API (vSphere Guest SDK, open-vm-tools' `libguestlib`): the RPCI
//! `guestlib.info.get 3` and its reply of resource statistics, which `vmware-toolbox-cmd
//! stat sessionid|balloon|swap|memlimit|memres|cpures|cpulimit` reads.
//!
//! The reply (open-vm-tools `libguestlib/vmGuestLibInt.h`, `guestlibV3.x`): `1 ` then a
//! packed header in the guest's byte order — `u32` version (3), `u64` session id, `u32`
//! length of what follows — then XDR: a statistic count N and statistics 1..=N in order,
//! each its id (the XDR union's discriminant), a `valid` bool and a value (`u32`, `u64`, a
//! string or bytes, by id). `libguestlib` asks for version 3 only; a host refusing it with
//! `0 Unknown command` is a host without the Guest API.

/// The version of the reply modelled.
const VERSION: u32 = 3;
/// Statistics 1..=38, the ids `guestlibV3.x` defines.
pub(super) const STAT_COUNT: u32 = 38;
/// Ids whose value is a 64-bit integer; 18 is a string and 37 bytes; the rest are 32-bit.
const STATS_64: [u32; 14] = [4, 17, 19, 20, 22, 23, 24, 25, 26, 27, 28, 29, 30, 38];
const RESOURCE_POOL_PATH: u32 = 18;
const RESOURCE_POOL_PATH_LONG: u32 = 37;

/// What the Guest API reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct GuestApi {
    pub(super) session_id: u64,
    /// Values by statistic id; an id not here is sent as not valid.
    pub(super) stats: std::collections::BTreeMap<u32, u64>,
    pub(super) resource_pool: Option<Vec<u8>>,
}

impl GuestApi {
    /// The default a simulated VM reports: a session id, no reservations, no limits (all
    /// ones), normal shares, nothing ballooned or swapped; the host's MHz (statistic 5) is
    /// added from GETMHZ's value by [`super::Host::new`] unless set. Chosen values, not
    /// measured on a VMware host.
    pub(super) fn new() -> GuestApi {
        let stats = [
            (1, 0),                   // CPU reservation, MHz
            (2, u64::from(u32::MAX)), // CPU limit, MHz: none
            (3, 1_000),               // CPU shares
            (6, 0),                   // memory reservation, MB
            (7, u64::from(u32::MAX)), // memory limit, MB: none
            (8, 10_240),              // memory shares
            (12, 0),                  // ballooned, MB
            (13, 0),                  // swapped, MB
        ];
        GuestApi {
            session_id: 0x5e55_1011_0000_0001,
            stats: stats.into_iter().collect(),
            resource_pool: Some(b"/".to_vec()),
        }
    }

    /// The reply payload (after `1 `) to `guestlib.info.get VERSION`, or the refusal.
    pub(super) fn info_get(&self, version: Option<&[u8]>) -> Result<Vec<u8>, &'static [u8]> {
        if version != Some(b"3") {
            // v3 hosts answer an unsupported version with the highest they support.
            return Err(b"3:Unsupported version");
        }
        let mut xdr = Vec::new();
        put(&mut xdr, STAT_COUNT);
        for id in 1..=STAT_COUNT {
            put(&mut xdr, id);
            let text = match id {
                RESOURCE_POOL_PATH | RESOURCE_POOL_PATH_LONG => Some(&self.resource_pool),
                _ => None,
            };
            match text {
                Some(value) => {
                    put(&mut xdr, u32::from(value.is_some()));
                    let bytes = value.as_deref().unwrap_or_default();
                    put(&mut xdr, bytes.len() as u32);
                    xdr.extend_from_slice(bytes);
                    xdr.resize(xdr.len().next_multiple_of(4), 0);
                }
                None => {
                    let value = self.stats.get(&id).copied();
                    put(&mut xdr, u32::from(value.is_some()));
                    let value = value.unwrap_or(0);
                    if STATS_64.contains(&id) {
                        put(&mut xdr, (value >> 32) as u32);
                    }
                    put(&mut xdr, value as u32);
                }
            }
        }
        let mut reply = Vec::with_capacity(16 + xdr.len());
        reply.extend_from_slice(&VERSION.to_le_bytes());
        reply.extend_from_slice(&self.session_id.to_le_bytes());
        reply.extend_from_slice(&(xdr.len() as u32).to_le_bytes());
        reply.extend_from_slice(&xdr);
        Ok(reply)
    }
}

/// An XDR unsigned int: 4 bytes big-endian.
fn put(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A statistic as read back: id, valid, value bytes.
    type Stat = (u32, bool, Vec<u8>);

    /// Reads the reply back as `libguestlib` does, independently of the writer above.
    fn read(reply: &[u8]) -> (u32, u64, Vec<Stat>) {
        let version = u32::from_le_bytes(reply[0..4].try_into().unwrap());
        let session = u64::from_le_bytes(reply[4..12].try_into().unwrap());
        let size = u32::from_le_bytes(reply[12..16].try_into().unwrap()) as usize;
        let xdr = &reply[16..];
        assert_eq!(xdr.len(), size, "the header counts the XDR part");
        let word = |at: usize| u32::from_be_bytes(xdr[at..at + 4].try_into().unwrap());
        let mut at = 4;
        let mut stats = Vec::new();
        for _ in 0..word(0) {
            let id = word(at);
            let valid = word(at + 4) == 1;
            at += 8;
            let len = match id {
                18 | 37 => {
                    let n = word(at) as usize;
                    at += 4;
                    n.next_multiple_of(4)
                }
                4 | 17 | 19 | 20 | 22..=30 | 38 => 8,
                _ => 4,
            };
            stats.push((id, valid, xdr[at..at + len].to_vec()));
            at += len;
        }
        assert_eq!(at, xdr.len(), "nothing after the last statistic");
        (version, session, stats)
    }

    #[test]
    fn the_v3_reply_carries_every_statistic_in_order() {
        let mut api = GuestApi::new();
        api.stats.insert(5, 2_400);
        api.stats.insert(12, 512);
        api.stats.insert(17, 0x1_0000_0002);
        let (version, session, stats) = read(&api.info_get(Some(b"3")).unwrap());
        assert_eq!((version, session), (3, api.session_id));
        let ids: Vec<u32> = stats.iter().map(|s| s.0).collect();
        assert_eq!(ids, (1..=38).collect::<Vec<_>>());
        assert_eq!(stats[11], (12, true, 512u32.to_be_bytes().to_vec()));
        assert_eq!(stats[4], (5, true, 2_400u32.to_be_bytes().to_vec()));
        assert_eq!(stats[16], (17, true, vec![0, 0, 0, 1, 0, 0, 0, 2]));
        assert!(!stats[18].1, "19 (stolen ms) is not set by default");
        assert_eq!(stats[17], (18, true, b"/\0\0\0".to_vec()));
    }

    #[test]
    fn other_versions_are_refused_with_the_supported_one() {
        let api = GuestApi::new();
        for v in [None, Some(&b"2"[..]), Some(b"4"), Some(b"x")] {
            assert_eq!(api.info_get(v), Err(&b"3:Unsupported version"[..]));
        }
    }
}
