//! `examples/rpctool.rs` and `examples/checkvm.rs` side by side with open-vm-tools 12.2's
//! `vmware-rpctool` and `vmware-checkvm` (Debian's `open-vm-tools` package): each case runs
//! both programs under the simulator, on the same host, with the same arguments and the same
//! `argv[0]`, and compares stdout, stderr and exit status byte for byte, and what the host
//! was left with (its guestinfo store and log). Every case is identical, or says why not
//! ([`Expect`]); README.md ("The tools") has the table.
//!
//! Both open-vm-tools programs first ask CPUID whether this is VMware and give up on a KVM or
//! Xen signature. Where the simulator can make CPUID say `VMwareVMware` (CPUID faulting),
//! the cases run on this machine. Elsewhere (a KVM guest without CPUID faulting, as many CI
//! machines are) they run inside a Linux kernel under QEMU's software emulation, whose CPUID
//! names neither KVM nor Xen, with the test binary as the simulator there
//! ([`side_by_side_in_a_vm`], through `tests/vm/harness.rs`); the same boot also runs the
//! four programs outside any simulator, on a machine with nothing on the backdoor port.
//!
//! Without open-vm-tools the test says so and passes, unless `VMW_TOOLS_REQUIRED` is set
//! (`.ci/run` installs the package and sets it); without CPUID faulting and without the
//! kernels of `tests/vm/setup.sh` likewise, unless `VMW_VM_REQUIRED` is set.

#![cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]

#[path = "vm/harness.rs"]
mod harness;
mod support;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use vmw_backdoor::sim::{GuestExit, HostConfig, IoplPolicy, Mode};
use vmw_backdoor::Product;

/// Where Debian's `open-vm-tools` installs the two programs.
const OVT_DIR: &str = "/usr/bin";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Rpctool,
    Checkvm,
}

impl Tool {
    fn ours(self) -> &'static str {
        match self {
            Tool::Rpctool => "rpctool",
            Tool::Checkvm => "checkvm",
        }
    }

    fn theirs(self) -> &'static str {
        match self {
            Tool::Rpctool => "vmware-rpctool",
            Tool::Checkvm => "vmware-checkvm",
        }
    }
}

/// Where a run's stdout or stderr goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    /// A file the test reads back.
    Captured,
    /// `/dev/full`: every write fails with ENOSPC.
    Full,
}

