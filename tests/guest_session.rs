//! What boot agents do, over every transport: typed values, encoded values in every spelling
//! the field uses, clearing a key, the OVF environment, and `Session::connect` through the
//! real instructions.

#![cfg(all(
    feature = "sim",
    feature = "encoding",
    feature = "ovf",
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]

#[path = "support/alloc.rs"]
mod alloc;
mod support;

use std::io::Write;

use base64::Engine;
use support::transport::Transport;
use vmw_backdoor::sim::{HostConfig, IoplPolicy};
use vmw_backdoor::{Backdoor, ErrorKind, RpciChannel, Session};

#[global_allocator]
static GLOBAL: alloc::CountingAlloc = alloc::CountingAlloc;

fn open(b: &mut dyn Backdoor) -> RpciChannel<&mut dyn Backdoor> {
    RpciChannel::open(b).expect("open a channel")
}

fn base64(data: &[u8]) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .encode(data)
        .into_bytes()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(data).unwrap();
    z.finish().unwrap()
}

/// A value and the bytes to store for it under each spelling of each encoding.
fn encoded(value: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let b64 = base64(value);
    let gz_b64 = base64(&gzip(value));
    // `base64(1)` output: wrapped at 76 columns, newline at the end.
    let wrapped: Vec<u8> = b64.chunks(76).flat_map(|l| [l, b"\n"].concat()).collect();
    vec![
        ("", value.to_vec()),
        (" ", value.to_vec()),
        ("base64", b64.clone()),
        ("B64", b64.clone()),
        ("base64", wrapped),
        ("base64", b64.strip_suffix(b"=").unwrap_or(&b64).to_vec()),
        ("gzip+base64", gz_b64.clone()),
        ("gz+b64", gz_b64.clone()),
        ("GZIP+B64", gz_b64.clone()),
        ("gz+base64", gz_b64),
        ("gzip", gzip(value)),
        ("gz", gzip(value)),
    ]
}

#[test]
fn encoded_values_decode_in_every_spelling_the_field_uses() {
    let value = b"#cloud-config\nhostname: web-1\n\x00\xff binary too".repeat(40);
    for t in Transport::library() {
        for (i, (encoding, stored)) in encoded(&value).into_iter().enumerate() {
            let key = format!("v{i}");
            let config = HostConfig::default()
                .guestinfo(&key, stored)
                .guestinfo(format!("{key}.encoding"), encoding);
            t.run(config, |b| {
                let got = open(b).get_decoded_guestinfo(key.as_bytes()).unwrap();
                assert_eq!(got.as_deref(), Some(&value[..]), "{encoding:?}");
            });
        }
        // No `.encoding` key at all: raw.
        t.run(HostConfig::default().guestinfo("plain", "text"), |b| {
            let got = open(b).get_decoded_guestinfo(b"guestinfo.plain").unwrap();
            assert_eq!(got.as_deref(), Some(&b"text"[..]));
        });
    }
}

#[test]
fn bad_encodings_are_typed_errors_and_a_cleared_key_is_absent() {
    for t in Transport::library() {
        let config = HostConfig::default()
            .guestinfo("a", "x")
            .guestinfo("a.encoding", "yaml")
            .guestinfo("b", "not base64!")
            .guestinfo("b.encoding", "base64")
            .guestinfo("c", base64(b"not gzip"))
            .guestinfo("c.encoding", "gzip+base64")
            .guestinfo("d", "---")
            .guestinfo("e", "secret");
        let host = t.run(config, |b| {
            let mut c = open(b);
            let e = c.get_decoded_guestinfo(b"a").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Decode);
            assert!(
                e.to_string().contains("\"yaml\""),
                "names the encoding: {e}"
            );
            for key in [&b"b"[..], b"c"] {
                let e = c.get_decoded_guestinfo(key).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::Decode, "{e}");
            }
            assert_eq!(
                c.get_decoded_guestinfo(b"d").unwrap(),
                None,
                "cloud-init's marker"
            );
            assert_eq!(c.get_decoded_guestinfo(b"missing").unwrap(), None);
            c.clear_guestinfo(b"e").unwrap();
            assert_eq!(c.get_decoded_guestinfo(b"e").unwrap(), None);
            assert!(c.is_open(), "decode errors do not cost the channel");
        });
        let stored = |k: &[u8]| host.guestinfo().get(k).cloned();
        assert_eq!(
            stored(b"guestinfo.e").as_deref(),
            Some(&b"---"[..]),
            "{t:?}"
        );
        assert_eq!(
            stored(b"guestinfo.e.encoding").as_deref(),
            Some(&b" "[..]),
            "{t:?}"
        );
    }
}

