//! arm64 end to end, inside a real arm64 kernel: Debian's 6.1 arm64 kernel package booted by
//! `qemu-system-aarch64 -machine virt -cpu max` (TCG, QEMU 10: the first to trap an EL0
//! `mrs xzr, mdccsr_el0`; `tests/vm/setup.sh` unpacks it), with the crate's programs
//! cross-built for `aarch64-unknown-linux-gnu` by this test (a nested `cargo`, so they are
//! never stale).
//!
//! On the x86_64 machine, four boots:
//!
//! - [`host::arm64_outside_vmware`]: no simulator, as on any arm64 machine that is not
//!   VMware. Every example path and every public probe and access function, as root and as
//!   an unprivileged user, must end with its typed error (the knock's SIGILL contained),
//!   never a signal, a core file or a fault line in the kernel log.
//! - [`host::arm64_under_vmw_sim`]: the arm64 `vmw-sim` serving arm64 programs through the
//!   real trap: `vmw-sim -e guestinfo.hello=world -- guestinfo hello` prints `world`, every
//!   example path, the entry-point transcript (which must equal the x86 one under the x86
//!   simulator, privileged lines aside), `--not-vmware`, and `--stats` counting the backdoor
//!   calls per RPC (5 on HB, 3 + ⌈request/4⌉ + ⌈reply/4⌉ on LB, as on x86).
//! - [`host::arm64_library_guest_tests`]: the library's own channel suite
//!   (`tests/guest_channel.rs`: HB and LB, cookies on and off, a checkpoint at every step,
//!   hostile answers, the channel limit, ...) and the boot-agent suite
//!   (`tests/guest_session.rs`: `Session::connect`, encoded values, the OVF environment)
//!   through the real trap, and
//!   [`guest::guest_calls_per_rpc_and_1_mib_values`]. `guest_channel`'s
//!   `values_of_awkward_sizes_round_trip` is left out there: its megabytes over LB cost
//!   1.4 million traps, about 4 minutes of TCG; the 1 MiB values are the arm64 guest's.
//! - [`host::arm64_libvmtools_under_vmw_sim`]: fidelity against an implementation nobody
//!   here wrote: open-vm-tools' arm64 `libvmtools.so.0` (Debian's `open-vm-tools:arm64`)
//!   driven by `benches/peers/ovt/ovt-peer.c`, cross-compiled, under the arm64 `vmw-sim`,
//!   HB and LB: its answers and its calls per operation must be those it has on x86.
//!
//! Without an arm64 kernel, a QEMU that traps, the cross toolchain, or (for the last one) the
//! unpacked open-vm-tools these tests say so and pass, unless `VMW_VM_REQUIRED` is set (CI
//! sets it).

#![cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]

#[path = "vm/entry_points.rs"]
mod entry_points;
#[cfg(target_arch = "x86_64")]
#[path = "vm/harness.rs"]
mod harness;
#[cfg(target_arch = "x86_64")]
mod support;

/// How the x86 test finds, and the VM runs, this binary's guests.
#[cfg(target_arch = "x86_64")]
const ENTRY_POINTS: &str = "guest_entry_points";
#[cfg(target_arch = "x86_64")]
const UNCONTAINED: &str = "guest::guest_uncontained_trap";
#[cfg(target_arch = "x86_64")]
const CALLS_AND_VALUES: &str = "guest::guest_calls_per_rpc_and_1_mib_values";

/// [`entry_points::transcript`], run by the arm64 VM (and, to compare, by the x86 simulator).
#[test]
#[ignore = "runs inside the arm64 VM, and under the x86 simulator (tests/kernels_arm64.rs)"]
fn guest_entry_points() {
    entry_points::transcript();
}

/// Bytes of a test value, NUL and invalid UTF-8 included (as `guest_channel.rs` makes them).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 131 + 7) as u8).collect()
}

