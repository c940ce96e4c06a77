//! The library's vsock route under the simulator, end to end: `Session::connect`, the vsock
//! constructors and the examples against the runner's vsock and the host's DataMap end, as
//! a guest of a VMware host with `vmw_vsock_vmci_transport` meets them (issue 13).
//! `tests/guest_vsock.rs` checks the simulator's side with the tests' own client.

#![cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]

mod support;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use support::vsock::{drop_privilege, root};
use vmw_backdoor::sim::{GuestExit, Host, HostConfig, VsockFault};
use vmw_backdoor::{ErrorKind, Route, RpciChannel, Session};

fn served(config: HostConfig, guest: impl FnOnce()) -> Host {
    config.run(guest).expect("start the guest").expect_success()
}

#[test]
fn a_session_takes_privileged_vsock_and_never_knocks() {
    if !root() {
        eprintln!("skipped: binding a port below 1024 needs root here");
        return;
    }
    let config = HostConfig::default().vsock(true).guestinfo("k", "v");
    let host = served(config, || {
        let mut s = Session::connect().unwrap();
        assert_eq!(s.route(), Route::PrivilegedVsock);
        assert_eq!(s.get_guestinfo(b"k").unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(s.get_guestinfo(b"missing").unwrap(), None);
        s.set_guestinfo(b"state", b"ready").unwrap();
        s.log("over vsock").unwrap();
        drop(s);
        // The one-shot read asks the host to close after its reply.
        let one = vmw_backdoor::guestinfo("state").unwrap();
        assert_eq!(one.as_deref(), Some(&b"ready"[..]));
    });
    let c = host.counters();
    assert_eq!(c.backdoor_calls(), 0, "vsock needs no knock and no channel");
    assert_eq!((c.vsock_connections, c.vsock_rpcs), (2, 5));
    assert_eq!(
        host.guestinfo()
            .get(&b"guestinfo.state"[..])
            .map(Vec::as_slice),
        Some(&b"ready"[..])
    );
    assert_eq!(
        host.vmx_log().last().map(Vec::as_slice),
        Some(&b"over vsock"[..])
    );
}

#[test]
fn a_vm_that_requires_the_privileged_channel_answers_only_it() {
    if !root() {
        eprintln!("skipped: binding a port below 1024 needs root here");
        return;
    }
    let config = HostConfig::default().deny_guestinfo().guestinfo("k", "v");
    served(config, || {
        let mut s = Session::connect().unwrap();
        assert_eq!(s.route(), Route::PrivilegedVsock);
        assert_eq!(s.get_guestinfo(b"k").unwrap().as_deref(), Some(&b"v"[..]));
        drop(s);
        // The backdoor is refused even for root: the message names the setting.
        let mut guard = vmw_backdoor::probe_backdoor().unwrap();
        let e = RpciChannel::open(&mut guard)
            .unwrap()
            .get_guestinfo(b"k")
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
        assert!(
            e.to_string().contains("guest_rpc.rpci.auth.cmd.info-get"),
            "{e}"
        );
        drop(guard);
        // Without CAP_NET_BIND_SERVICE: unprivileged vsock, refused, and what to do.
        drop_privilege();
        let mut s = Session::connect().unwrap();
        assert_eq!(s.route(), Route::UnprivilegedVsock);
        let e = s.get_guestinfo(b"k").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
        assert_eq!(e.host_reply(), Some(&b"Permission denied"[..]));
        assert!(e.to_string().contains("CAP_NET_BIND_SERVICE"), "{e}");
        // Commands the VM does not reserve still work there.
        s.log("unprivileged").unwrap();
        let e =
            Session::open_privileged_vsock(vmw_backdoor::access_backdoor().unwrap()).unwrap_err();
        assert_eq!(
            (e.kind(), e.raw_os_error()),
            (ErrorKind::Privilege, Some(libc::EACCES)),
            "{e}"
        );
    });
}

#[test]
fn resets_walk_the_ports_and_too_many_send_the_session_to_the_backdoor() {
    if !root() {
        eprintln!("skipped: binding a port below 1024 needs root here");
        return;
    }
    let config = || HostConfig::default().vsock(true).guestinfo("k", "v");
    let host = served(config().vsock_reset_connects(3), || {
        let mut s = Session::connect().unwrap();
        assert_eq!(s.route(), Route::PrivilegedVsock);
        assert!(s.get_guestinfo(b"k").unwrap().is_some());
    });
    assert_eq!(
        (
            host.counters().faults_injected,
            host.counters().vsock_connections
        ),
        (3, 1)
    );
    // Eight resets in a row: vsock is given up, the backdoor answers.
    let host = served(config().vsock_reset_connects(8), || {
        let mut s = Session::connect().unwrap();
        assert_eq!(s.route(), Route::Backdoor);
        assert_eq!(s.get_guestinfo(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    });
    assert_eq!(host.counters().vsock_connections, 0);
    assert_eq!(host.open_channels(), 0);
}

#[test]
fn hostile_vsock_replies_are_typed_errors_and_the_session_recovers() {
    for (fault, first) in [
        // Cut or unanswered: info-get may be sent again, and is.
        (VsockFault::Truncated(10), Ok(())),
        (VsockFault::NoReply, Ok(())),
        (VsockFault::ClaimLength(u32::MAX), Err(ErrorKind::TooLarge)),
        (VsockFault::DuplicateField, Err(ErrorKind::Protocol)),
        (VsockFault::UnknownType(9), Err(ErrorKind::Protocol)),
        (VsockFault::EmptyString, Err(ErrorKind::Protocol)),
        (VsockFault::NoPrefix, Err(ErrorKind::Protocol)),
        // "junk" read as a header: a body of 1.7 GiB.
        (VsockFault::Raw(b"junk".to_vec()), Err(ErrorKind::TooLarge)),
        (
            VsockFault::Raw(vec![0, 0, 0, 2, 1, 2]),
            Err(ErrorKind::Protocol),
        ),
    ] {
        let what = format!("{fault:?}");
        let config = HostConfig::default()
            .vsock(true)
            .guestinfo("k", "v")
            .vsock_fault(1, fault);
        let host = served(config, || {
            let mut s = Session::connect().unwrap();
            let got = s.get_guestinfo(b"k").map(drop).map_err(|e| e.kind());
            assert_eq!(got, first, "{what}");
            // The next request connects again and is answered.
            assert_eq!(
                s.get_guestinfo(b"k").unwrap().as_deref(),
                Some(&b"v"[..]),
                "{what}"
            );
            assert_ne!(s.route(), Route::Backdoor, "{what}");
        });
        assert_eq!(host.counters().vsock_connections, 2, "{what}");
        assert_eq!(host.counters().backdoor_calls(), 0, "{what}");
    }
    // A command that may not run twice is not sent again after a reply that never came.
    let config = HostConfig::default()
        .vsock(true)
        .vsock_fault(1, VsockFault::NoReply);
    let host = served(config, || {
        let mut s = Session::connect().unwrap();
        let e = s.rpc(b"tools.capability.statechange").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ChannelClosed, "{e}");
    });
    assert_eq!(
        (
            host.counters().vsock_rpcs,
            host.counters().vsock_connections
        ),
        (1, 1)
    );
}

/// The guestinfo example under `config`, as `uid` when given; its exit, stdout and stderr.
fn guestinfo_example(config: HostConfig, uid: Option<u32>) -> (GuestExit, Vec<u8>, String) {
    let dir = std::env::temp_dir().join(format!("vmw-vsock-route-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tag = uid.map_or("root".to_owned(), |u| u.to_string());
    let (out, err) = (
        dir.join(format!("{tag}.out")),
        dir.join(format!("{tag}.err")),
    );
    let mut cmd = Command::new(support::example("guestinfo"));
    cmd.arg("k")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    let run = config.run_command(&mut cmd).unwrap();
    let stdout = std::fs::read(&out).unwrap();
    let stderr = String::from_utf8_lossy(&std::fs::read(&err).unwrap()).into_owned();
    let _ = std::fs::remove_dir_all(&dir);
    (run.exit, stdout, stderr)
}

#[test]
fn the_guestinfo_example_reads_through_privileged_vsock_and_says_what_to_do_without() {
    if !root() {
        eprintln!("skipped: the example's two runs need root and nobody");
        return;
    }
    // vmw-sim --require-privileged info-get -e guestinfo.k=v -- guestinfo k
    let config = || {
        HostConfig::default()
            .require_privileged("info-get")
            .guestinfo("k", "v")
    };
    let (exit, stdout, stderr) = guestinfo_example(config(), None);
    assert_eq!(
        (exit, stdout.as_slice()),
        (GuestExit::Exited(0), &b"v"[..]),
        "{stderr}"
    );
    assert_eq!(stderr, "", "nothing extra by default");
    let (exit, stdout, stderr) = guestinfo_example(config(), Some(65534));
    assert_eq!(exit, GuestExit::Exited(1), "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("Permission denied") && stderr.contains("CAP_NET_BIND_SERVICE"),
        "{stderr}"
    );
}