/// What a case must show.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Byte for byte the same.
    Same,
    /// The same exit status, host and stdout, but our stderr says something theirs does not
    /// (a local failure, in our words).
    OurWords(&'static str),
    /// Different on purpose, exit status included.
    Behaviour(&'static str),
}

/// One command line, run by both programs.
struct Case {
    tool: Tool,
    what: &'static str,
    args: Vec<Vec<u8>>,
    host: HostConfig,
    stdout: Sink,
    stderr: Sink,
    expect: Expect,
}

/// The host most cases run on: VMware ESX with one guestinfo key.
fn vmware() -> HostConfig {
    HostConfig::default().guestinfo("foo", "bar")
}

fn case(tool: Tool, what: &'static str, args: &[&[u8]]) -> Case {
    Case {
        tool,
        what,
        args: args.iter().map(|a| a.to_vec()).collect(),
        host: vmware(),
        stdout: Sink::Captured,
        stderr: Sink::Captured,
        expect: Expect::Same,
    }
}

fn rpctool(what: &'static str, args: &[&[u8]]) -> Case {
    case(Tool::Rpctool, what, args)
}

fn checkvm(what: &'static str, args: &[&[u8]]) -> Case {
    case(Tool::Checkvm, what, args)
}

impl Case {
    fn on(self, host: HostConfig) -> Case {
        Case { host, ..self }
    }

    fn stdout_full(self) -> Case {
        Case {
            stdout: Sink::Full,
            ..self
        }
    }

    fn stderr_full(self) -> Case {
        Case {
            stderr: Sink::Full,
            ..self
        }
    }

    fn expect(self, expect: Expect) -> Case {
        Case { expect, ..self }
    }
}

/// Why our programs answer differently in the cases that are not identical.
const PRIVILEGE: &str = "ours takes I/O privilege where the kernel grants it (as root), so it \
                         also works where the VM restricts ring-3 backdoor access; \
                         open-vm-tools' programs never ask for it";
const PRIVILEGED_VSOCK: &str = "ours sends by vsock from a privileged port (as root), as \
                                vmtoolsd --cmd does, so it gets the value where the VM \
                                reserves the command for that channel; vmware-rpctool uses \
                                the backdoor only, which the VM refuses";
const NO_CHANNEL: &str = "vmware-rpctool prints `NULL`; ours says that the host refused a \
                          channel and what to do";
const TOO_LONG: &str = "vmware-rpctool sends it and prints `RpcOut: Unable to send the RPCI \
                        command` when the host refuses; ours refuses it before sending and says \
                        why";
const FULL: &str = "open-vm-tools' programs do not check that stdout was written (C stdio \
                    at exit) and exit 0 without a word; ours keeps the 0, which answers what \
                    was asked (the host accepted the command; this is VMware), and says on \
                    stderr that the output was lost";
const HW_VERSION: &str = "--hardware-version is ours only (vmware-checkvm: `Unknown option`, \
                          exit 1)";

fn cases() -> Vec<Case> {
    let big_value = vec![b'v'; 5 << 20];
    let long_request = [&b"info-set guestinfo.long "[..], &[b'x'; 70_000]].concat();
    let long_request: &'static [u8] = long_request.leak();
    let not_vmware = || HostConfig::default().mode(Mode::NotVmware);
    let restricted = || HostConfig::default().mode(Mode::RestrictBackdoor);
    vec![
        rpctool("a key that is set", &[b"info-get guestinfo.foo"]),
        rpctool("a key set to nothing", &[b"info-get guestinfo.empty"])
            .on(vmware().guestinfo("empty", "")),
        rpctool("a value with a NUL byte", &[b"info-get guestinfo.nul"])
            .on(vmware().guestinfo("nul", b"a\0b")),
        rpctool("a 5 MiB value", &[b"info-get guestinfo.big"])
            .on(vmware().guestinfo("big", &big_value)),
        rpctool("a key that is not set", &[b"info-get guestinfo.nope"]),
        rpctool("set", &[b"info-set guestinfo.state ready"]),
        rpctool("set without a value", &[b"info-set guestinfo.state"]),
        rpctool("log", &[b"log hello from the guest"]),
        rpctool("machine.id.get", &[b"machine.id.get"]).on(vmware().machine_id("vm-1")),
        rpctool("an unknown command", &[b"no.such.command"]),
        rpctool("an empty command", &[b""]),
        rpctool("no arguments", &[]),
        rpctool("-h", &[b"-h"]),
        rpctool("--help", &[b"--help"]),
        rpctool("-hx (a prefix of -h)", &[b"-hx"]),
        rpctool("--helpme (a prefix of --help)", &[b"--helpme"]),
        rpctool("--h (not help: sent)", &[b"--h"]),
        rpctool(
            "several arguments: the first is sent",
            &[b"info-get guestinfo.foo", b"extra", b"--help"],
        ),
        rpctool(
            "a command split over two arguments",
            &[b"info-get", b"guestinfo.foo"],
        ),
        rpctool(
            "the host denies guestinfo, no vsock",
            &[b"info-get guestinfo.foo"],
        )
        .on(vmware().deny_guestinfo().vsock(false)),
        rpctool(
            "the host requires the privileged channel, as root",
            &[b"info-get guestinfo.foo"],
        )
        .on(vmware().deny_guestinfo())
        .expect(Expect::Behaviour(PRIVILEGED_VSOCK)),
        rpctool("a low-bandwidth host", &[b"info-get guestinfo.foo"]).on(vmware().no_hb()),
        rpctool("a host without cookies", &[b"info-get guestinfo.foo"]).on(vmware().no_cookies()),
        rpctool("a checkpoint every 3rd step", &[b"info-get guestinfo.foo"])
            .on(vmware().cpt_every(3)),
        rpctool("not VMware", &[b"info-get guestinfo.foo"]).on(not_vmware()),
        rpctool("not VMware, no arguments", &[]).on(not_vmware()),
        rpctool("not VMware, -h", &[b"-h"]).on(not_vmware()),
        rpctool("ring 3 restricted, no I/O privilege", &[b"log x"])
            .on(restricted().iopl(IoplPolicy::Eperm)),
        rpctool("ring 3 restricted, as root", &[b"log x"])
            .on(restricted())
            .expect(Expect::Behaviour(PRIVILEGE)),
        rpctool("no channel free", &[b"log x"])
            .on(vmware().channels(0))
            .expect(Expect::OurWords(NO_CHANNEL)),
        rpctool("a request over 64 KiB", &[long_request]).expect(Expect::OurWords(TOO_LONG)),
        rpctool("stdout is /dev/full", &[b"info-get guestinfo.foo"])
            .stdout_full()
            .expect(Expect::OurWords(FULL)),
        rpctool("stderr is /dev/full", &[b"-h"]).stderr_full(),
        checkvm("no options", &[]),
        checkvm("-p on ESX", &[b"-p"]),
        checkvm("--prod on ESX", &[b"--prod"]),
        checkvm("-p on Workstation", &[b"-p"]).on(vmware().product(Product::Workstation)),
        checkvm("-p on Express", &[b"-p"]).on(vmware().product(Product::Express)),
        checkvm("-p on a host that reports no product", &[b"-p"])
            .on(vmware().product(Product::Unset)),
        checkvm("-pp", &[b"-pp"]),
        checkvm("--prod=1", &[b"--prod=1"]),
        checkvm("-h", &[b"-h"]),
        checkvm("--help", &[b"--help"]),
        checkvm("-?", &[b"-?"]),
        checkvm("--help-all", &[b"--help-all"]),
        checkvm("-ph", &[b"-ph"]),
        checkvm("-hx", &[b"-hx"]),
        checkvm("-h -x", &[b"-h", b"-x"]),
        checkvm("-x", &[b"-x"]),
        checkvm("--bogus", &[b"--bogus"]),
        checkvm("--pro (no prefix matching)", &[b"--pro"]),
        checkvm("--help-x", &[b"--help-x"]),
        checkvm("-px", &[b"-px"]),
        checkvm("-xh", &[b"-xh"]),
        checkvm("-x -h", &[b"-x", b"-h"]),
        checkvm("--prod -x", &[b"--prod", b"-x"]),
        checkvm("a non-ASCII option", &["-é".as_bytes()]),
        checkvm("an option that is not UTF-8", &[b"-\xff"]),
        checkvm("--", &[b"--"]),
        checkvm("-- -x", &[b"--", b"-x"]),
        checkvm("arguments that are not options", &[b"foo", b"-", b""]),
        checkvm("an argument, then -p", &[b"foo", b"-p"]),
        checkvm("--hardware-version", &[b"--hardware-version"])
            .expect(Expect::Behaviour(HW_VERSION)),
        checkvm("not VMware", &[]).on(not_vmware()),
        checkvm("not VMware, -h", &[b"-h"]).on(not_vmware()),
        checkvm("not VMware, -x", &[b"-x"]).on(not_vmware()),
        checkvm("ring 3 restricted, no I/O privilege", &[])
            .on(restricted().iopl(IoplPolicy::Eperm)),
        checkvm("ring 3 restricted, as root", &[])
            .on(restricted())
            .expect(Expect::Behaviour(PRIVILEGE)),
        checkvm("stdout is /dev/full", &[])
            .stdout_full()
            .expect(Expect::OurWords(FULL)),
        checkvm("stdout is /dev/full, -h", &[b"-h"])
            .stdout_full()
            .expect(Expect::OurWords(FULL)),
        checkvm("stderr is /dev/full, -x", &[b"-x"]).stderr_full(),
    ]
}

/// What one program did in one case.
#[derive(Debug, PartialEq)]
struct Seen {
    exit: GuestExit,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    guestinfo: BTreeMap<Vec<u8>, Vec<u8>>,
    vmx_log: Vec<Vec<u8>>,
}

impl Seen {
    fn but_stderr(&self) -> impl PartialEq + '_ {
        (&self.exit, &self.stdout, &self.guestinfo, &self.vmx_log)
    }

    fn brief(&self) -> String {
        let text = |b: &[u8]| {
            let s = String::from_utf8_lossy(b).escape_debug().to_string();
            if s.chars().count() <= 120 {
                return s;
            }
            let head: String = s.chars().take(100).collect();
            format!("{head}… ({} bytes)", b.len())
        };
        format!(
            "{:?}, stdout \"{}\", stderr \"{}\"",
            self.exit,
            text(&self.stdout),
            text(&self.stderr)
        )
    }
}