/// The side that boots the VM.
#[cfg(target_arch = "x86_64")]
mod host {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};

    use super::entry_points::ENTRY;
    use super::harness::{self, Arch, Boot, Case, Kernel, Machine, Outcome, Status, NOBODY};
    use super::support;

    const TARGET: &str = "aarch64-unknown-linux-gnu";
    /// The first QEMU that traps an EL0 `mrs xzr, mdccsr_el0` (7.2 does not).
    const QEMU_MIN: u32 = 10;

    /// The cross-built programs the VM runs.
    struct Build {
        vmw_sim: PathBuf,
        /// Examples by name.
        examples: BTreeMap<String, PathBuf>,
        /// This test binary, built for arm64.
        this: PathBuf,
        /// `tests/guest_channel.rs`, built for arm64.
        guest_channel: PathBuf,
        /// `tests/guest_session.rs`, built for arm64.
        guest_session: PathBuf,
    }

    impl Build {
        fn example(&self, name: &str) -> PathBuf {
            self.examples
                .get(name)
                .unwrap_or_else(|| panic!("example {name} was not built"))
                .clone()
        }
    }

    /// Why the tests cannot run here: a skip, or a failure where `VMW_VM_REQUIRED` is set.
    fn unavailable<T>(why: &str) -> Option<T> {
        assert!(
            std::env::var_os("VMW_VM_REQUIRED").is_none(),
            "VMW_VM_REQUIRED is set but {why}"
        );
        eprintln!("skipped: {why}");
        None
    }

    /// The arm64 kernel and the cross-built programs, or `None` (skip) when this machine
    /// lacks what it takes.
    fn setup() -> Option<(Kernel, Build)> {
        let cache = harness::cache_dir();
        let Some(kernel) = harness::kernels_for(Arch::Aarch64).pop() else {
            return unavailable(&format!(
                "{} holds no arm64 kernel: run tests/vm/setup.sh",
                cache.display()
            ));
        };
        match Arch::Aarch64.qemu_major() {
            Ok(v) if v >= QEMU_MIN => {}
            Ok(v) => {
                return unavailable(&format!(
                    "qemu-system-aarch64 is version {v}, which does not trap an EL0 `mrs`: \
                     run tests/vm/setup.sh (it unpacks QEMU {QEMU_MIN} from backports)"
                ))
            }
            Err(e) => {
                return unavailable(&format!(
                    "no qemu-system-aarch64 ({e}): run tests/vm/setup.sh"
                ))
            }
        }
        if Command::new("aarch64-linux-gnu-gcc")
            .arg("--version")
            .output()
            .map_or(true, |o| !o.status.success())
        {
            return unavailable(
                "no aarch64-linux-gnu-gcc, the linker .cargo/config.toml names: \
                 apt-get install gcc-aarch64-linux-gnu",
            );
        }
        match cross_build() {
            Ok(build) => Some((kernel, build)),
            Err(e) => unavailable(&format!(
                "the cross build failed (rustup target add {TARGET}?): {e}"
            )),
        }
    }

    /// `cargo` for arm64: `vmw-sim` and the examples, then this test and `guest_channel`.
    fn cross_build() -> Result<Build, String> {
        let mut artifacts = Vec::new();
        artifacts.extend(cargo(&["build", "--bin", "vmw-sim", "--examples"])?);
        artifacts.extend(cargo(&[
            "test",
            "--no-run",
            "--test",
            "kernels_arm64",
            "--test",
            "guest_channel",
            "--test",
            "guest_session",
        ])?);
        let find = |name: &str, kind: &str| {
            artifacts
                .iter()
                .find(|(n, k, _)| n == name && k == kind)
                .map(|(_, _, p)| p.clone())
                .ok_or_else(|| format!("cargo built no {kind} {name}"))
        };
        Ok(Build {
            vmw_sim: find("vmw-sim", "bin")?,
            examples: artifacts
                .iter()
                .filter(|(_, k, _)| k == "example")
                .map(|(n, _, p)| (n.clone(), p.clone()))
                .collect(),
            this: find("kernels_arm64", "test")?,
            guest_channel: find("guest_channel", "test")?,
            guest_session: find("guest_session", "test")?,
        })
    }

    /// One `cargo` run for the arm64 target; its executables as (target name, kind, path).
    fn cargo(args: &[&str]) -> Result<Vec<(String, String, PathBuf)>, String> {
        let out = Command::new(env!("CARGO"))
            .args(args)
            .args(["--target", TARGET, "--all-features"])
            .arg("--message-format=json-render-diagnostics")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cargo: {e}"))?;
        if !out.status.success() {
            return Err(format!("cargo {} failed ({})", args.join(" "), out.status));
        }
        let mut found = Vec::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let (Some(exe), Some(name), Some(kind)) = (
                msg["executable"].as_str(),
                msg["target"]["name"].as_str(),
                msg["target"]["kind"][0].as_str(),
            ) else {
                continue;
            };
            found.push((name.to_owned(), kind.to_owned(), PathBuf::from(exe)));
        }
        Ok(found)
    }

    fn case(id: &str, uid: u32, program: &Path, args: &[&str]) -> Case {
        Case {
            id: id.to_owned(),
            uid,
            program: program.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
            timeout: None,
        }
    }

    /// This binary's guest `name`, with the test harness's arguments.
    fn guest_args(name: &str) -> Vec<&str> {
        vec![
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ]
    }

    fn boot(kernel: &Kernel, cases: &[Case], programs: &[PathBuf]) -> Boot {
        let boot = harness::boot_with(kernel, Machine::Virt, cases, programs)
            .unwrap_or_else(|e| panic!("{kernel} (arm64) on QEMU virt: {e}"));
        println!(
            "{kernel} ({}), arm64, QEMU virt -cpu max: {} runs in {:.1} s",
            kernel.package,
            cases.len(),
            boot.took.as_secs_f64()
        );
        boot
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    /// Exit 0 or 1 (never a signal), no core file, no fault line in the kernel log.
    fn check_clean(o: &Outcome, what: &str) {
        assert!(
            matches!(o.status, Status::Exited(0 | 1)),
            "{what}: {}\nstdout: {}\nstderr: {}\nkernel: {:#?}",
            o.status,
            text(&o.stdout),
            text(&o.stderr),
            o.kmsg
        );
        assert_eq!(o.cores, 0, "{what}: core file written");
        assert!(
            o.fault_lines().is_empty(),
            "{what}: kernel log: {:#?}",
            o.fault_lines()
        );
    }

    fn transcript(o: &Outcome) -> Vec<String> {
        text(&o.stdout)
            .lines()
            .filter_map(|l| l.split_once(ENTRY).map(|(_, entry)| entry.to_owned()))
            .collect()
    }

    /// The transcript outside VMware, as root or not: no privilege exists to take on arm64,
    /// so the privileged functions say `Unsupported` and the usual fallback probes once.
    fn entry_points_outside_vmware() -> Vec<String> {
        let mut lines: Vec<String> = [
            "is_vmware_cpu: false",
            "probe_backdoor: Err(NotVmware)",
            "probe_backdoor_privileged: Err(Unsupported)",
            "probe_backdoor_privileged.or_else(probe_backdoor): Err(NotVmware)",
            "access_backdoor: Ok(unprivileged)",
        ]
        .map(String::from)
        .to_vec();
        for m in [
            "probe_vmware_backdoor",
            "get_version",
            "hardware_version",
            "cpu_mhz",
            "bios_uuid",
            "host_time",
            "frequencies",
            "vcpu_info",
            "EnhancedChan::open",
        ] {
            lines.push(format!("  {m}: Err(NotVmware)"));
        }
        lines.push("access_backdoor_privileged: Err(Unsupported)".to_owned());
        lines
    }

    #[test]
    fn arm64_outside_vmware() {
        let Some((kernel, build)) = setup() else {
            return;
        };
        let mut cases = Vec::new();
        for (user, uid) in [("root", 0), ("nobody", NOBODY)] {
            for (i, (name, args)) in support::EXAMPLE_RUNS.iter().enumerate() {
                cases.push(case(
                    &format!("{user}.{name}.{i}"),
                    uid,
                    &build.example(name),
                    args,
                ));
            }
            cases.push(case(
                &format!("{user}.entry-points"),
                uid,
                &build.this,
                &guest_args(super::ENTRY_POINTS),
            ));
        }
        // The control: the same trap uncontained dies, and the checks below see it.
        cases.push(case(
            "control.uncontained",
            0,
            &build.this,
            &guest_args(super::UNCONTAINED),
        ));
        let boot = boot(&kernel, &cases, &[]);
        for c in &cases {
            let o = &boot.outcomes[&c.id];
            let what = format!("{} on {kernel} (arm64), no simulator", c.id);
            if c.id == "control.uncontained" {
                assert_eq!(
                    o.status,
                    Status::Signaled {
                        signal: libc::SIGILL,
                        core_dumped: true
                    },
                    "{what}: the VM must trap the instruction: {}",
                    text(&o.stdout)
                );
                assert!(
                    o.cores == 1 && !o.fault_lines().is_empty(),
                    "{what}: a core file and an audit line, or the checks see nothing: {:#?}",
                    o.kmsg
                );
                continue;
            }
            check_clean(o, &what);
            if c.program == build.this {
                assert_eq!(o.status, Status::Exited(0), "{what}: {}", text(&o.stderr));
                assert_eq!(transcript(o), entry_points_outside_vmware(), "{what}");
                continue;
            }
            let name = c.program.file_name().unwrap().to_string_lossy();
            assert_eq!(o.status, Status::Exited(1), "{what}: {}", text(&o.stderr));
            assert!(o.stdout.is_empty(), "{what}: {}", text(&o.stdout));
            assert!(
                text(&o.stderr).starts_with(&format!("{name}: ")),
                "{what}: says why on stderr: {:?}",
                text(&o.stderr)
            );
        }
        println!(
            "arm64 outside VMware: {} runs (every example path and the entry points, root \
             and uid {NOBODY}): each ended with its typed error, no signal, no core file, \
             no fault line; the uncontained trap (the control) died of SIGILL with a core",
            cases.len() - 1
        );
    }

    /// What an example prints on stdout under the simulator with guestinfo `k=v` and
    /// machine id `vm-1`, and its exit status (as `tests/guest_examples.rs` checks on x86).
    fn example_under_sim(name: &str, args: &[&str]) -> (&'static str, i32) {
        match (name, args) {
            ("checkvm", []) => ("VMware software version 6 (good)\n", 0),
            ("checkvm", ["-p"]) => ("ESX Server\n", 0),
            ("checkvm", ["-h"]) => ("VMware virtual hardware version 21\n", 0),
            ("guestinfo", ["k"]) => ("v", 0),
            ("rpctool", ["machine.id.get"]) => ("vm-1", 0),
            _ => ("", 0), // guestinfo k v, log: nothing to print
        }
    }

    /// The entry-point transcript of the x86 simulator on this machine, run the same way
    /// (the x86 test binary under `HostConfig::default()`, a kernel without `iopl`).
    #[cfg(feature = "sim")]
    fn entry_points_on_x86_sim() -> Vec<String> {
        use vmw_backdoor::sim::{HostConfig, IoplPolicy};
        let out = std::env::temp_dir().join(format!("vmw-arm64-x86-{}.out", std::process::id()));
        let mut cmd = Command::new(std::env::current_exe().expect("test executable"));
        cmd.args(guest_args(super::ENTRY_POINTS))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("temp file"))
            .stderr(Stdio::null());
        HostConfig::default()
            .iopl(IoplPolicy::Enosys)
            .run_command(&mut cmd)
            .expect("run the x86 guest")
            .expect_success();
        let stdout = std::fs::read(&out).expect("read the x86 transcript");
        let _ = std::fs::remove_file(&out);
        text(&stdout)
            .lines()
            .filter_map(|l| l.split_once(ENTRY).map(|(_, entry)| entry.to_owned()))
            .collect()
    }

    /// The host's counters as `vmw-sim --stats /tmp/out/stats.json` wrote them.
    fn stats(o: &Outcome, what: &str) -> serde_json::Value {
        let json = o
            .files
            .get("stats.json")
            .unwrap_or_else(|| panic!("{what}: no stats file: {:?}", o.files.keys()));
        serde_json::from_slice(json).unwrap_or_else(|e| panic!("{what}: {e}: {}", text(json)))
    }

    /// Every backdoor call the host saw, from `--stats`.
    fn calls(stats: &serde_json::Value) -> u64 {
        ["lb_calls", "hb_in_calls", "hb_out_calls"]
            .iter()
            .map(|k| stats[k].as_u64().unwrap_or(u64::MAX / 4))
            .sum()
    }

    #[test]
    #[cfg(feature = "sim")]
    fn arm64_under_vmw_sim() {
        let Some((kernel, build)) = setup() else {
            return;
        };
        let sim = build.vmw_sim.clone();
        let host = ["-e", "guestinfo.k=v", "-e", "machine.id=vm-1", "--"];
        let mut cases = Vec::new();
        for (user, uid) in [("root", 0), ("nobody", NOBODY)] {
            cases.push(case(
                &format!("{user}.hello"),
                uid,
                &sim,
                &["-e", "guestinfo.hello=world", "--", "guestinfo", "hello"],
            ));
            for (i, (name, args)) in support::EXAMPLE_RUNS.iter().enumerate() {
                let mut argv = host.to_vec();
                argv.push(name);
                argv.extend_from_slice(args);
                cases.push(case(&format!("{user}.{name}.{i}"), uid, &sim, &argv));
            }
            let mut argv = vec!["--"];
            argv.push("kernels_arm64");
            argv.extend(guest_args(super::ENTRY_POINTS));
            cases.push(case(&format!("{user}.entry-points"), uid, &sim, &argv));
            cases.push(case(
                &format!("{user}.not-vmware"),
                uid,
                &sim,
                &["--not-vmware", "--", "checkvm"],
            ));
        }
        // The calls of one RPC on an open channel, HB and LB: the knock, OPEN and CLOSE
        // (3), and the RPC, from `--stats` (which the VM's /init reports from /tmp/out).
        let rpc = "info-get guestinfo.hello";
        for (id, opt) in [
            ("nobody.stats-hb", None),
            ("nobody.stats-lb", Some("--no-hb")),
        ] {
            let mut argv: Vec<&str> = opt.into_iter().collect();
            argv.extend(["-e", "guestinfo.hello=world"]);
            argv.extend(["--stats", "/tmp/out/stats.json", "--"]);
            argv.extend(["rpctool", rpc]);
            cases.push(case(id, NOBODY, &sim, &argv));
        }
        // The programs vmw-sim runs, in /bin: the examples, and this test binary under the
        // name the cases give it (cargo's has a hash).
        let renamed = std::env::temp_dir().join(format!("vmw-arm64-{}", std::process::id()));
        std::fs::create_dir_all(&renamed).expect("temp dir");
        let this_in_vm = renamed.join("kernels_arm64");
        std::fs::copy(&build.this, &this_in_vm).expect("copy the arm64 test binary");
        let mut programs: Vec<PathBuf> = build.examples.values().cloned().collect();
        programs.push(this_in_vm);
        let boot = boot(&kernel, &cases, &programs);
        let _ = std::fs::remove_dir_all(&renamed);
        let x86 = entry_points_on_x86_sim();
        for c in &cases {
            let o = &boot.outcomes[&c.id];
            let what = format!(
                "vmw-sim {} ({}) on {kernel} (arm64)",
                c.args.join(" "),
                c.id
            );
            check_clean(o, &what);
            let (stdout, stderr) = (text(&o.stdout), text(&o.stderr));
            let kind = c.id.split_once('.').map_or("", |(_, k)| k);
            if kind == "hello" {
                assert_eq!(
                    (stdout.as_str(), &o.status),
                    ("world", &Status::Exited(0)),
                    "{what}: {stderr}"
                );
            } else if kind == "entry-points" {
                assert_eq!(o.status, Status::Exited(0), "{what}: {stderr}");
                // The same host model answers both: only the privileged functions differ
                // (no I/O privilege exists on arm64; the x86 run's kernel has no iopl).
                let expected: Vec<String> = x86
                    .iter()
                    .map(|l| match l.as_str() {
                        "probe_backdoor_privileged: Err(Privilege)" => {
                            "probe_backdoor_privileged: Err(Unsupported)".to_owned()
                        }
                        "access_backdoor_privileged: Err(Privilege)" => {
                            "access_backdoor_privileged: Err(Unsupported)".to_owned()
                        }
                        // arm64 reads SMBIOS, which QEMU's virt machine without firmware lacks.
                        l if l.starts_with("is_vmware_cpu: ") => "is_vmware_cpu: false".to_owned(),
                        l => l.to_owned(),
                    })
                    .collect();
                assert_eq!(transcript(o), expected, "{what}: {stderr}");
            } else if kind == "not-vmware" {
                assert_eq!(o.status, Status::Exited(1), "{what}");
                assert!(stdout.is_empty(), "{what}: {stdout}");
                assert!(
                    stderr.contains("not running in a VMware VM") && stderr.contains("signal 4"),
                    "{what}: the knock's SIGILL, contained: {stderr}"
                );
            } else if kind.starts_with("stats-") {
                assert_eq!(
                    (stdout.as_str(), &o.status),
                    ("world", &Status::Exited(0)),
                    "{what}: {stderr}"
                );
                let stats = stats(o, &what);
                assert_eq!(stats["rpcs"], 1, "{what}");
                let request = rpc.len() as u64;
                let reply = "1 world".len() as u64;
                let hb = kind == "stats-hb";
                let per_rpc = if hb {
                    5
                } else {
                    3 + request.div_ceil(4) + reply.div_ceil(4)
                };
                assert_eq!(calls(&stats), 3 + per_rpc, "{what}: {stats}");
                println!(
                    "arm64 {}: {} backdoor calls for one RPC with open and close, {per_rpc} for \
                     the RPC",
                    if hb { "HB" } else { "LB" },
                    calls(&stats)
                );
            } else {
                let mut words = c.args.iter().skip(host.len()).map(String::as_str);
                let name = words.next().unwrap();
                let args: Vec<&str> = words.collect();
                let (out, code) = example_under_sim(name, &args);
                assert_eq!(
                    (stdout.as_str(), &o.status),
                    (out, &Status::Exited(code)),
                    "{what}: {stderr}"
                );
            }
        }
        println!(
            "arm64 under vmw-sim: {} runs: `vmw-sim -e guestinfo.hello=world -- guestinfo \
             hello` printed world, every example path, the entry points as on x86, \
             --not-vmware contained, calls per RPC as on x86",
            cases.len()
        );
    }

    /// `benches/peers/ovt/ovt-peer.c`, cross-compiled against Debian's arm64 `libvmtools.so.0`
    /// (open-vm-tools:arm64, which `setup.sh` unpacks with the libraries it loads).
    fn ovt_peer() -> Option<PathBuf> {
        let libs = harness::cache_dir().join("aarch64-libs");
        let dirs = [
            libs.join("usr/lib/aarch64-linux-gnu"),
            libs.join("lib/aarch64-linux-gnu"),
        ];
        if !dirs[0].join("libvmtools.so.0").exists() {
            return unavailable(&format!(
                "no arm64 libvmtools in {}: run tests/vm/setup.sh",
                libs.display()
            ));
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out_dir = std::env::temp_dir().join(format!("vmw-arm64-ovt-{}", std::process::id()));
        std::fs::create_dir_all(&out_dir).expect("temp dir");
        let peer = out_dir.join("ovt-peer");
        let rpath_link = format!(
            "-Wl,-rpath-link,{}:{}",
            dirs[0].display(),
            dirs[1].display()
        );
        let out = Command::new("aarch64-linux-gnu-gcc")
            .args([
                "-O2",
                "-std=c11",
                "-Wall",
                "-Wextra",
                "-Wpedantic",
                "-Werror",
                "-o",
            ])
            .arg(&peer)
            .arg(root.join("benches/peers/ovt/ovt-peer.c"))
            .arg(format!("-L{}", dirs[0].display()))
            .arg("-l:libvmtools.so.0")
            .arg(rpath_link)
            .output()
            .expect("run aarch64-linux-gnu-gcc");
        assert!(
            out.status.success(),
            "building ovt-peer for arm64: {}",
            text(&out.stderr)
        );
        Some(peer)
    }

    /// open-vm-tools' own arm64 client library, an implementation nobody here wrote, as the
    /// guest of the arm64 `vmw-sim`, HB and LB: its answers, and its backdoor calls per
    /// operation, must be what `benches/peers/README.md` records for it on x86.
    #[test]
    fn arm64_libvmtools_under_vmw_sim() {
        let Some((kernel, build)) = setup() else {
            return;
        };
        let Some(peer) = ovt_peer() else {
            return;
        };
        let host = [
            "-e",
            "guestinfo.foo=bar",
            "-e",
            "machine.id=vm-1",
            "--stats",
            "/tmp/out/stats.json",
            "--vmx-log",
            "/tmp/out/vmx.log",
            "--dump-guestinfo",
            "/tmp/out/guestinfo",
        ];
        /// (id, ovt-peer arguments, its stdout, its exit status).
        const RUNS: [(&str, &[&str], &str, i32); 11] = [
            ("version", &["version"], "version=6 type=2\n", 0),
            ("get", &["get", "guestinfo.foo"], "bar", 0),
            (
                "get-channel",
                &["--via", "channel", "get", "guestinfo.foo"],
                "bar",
                0,
            ),
            ("missing", &["get", "guestinfo.missing"], "", 1),
            ("set", &["set", "guestinfo.foo", "baz"], "", 0),
            ("log", &["log", "hello-from-ovt"], "", 0),
            ("rpc", &["rpc", "machine.id.get"], "1 vm-1\n", 0),
            // Calls per operation: (bench N) - (bench 0), over N, per mode (a reused channel
            // is opened and closed once per run).
            (
                "bench0",
                &["bench", "get", "guestinfo.foo", "0", "reused"],
                "",
                0,
            ),
            (
                "bench10",
                &["bench", "get", "guestinfo.foo", "10", "reused"],
                "",
                0,
            ),
            (
                "bench0-per-op",
                &["bench", "get", "guestinfo.foo", "0", "per-op"],
                "",
                0,
            ),
            (
                "bench10-per-op",
                &["bench", "get", "guestinfo.foo", "10", "per-op"],
                "",
                0,
            ),
        ];
        let mut cases = Vec::new();
        for (mode, flags) in [("hb", &[][..]), ("lb", &["--no-hb"][..])] {
            for (id, args, _, _) in RUNS {
                let mut argv: Vec<&str> = flags.to_vec();
                argv.extend(host);
                argv.push("--");
                argv.push("ovt-peer");
                argv.extend(args);
                cases.push(case(&format!("{mode}.{id}"), NOBODY, &build.vmw_sim, &argv));
            }
        }
        let boot = boot(&kernel, &cases, std::slice::from_ref(&peer));
        let _ = std::fs::remove_dir_all(peer.parent().unwrap());
        for mode in ["hb", "lb"] {
            let outcome = |id: &str| &boot.outcomes[&format!("{mode}.{id}")];
            for (id, args, out, code) in RUNS {
                let o = outcome(id);
                let what = format!(
                    "{mode}: vmw-sim -- ovt-peer {} on {kernel} (arm64)",
                    args.join(" ")
                );
                check_clean(o, &what);
                let stdout = text(&o.stdout);
                if id.starts_with("bench") {
                    assert!(
                        stdout.starts_with("peer=ovt op=get size=3"),
                        "{what}: {stdout}"
                    );
                } else {
                    assert_eq!(
                        (stdout.as_str(), &o.status),
                        (out, &Status::Exited(code)),
                        "{what}: {}",
                        text(&o.stderr)
                    );
                }
                assert_eq!(
                    o.status,
                    Status::Exited(code),
                    "{what}: {}",
                    text(&o.stderr)
                );
            }
            let missing = text(&outcome("missing").stderr);
            assert!(missing.contains("No value found"), "{mode}: {missing}");
            let stored = text(&outcome("set").files["guestinfo"]);
            assert!(
                stored.lines().any(|l| l == "guestinfo.foo=baz"),
                "{mode}: {stored}"
            );
            let logged = text(&outcome("log").files["vmx.log"]);
            assert!(logged.contains("hello-from-ovt"), "{mode}: {logged}");
            // A one-shot get: OPEN, the RPC, CLOSE, and no knock (libvmtools does not).
            let lb = mode == "lb";
            let (request, reply) = ("info-get guestinfo.foo".len() as u64, "1 bar".len() as u64);
            let per_rpc = if lb {
                3 + request.div_ceil(4) + reply.div_ceil(4)
            } else {
                5
            };
            let get = calls(&stats(outcome("get"), "get"));
            assert_eq!(get, 2 + per_rpc, "{mode}: a one-shot get");
            let reused = calls(&stats(outcome("bench10"), "bench"))
                - calls(&stats(outcome("bench0"), "bench"));
            assert_eq!(reused, 10 * per_rpc, "{mode}: 10 gets on a reused channel");
            let per_op = calls(&stats(outcome("bench10-per-op"), "bench"))
                - calls(&stats(outcome("bench0-per-op"), "bench"));
            assert_eq!(per_op, 10 * (per_rpc + 2), "{mode}: 10 one-shot gets");
            println!(
                "libvmtools (open-vm-tools:arm64) under the arm64 vmw-sim, {}: version=6 type=2, \
                 get/set/log/rpc as on x86; a get costs {per_rpc} backdoor calls on a reused \
                 channel, {} with OPEN and CLOSE",
                mode.to_uppercase(),
                per_rpc + 2
            );
        }
    }

    #[test]
    fn arm64_library_guest_tests() {
        let Some((kernel, build)) = setup() else {
            return;
        };
        let channel = Case {
            timeout: Some(300),
            ..case(
                "guest_channel",
                0,
                &build.guest_channel,
                &[
                    "--test-threads=1",
                    "--skip",
                    "values_of_awkward_sizes_round_trip",
                ],
            )
        };
        let calls = Case {
            timeout: Some(300),
            ..case(
                "calls-and-values",
                0,
                &build.this,
                &guest_args(super::CALLS_AND_VALUES),
            )
        };
        let session = Case {
            timeout: Some(120),
            ..case(
                "guest_session",
                0,
                &build.guest_session,
                &["--test-threads=1"],
            )
        };
        let cases = [channel, session, calls];
        let boot = boot(&kernel, &cases, &[]);
        for c in &cases {
            let o = &boot.outcomes[&c.id];
            let (stdout, stderr) = (text(&o.stdout), text(&o.stderr));
            let what = format!("{} on {kernel} (arm64)", c.id);
            assert_eq!(o.status, Status::Exited(0), "{what}:\n{stdout}\n{stderr}");
            check_clean(o, &what);
            for line in stdout.lines() {
                if line.starts_with("test result:") || line.contains("calls") {
                    println!("{}: {line} ({:.1} s)", c.id, o.took.as_secs_f64());
                }
            }
        }
    }
}