#[test]
fn a_gzip_bomb_is_refused_with_bounded_memory() {
    // Deflate inflates at most ~1032:1, so a bomb of 1 GiB needs ~1 MiB: 1024 gzip members
    // of 1 MiB of zeros each (concatenated members are one valid gzip stream).
    let member = gzip(&vec![0; 1 << 20]);
    let bomb = base64(&member.repeat(1024));
    let config = HostConfig::default()
        .guestinfo("bomb", &bomb)
        .guestinfo("bomb.encoding", "gzip+base64");
    for t in Transport::library() {
        t.run(config.clone(), |b| {
            let mut c = open(b);
            let cap = c.max_reply_len();
            let before = alloc::live();
            alloc::reset_peak();
            let result = c.get_decoded_guestinfo(b"bomb");
            let peak = alloc::peak().saturating_sub(before);
            let e = result.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}");
            // The wire value, its base64 decoding, and the capped output: a few MiB, never
            // the 1 GiB the bomb inflates to.
            let bound = cap + 1 + 3 * bomb.len() + (1 << 20);
            assert!(peak <= bound, "peak {} bytes, bound {bound}", peak);
        });
    }
}

#[test]
fn typed_getters_read_text_booleans_and_numbers() {
    let mut config = HostConfig::default()
        .guestinfo("name", "web-1")
        .guestinfo("bytes", b"\xff\xfe")
        .guestinfo("port", " 8080\n")
        .guestinfo("huge", "70000")
        .guestinfo("maybe", "perhaps");
    let booleans = [
        ("1", true),
        ("t", true),
        ("TRUE", true),
        ("y", true),
        ("Yes", true),
        ("on", true),
        ("0", false),
        ("f", false),
        ("False", false),
        ("n", false),
        ("NO", false),
        ("off", false),
    ];
    for (i, (text, _)) in booleans.iter().enumerate() {
        config = config.guestinfo(format!("b{i}"), format!(" {text} "));
    }
    for t in Transport::library() {
        t.run(config.clone(), |b| {
            let mut c = open(b);
            assert_eq!(
                c.get_guestinfo_string(b"name").unwrap().as_deref(),
                Some("web-1")
            );
            assert_eq!(
                c.get_guestinfo_string(b"bytes").unwrap_err().kind(),
                ErrorKind::Decode
            );
            assert_eq!(c.get_guestinfo_string(b"missing").unwrap(), None);
            assert_eq!(c.get_guestinfo_parsed::<u16>(b"port").unwrap(), Some(8080));
            let e = c.get_guestinfo_parsed::<u16>(b"huge").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Decode);
            assert!(e.to_string().contains("u16"), "{e}");
            assert_eq!(
                c.get_guestinfo_parsed::<u16>(b"missing")
                    .unwrap()
                    .unwrap_or(22),
                22
            );
            for (i, (text, want)) in booleans.iter().enumerate() {
                let got = c.get_guestinfo_bool(format!("b{i}").as_bytes()).unwrap();
                assert_eq!(got, Some(*want), "{text:?}");
            }
            assert_eq!(
                c.get_guestinfo_bool(b"maybe").unwrap_err().kind(),
                ErrorKind::Decode
            );
            assert_eq!(c.get_guestinfo_bool(b"missing").unwrap(), None);
        });
    }
}

#[test]
fn the_ovf_environment_is_read_in_either_spelling() {
    let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1"
     xmlns:oe="http://schemas.dmtf.org/ovf/environment/1" oe:id="">
  <PropertySection>
    <Property oe:key="hostname" oe:value="web-1"/>
    <Property oe:key="seedfrom" oe:value="http://10.0.0.1/"/>
  </PropertySection>
</Environment>"#;
    for t in Transport::library() {
        for key in ["ovfEnv", "ovfenv"] {
            t.run(HostConfig::default().guestinfo(key, xml), |b| {
                let mut c = open(b);
                assert_eq!(
                    c.ovf_environment().unwrap().as_deref(),
                    Some(xml.as_bytes())
                );
                let p = c.ovf_properties().unwrap().expect("properties");
                assert_eq!(p.len(), 2, "{p:?}");
                assert_eq!(p["hostname"], "web-1");
                assert_eq!(p["seedfrom"], "http://10.0.0.1/");
            });
        }
        t.run(
            HostConfig::default().guestinfo("ovfEnv", "<Environment>"),
            |b| {
                let mut c = open(b);
                assert_eq!(c.ovf_properties().unwrap_err().kind(), ErrorKind::Decode);
            },
        );
        t.run(HostConfig::default(), |b| {
            assert_eq!(open(b).ovf_properties().unwrap(), None);
        });
    }
}