/// The four programs.
struct Programs {
    ours: PathBuf,
    theirs: PathBuf,
}

impl Programs {
    fn get(&self, tool: Tool, ours: bool) -> PathBuf {
        let dir = if ours { &self.ours } else { &self.theirs };
        dir.join(if ours { tool.ours() } else { tool.theirs() })
    }
}

/// Runs one program in `case`, called `/usr/bin/vmware-…` (the `argv[0]` both get, so
/// that messages that name the program compare equal: rpctool prints it as given,
/// checkvm its last component).
fn run(case: &Case, exe: &Path, work: &Path) -> Seen {
    let (out, err) = (work.join("stdout"), work.join("stderr"));
    let sink = |sink: Sink, path: &Path| match sink {
        Sink::Captured => File::create(path).unwrap(),
        Sink::Full => File::options().write(true).open("/dev/full").unwrap(),
    };
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&err);
    let mut cmd = Command::new(exe);
    cmd.arg0(format!("{OVT_DIR}/{}", case.tool.theirs()))
        .args(case.args.iter().map(|a| OsStr::from_bytes(a)))
        .env_clear()
        .stdin(Stdio::null())
        .stdout(sink(case.stdout, &out))
        .stderr(sink(case.stderr, &err));
    let run = case
        .host
        .clone()
        .vmware_cpuid(true)
        .run_command(&mut cmd)
        .unwrap_or_else(|e| panic!("{}: {e}", exe.display()));
    Seen {
        exit: run.exit,
        stdout: std::fs::read(&out).unwrap_or_default(),
        stderr: std::fs::read(&err).unwrap_or_default(),
        guestinfo: run.host.guestinfo().clone(),
        vmx_log: run.host.vmx_log().to_vec(),
    }
}

