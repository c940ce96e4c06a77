//! The guest's vsock under the simulator: hand-written guests (`support::vsock`, the
//! tests' own client) against the runner's vsock and the host's DataMap end.

#![cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]

mod support;

use support::guest::HandAsm;
use support::reference as rc;
use support::vsock::{
    self as vs, drop_privilege, root, Connected, ReplyError, ANY, CID_HOST, CID_HYPERVISOR,
    CID_LOCAL,
};
use vmw_backdoor::sim::{HostConfig, SimRun, VsockFault};

fn run(config: HostConfig, guest: impl FnOnce()) -> SimRun {
    let run = config.run(guest).expect("start the guest");
    assert!(run.exit.success(), "guest {}", run.exit);
    run
}

fn vsock_host() -> HostConfig {
    HostConfig::default().vsock(true).guestinfo("x", "v")
}

fn connected(c: Connected) -> (vs::Fd, u32) {
    match c {
        Connected::Port(fd, port) => (fd, port),
        other => panic!("no connection: {other:?}"),
    }
}

#[test]
fn privileged_connection_serves_info_get() {
    if !root() {
        eprintln!("skipped: binding a port below 1024 needs root here");
        return;
    }
    let run = run(vsock_host(), || {
        let (fd, port) = connected(vs::connect_rpci(CID_HYPERVISOR, true));
        assert_eq!(port, 1023);
        assert_eq!(vs::name(&fd, false), Ok((40, ANY, 1023)));
        assert_eq!(vs::name(&fd, true), Ok((40, CID_HYPERVISOR, 976)));
        assert_eq!(
            vs::rpc(&fd, b"info-get guestinfo.x", false).unwrap(),
            b"1 v"
        );
        // The connection stays open without FAST_CLOSE: a second RPC on it.
        assert_eq!(
            vs::rpc(&fd, b"info-set guestinfo.y w", false).unwrap(),
            b"1 "
        );
        assert_eq!(vs::rpc(&fd, b"log over vsock", false).unwrap(), b"1 ");
        // govmomi connects to CID 2.
        let (fd2, _) = connected(vs::connect_rpci(CID_HOST, true));
        assert_eq!(
            vs::rpc(&fd2, b"info-get guestinfo.y", false).unwrap(),
            b"1 w"
        );
    });
    let c = run.host.counters();
    assert_eq!((c.vsock_connections, c.vsock_rpcs, c.rpcs), (2, 4, 4));
    assert_eq!(c.backdoor_calls(), 0, "no backdoor call at all");
    assert_eq!(run.host.vmx_log(), [b"over vsock".to_vec()]);
    assert_eq!(
        run.host.rpci_log(),
        b"info-get guestinfo.x\ninfo-set guestinfo.y w\nlog over vsock\ninfo-get guestinfo.y\n"
    );
    // socket, bind, connect, getsockname (walk) ×2, and the guest's two names.
    assert!(run.traps.vsock_syscalls >= 10, "{:?}", run.traps);
}

#[test]
fn a_port_in_use_is_eaddrinuse_until_closed() {
    if !root() {
        eprintln!("skipped: binding a port below 1024 needs root here");
        return;
    }
    run(vsock_host(), || {
        let (a, pa) = connected(vs::connect_rpci(CID_HYPERVISOR, true));
        let (b, pb) = connected(vs::connect_rpci(CID_HYPERVISOR, true));
        assert_eq!((pa, pb), (1023, 1022), "two at once: the walk moves on");
        let c = vs::socket().unwrap();
        assert_eq!(vs::bind(&c, ANY, 1022), Err(libc::EADDRINUSE));
        assert_eq!(vs::rpc(&b, b"info-get guestinfo.x", true).unwrap(), b"1 v");
        drop(a);
        let (_c, pc) = connected(vs::connect_rpci(CID_HYPERVISOR, true));
        assert_eq!(pc, 1023, "closing a socket frees its port");
        // Binding the guest's own CID (what /dev/vsock says) works too.
        let d = vs::socket().unwrap();
        assert_eq!(vs::bind(&d, vs::SIM_GUEST_CID, 1000), Ok(()));
        assert_eq!(vs::name(&d, false), Ok((40, vs::SIM_GUEST_CID, 1000)));
    });
}

