//! The example programs, run as whole processes under the simulator.

#![cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]

mod support;

use std::process::{Command, Stdio};

use vmw_backdoor::sim::{GuestExit, Host, HostConfig, IoplPolicy, Mode};

struct Output {
    exit: GuestExit,
    stdout: Vec<u8>,
    stderr: String,
    host: Host,
}

/// Runs an example with `args` as the guest of `config` on a kernel without `iopl` (like
/// most), capturing its output.
fn run_example(config: HostConfig, name: &str, args: &[&str]) -> Output {
    run_example_with(config, IoplPolicy::Enosys, name, args)
}

fn run_example_with(config: HostConfig, iopl: IoplPolicy, name: &str, args: &[&str]) -> Output {
    let dir = std::env::temp_dir().join(format!("vmw-guest-examples-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tag = format!("{name}-{}", args.join("_").replace('/', "_"));
    let (out_path, err_path) = (
        dir.join(format!("{tag}.out")),
        dir.join(format!("{tag}.err")),
    );
    let mut cmd = Command::new(support::example(name));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    let run = config.iopl(iopl).run_command(&mut cmd).unwrap();
    let output = Output {
        exit: run.exit,
        stdout: std::fs::read(&out_path).unwrap(),
        stderr: String::from_utf8_lossy(&std::fs::read(&err_path).unwrap()).into_owned(),
        host: run.host,
    };
    let _ = std::fs::remove_file(out_path);
    let _ = std::fs::remove_file(err_path);
    output
}

#[test]
fn checkvm_reports_version_and_product_or_fails_cleanly() {
    let o = run_example(HostConfig::default(), "checkvm", &[]);
    assert_eq!(o.exit, GuestExit::Exited(0), "{}", o.stderr);
    assert_eq!(o.stdout, b"VMware software version 6 (good)\n");

    let o = run_example(HostConfig::default(), "checkvm", &["-p"]);
    assert_eq!(o.stdout, b"ESX Server\n");
    let o = run_example(
        HostConfig::default().product(vmw_backdoor::Product::Workstation),
        "checkvm",
        &["-p"],
    );
    assert_eq!(o.stdout, b"Workstation\n");

    // Ring 3 restricted: the privileged access gets through where the kernel grants it.
    let restricted = HostConfig::default().mode(Mode::RestrictBackdoor);
    let o = run_example_with(restricted, IoplPolicy::Allow, "checkvm", &[]);
    assert_eq!(o.exit, GuestExit::Exited(0), "{}", o.stderr);

    for mode in [Mode::NotVmware, Mode::RestrictBackdoor] {
        let o = run_example(HostConfig::default().mode(mode), "checkvm", &[]);
        assert_eq!(o.exit, GuestExit::Exited(1), "{mode:?}: never a signal");
        assert!(o.stdout.is_empty());
        assert_eq!(
            o.stderr,
            "Error: checkvm must be run inside a virtual machine on a VMware hypervisor product.\n"
        );
    }

    // -h is help, as in vmware-checkvm; the hardware version has a long option of its own.
    let o = run_example(HostConfig::default(), "checkvm", &["-h"]);
    assert_eq!(o.exit, GuestExit::Exited(0));
    assert!(o.stdout.starts_with(b"Usage:\n  checkvm [OPTION?]\n"));
    let o = run_example(HostConfig::default(), "checkvm", &["--hardware-version"]);
    assert_eq!(o.exit, GuestExit::Exited(0), "{}", o.stderr);
    assert_eq!(o.stdout, b"VMware virtual hardware version 21\n");
}

#[test]
fn guestinfo_prints_sets_and_reports_missing_keys() {
    let config = HostConfig::default().guestinfo("greeting", b"hello\xff");
    let o = run_example(config.clone(), "guestinfo", &["greeting"]);
    assert_eq!(o.exit, GuestExit::Exited(0), "{}", o.stderr);
    assert_eq!(o.stdout, b"hello\xff", "the raw value, nothing added");

    let o = run_example(config.clone(), "guestinfo", &["guestinfo.absent"]);
    assert_eq!(o.exit, GuestExit::Exited(1));
    assert!(o.stdout.is_empty());
    assert_eq!(o.stderr, "No value found\n");

    let o = run_example(config, "guestinfo", &["state", "ready"]);
    assert_eq!(o.exit, GuestExit::Exited(0), "{}", o.stderr);
    assert_eq!(
        o.host
            .guestinfo()
            .get(&b"guestinfo.state"[..])
            .map(Vec::as_slice),
        Some(&b"ready"[..])
    );
    assert_eq!(o.host.open_channels(), 0);

    let o = run_example(
        HostConfig::default().mode(Mode::NotVmware),
        "guestinfo",
        &["x"],
    );
    assert_eq!(o.exit, GuestExit::Exited(1));
}

/// As vmware-rpctool (`tests/tool_parity.rs` compares the two): the payload and a newline,
/// or the host's text on stderr; only the first argument is sent.
#[test]
fn rpctool_prints_the_payload_or_the_host_text() {
    let config = HostConfig::default().guestinfo("k", "v").machine_id("vm-1");
    let o = run_example(config.clone(), "rpctool", &["info-get guestinfo.k"]);
    assert_eq!((o.exit, o.stdout), (GuestExit::Exited(0), b"v\n".to_vec()));
    let o = run_example(config.clone(), "rpctool", &["machine.id.get", "ignored"]);
    assert_eq!(o.stdout, b"vm-1\n");
    let o = run_example(config.clone(), "rpctool", &["info-get guestinfo.nope"]);
    assert_eq!(o.exit, GuestExit::Exited(1));
    assert_eq!(o.stderr, "No value found\n");
    let o = run_example(config, "rpctool", &["-h"]);
    assert_eq!(o.exit, GuestExit::Exited(0));
    assert!(o.stderr.starts_with("rpctool syntax:\n"), "{}", o.stderr);
    assert_eq!(o.host.counters().rpcs, 0, "-h is not sent");

    let o = run_example(
        HostConfig::default().mode(Mode::NotVmware),
        "rpctool",
        &["machine.id.get"],
    );
    assert_eq!(o.exit, GuestExit::Exited(255));
}

#[test]
fn log_writes_one_line() {
    let o = run_example(HostConfig::default(), "log", &["agent", "started"]);
    assert_eq!(o.exit, GuestExit::Exited(0), "{}", o.stderr);
    assert_eq!(o.host.vmx_log(), [b"agent started".to_vec()]);
}

/// The i686 build of the library, through the same simulator (which traces 32-bit processes
/// too): HB and LB transfers of a value that is not a multiple of four bytes, cookies on and
/// off, and the privileged access through the i386 system calls.
#[test]
#[ignore = "needs `rustup target add i686-unknown-linux-gnu` and a 32-bit libc (gcc-multilib)"]
fn the_i686_build_speaks_the_protocol_byte_exactly() {
    let guestinfo = support::i686_example("guestinfo");

    let value: Vec<u8> = (1..=70_001u32).map(|i| (i % 255 + 1) as u8).collect();
    let out = std::env::temp_dir().join(format!("vmw-guest-i686-{}", std::process::id()));
    for config in [
        HostConfig::default(),
        HostConfig::default().no_hb(),
        HostConfig::default().no_hb().no_cookies(),
    ] {
        let mut cmd = Command::new(&guestinfo);
        cmd.arg("k").stdout(std::fs::File::create(&out).unwrap());
        let run = config
            .guestinfo("k", &value)
            .iopl(IoplPolicy::Enosys)
            .run_command(&mut cmd)
            .unwrap();
        assert_eq!(run.exit, GuestExit::Exited(0));
        assert!(
            std::fs::read(&out).unwrap() == value,
            "the value, byte for byte"
        );
    }
    let run = HostConfig::default()
        .mode(Mode::RestrictBackdoor)
        .iopl(IoplPolicy::Allow)
        .run_command(Command::new(&guestinfo).args(["k", "set-from-i686"]))
        .unwrap();
    assert_eq!(
        run.exit,
        GuestExit::Exited(0),
        "privileged access through int 0x80"
    );
    assert_eq!(
        run.host
            .guestinfo()
            .get(&b"guestinfo.k"[..])
            .map(Vec::as_slice),
        Some(&b"set-from-i686"[..])
    );
    let _ = std::fs::remove_file(out);
}
