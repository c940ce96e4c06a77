//! The `vmw-sim` command line: options, output files and exit status, with this test binary
//! as the guest program (see `support::guest::guest_program`).
#![cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};

use support::guest::{self, guest_command, GUEST_ENV};

/// Not a test: the guest program the tests below run under `vmw-sim`.
#[test]
#[ignore = "helper: run by other tests as a guest program"]
fn guest_program() {
    guest::guest_program();
}

/// Runs `vmw-sim OPTIONS -- <this binary as a guest doing ACTIONS>`.
fn vmw_sim(options: &[&str], actions: &str) -> Output {
    let guest = guest_command(actions);
    Command::new(env!("CARGO_BIN_EXE_vmw-sim"))
        .args(options)
        .arg("--")
        .arg(guest.get_program())
        .args(guest.get_args())
        .env(GUEST_ENV, actions)
        .output()
        .expect("run vmw-sim")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmw-sim-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// The number after `"key":` in a flat JSON object.
fn json_number(json: &str, key: &str) -> Option<u64> {
    let at = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let digits: String = json[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[test]
fn stats_file_has_the_agreed_keys() {
    let dir = scratch("stats");
    let stats = dir.join("stats.json");
    let out = vmw_sim(
        &["--stats", path(&stats)],
        "getversion;rpc:log one;rpclb:info-get guestinfo.x;rpc:no.such.command",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json = std::fs::read_to_string(&stats).unwrap();
    assert!(
        json.trim_start().starts_with('{') && json.trim_end().ends_with('}'),
        "{json}"
    );
    for key in [
        "lb_calls",
        "hb_in_calls",
        "hb_out_calls",
        "bytes_to_host",
        "bytes_to_guest",
        "channels_opened",
        "channels_closed",
        "channels_open_at_exit",
        "rpcs",
        "unknown_commands",
        "cpts_injected",
    ] {
        assert!(
            json_number(&json, key).is_some(),
            "{key} missing from {json}"
        );
    }
    assert_eq!(json_number(&json, "rpcs"), Some(3));
    assert_eq!(
        json_number(&json, "unknown_commands"),
        Some(1),
        "no.such.command"
    );
    assert_eq!(json_number(&json, "channels_opened"), Some(3));
    assert_eq!(json_number(&json, "channels_open_at_exit"), Some(0));
    assert_eq!(json_number(&json, "hb_out_calls"), Some(2), "the HB rpcs");
    assert_eq!(json_number(&json, "bytes_to_host"), Some(7 + 20 + 15));
    assert!(json_number(&json, "lb_calls").unwrap() > 10);
}

#[test]
fn guestinfo_in_and_out() {
    let dir = scratch("guestinfo");
    let value_file = dir.join("value");
    std::fs::write(&value_file, "from a file\nwith two lines").unwrap();
    let dump = dir.join("dump.txt");
    let b = format!("guestinfo.b=@{}", path(&value_file));
    let out = vmw_sim(
        &[
            "-e",
            "guestinfo.a=1",
            "-e",
            &b,
            "--dump-guestinfo",
            path(&dump),
        ],
        "rpc:info-get guestinfo.a;rpclb:info-get guestinfo.b;rpc:info-set guestinfo.c three 3",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("1 1\n"), "{text}");
    assert!(text.contains("1 from a file\nwith two lines\n"), "{text}");
    assert_eq!(
        std::fs::read_to_string(&dump).unwrap(),
        "guestinfo.a=1\nguestinfo.b=from a file\\x0awith two lines\nguestinfo.c=three 3\n"
    );
}

#[test]
fn vmx_log_file() {
    let dir = scratch("vmxlog");
    let log = dir.join("vmware.log");
    let out = vmw_sim(
        &["--vmx-log", path(&log)],
        "rpc:log first line;rpclb:log second",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "first line\nsecond\n"
    );
}

#[test]
fn tclo_script_and_logs() {
    let dir = scratch("tclo");
    let (tclo_log, rpci_log, stats) = (
        dir.join("tclo.log"),
        dir.join("rpci.log"),
        dir.join("s.json"),
    );
    // A tools agent answers the script; its halt command ends it.
    let out = Command::new(env!("CARGO_BIN_EXE_vmw-sim"))
        .args([
            "--tclo",
            "reset",
            "--tclo-wait",
            "50",
            "--tclo",
            "ping\tx",
            "--tclo-close",
        ])
        .args([
            "--tclo",
            "Capabilities_Register",
            "--tclo",
            "OS_Halt",
            "--allow-power-ops",
        ])
        .args(["--tclo-log", path(&tclo_log), "--rpci-log", path(&rpci_log)])
        .args(["--stats", path(&stats), "--"])
        .arg(support::example("toolsd"))
        .args(["--on-halt", "kill -TERM $PPID"])
        .output()
        .expect("run vmw-sim");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&tclo_log).unwrap(),
        "reset\tOK ATR toolbox\nping\\x09x\tERROR Unknown Command\n\
         Capabilities_Register\tOK \nOS_Halt\tOK \n"
    );
    let rpci = std::fs::read_to_string(&rpci_log).unwrap();
    assert!(
        rpci.starts_with("vmx.capability.unified_loop toolbox\\x00\n"),
        "{rpci}"
    );
    assert!(rpci.contains("\ntools.capability.statechange \n"), "{rpci}");
    assert!(
        rpci.contains("\ntools.os.statechange.status 1 1\\x00\n"),
        "{rpci}"
    );
    let json = std::fs::read_to_string(&stats).unwrap();
    assert_eq!(json_number(&json, "tools_running"), Some(1), "{json}");
    assert_eq!(
        json_number(&json, "tools_heartbeat_lapses"),
        Some(0),
        "{json}"
    );
    assert!(json_number(&json, "tools_polls").unwrap() > 4, "{json}");
    assert_eq!(json_number(&json, "tclo_commands"), Some(4), "{json}");

    // No --tclo: the default script's first command reaches a polling guest.
    let out = vmw_sim(&[], "tclo");
    assert!(stdout(&out).contains("tclo reset"), "{}", stdout(&out));
}

#[test]
fn exit_status_is_the_guests() {
    assert_eq!(vmw_sim(&[], "getversion").status.code(), Some(0));
    assert_eq!(vmw_sim(&[], "getversion;exit:3").status.code(), Some(3));
    assert_eq!(
        vmw_sim(&[], "segv").status.code(),
        Some(128 + 11),
        "a real segfault"
    );
    let out = vmw_sim(&["--not-vmware"], "getversion");
    assert_eq!(out.status.code(), Some(139), "bare metal: the probe dies");
    let out = Command::new(env!("CARGO_BIN_EXE_vmw-sim"))
        .args(["--", "/no/such/program"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(
        stderr(&out).contains("cannot run /no/such/program"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn host_options_change_the_answers() {
    let out = vmw_sim(&["--product", "workstation"], "getversion");
    assert!(
        stdout(&out).contains("version 6 product 4"),
        "{}",
        stdout(&out)
    );
    let out = vmw_sim(&["--product=esx"], "getversion");
    assert!(
        stdout(&out).contains("version 6 product 2"),
        "{}",
        stdout(&out)
    );

    let out = vmw_sim(
        &["-e", "guestinfo.k=v", "--deny-guestinfo"],
        "rpc:info-get guestinfo.k",
    );
    assert!(
        stdout(&out).contains("0 Permission denied"),
        "{}",
        stdout(&out)
    );

    let out = vmw_sim(&["--channels", "1"], "rpc:log x;rpc:log y");
    assert!(
        out.status.success(),
        "one channel, used in turn: {}",
        stderr(&out)
    );

    let dir = scratch("hostopts");
    let stats = dir.join("s.json");
    let out = vmw_sim(
        &["--no-hb", "--no-cookies", "--stats", path(&stats)],
        "rpc:info-get guestinfo.none",
    );
    assert!(
        stdout(&out).contains("0 No value found"),
        "{}",
        stdout(&out)
    );
    let json = std::fs::read_to_string(&stats).unwrap();
    assert_eq!(
        json_number(&json, "hb_out_calls"),
        Some(0),
        "LB only without HB"
    );

    // The guest restarts each cut transfer once: HB out, then HB in.
    let out = vmw_sim(&["--cpt-every", "1", "--stats", path(&stats)], "rpc:log x");
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(
        json_number(&std::fs::read_to_string(&stats).unwrap(), "cpts_injected"),
        Some(2)
    );

    let out = vmw_sim(
        &["--tclo", "reset", "--tclo", "ping", "--stats", path(&stats)],
        "tclo",
    );
    assert!(stdout(&out).contains("tclo reset"), "{}", stdout(&out));
    assert_eq!(
        json_number(&std::fs::read_to_string(&stats).unwrap(), "tclo_commands"),
        Some(1)
    );
}

#[test]
fn machine_modes_and_iopl() {
    assert_eq!(
        vmw_sim(&["--restrict-backdoor"], "getversion")
            .status
            .code(),
        Some(139)
    );
    let out = vmw_sim(&["--restrict-backdoor"], "iopl:3;getversion");
    assert!(
        out.status.success() && stdout(&out).contains("iopl: 0\nversion 6"),
        "{}",
        stdout(&out)
    );

    let out = vmw_sim(
        &["--restrict-backdoor", "--iopl", "eperm"],
        "iopl:3;getversion",
    );
    assert!(stdout(&out).contains("iopl: errno 1\n"), "{}", stdout(&out));
    assert_eq!(out.status.code(), Some(139));

    let out = vmw_sim(&["--iopl", "enosys"], "iopl:3;getversion");
    assert!(
        out.status.success() && stdout(&out).contains("iopl: errno 38\nversion 6"),
        "{}",
        stdout(&out)
    );

    let out = vmw_sim(&["--not-vmware", "--iopl=ok"], "iopl:3;getversion");
    assert_eq!(
        out.status.code(),
        Some(10),
        "privileged on bare metal: EAX all ones"
    );
    assert!(
        stdout(&out).contains("version 4294967295"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn bad_options_exit_2_with_a_message() {
    let dir = scratch("badopts");
    let cases: &[(&[&str], &str)] = &[
        (&["--bogus", "--", "/bin/true"], "unknown option '--bogus'"),
        (
            &["--channels", "many", "--", "/bin/true"],
            "--channels: expected a number, got 'many'",
        ),
        (
            &["--product", "fusion", "--", "/bin/true"],
            "--product: expected esx or workstation",
        ),
        (
            &["--iopl", "maybe", "--", "/bin/true"],
            "--iopl: expected creds, ok, eperm or enosys",
        ),
        (
            &["-e", "foo=bar", "--", "/bin/true"],
            "only guestinfo.KEY and machine.id",
        ),
        (
            &["-e", "guestinfo.x", "--", "/bin/true"],
            "expected KEY=VALUE",
        ),
        (
            &["-e", "guestinfo.x=@/no/such/file", "--", "/bin/true"],
            "cannot read /no/such/file",
        ),
        (
            &["--not-vmware", "--restrict-backdoor", "--", "/bin/true"],
            "exclude each other",
        ),
        (
            &["--channels", "0", "--", "/bin/true"],
            "at least one channel",
        ),
        (
            &["-e", "guestinfo.a b=1", "--", "/bin/true"],
            "whitespace or NUL",
        ),
        (
            &["--vmware-cpuid", "--not-vmware", "--", "/bin/true"],
            "no effect with --not-vmware",
        ),
        (
            &["--stats", "same", "--vmx-log", "same", "--", "/bin/true"],
            "--vmx-log and --stats name the same file",
        ),
        (
            &["--guest-stat", "12", "--", "/bin/true"],
            "--guest-stat: expected ID=VALUE",
        ),
        (
            &["--guest-stat", "18=1", "--", "/bin/true"],
            "not the strings 18, 37",
        ),
        (
            &["--device", "cdrom0=maybe", "--", "/bin/true"],
            "--device: expected NAME=connected",
        ),
        (
            &["--device", "=connected", "--", "/bin/true"],
            "a device name has 1 to 31 bytes",
        ),
        (
            &["--tclo", "OS_Halt", "--", "/bin/true"],
            "--allow-power-ops",
        ),
        (
            &["--tclo", "OS_Reboot now", "--", "/bin/true"],
            "power operation",
        ),
        (
            &["--no-hb=yes", "--", "/bin/true"],
            "--no-hb takes no value",
        ),
        (&["--stats"], "--stats needs a file"),
        (
            &["--stats", "/no/such/dir/s.json", "--", "/bin/true"],
            "cannot create /no/such/dir/s.json",
        ),
        (&[], "no command given"),
        (&["--tclo", "reset"], "no command given"),
    ];
    for (args, message) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_vmw-sim"))
            .args(*args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
        if !message.starts_with("cannot create") {
            assert!(
                stderr(&out).contains("vmw-sim --help"),
                "{args:?}: {}",
                stderr(&out)
            );
        }
    }
}

#[test]
fn help() {
    for flag in ["-h", "--help"] {
        let out = Command::new(env!("CARGO_BIN_EXE_vmw-sim"))
            .arg(flag)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        let text = stdout(&out);
        assert!(text.starts_with("vmw-sim: run a program as the guest of a simulated VMware host"));
        for option in [
            "Usage: vmw-sim [OPTIONS] -- COMMAND [ARGS...]",
            "-e guestinfo.KEY=VALUE",
            "--no-hb",
            "--no-cookies",
            "--channels N",
            "--product esx|workstation",
            "--not-vmware",
            "--restrict-backdoor",
            "--cpt-every N",
            "--deny-guestinfo",
            "--tclo COMMAND",
            "--tclo-close",
            "--tclo-wait MS",
            "--tclo-log FILE",
            "--rpci-log FILE",
            "--stats FILE",
            "--vmx-log FILE",
            "--dump-guestinfo FILE",
            "--iopl creds|ok|eperm|enosys",
            "--allow-power-ops",
            "--vmware-cpuid",
        ] {
            assert!(text.contains(option), "help lacks {option}");
        }
    }
}

#[test]
fn vmware_cpuid_on_request() {
    if !guest::cpuid_faulting() {
        eprintln!("no CPUID faulting here: CPUID stays the real one");
        return;
    }
    let out = vmw_sim(&["--vmware-cpuid"], "cpuid");
    assert!(
        out.status.success() && stdout(&out).contains("hypervisor VMwareVMware"),
        "{}",
        stdout(&out)
    );
    let real = format!(
        "hypervisor {}",
        String::from_utf8_lossy(&guest::hypervisor_name())
    );
    for options in [&[][..], &["--not-vmware", "--vmware-cpuid"][..]] {
        let out = vmw_sim(options, "cpuid");
        assert!(
            stdout(&out).contains(&real),
            "{options:?}: {} (real: {real})",
            stdout(&out)
        );
    }
}

/// Starts `vmw-sim OPTIONS -- <guest doing await-signal:FILE>` and waits for its `ready`.
fn awaiting_guest(options: &[&str], file: &std::path::Path) -> std::process::Child {
    use std::io::BufRead;
    let actions = format!("await-signal:{}", path(file));
    let guest = guest_command(&actions);
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmw-sim"))
        .args(options)
        .arg("--")
        .arg(guest.get_program())
        .args(guest.get_args())
        .env(GUEST_ENV, &actions)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start vmw-sim");
    let mut line = String::new();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    while !line.contains("ready") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the guest ended before ready"
        );
    }
    child
}

#[test]
fn signals_to_vmw_sim_reach_the_guest_and_the_outputs_are_written() {
    let dir = scratch("signals");
    for (sig, name) in [(libc::SIGINT, "int"), (libc::SIGTERM, "term")] {
        let (file, stats) = (dir.join(name), dir.join(format!("{name}.json")));
        std::fs::write(&stats, "what an earlier run left").unwrap();
        let child = awaiting_guest(&["--stats", path(&stats)], &file);
        // SAFETY: kill with integers, to our own child.
        assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(7),
            "the guest's own exit: {}",
            stderr(&out)
        );
        let seen = std::fs::read_to_string(&file).expect("the guest's clean-up ran");
        assert_eq!(seen, sig.to_string());
        let json = std::fs::read_to_string(&stats).unwrap();
        assert!(
            json.starts_with('{') && json.contains("\"lb_calls\""),
            "{json}"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn a_killed_run_leaves_the_earlier_output_whole() {
    let dir = scratch("killed");
    let stats = dir.join("stats.json");
    std::fs::write(&stats, "what an earlier run left").unwrap();
    let mut child = awaiting_guest(&["--stats", path(&stats)], &dir.join("never"));
    child.kill().unwrap(); // SIGKILL: vmw-sim cannot write anything
    child.wait().unwrap();
    assert_eq!(
        std::fs::read_to_string(&stats).unwrap(),
        "what an earlier run left",
        "not truncated, not half-written"
    );
}

#[test]
fn processes_left_stopped_are_not_waited_for() {
    use std::io::BufRead;
    // Without the simulator the shell returns at once; the stopped child stays stopped. (It
    // may be stopped before its own redirections, holding our pipe: read one line, then
    // wait for vmw-sim itself, not for the end of its output.)
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmw-sim"))
        .args([
            "--",
            "sh",
            "-c",
            "sleep 100 >/dev/null 2>&1 & echo $!; kill -STOP $!; exit 3",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start vmw-sim");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let status = child.wait().expect("vmw-sim returns");
    let pid: i32 = line.trim().parse().expect("the child's pid");
    let tracer = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    // SAFETY: kill with integers; the pid is the process the guest started and stopped.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(status.code(), Some(3), "the shell's status");
    // It is let go: still stopped, or (where its process group became orphaned) hung up and
    // continued by the kernel, as it would be without the simulator; never still traced.
    assert!(
        tracer.is_empty() || tracer.contains("TracerPid:\t0"),
        "no longer traced: {tracer}"
    );
}

#[test]
fn text_outputs_escape_bytes_that_would_break_a_line_and_read_back_exactly() {
    let dir = scratch("escape");
    let (dump, log) = (dir.join("dump"), dir.join("log"));
    let value: &[u8] = b"two\nlines \\ and \xff\x01 =";
    let value_file = dir.join("value");
    std::fs::write(&value_file, value).unwrap();
    let e = format!("guestinfo.v=@{}", path(&value_file));
    let out = vmw_sim(
        &[
            "-e",
            &e,
            "--dump-guestinfo",
            path(&dump),
            "--vmx-log",
            path(&log),
        ],
        "rpc:log a\tb\\c",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let unescape = |text: &str| -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = text.as_bytes();
        while let Some((&b, tail)) = rest.split_first() {
            if b == b'\\' {
                let hex = std::str::from_utf8(&tail[1..3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                rest = &tail[3..];
            } else {
                out.push(b);
                rest = tail;
            }
        }
        out
    };
    let dump = std::fs::read_to_string(&dump).unwrap();
    assert_eq!(dump.lines().count(), 1, "one entry, one line: {dump:?}");
    let (key, stored) = dump.trim_end().split_once('=').unwrap();
    assert_eq!((key, unescape(stored).as_slice()), ("guestinfo.v", value));
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(unescape(log.trim_end()), b"a\tb\\c");
}

#[test]
fn guestinfo_keys_match_in_any_case_as_on_vmware() {
    let out = vmw_sim(
        &["-e", "GuestInfo.ovfEnv=<xml/>"],
        "rpc:info-get guestinfo.ovfenv;rpc:info-get GUESTINFO.OVFENV",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).matches("1 <xml/>").count(),
        2,
        "{}",
        stdout(&out)
    );
}

#[test]
fn trace_shows_each_exchange_on_stderr_while_the_guest_runs() {
    let out = vmw_sim(
        &["--trace", "-e", "guestinfo.k=line\nbreak"],
        "rpc:no.such.command;rpc:info-get guestinfo.k",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<String> = stderr(&out)
        .lines()
        .filter(|l| l.starts_with("vmw-sim: rpci: "))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        lines,
        [
            "vmw-sim: rpci: no.such.command -> 0 Unknown command",
            "vmw-sim: rpci: info-get guestinfo.k -> 1 line\\x0abreak",
        ],
        "one line per exchange, escaped"
    );
    // Without --trace nothing is said.
    let quiet = vmw_sim(&[], "rpc:no.such.command");
    assert!(!stderr(&quiet).contains("rpci:"), "{}", stderr(&quiet));
}

/// The guest program's own lines (after the test harness's preamble).
fn guest_lines(out: &Output) -> Vec<String> {
    let text = stdout(out);
    let own = text
        .split_once("guest_program ... ")
        .map_or(&text[..], |(_, t)| t);
    own.lines().map(str::to_owned).collect()
}

#[test]
fn vsock_options_and_stats() {
    let dir = scratch("vsock");
    let stats = dir.join("stats.json");
    // SAFETY: geteuid takes nothing and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    // --require-privileged offers vsock: the privileged walk gets port 1023 (as root).
    let out = vmw_sim(
        &[
            "-e",
            "guestinfo.k=v",
            "--require-privileged",
            "info-get",
            "--stats",
            path(&stats),
        ],
        "vsock:info-get guestinfo.k;vsock-unpriv:info-get guestinfo.k;rpc:info-get guestinfo.k",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = guest_lines(&out);
    if root {
        assert_eq!(lines[0], "port 1023: 1 v");
    } else {
        assert_eq!(lines[0], "vsock no privilege");
    }
    assert!(
        lines[1].starts_with("port 1") && lines[1].ends_with(": 0 Permission denied"),
        "{lines:?}"
    );
    assert_eq!(lines[2], "0 Permission denied", "the backdoor is refused");
    let json = std::fs::read_to_string(&stats).unwrap();
    let vsock_rpcs = if root { 2 } else { 1 };
    assert_eq!(json_number(&json, "vsock_rpcs"), Some(vsock_rpcs), "{json}");
    assert_eq!(json_number(&json, "vsock_connections"), Some(vsock_rpcs));
    assert_eq!(json_number(&json, "rpcs"), Some(vsock_rpcs + 1));

    // --no-vsock (the default otherwise): socket(AF_VSOCK) fails with EAFNOSUPPORT.
    for options in [&["--require-privileged", "info-get", "--no-vsock"][..], &[]] {
        let out = vmw_sim(options, "vsock:log x");
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            guest_lines(&out),
            [format!("vsock socket errno {}", libc::EAFNOSUPPORT)]
        );
    }
    // --vsock-reset: the first connections are reset; unprivileged walks do not retry.
    let out = vmw_sim(
        &["--vsock", "--vsock-reset", "1"],
        "vsock-unpriv:log x;vsock-unpriv:log y",
    );
    let lines = guest_lines(&out);
    assert_eq!(
        lines[0],
        format!("vsock connect errno {}", libc::ECONNRESET)
    );
    assert!(lines[1].ends_with(": 1 "), "{lines:?}");

    for (options, why) in [
        (&["--vsock", "--no-vsock"][..], "exclude each other"),
        (&["--require-privileged", "info get"], "one command name"),
        (&["--require-privileged="], "one command name"),
        (&["--vsock-reset", "x"], "expected a number"),
        (&["--vsock=1"], "takes no value"),
    ] {
        let out = vmw_sim(options, "exit:0");
        assert_eq!(out.status.code(), Some(2), "{options:?}");
        assert!(stderr(&out).contains(why), "{options:?}: {}", stderr(&out));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