#[test]
fn without_cap_net_bind_service_the_guest_goes_unprivileged() {
    let config = vsock_host().require_privileged("info-get");
    let run = run(config, || {
        drop_privilege();
        let s = vs::socket().unwrap();
        assert_eq!(vs::bind(&s, ANY, 1023), Err(libc::EACCES));
        assert_eq!(vs::bind(&s, ANY, 1), Err(libc::EACCES));
        assert_eq!(
            vs::connect_rpci(CID_HYPERVISOR, true),
            Connected::NoPrivilege
        );
        let (fd, port) = connected(vs::connect_rpci(CID_HYPERVISOR, false));
        assert!(port >= 1024, "an unprivileged port: {port}");
        assert_eq!(
            vs::rpc(&fd, b"info-get guestinfo.x", false).unwrap(),
            b"0 Permission denied"
        );
        assert_eq!(vs::rpc(&fd, b"log still fine", false).unwrap(), b"1 ");
        // Ports 1024 and up need nothing.
        let t = vs::socket().unwrap();
        assert_eq!(vs::bind(&t, ANY, 5000), Ok(()));
    });
    assert_eq!(run.host.counters().vsock_rpcs, 2);
}

#[test]
fn require_privileged_refuses_the_backdoor_and_unprivileged_vsock() {
    if !root() {
        eprintln!("skipped: the privileged channel needs root here");
        return;
    }
    // No vsock(true): a host that requires the privileged channel offers it.
    let config = HostConfig::default()
        .guestinfo("x", "v")
        .require_privileged("info-get");
    let run = run(config, || {
        let backdoor = rc::rpc_once(&mut HandAsm, b"info-get guestinfo.x", true).unwrap();
        assert_eq!(backdoor, b"0 Permission denied", "even for root");
        let (un, _) = connected(vs::connect_rpci(CID_HYPERVISOR, false));
        assert_eq!(
            vs::rpc(&un, b"info-get guestinfo.x", false).unwrap(),
            b"0 Permission denied"
        );
        let (pr, _) = connected(vs::connect_rpci(CID_HYPERVISOR, true));
        assert_eq!(
            vs::rpc(&pr, b"info-get guestinfo.x", false).unwrap(),
            b"1 v"
        );
        // Other commands go anywhere.
        let set = rc::rpc_once(&mut HandAsm, b"info-set guestinfo.z 1", true).unwrap();
        assert_eq!(set, b"1 ");
    });
    let c = run.host.counters();
    assert_eq!((c.rpcs, c.vsock_rpcs, c.vsock_connections), (4, 2, 2));
}

#[test]
fn fast_close_closes_after_the_reply() {
    run(vsock_host(), || {
        let (fd, _) = connected(vs::connect_rpci(CID_HYPERVISOR, false));
        assert_eq!(vs::rpc(&fd, b"info-get guestinfo.x", true).unwrap(), b"1 v");
        assert!(vs::at_eof(&fd), "the host closed it");
        let (fd, _) = connected(vs::connect_rpci(CID_HYPERVISOR, false));
        assert_eq!(
            vs::rpc(&fd, b"info-get guestinfo.nope", false).unwrap(),
            b"0 No value found"
        );
        assert_eq!(
            vs::rpc(&fd, b"info-get guestinfo.x", false).unwrap(),
            b"1 v"
        );
    });
}