#[test]
fn a_session_connects_privileged_where_allowed_and_else_in_ring_3() {
    for (iopl, privileged) in [
        (IoplPolicy::Allow, true),
        (IoplPolicy::Eperm, false),
        (IoplPolicy::Enosys, false),
    ] {
        // arm64 has no I/O privilege: ring 3 always.
        let privileged = privileged && cfg!(target_arch = "x86_64");
        let config = HostConfig::default().guestinfo("k", "v").iopl(iopl);
        let run = config.run(|| {
            let mut s = Session::connect().unwrap();
            assert_eq!(s.access().is_privileged(), privileged, "{iopl:?}");
            assert_eq!(s.get_guestinfo(b"k").unwrap().as_deref(), Some(&b"v"[..]));
            assert_eq!(
                vmw_backdoor::guestinfo("k").unwrap().as_deref(),
                Some(&b"v"[..])
            );
        });
        let host = run.expect("start the guest").expect_success();
        assert_eq!(host.open_channels(), 0, "{iopl:?}");
    }
}

#[test]
fn outside_vmware_connect_keeps_both_reasons() {
    let config = HostConfig::default()
        .mode(vmw_backdoor::sim::Mode::RestrictBackdoor)
        .iopl(IoplPolicy::Eperm);
    let run = config.run(|| {
        let e = Session::connect().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotVmware, "{e}");
        let text = e.to_string();
        // The privileged attempt's reason: the kernel's EPERM, or arm64's lack of iopl.
        let privileged = if cfg!(target_arch = "x86_64") {
            "EPERM"
        } else {
            "exists only on Linux x86"
        };
        assert!(
            text.contains("before that") && text.contains(privileged),
            "{text}"
        );
    });
    run.expect("start the guest").expect_success();
}

/// Three keys, one of them gzip+base64: the whole read of a boot agent. BENCHMARKS.md
/// compares the two ways in backdoor calls.
fn boot_agent_host() -> HostConfig {
    HostConfig::default()
        .guestinfo("metadata", base64(&gzip(b"{\"instance-id\": \"vm-1\"}")))
        .guestinfo("metadata.encoding", "gzip+base64")
        .guestinfo("userdata", "#cloud-config\n")
        .guestinfo("vendordata", "")
}

#[test]
fn a_boot_agents_whole_read_is_one_session_and_one_channel() {
    let session = boot_agent_host()
        .run(|| {
            let mut s = Session::connect().unwrap();
            let metadata = s.get_decoded_guestinfo(b"metadata").unwrap();
            assert_eq!(
                metadata.as_deref(),
                Some(&b"{\"instance-id\": \"vm-1\"}"[..])
            );
            assert!(s.get_guestinfo(b"userdata").unwrap().is_some());
            assert!(s.get_guestinfo(b"vendordata").unwrap().is_some());
        })
        .expect("start the guest")
        .expect_success();
    // The 0.2-era way: a probe and a channel per key, the encoding read as a key of its own.
    let per_key = boot_agent_host()
        .run(|| {
            for key in ["metadata", "metadata.encoding", "userdata", "vendordata"] {
                let mut g = vmw_backdoor::probe_backdoor_privileged()
                    .or_else(|_| vmw_backdoor::probe_backdoor())
                    .unwrap();
                let mut c = g.open_enhanced_chan().unwrap();
                assert!(c.get_guestinfo(key.as_bytes()).unwrap().is_some(), "{key}");
            }
        })
        .expect("start the guest")
        .expect_success();
    let (s, p) = (session.counters(), per_key.counters());
    println!(
        "session: {} backdoor calls, {} channel(s); per key: {} calls, {} channels",
        s.backdoor_calls(),
        s.channels_opened,
        p.backdoor_calls(),
        p.channels_opened
    );
    // One knock (GETVERSION), OPEN, four RPCs of 5 calls (HB), CLOSE.
    assert_eq!(
        (s.backdoor_calls(), s.channels_opened),
        (1 + 1 + 4 * 5 + 1, 1)
    );
    // Per key: knock, OPEN, one RPC, CLOSE.
    assert_eq!(
        (p.backdoor_calls(), p.channels_opened),
        (4 * (1 + 1 + 5 + 1), 4)
    );
}
