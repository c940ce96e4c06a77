//! NIC info version 3 in XDR (RFC 4506), as `SetGuestInfo  10 ` carries it.
//!
//! The layout is open-vm-tools' `lib/guestRpc/nicinfo.x`: a `GuestNicProto` union with
//! discriminant `NIC_INFO_V3` (3) whose arm is an optional (`*`) `NicInfoV3`:
//!
//! ```text
//! GuestNicProto   = ver:u32(3)  present:u32(1)  NicInfoV3
//! NicInfoV3       = nics<16>: GuestNicV3…  routes<100>: (none, count 0)
//!                   dnsConfigInfo* winsConfigInfo* dhcpConfigInfov4* dhcpConfigInfov6*  (absent: 0)
//! GuestNicV3      = macAddress: string<18>  ips<2048>: IpAddressEntry…
//!                   dnsConfigInfo* winsConfigInfo* dhcpConfigInfov4* dhcpConfigInfov6*  (absent: 0)
//! IpAddressEntry  = type:u32 (IAT_IPV4 1, IAT_IPV6 2)  addr: opaque<255>  prefix:u32
//!                   origin*: absent  status*: present, IAS_PREFERRED (1) for IPv4,
//!                   IAS_UNKNOWN (5) for IPv6 (what vmtoolsd reports when it knows no better)
//! ```
//!
//! Every item is a big-endian 32-bit word; strings and opaques are a length word and the
//! bytes, zero-padded to a multiple of four. Field order is the order above: a host decodes
//! positionally, so one word out of place garbles everything after it.

use std::net::IpAddr;

use super::Nic;

/// NICs a v3 report holds at most (`NICINFO_MAX_NICS`).
pub(super) const MAX_NICS: usize = 16;
/// Addresses one NIC holds at most (`NICINFO_MAX_IPS`).
pub(super) const MAX_IPS: usize = 2048;
/// Longest MAC address string (`NICINFO_MAC_LEN`).
pub(super) const MAC_LEN: usize = 18;

const NIC_INFO_V3: u32 = 3;
const IAT_IPV4: u32 = 1;
const IAT_IPV6: u32 = 2;
const IAS_PREFERRED: u32 = 1;
const IAS_UNKNOWN: u32 = 5;

fn word(out: &mut Vec<u8>, w: u32) {
    out.extend_from_slice(&w.to_be_bytes());
}

/// A counted byte string, zero-padded to four bytes.
fn opaque(out: &mut Vec<u8>, bytes: &[u8]) {
    word(out, bytes.len() as u32);
    out.extend_from_slice(bytes);
    out.resize(out.len() + (4 - bytes.len() % 4) % 4, 0);
}

/// Bytes one address takes.
fn addr_len(addr: &IpAddr) -> usize {
    match addr {
        IpAddr::V4(_) => 7 * 4,
        IpAddr::V6(_) => 6 * 4 + 16,
    }
}