/// The side that runs inside the arm64 VM (ignored elsewhere).
#[cfg(target_arch = "aarch64")]
mod guest {
    /// The backdoor trap with nothing to contain it: what the library's knock must never
    /// do. Inside the VM the kernel kills this with SIGILL and a core dump; that it does
    /// shows the VM traps the instruction at all (QEMU 7.2 would let it through).
    #[test]
    #[ignore = "runs inside the arm64 VM (tests/kernels_arm64.rs), where it dies of SIGILL"]
    fn guest_uncontained_trap() {
        let x7 = vmw_backdoor::proto::arm64::X7_LB;
        // SAFETY: reads no memory and writes no register but X0..X5 and X7, declared; the
        // point is the SIGILL it raises outside VMware.
        unsafe {
            std::arch::asm!(
                "mrs xzr, mdccsr_el0",
                inout("x0") u64::from(vmw_backdoor::proto::MAGIC) => _,
                inout("x2") 10u64 => _,
                inout("x3") u64::from(vmw_backdoor::proto::LB_PORT) => _,
                out("x1") _, out("x4") _, out("x5") _,
                inout("x7") x7 => _,
                options(nostack),
            );
        }
        println!("the trap was not taken: this QEMU does not trap EL0 `mrs xzr, mdccsr_el0`");
    }

