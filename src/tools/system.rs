//! [`GuestInfo::from_system`]: what this machine would report, read from the OS.

use std::ffi::CStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{GuestInfo, Nic, NicAddr};

/// Interfaces vmtoolsd leaves out by default (`docker*,veth*,virbr*`).
const EXCLUDED_PREFIXES: [&str; 3] = ["docker", "veth", "virbr"];

impl GuestInfo {
    /// This machine's host name, OS names, uptime and network interfaces, as vmtoolsd
    /// gathers them on Linux: interfaces that are up, not loopback and not `docker*`,
    /// `veth*` or `virbr*`, each with its MAC address and its non-loopback addresses in
    /// the kernel's order. What cannot be read is left out. On Unix only.
    #[must_use]
    pub fn from_system() -> GuestInfo {
        let uname = uname();
        GuestInfo {
            dns_name: host_name(),
            os_name_full: uname.as_ref().map(|(sys, rel)| format!("{sys} {rel}")),
            os_name: uname.map(|(sys, _)| {
                if sys == "Linux" {
                    // The short name hosts know for a Linux guest they cannot place.
                    if cfg!(target_pointer_width = "64") {
                        "other6xlinux-64".to_owned()
                    } else {
                        "other6xlinux".to_owned()
                    }
                } else {
                    sys.to_lowercase()
                }
            }),
            uptime_centis: uptime_centis(),
            nics: nics(),
        }
    }
}

fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if r != 0 {
        return None;
    }
    let name = CStr::from_bytes_until_nul(&buf).ok()?.to_str().ok()?;
    (!name.is_empty()).then(|| name.to_owned())
}

fn uname() -> Option<(String, String)> {
    // SAFETY: utsname is plain old data; uname fills it.
    let mut u: libc::utsname = unsafe { core::mem::zeroed() };
    // SAFETY: a valid pointer to a utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return None;
    }
    let field = |f: &[libc::c_char]| -> Option<String> {
        // c_char is i8 on x86 and u8 on arm64: its one byte, either way.
        let bytes: Vec<u8> = f
            .iter()
            .map(|c| c.to_ne_bytes()[0])
            .take_while(|&b| b != 0)
            .collect();
        String::from_utf8(bytes).ok()
    };
    Some((field(&u.sysname)?, field(&u.release)?))
}

/// Time since boot in hundredths of a second: `/proc/uptime` as vmtoolsd reads it, else
/// the monotonic clock.
fn uptime_centis() -> Option<u64> {
    if let Ok(text) = std::fs::read_to_string("/proc/uptime") {
        let first = text.split_whitespace().next()?;
        let (secs, frac) = first.split_once('.').unwrap_or((first, "0"));
        let centis: u64 = frac.get(..2).unwrap_or(frac).parse().ok()?;
        return secs
            .parse::<u64>()
            .ok()?
            .checked_mul(100)?
            .checked_add(centis);
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return None;
    }
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u64::try_from(ts.tv_nsec).ok()?;
    Some(secs * 100 + nanos / 10_000_000)
}

/// Prefix length of a netmask.
fn prefix(mask: &[u8]) -> u8 {
    mask.iter().map(|b| b.count_ones() as u8).sum()
}