/// `prefix` followed by the XDR of `nics`, at most `limit` bytes in all: NICs past 16,
/// addresses past 2048 per NIC, and whatever does not fit `limit` (addresses first, from
/// the last NIC back) are left out; MAC strings are cut to 18 bytes.
pub(super) fn encode(prefix: &[u8], nics: &[Nic], limit: usize) -> Vec<u8> {
    let nics = nics.get(..nics.len().min(MAX_NICS)).unwrap_or(nics);
    let mac = |n: &Nic| -> Vec<u8> { n.mac.as_bytes().iter().copied().take(MAC_LEN).collect() };
    // Fixed part: prefix, ver, present, nic count, routes count, 4 absent pointers; per NIC:
    // MAC, ip count, 4 absent pointers.
    let mut size = prefix.len() + 8 * 4;
    let mut take: Vec<usize> = Vec::with_capacity(nics.len());
    for n in nics {
        let m = mac(n).len();
        size += 4 + m + (4 - m % 4) % 4 + 5 * 4;
        take.push(n.ips.len().min(MAX_IPS));
    }
    let mut ips_size: usize = nics
        .iter()
        .zip(&take)
        .map(|(n, &k)| {
            n.ips
                .iter()
                .take(k)
                .map(|a| addr_len(&a.addr))
                .sum::<usize>()
        })
        .sum();
    // Drop addresses from the back until the whole message fits.
    for (n, k) in nics.iter().zip(take.iter_mut()).rev() {
        while size + ips_size > limit && *k > 0 {
            *k -= 1;
            ips_size -= n.ips.get(*k).map_or(0, |a| addr_len(&a.addr));
        }
    }
    let mut out = Vec::with_capacity(size + ips_size);
    out.extend_from_slice(prefix);
    word(&mut out, NIC_INFO_V3);
    word(&mut out, 1); // the NicInfoV3 pointer is present
    word(&mut out, nics.len() as u32);
    for (n, &k) in nics.iter().zip(&take) {
        opaque(&mut out, &mac(n));
        word(&mut out, k as u32);
        for a in n.ips.iter().take(k) {
            match a.addr {
                IpAddr::V4(v4) => {
                    word(&mut out, IAT_IPV4);
                    opaque(&mut out, &v4.octets());
                    word(&mut out, u32::from(a.prefix_len));
                    word(&mut out, 0); // origin: absent
                    word(&mut out, 1); // status: present
                    word(&mut out, IAS_PREFERRED);
                }
                IpAddr::V6(v6) => {
                    word(&mut out, IAT_IPV6);
                    opaque(&mut out, &v6.octets());
                    word(&mut out, u32::from(a.prefix_len));
                    word(&mut out, 0);
                    word(&mut out, 1);
                    word(&mut out, IAS_UNKNOWN);
                }
            }
        }
        for _ in 0..4 {
            word(&mut out, 0); // dns, wins, dhcpv4, dhcpv6: absent
        }
    }
    word(&mut out, 0); // routes: none
    for _ in 0..4 {
        word(&mut out, 0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::NicAddr;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn words(bytes: &[u8]) -> Vec<u32> {
        bytes
            .chunks(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    #[test]
    fn one_nic_one_ipv4_word_by_word() {
        let nics = [Nic {
            mac: "00:50:56:aa:bb:cc".into(),
            ips: vec![NicAddr {
                addr: IpAddr::V4(Ipv4Addr::new(192, 168, 1, 10)),
                prefix_len: 24,
            }],
        }];
        let out = encode(b"SetGuestInfo  10 ", &nics, 65_536);
        assert_eq!(&out[..17], b"SetGuestInfo  10 ");
        let body = &out[17..];
        let mac = b"00:50:56:aa:bb:cc\0\0\0";
        let mut expect = vec![3, 1, 1, 17];
        expect.extend(words(mac));
        expect.extend([1, 1, 4, 0xC0A8_010A, 24, 0, 1, 1]);
        expect.extend([0, 0, 0, 0]); // nic pointers
        expect.extend([0, 0, 0, 0, 0]); // routes, list pointers
        assert_eq!(words(body), expect);
    }

    #[test]
    fn ipv6_and_empty_list_and_limits() {
        let empty = encode(b"", &[], 65_536);
        assert_eq!(words(&empty), [3, 1, 0, 0, 0, 0, 0, 0]);
        let v6 = Nic {
            mac: "x".into(),
            ips: vec![NicAddr {
                addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
                prefix_len: 128,
            }],
        };
        let w = words(&encode(b"", &[v6], 65_536));
        assert_eq!(&w[..6], [3, 1, 1, 1, u32::from_be_bytes(*b"x\0\0\0"), 1]);
        assert_eq!(&w[6..8], [2, 16]);
        assert_eq!(&w[12..16], [128, 0, 1, 5]);
        // Too many NICs and addresses: capped, and the whole fits the limit.
        let big = Nic {
            mac: "00:50:56:aa:bb:cc:dd:ee".into(),
            ips: vec![
                NicAddr {
                    addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                    prefix_len: 8
                };
                3000
            ],
        };
        let nics = vec![big; 20];
        let out = encode(b"SetGuestInfo  10 ", &nics, 65_536);
        assert!(out.len() <= 65_536, "{}", out.len());
        let w = words(&out[17..]);
        assert_eq!(w[2], 16, "16 NICs at most");
        assert_eq!(w[3], 18, "MAC cut to 18 bytes");
        assert!(w[9] as usize <= MAX_IPS);
    }
}