/// Runs every case with both programs; returns the report, one line a case, and whether
/// every case showed what it must.
fn compare_all(programs: &Programs) -> (String, bool) {
    let work = std::env::temp_dir().join(format!("vmw-tool-parity-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    // A line of its own: the test harness's "test NAME ... " comes before it.
    let (mut report, mut ok) = (String::from("\n"), true);
    let mut tally = [0; 3];
    for case in cases() {
        let ours = run(&case, &programs.get(case.tool, true), &work);
        let theirs = run(&case, &programs.get(case.tool, false), &work);
        let label = format!("{} {}", case.tool.ours(), case.what);
        let (verdict, fine) = match case.expect {
            Expect::Same => ("same", ours == theirs),
            Expect::OurWords(_) => (
                "ours",
                ours.stderr != theirs.stderr && ours.but_stderr() == theirs.but_stderr(),
            ),
            Expect::Behaviour(_) => ("differ", ours.exit != theirs.exit),
        };
        let _ = writeln!(
            report,
            "{} {verdict:<6} {label}",
            if fine { "ok  " } else { "FAIL" }
        );
        if !fine || !matches!(case.expect, Expect::Same) {
            let _ = writeln!(report, "       ours:   {}", ours.brief());
            let _ = writeln!(report, "       theirs: {}", theirs.brief());
        }
        if let Expect::OurWords(why) | Expect::Behaviour(why) = case.expect {
            let _ = writeln!(report, "       why: {why}");
        }
        if !fine && !matches!(case.expect, Expect::Same) {
            let _ = writeln!(
                report,
                "       (no longer as listed: if they now agree, drop the reason)"
            );
        }
        ok &= fine;
        tally[match case.expect {
            Expect::Same => 0,
            Expect::OurWords(_) => 1,
            Expect::Behaviour(_) => 2,
        }] += 1;
    }
    let _ = std::fs::remove_dir_all(&work);
    let [same, words, differ] = tally;
    let _ = writeln!(
        report,
        "{} cases: {same} identical, {words} in our words with their exit status, {differ} \
         different",
        same + words + differ
    );
    (report, ok)
}

/// Whether open-vm-tools sees VMware under the simulator on this machine (CPUID faulting,
/// or a CPUID that names neither KVM nor Xen).
fn ovt_sees_vmware_here() -> bool {
    let checkvm = Path::new(OVT_DIR).join(Tool::Checkvm.theirs());
    let run = HostConfig::default()
        .vmware_cpuid(true)
        .run_command(
            Command::new(checkvm)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .unwrap();
    run.exit == GuestExit::Exited(0)
}

fn required(var: &str) -> bool {
    std::env::var_os(var).is_some()
}

#[test]
fn side_by_side_with_open_vm_tools() {
    let missing: Vec<String> = [Tool::Rpctool, Tool::Checkvm]
        .iter()
        .map(|t| Path::new(OVT_DIR).join(t.theirs()))
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if !missing.is_empty() {
        assert!(
            !required("VMW_TOOLS_REQUIRED"),
            "VMW_TOOLS_REQUIRED is set but {missing:?} are missing: apt-get install open-vm-tools"
        );
        eprintln!("skipped: {missing:?} missing (apt-get install open-vm-tools)");
        return;
    }
    let ours = support::example("rpctool");
    support::example("checkvm");
    let ours = ours.parent().unwrap().to_owned();
    if ovt_sees_vmware_here() {
        println!("open-vm-tools sees VMware under the simulator here: running on this machine");
        let (report, ok) = compare_all(&Programs {
            ours,
            theirs: OVT_DIR.into(),
        });
        println!("{report}");
        assert!(ok, "{report}");
        return;
    }
    let Some(kernel) = harness::kernels().pop() else {
        assert!(
            !required("VMW_VM_REQUIRED"),
            "VMW_VM_REQUIRED is set but {} holds no kernel: run tests/vm/setup.sh",
            harness::cache_dir().display()
        );
        eprintln!(
            "skipped: open-vm-tools refuses to run here (this CPU's CPUID names a hypervisor \
             and the simulator cannot fault CPUID), and there is no kernel to boot instead \
             (run tests/vm/setup.sh)"
        );
        return;
    };
    println!(
        "open-vm-tools refuses the CPUID here (no CPUID faulting): running inside {kernel} \
         under QEMU (TCG)"
    );
    in_a_vm(&kernel, &ours);
}

/// The cases inside `kernel` under QEMU: the test binary is the simulator there
/// ([`side_by_side_in_a_vm`]). The four programs also run on their own, as root, on the
/// VM's empty backdoor port, which is how they get into the VM's `/bin`.
fn in_a_vm(kernel: &harness::Kernel, ours: &Path) {
    let program = |tool: Tool, ours_: bool| {
        if ours_ {
            ours.join(tool.ours())
        } else {
            Path::new(OVT_DIR).join(tool.theirs())
        }
    };
    let mut cases = vec![harness::Case {
        id: "parity".into(),
        uid: 0,
        program: std::env::current_exe().unwrap(),
        args: [
            "side_by_side_in_a_vm",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ]
        .map(String::from)
        .to_vec(),
        timeout: Some(300),
    }];
    for tool in [Tool::Rpctool, Tool::Checkvm] {
        for ours_ in [true, false] {
            cases.push(harness::Case {
                id: format!(
                    "bare.{}",
                    program(tool, ours_).file_name().unwrap().to_string_lossy()
                ),
                uid: 0,
                program: program(tool, ours_),
                args: vec!["info-get guestinfo.foo".into()],
                timeout: None,
            });
        }
    }
    let boot = harness::boot(kernel, harness::Machine::Bare, &cases)
        .unwrap_or_else(|e| panic!("{kernel}: {e}"));
    let parity = &boot.outcomes["parity"];
    let stdout = String::from_utf8_lossy(&parity.stdout);
    let stderr = String::from_utf8_lossy(&parity.stderr);
    println!("{stdout}");
    assert_eq!(
        parity.status,
        harness::Status::Exited(0),
        "inside {kernel}:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("1 passed"), "{stdout}\n{stderr}");
    // Outside any simulator, nothing on the port: the same refusal, naming the program
    // by the path it was started as.
    for tool in [Tool::Rpctool, Tool::Checkvm] {
        let seen = |name: &str| {
            let o = &boot.outcomes[&format!("bare.{name}")];
            let stderr = String::from_utf8_lossy(&o.stderr).replace(name, "PROGRAM");
            (o.status.clone(), o.stdout.clone(), stderr)
        };
        let theirs = seen(tool.theirs());
        assert_eq!(
            seen(tool.ours()),
            theirs,
            "{} on a bare machine",
            tool.ours()
        );
        println!(
            "ok   same   {} with nothing on the port and no simulator ({kernel}, as root): {}",
            tool.ours(),
            theirs.0
        );
    }
}

/// The guest of [`in_a_vm`]: every case, with the programs beside this test binary.
#[test]
#[ignore = "runs inside a test VM (side_by_side_with_open_vm_tools)"]
fn side_by_side_in_a_vm() {
    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    let (report, ok) = compare_all(&Programs {
        ours: dir.clone(),
        theirs: dir,
    });
    println!("{report}");
    assert!(ok, "{report}");
}