#[test]
fn resets_make_the_walk_move_on() {
    if !root() {
        eprintln!("skipped: the privileged walk needs root here");
        return;
    }
    let run = run(vsock_host().vsock_reset_connects(3), || {
        let (fd, port) = connected(vs::connect_rpci(CID_HYPERVISOR, true));
        assert_eq!(port, 1020, "three resets, three ports skipped");
        assert_eq!(vs::rpc(&fd, b"info-get guestinfo.x", true).unwrap(), b"1 v");
    });
    let c = run.host.counters();
    assert_eq!((c.faults_injected, c.vsock_connections), (3, 1));
}

#[test]
fn more_resets_than_the_walk_tries_fail_the_connection() {
    run(vsock_host().vsock_reset_connects(100), || {
        for _ in 0..3 {
            let s = vs::socket().unwrap();
            assert_eq!(vs::connect(&s, CID_HYPERVISOR, 976), Err(libc::ECONNRESET));
        }
    });
}

#[test]
fn hostile_and_broken_replies_end_in_a_closed_connection() {
    let faults = [
        VsockFault::Truncated(10),
        VsockFault::ClaimLength(1000),
        VsockFault::ClaimLength(u32::MAX),
        VsockFault::DuplicateField,
        VsockFault::UnknownType(9),
        VsockFault::EmptyString,
        VsockFault::NoPrefix,
        VsockFault::NoReply,
        VsockFault::Raw(vec![0, 0, 0]),
    ];
    let config = faults.iter().enumerate().fold(vsock_host(), |c, (i, f)| {
        c.vsock_fault(i as u64 + 1, f.clone())
    });
    let run = run(config, || {
        let mut seen = Vec::new();
        for _ in 0..9 {
            let (fd, _) = connected(vs::connect_rpci(CID_HYPERVISOR, false));
            seen.push(vs::rpc(&fd, b"info-get guestinfo.x", false));
            assert!(vs::at_eof(&fd), "closed after a fault");
        }
        assert_eq!(
            seen,
            [
                Err(ReplyError::Short(10)),
                Err(ReplyError::Short(4 + 31)),
                Err(ReplyError::TooLong(u32::MAX)),
                Err(ReplyError::Bad("duplicate field")),
                Err(ReplyError::Bad("unknown type")),
                Err(ReplyError::Bad("string length of zero or less")),
                Ok(b"v".to_vec()), // no `1 `: the client must check it (vmtoolsd does)
                Err(ReplyError::Short(0)),
                Err(ReplyError::Short(3)),
            ]
        );
        // The next RPC is served normally.
        let (fd, _) = connected(vs::connect_rpci(CID_HYPERVISOR, false));
        assert_eq!(
            vs::rpc(&fd, b"info-get guestinfo.x", false).unwrap(),
            b"1 v"
        );
    });
    assert_eq!(run.host.counters().faults_injected, 9);
}

#[test]
fn requests_the_host_cannot_read_close_the_connection() {
    run(vsock_host(), || {
        let cases: [&[u8]; 4] = [
            &[0xff, 0xff, 0xff, 0xff],                          // a body over the cap
            &[0, 0, 0, 8, 0, 0, 0, 7, 0, 0, 0, 2],              // an unknown type
            &[0, 0, 0, 12, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 0], // an empty string
            &[0, 0, 0, 16, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0], // no payload
        ];
        for bytes in cases {
            let (fd, _) = connected(vs::connect_rpci(CID_HYPERVISOR, false));
            vs::send_all(&fd, bytes).unwrap();
            assert!(vs::at_eof(&fd), "{bytes:?}");
        }
    });
}

#[test]
fn without_vsock_sockets_fail_as_on_a_kernel_without_it() {
    let run = run(HostConfig::default().guestinfo("x", "v"), || {
        for kind in [
            libc::SOCK_STREAM,
            libc::SOCK_DGRAM,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
        ] {
            assert_eq!(
                vs::socket_of(40, kind, 0).map(drop),
                Err(libc::EAFNOSUPPORT)
            );
        }
        // The backdoor is still there.
        let reply = rc::rpc_once(&mut HandAsm, b"info-get guestinfo.x", true).unwrap();
        assert_eq!(reply, b"1 v");
    });
    assert_eq!(run.traps.vsock_syscalls, 0, "the filter answers, no stop");
    let run = self::run(
        HostConfig::default()
            .require_privileged("info-get")
            .vsock(false),
        || assert_eq!(vs::socket().map(drop), Err(libc::EAFNOSUPPORT)),
    );
    assert_eq!(run.host.counters().vsock_connections, 0);
}