/// One address of an `ifaddrs` entry: the address and its prefix length.
///
/// # Safety
///
/// `addr` and `mask` are null or point at socket addresses of their family, as
/// `getifaddrs` hands them out.
unsafe fn address(addr: *const libc::sockaddr, mask: *const libc::sockaddr) -> Option<NicAddr> {
    if addr.is_null() {
        return None;
    }
    // SAFETY: non-null, a socket address (the caller's contract).
    match i32::from(unsafe { (*addr).sa_family }) {
        libc::AF_INET => {
            // SAFETY: an AF_INET address is a sockaddr_in.
            let sin = unsafe { &*addr.cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            let prefix_len = if mask.is_null() {
                0
            } else {
                // SAFETY: the netmask of an AF_INET address is a sockaddr_in.
                let m = unsafe { &*mask.cast::<libc::sockaddr_in>() };
                prefix(&m.sin_addr.s_addr.to_ne_bytes())
            };
            (!ip.is_loopback()).then_some(NicAddr {
                addr: IpAddr::V4(ip),
                prefix_len,
            })
        }
        libc::AF_INET6 => {
            // SAFETY: an AF_INET6 address is a sockaddr_in6.
            let sin6 = unsafe { &*addr.cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let prefix_len = if mask.is_null() {
                0
            } else {
                // SAFETY: the netmask of an AF_INET6 address is a sockaddr_in6.
                let m = unsafe { &*mask.cast::<libc::sockaddr_in6>() };
                prefix(&m.sin6_addr.s6_addr)
            };
            (!ip.is_loopback()).then_some(NicAddr {
                addr: IpAddr::V6(ip),
                prefix_len,
            })
        }
        _ => None,
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn mac_of(addr: *const libc::sockaddr) -> Option<String> {
    if addr.is_null() {
        return None;
    }
    // SAFETY: non-null, from getifaddrs.
    if i32::from(unsafe { (*addr).sa_family }) != libc::AF_PACKET {
        return None;
    }
    // SAFETY: an AF_PACKET address is a sockaddr_ll.
    let ll = unsafe { &*addr.cast::<libc::sockaddr_ll>() };
    let m = ll.sll_addr;
    Some(format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    ))
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn mac_of(_addr: *const libc::sockaddr) -> Option<String> {
    None
}

fn nics() -> Vec<Nic> {
    let mut list: *mut libc::ifaddrs = core::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Vec::new();
    }
    // (name, nic) in the kernel's order of first appearance.
    let mut found: Vec<(String, Nic)> = Vec::new();
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: an entry of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        let up = entry.ifa_flags & libc::IFF_UP as libc::c_uint != 0;
        let loopback = entry.ifa_flags & libc::IFF_LOOPBACK as libc::c_uint != 0;
        if entry.ifa_name.is_null() || !up || loopback {
            continue;
        }
        // SAFETY: a NUL-terminated interface name.
        let name = unsafe { CStr::from_ptr(entry.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // Aliases (`eth0:1`) belong to their device.
        let device = name.split(':').next().unwrap_or(&name).to_owned();
        if EXCLUDED_PREFIXES.iter().any(|p| device.starts_with(p)) {
            continue;
        }
        let index = match found.iter().position(|(n, _)| *n == device) {
            Some(i) => i,
            None => {
                found.push((device, Nic::default()));
                found.len() - 1
            }
        };
        let Some((_, nic)) = found.get_mut(index) else {
            continue;
        };
        if let Some(mac) = mac_of(entry.ifa_addr) {
            nic.mac = mac;
        }
        // SAFETY: the entry's address and netmask, as getifaddrs filled them.
        if let Some(a) = unsafe { address(entry.ifa_addr, entry.ifa_netmask) } {
            nic.ips.push(a);
        }
    }
    // SAFETY: the list getifaddrs returned, freed once.
    unsafe { libc::freeifaddrs(list) };
    found
        .into_iter()
        .map(|(_, nic)| nic)
        // vmtoolsd lists a device by its link-layer (MAC) entry; elsewhere there is none.
        .filter(|nic| !nic.mac.is_empty() || (!cfg!(target_os = "linux") && !nic.ips.is_empty()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_reports_something_sane() {
        let info = GuestInfo::from_system();
        assert!(info.uptime_centis.is_some_and(|u| u > 0));
        assert!(info.os_name_full.is_some());
        for nic in &info.nics {
            assert!(nic.mac.len() <= 17, "{nic:?}");
            assert!(nic.ips.iter().all(|a| !match a.addr {
                IpAddr::V4(v) => v.is_loopback(),
                IpAddr::V6(v) => v.is_loopback(),
            }));
        }
        assert_eq!(prefix(&[255, 255, 255, 0]), 24);
    }
}