    /// Backdoor calls per RPC on an open channel, counted by the host model: 5 on HB
    /// whatever the size, 3 + ⌈request/4⌉ + ⌈reply/4⌉ on LB (the numbers `perf_counts.rs`
    /// holds the x86 build to), with values up to 1 MiB, cookies on and off.
    #[test]
    #[ignore = "runs inside the arm64 VM (tests/kernels_arm64.rs)"]
    #[cfg(feature = "sim")]
    fn guest_calls_per_rpc_and_1_mib_values() {
        use super::pattern;
        use vmw_backdoor::proto::MAX_GUEST_MESSAGE;
        use vmw_backdoor::sim::HostConfig;

        const MIB: usize = 1 << 20;
        // The largest value a set carries: the whole request fits the host's 65,536 bytes.
        let room = MAX_GUEST_MESSAGE - b"info-set guestinfo.w ".len();
        let flavours = [
            ("HB, cookies", HostConfig::default(), MIB),
            ("HB, no cookies", HostConfig::default().no_cookies(), MIB),
            // One 1 MiB value over LB: 262,145 reply words, one trap each.
            ("LB, cookies", HostConfig::default().no_hb(), MIB),
            (
                "LB, no cookies",
                HostConfig::default().no_hb().no_cookies(),
                4096,
            ),
        ];
        for (name, config, largest) in flavours {
            let sizes: Vec<usize> = [0, 1, 5, 4096, 65_536, MIB]
                .into_iter()
                .filter(|&len| len <= largest)
                .collect();
            let mut config = config;
            for &len in &sizes {
                config = config.guestinfo(format!("v{len}"), pattern(len));
            }
            let set: Vec<u8> = pattern(room.min(largest))
                .into_iter()
                .map(|b| b.max(1))
                .collect();
            let guest_sizes = sizes.clone();
            let guest_set = set.clone();
            let host = config
                .run(move || {
                    let mut guard = vmw_backdoor::probe_backdoor_privileged()
                        .or_else(|_| vmw_backdoor::probe_backdoor())
                        .expect("probe under the simulator");
                    let mut chan = guard.open_enhanced_chan().expect("open a channel");
                    for len in guest_sizes {
                        let got = chan.get_guestinfo(format!("v{len}").as_bytes()).unwrap();
                        assert!(got == Some(pattern(len)), "get {len} bytes");
                    }
                    chan.set_guestinfo(b"w", &guest_set).unwrap();
                    chan.close().unwrap();
                })
                .expect("start the guest")
                .expect_success();
            // (request, reply) bytes of every RPC, in order.
            let mut rpcs: Vec<(usize, usize)> = sizes
                .iter()
                .map(|len| (format!("info-get guestinfo.v{len}").len(), 2 + len)) // "1 " + value
                .collect();
            rpcs.push((b"info-set guestinfo.w ".len() + set.len(), 2)); // "1 "
            let hb = name.starts_with("HB");
            let per_rpc = |&(request, reply): &(usize, usize)| -> u64 {
                if hb {
                    5
                } else {
                    3 + (request as u64).div_ceil(4) + (reply as u64).div_ceil(4)
                }
            };
            // The knock, OPEN (a host without cookies refuses the cookie OPEN first, and the
            // library falls back to a plain one: two calls) and CLOSE.
            let around = if name.ends_with("no cookies") { 4 } else { 3 };
            let expected: u64 = around + rpcs.iter().map(per_rpc).sum::<u64>();
            let counters = host.counters();
            assert_eq!(counters.rpcs, rpcs.len() as u64, "{name}");
            assert_eq!(
                counters.backdoor_calls(),
                expected,
                "{name}: the knock, OPEN, CLOSE ({around}) and per RPC {:?}",
                rpcs.iter().map(per_rpc).collect::<Vec<_>>()
            );
            assert_eq!(host.open_channels(), 0, "{name}");
            assert_eq!(
                host.guestinfo().get(&b"guestinfo.w"[..]),
                Some(&set),
                "{name}"
            );
            println!(
                "{name}: {} RPCs (values of {:?} bytes, a {}-byte set), {} backdoor calls: \
                 per RPC {:?}",
                rpcs.len(),
                sizes,
                set.len(),
                counters.backdoor_calls(),
                rpcs.iter().map(per_rpc).collect::<Vec<_>>()
            );
        }
    }
}