#[test]
fn bad_calls_get_the_kernels_errors() {
    run(vsock_host(), || {
        let e = |r: Result<vs::Fd, i32>| r.map(drop);
        assert_eq!(
            e(vs::socket_of(40, libc::SOCK_STREAM, 5)),
            Err(libc::EPROTONOSUPPORT)
        );
        assert_eq!(
            e(vs::socket_of(40, libc::SOCK_RAW, 0)),
            Err(libc::ESOCKTNOSUPPORT)
        );
        assert_eq!(
            e(vs::socket_of(40, 1 | 0x100, 0)),
            Err(libc::EINVAL),
            "unknown flag"
        );
        assert_eq!(
            e(vs::socket_of(40, libc::SOCK_STREAM, 40)),
            Ok(()),
            "PF_VSOCK"
        );

        let s = vs::socket().unwrap();
        assert_eq!(
            vs::raw(false, &s, &vs::sockaddr_vm(ANY, 2000)[..8]),
            Err(libc::EINVAL)
        );
        let mut unix = vs::sockaddr_vm(ANY, 2000);
        unix[0] = libc::AF_UNIX as u8;
        assert_eq!(
            vs::raw(false, &s, &unix),
            Err(libc::EINVAL),
            "another family"
        );
        let mut flagged = vs::sockaddr_vm(ANY, 2000);
        flagged[12] = 2;
        assert_eq!(
            vs::raw(false, &s, &flagged),
            Err(libc::EINVAL),
            "unknown flag"
        );
        // SAFETY: deliberately a bad pointer: the kernel (here the runner) must say EFAULT.
        let r = unsafe { libc::bind(s.0, 8 as *const libc::sockaddr, 16) };
        assert_eq!(
            (r, std::io::Error::last_os_error().raw_os_error()),
            (-1, Some(libc::EFAULT))
        );
        assert_eq!(
            vs::bind(&s, 77, 2000),
            Err(libc::EADDRNOTAVAIL),
            "not our CID"
        );
        assert_eq!(vs::name(&s, false), Ok((40, ANY, ANY)), "unbound");
        assert_eq!(vs::name(&s, true), Err(libc::ENOTCONN));
        assert_eq!(vs::bind(&s, ANY, ANY), Ok(()));
        let (_, _, port) = vs::name(&s, false).unwrap();
        assert!(port >= 1024);
        assert_eq!(vs::bind(&s, ANY, 3000), Err(libc::EINVAL), "bound already");

        let c = vs::socket().unwrap();
        assert_eq!(vs::connect(&c, CID_LOCAL, 976), Err(libc::ENETUNREACH));
        assert_eq!(
            vs::connect(&c, CID_HYPERVISOR, 975),
            Err(libc::ECONNRESET),
            "no TCLO"
        );
        assert_eq!(vs::connect(&c, 5, 976), Err(libc::ECONNRESET), "another VM");
        let c = vs::socket().unwrap();
        assert_eq!(vs::connect(&c, CID_HYPERVISOR, 976), Ok(()), "auto-bound");
        assert!(vs::name(&c, false).unwrap().2 >= 1024);
        assert_eq!(vs::connect(&c, CID_HYPERVISOR, 976), Err(libc::EISCONN));

        let q = vs::socket_of(40, libc::SOCK_SEQPACKET, 0).unwrap();
        assert_eq!(
            vs::connect(&q, CID_HYPERVISOR, 976),
            Err(libc::ESOCKTNOSUPPORT)
        );
        let d = vs::socket_of(40, libc::SOCK_DGRAM, 0).unwrap();
        assert_eq!(vs::connect(&d, CID_HYPERVISOR, 976), Err(libc::EOPNOTSUPP));
    });
}

#[test]
fn socket_options_at_the_vsock_level() {
    run(vsock_host(), || {
        let s = vs::socket().unwrap();
        let size = vs::get_opt(&s, vs::SO_VM_SOCKETS_BUFFER_SIZE, 8).unwrap();
        assert_eq!(u64::from_ne_bytes(size.try_into().unwrap()), 256 * 1024);
        assert_eq!(
            vs::get_opt(&s, vs::SO_VM_SOCKETS_BUFFER_SIZE, 4),
            Err(libc::EINVAL)
        );
        assert_eq!(
            vs::set_opt(&s, vs::SO_VM_SOCKETS_BUFFER_SIZE, &[0; 4]),
            Err(libc::EINVAL)
        );
        assert_eq!(
            vs::set_opt(&s, vs::SO_VM_SOCKETS_BUFFER_SIZE, &4096u64.to_ne_bytes()),
            Ok(())
        );
        let size = vs::get_opt(&s, vs::SO_VM_SOCKETS_BUFFER_SIZE, 16).unwrap();
        assert_eq!(size, 4096u64.to_ne_bytes(), "a larger buffer gets 8 bytes");
        let tv: Vec<u8> = [1i64, 500_000]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        for name in [
            vs::SO_VM_SOCKETS_CONNECT_TIMEOUT_OLD,
            vs::SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW,
        ] {
            assert_eq!(vs::set_opt(&s, name, &tv), Ok(()));
            assert_eq!(vs::get_opt(&s, name, 16).unwrap(), tv);
        }
        let bad: Vec<u8> = [1i64, 1_000_000]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        assert_eq!(vs::set_opt(&s, 8, &bad), Err(libc::ERANGE));
        assert_eq!(
            vs::get_opt(&s, 3, 8),
            Err(libc::ENOPROTOOPT),
            "peer host VM id"
        );
        assert_eq!(vs::set_opt(&s, 99, &[0; 8]), Err(libc::ENOPROTOOPT));
        // On a socket of another family, level 40 is that family's business.
        let inet = vs::socket_of(libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
        assert!(vs::get_opt(&inet, vs::SO_VM_SOCKETS_BUFFER_SIZE, 8).is_err());
    });
}

#[test]
fn dev_vsock_reports_the_guests_cid() {
    if !std::path::Path::new("/dev/vsock").exists() || !root() {
        eprintln!("skipped: no /dev/vsock to open here");
        return;
    }
    run(vsock_host(), || {
        // SAFETY: plain system calls on a descriptor of the guest's own.
        unsafe {
            let fd = libc::open(c"/dev/vsock".as_ptr(), libc::O_RDONLY);
            assert!(fd >= 0);
            let mut cid = 0u32;
            assert_eq!(libc::ioctl(fd, 0x7b9, &mut cid), 0);
            assert_eq!(
                cid,
                vs::SIM_GUEST_CID,
                "the simulated VM's, not this machine's"
            );
            libc::close(fd);
        }
    });
}

#[test]
fn other_sockets_are_left_alone() {
    run(vsock_host(), || {
        // TCP over loopback: bind, listen, connect, names, as without the simulator.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = l.local_addr().unwrap();
        let c = std::net::TcpStream::connect(at).unwrap();
        assert_eq!(c.peer_addr().unwrap(), at);
        // A Unix socket with a path, and one in the abstract namespace.
        let dir = std::env::temp_dir().join(format!("vmw-vsock-unix-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let ul = std::os::unix::net::UnixListener::bind(&dir).unwrap();
        let uc = std::os::unix::net::UnixStream::connect(&dir).unwrap();
        assert_eq!(uc.peer_addr().unwrap().as_pathname(), Some(dir.as_path()));
        drop((ul, uc));
        let _ = std::fs::remove_file(&dir);
        // A vsock address on a Unix socket is the Unix socket's kernel's business.
        let u = vs::socket_of(libc::AF_UNIX, libc::SOCK_STREAM, 0).unwrap();
        assert_eq!(vs::connect(&u, CID_HYPERVISOR, 976), Err(libc::EINVAL));
        assert_eq!(vs::bind(&u, ANY, 1023), Err(libc::EINVAL));
    });
}

#[test]
fn nothing_outlives_the_run() {
    let count = |dir: &str| std::fs::read_dir(dir).unwrap().count();
    let (fds, threads) = (count("/proc/self/fd"), count("/proc/self/task"));
    let run = run(vsock_host(), || {
        // Connections left open, one inherited by a child that outlives its parent.
        let (a, _) = connected(vs::connect_rpci(CID_HYPERVISOR, false));
        let (b, _) = connected(vs::connect_rpci(CID_HYPERVISOR, false));
        assert_eq!(vs::rpc(&b, b"info-get guestinfo.x", false).unwrap(), b"1 v");
        // SAFETY: fork in the guest; the child only sleeps and exits.
        if unsafe { libc::fork() } == 0 {
            std::thread::sleep(std::time::Duration::from_millis(200));
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(0) };
        }
        std::mem::forget((a, b));
    });
    assert_eq!(run.host.counters().vsock_connections, 2);
    assert_eq!(
        count("/proc/self/fd"),
        fds,
        "the run's descriptors are closed"
    );
    // The endpoint's threads were joined; other tests' runs may come and go meanwhile.
    let now = count("/proc/self/task");
    assert!(now <= threads + 8, "{threads} threads before, {now} after");
}

/// A 32-bit guest (`tests/guests/vsock32.c`, built with `cc -m32`): the i386 direct calls
/// and `socketcall`, with the registers a rewritten `socket` must give back.
#[test]
fn i386_guests_are_served_by_both_call_forms() {
    let exe = std::env::temp_dir().join(format!("vmw-vsock32-{}", std::process::id()));
    let built = std::process::Command::new("cc")
        .args(["-m32", "-O1", "-o"])
        .arg(&exe)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/guests/vsock32.c"
        ))
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !built {
        assert!(
            std::env::var_os("VMW_I686_REQUIRED").is_none(),
            "cc -m32 failed"
        );
        eprintln!("skipped: no 32-bit C toolchain (gcc-multilib)");
        return;
    }
    let out = exe.with_extension("out");
    let run_it = |config: HostConfig| {
        let run = config
            .run_command(
                std::process::Command::new(&exe).stdout(std::fs::File::create(&out).unwrap()),
            )
            .unwrap();
        assert!(run.exit.success(), "{}", run.exit);
        (std::fs::read_to_string(&out).unwrap(), run)
    };
    let (text, run) = run_it(vsock_host());
    assert_eq!(
        text,
        "direct socket ok, registers kept\ndirect bind 0\ndirect connect 0\ndirect rpc 1 v\n\
         socketcall socket ok\nsocketcall bind 0\n\
         socketcall getsockname family 40 port>=1024 1 len 16\n\
         socketcall setsockopt old timeout (8 bytes) 0\n\
         socketcall getsockopt 0 len 8 sec 3\nsocketcall connect 0\nsocketcall rpc 1 v\n\
         socketcall inet socket ok\n"
    );
    assert_eq!(run.host.counters().vsock_rpcs, 2);
    let (text, _) = run_it(HostConfig::default());
    assert!(text.starts_with("direct socket failed"), "{text}");
    assert!(text.contains("socketcall socket failed"), "{text}");
    assert!(text.contains("socketcall inet socket ok"), "{text}");
    let _ = std::fs::remove_file(&exe);
    let _ = std::fs::remove_file(&out);
}
