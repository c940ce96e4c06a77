//! Boots real Linux kernels under QEMU and runs programs of this machine inside them.
//!
//! One boot runs a list of [`Case`]s: the programs (with the shared libraries `ldd` names)
//! go into an initramfs beside a static `/init` of our own (`init.rs`), which runs each case
//! and reports its stdout, stderr, exit status, kernel log records and core dumps, byte for
//! byte, over a second serial port; then it powers the machine off. Kernels come from
//! `setup.sh`, which unpacks Debian's kernel packages into [`cache_dir`].
//!
//! Two instruction sets: x86_64 guests on QEMU's `pc` machine (`qemu-system-x86_64`), and
//! arm64 guests on QEMU's `virt` machine with `-cpu max` (`qemu-system-aarch64` 10 or later,
//! which `setup.sh` unpacks from bookworm-backports when the machine's is older: QEMU 7.2
//! does not trap an EL0 `mrs xzr, mdccsr_el0`). An arm64 case's program is a cross-built
//! one; its libraries are found with `aarch64-linux-gnu-readelf` in the cross toolchain's
//! sysroot.
//!
//! Used by `tests/kernels.rs` (the x86 matrix), `tests/kernels_arm64.rs` and `run.rs` (one
//! program by hand). Std only, so that `run.rs` builds with plain `rustc`.

#![allow(dead_code)] // each user takes what it needs

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where `setup.sh` keeps kernels and downloads, and where the built `/init` is cached.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("VMW_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/vmw-backdoor-vm"))
}

/// The instruction set of a guest: its kernels, its QEMU, its programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// Rust's name for it, also the kernels' directory in the cache.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The Rust target its programs are built for.
    pub fn target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-gnu",
            Arch::Aarch64 => "aarch64-unknown-linux-gnu",
        }
    }

    /// The serial ports: the console, then the results.
    fn serial_ports(self) -> (&'static str, &'static str) {
        match self {
            Arch::X86_64 => ("ttyS0", "ttyS1"),
            Arch::Aarch64 => ("ttyAMA0", "ttyAMA1"),
        }
    }

    /// The major version of the QEMU [`boot`] uses for it (arm64 needs 10 or later).
    pub fn qemu_major(self) -> io::Result<u32> {
        let (binary, _) = self.qemu();
        let out = Command::new(&binary)
            .arg("--version")
            .output()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", binary.display())))?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .skip_while(|w| *w != "version")
            .nth(1)
            .and_then(|v| v.split('.').next()?.parse().ok())
            .ok_or_else(|| {
                io::Error::other(format!("{}: no version in {text:?}", binary.display()))
            })
    }

    /// The QEMU to boot it with, and its data directory when it is not the system's.
    fn qemu(self) -> (PathBuf, Option<PathBuf>) {
        match self {
            Arch::X86_64 => ("qemu-system-x86_64".into(), None),
            Arch::Aarch64 => {
                let unpacked = cache_dir().join("qemu-aarch64");
                let binary = unpacked.join("usr/bin/qemu-system-aarch64");
                if binary.is_file() {
                    (binary, Some(unpacked.join("usr/share/qemu")))
                } else {
                    ("qemu-system-aarch64".into(), None)
                }
            }
        }
    }
}

/// A kernel image that `setup.sh` unpacked.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub arch: Arch,
    /// The upstream version, e.g. `5.10.223`.
    pub version: String,
    /// What it came from (package, Debian version, suite).
    pub package: String,
    pub image: PathBuf,
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Linux {}", self.version)
    }
}

/// The unpacked x86_64 kernels, oldest first.
pub fn kernels() -> Vec<Kernel> {
    kernels_for(Arch::X86_64)
}

/// The unpacked kernels of `arch`, oldest first.
pub fn kernels_for(arch: Arch) -> Vec<Kernel> {
    let dir = cache_dir().join(arch.name());
    let mut found: Vec<Kernel> = fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let image = entry.path().join("vmlinuz");
            let package = fs::read_to_string(entry.path().join("package")).ok()?;
            image.is_file().then(|| Kernel {
                arch,
                version: entry.file_name().to_string_lossy().into_owned(),
                package: package.trim().to_owned(),
                image,
            })
        })
        .collect();
    found.sort_by_key(|k| version_key(&k.version));
    found
}

fn version_key(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// The machine QEMU emulates around the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Machine {
    /// `-machine pc,vmport=on`: QEMU's `vmport`, a partial VMware backdoor (GETVERSION and a
    /// few more commands, no message channel).
    Vmport,
    /// `vmport` with `x-signal-unsupported-cmd=off`: commands it does not know leave every
    /// register as it was.
    SilentVmport,
    /// `-machine pc,vmport=off`: nothing on the backdoor port, as on bare metal.
    Bare,
    /// arm64: `-machine virt -cpu max`, nothing behind the backdoor trap (the guest's own
    /// kernel takes the `mrs xzr, mdccsr_el0` and raises SIGILL).
    Virt,
}

impl Machine {
    pub const ALL: [Machine; 4] = [
        Machine::Vmport,
        Machine::SilentVmport,
        Machine::Bare,
        Machine::Virt,
    ];

    /// The instruction set this machine runs.
    pub fn arch(self) -> Arch {
        match self {
            Machine::Virt => Arch::Aarch64,
            _ => Arch::X86_64,
        }
    }

    fn qemu_args(self) -> &'static [&'static str] {
        match self {
            Machine::Vmport => &["-machine", "pc,vmport=on"],
            Machine::SilentVmport => &[
                "-machine",
                "pc,vmport=on",
                "-global",
                "vmport.x-signal-unsupported-cmd=off",
            ],
            Machine::Bare => &["-machine", "pc,vmport=off"],
            Machine::Virt => &["-machine", "virt", "-cpu", "max"],
        }
    }

    /// The name `run.rs` takes.
    pub fn name(self) -> &'static str {
        match self {
            Machine::Vmport => "vmport",
            Machine::SilentVmport => "silent",
            Machine::Bare => "bare",
            Machine::Virt => "virt",
        }
    }

    pub fn from_name(name: &str) -> Option<Machine> {
        Machine::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// The BIOS UUID every test VM gets, so that what GETBIOSUUID answers can be checked.
pub const VM_UUID: &str = "564d6f0e-2b1c-4f3a-9d8e-7c6b5a493827";

/// A uid with no privilege and no capabilities inside the VM.
pub const NOBODY: u32 = 65534;

/// One program run inside the VM.
#[derive(Debug, Clone)]
pub struct Case {
    /// Unique within a boot; letters, digits, `-`, `_`, `.`.
    pub id: String,
    /// 0 (root, with every capability) or e.g. [`NOBODY`].
    pub uid: u32,
    /// A program of this machine (copied into the VM as `/bin/<file name>`).
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Seconds this case may take, when more than the default 60.
    pub timeout: Option<u64>,
}

/// How a program ended inside the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Exited(i32),
    Signaled { signal: i32, core_dumped: bool },
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Exited(code) => write!(f, "exit status {code}"),
            Status::Signaled {
                signal,
                core_dumped,
            } => write!(
                f,
                "killed by signal {signal}{}",
                if *core_dumped { " (core dumped)" } else { "" }
            ),
        }
    }
}

/// What one case did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: Status,
    /// Kernel log records written while the case ran, one message each.
    pub kmsg: Vec<String>,
    /// Core files the case left.
    pub cores: u32,
    /// How long it ran (inside the VM).
    pub took: Duration,
    /// The files it left in the VM's `/tmp/out`, by name (`vmw-sim --stats /tmp/out/s`).
    pub files: BTreeMap<String, Vec<u8>>,
}

impl Outcome {
    /// Kernel log lines that report a user-space fault, a core dump or an abnormal end.
    pub fn fault_lines(&self) -> Vec<&str> {
        const MARKS: [&str; 8] = [
            "traps:",
            "segfault at",
            "general protection",
            "invalid opcode",
            "undefined instruction",
            "unhandled exception", // arm64's line for a fatal fault signal
            "type=1701",           // audit ANOM_ABEND
            "core dump",
        ];
        self.kmsg
            .iter()
            .map(String::as_str)
            .filter(|m| MARKS.iter().any(|mark| m.contains(mark)))
            .collect()
    }
}

/// One boot's results, by case id.
#[derive(Debug)]
pub struct Boot {
    pub outcomes: BTreeMap<String, Outcome>,
    /// The kernel console, for diagnosis.
    pub console: String,
    pub took: Duration,
}

/// Boots `kernel` on `machine`, runs `cases` in order and powers off.
pub fn boot(kernel: &Kernel, machine: Machine, cases: &[Case]) -> io::Result<Boot> {
    boot_with(kernel, machine, cases, &[])
}

/// As [`boot`], with `programs` in `/bin` too (with their libraries), for the cases to run
/// (`vmw-sim` running a guest program, say).
pub fn boot_with(
    kernel: &Kernel,
    machine: Machine,
    cases: &[Case],
    programs: &[PathBuf],
) -> io::Result<Boot> {
    let work = tempdir()?;
    let result = boot_in(&work, kernel, machine, cases, programs);
    let _ = fs::remove_dir_all(&work);
    result
}

fn boot_in(
    work: &Path,
    kernel: &Kernel,
    machine: Machine,
    cases: &[Case],
    extra: &[PathBuf],
) -> io::Result<Boot> {
    let arch = kernel.arch;
    if machine.arch() != arch {
        return Err(io::Error::other(format!(
            "{machine:?} runs {} kernels, not {kernel} ({})",
            machine.arch().name(),
            arch.name()
        )));
    }
    let initrd = work.join("initrd.cpio");
    write_initramfs(&initrd, arch, cases, extra)?;
    let (console, results) = (work.join("console.log"), work.join("results.log"));
    let (qemu_binary, qemu_data) = arch.qemu();
    let (console_port, results_port) = arch.serial_ports();
    // arm64: more memory, for the 1 MiB values the channel tests move (several copies live
    // at once in the traced guest and the runner).
    let memory = if arch == Arch::Aarch64 { "1024" } else { "512" };
    let start = Instant::now();
    let mut qemu = Command::new(&qemu_binary);
    if let Some(data) = &qemu_data {
        qemu.arg("-L").arg(data);
    }
    qemu.args(["-accel", "tcg", "-m", memory, "-smp", "1", "-nodefaults"])
        .args(["-display", "none", "-no-reboot", "-uuid", VM_UUID])
        .args(machine.qemu_args())
        .arg("-kernel")
        .arg(&kernel.image)
        .arg("-initrd")
        .arg(&initrd)
        .arg("-append")
        .arg(format!(
            "console={console_port} vmw.results={results_port} panic=-1 loglevel=4 audit=1"
        ))
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-serial")
        .arg(format!("file:{}", results.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let qemu_name = qemu_binary.display().to_string();
    let mut child = qemu
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("{qemu_name}: {e}")))?;
    let deadline = boot_timeout(arch, cases);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(format!(
                "{kernel} on {machine:?} did not power off within {deadline:?}; console:\n{}",
                tail(&fs::read_to_string(&console).unwrap_or_default(), 40)
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = start.elapsed();
    let console = String::from_utf8_lossy(&fs::read(&console).unwrap_or_default()).into_owned();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = io::Read::read_to_string(&mut e, &mut stderr);
    }
    if !status.success() {
        return Err(io::Error::other(format!(
            "{qemu_name} failed ({status}): {stderr}\nconsole:\n{}",
            tail(&console, 40)
        )));
    }
    let outcomes = parse_report(&fs::read(&results)?).map_err(|e| {
        io::Error::other(format!("{e}; console of {kernel}:\n{}", tail(&console, 40)))
    })?;
    let missing: Vec<&str> = cases
        .iter()
        .map(|c| c.id.as_str())
        .filter(|id| !outcomes.contains_key(*id))
        .collect();
    if !missing.is_empty() {
        return Err(io::Error::other(format!(
            "no report for {missing:?}; console:\n{}",
            tail(&console, 40)
        )));
    }
    Ok(Boot {
        outcomes,
        console,
        took,
    })
}

/// TCG is slow and CI machines are shared: a minute to boot, and a minute a case (a case
/// may ask for more).
fn boot_timeout(arch: Arch, cases: &[Case]) -> Duration {
    // A ceiling, not an estimate: a case may be a whole test suite under TCG.
    let per_case: u64 = cases.iter().map(|c| c.timeout.unwrap_or(60)).sum();
    // Emulating arm64 on x86 costs more than x86 on x86.
    let slow = if arch == Arch::Aarch64 { 2 } else { 1 };
    Duration::from_secs(60 + slow * per_case)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn parse_report(report: &[u8]) -> Result<BTreeMap<String, Outcome>, String> {
    #[derive(Default)]
    struct Partial {
        out: Vec<u8>,
        err: Vec<u8>,
        kmsg: Vec<u8>,
        status: Option<Status>,
        cores: Option<u32>,
        ms: u64,
        files: BTreeMap<String, Vec<u8>>,
    }
    let text = String::from_utf8_lossy(report);
    let mut partial: BTreeMap<String, Partial> = BTreeMap::new();
    let mut ended = false;
    for line in text.lines().map(|l| l.trim_end_matches('\r')) {
        let Some(rest) = line.strip_prefix("@vmw ") else {
            continue;
        };
        if rest == "end" {
            ended = true;
            continue;
        }
        let mut words = rest.splitn(3, ' ');
        let (Some(id), Some(field), Some(value)) = (words.next(), words.next(), words.next())
        else {
            return Err(format!("malformed report line {line:?}"));
        };
        let p = partial.entry(id.to_owned()).or_default();
        if field == "file" {
            let Some((name, hex)) = value.split_once(' ') else {
                return Err(format!("malformed report line {line:?}"));
            };
            p.files
                .entry(name.to_owned())
                .or_default()
                .extend(unhex(hex)?);
            continue;
        }
        match field {
            "out" => p.out.extend(unhex(value)?),
            "err" => p.err.extend(unhex(value)?),
            "kmsg" => p.kmsg.extend(unhex(value)?),
            "status" => p.status = Some(parse_status(value)?),
            "cores" => p.cores = Some(value.parse().map_err(|e| format!("{line:?}: {e}"))?),
            "ms" => p.ms = value.parse().map_err(|e| format!("{line:?}: {e}"))?,
            _ => return Err(format!("unknown report field in {line:?}")),
        }
    }
    if !ended {
        return Err("the VM's report ended early (no `@vmw end`)".to_owned());
    }
    partial
        .into_iter()
        .map(|(id, p)| {
            let status = p.status.ok_or_else(|| format!("{id}: no status"))?;
            let outcome = Outcome {
                stdout: p.out,
                stderr: p.err,
                status,
                kmsg: kmsg_messages(&p.kmsg),
                cores: p.cores.ok_or_else(|| format!("{id}: no core count"))?,
                took: Duration::from_millis(p.ms),
                files: p.files,
            };
            Ok((id, outcome))
        })
        .collect()
}

fn parse_status(value: &str) -> Result<Status, String> {
    let words: Vec<&str> = value.split(' ').collect();
    match words.as_slice() {
        ["exit", code] => code.parse().map(Status::Exited).map_err(|e| e.to_string()),
        ["signal", sig, rest @ ..] => Ok(Status::Signaled {
            signal: sig
                .parse()
                .map_err(|e: std::num::ParseIntError| e.to_string())?,
            core_dumped: rest == ["core"],
        }),
        _ => Err(format!("unknown status {value:?}")),
    }
}

/// `/dev/kmsg` records (`prio,seq,usec,flags;message`, continuation lines indented) to
/// their messages.
fn kmsg_messages(raw: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(raw)
        .lines()
        .filter(|l| !l.starts_with(' '))
        .map(|l| l.split_once(';').map_or(l, |(_, m)| m).to_owned())
        .collect()
}

fn unhex(hex: &str) -> Result<Vec<u8>, String> {
    if hex.len() % 2 != 0 {
        return Err(format!("odd hex length {}", hex.len()));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

/// The initramfs: `/init`, `/plan`, `/dev/console`, each case's program in `/bin` and the
/// libraries they load, at the paths `ldd` gives (x86_64), or in the places the arm64
/// loader searches.
fn write_initramfs(path: &Path, arch: Arch, cases: &[Case], extra: &[PathBuf]) -> io::Result<()> {
    let mut cpio = Cpio::default();
    cpio.dir("dev");
    cpio.node("dev/console", 0o020600, (5, 1));
    cpio.file("init", 0o755, &fs::read(init_binary_for(arch)?)?);
    let mut plan = String::new();
    let mut programs = BTreeSet::new();
    let mut libraries = BTreeSet::new();
    let file_name = |program: &Path| -> io::Result<String> {
        Ok(program
            .file_name()
            .ok_or_else(|| io::Error::other(format!("{}: no file name", program.display())))?
            .to_string_lossy()
            .into_owned())
    };
    let mut add = |name: String, program: &Path| -> io::Result<()> {
        if programs.insert((name, program.to_path_buf())) {
            libraries.extend(match arch {
                Arch::X86_64 => shared_libraries(program)?
                    .into_iter()
                    .map(|lib| (lib.clone(), lib))
                    .collect(),
                Arch::Aarch64 => cross_libraries(program)?,
            });
        }
        Ok(())
    };
    for program in extra {
        add(file_name(program)?, program)?;
    }
    for case in cases {
        let name = file_name(&case.program)?;
        let fields = std::iter::once(&case.id).chain(&case.args);
        if fields.clone().any(|f| f.contains(['\t', '\n'])) || case.id.contains(' ') {
            return Err(io::Error::other(format!(
                "case {:?}: no tabs or newlines in ids and arguments",
                case.id
            )));
        }
        plan.push_str(&format!("{}\t{}\t/bin/{name}", case.id, case.uid));
        for arg in &case.args {
            plan.push('\t');
            plan.push_str(arg);
        }
        plan.push('\n');
        add(name, &case.program)?;
    }
    cpio.file("plan", 0o644, plan.as_bytes());
    cpio.dir("bin");
    for (name, program) in &programs {
        cpio.file(&format!("bin/{name}"), 0o755, &fs::read(program)?);
    }
    for (inside, lib) in &libraries {
        let inside = inside.to_string_lossy().trim_start_matches('/').to_owned();
        cpio.file(&inside, 0o755, &fs::read(lib)?); // fs::read follows symlinks
    }
    fs::write(path, cpio.finish())
}

/// The arm64 sysroot of Debian's cross toolchain (`libc6-arm64-cross`), and the directories
/// of arm64 packages `setup.sh` unpacked (`$VMW_VM_CACHE/aarch64-libs`).
fn cross_library_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("/usr/aarch64-linux-gnu/lib")];
    let unpacked = cache_dir().join("aarch64-libs");
    for sub in ["lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu"] {
        dirs.push(unpacked.join(sub));
    }
    dirs
}

/// An arm64 program's loader and libraries, transitively (`aarch64-linux-gnu-readelf`):
/// (path inside the VM, file here). The loader goes where its `PT_INTERP` says, libraries
/// to `/lib/aarch64-linux-gnu`, the first directory the loader searches.
fn cross_libraries(program: &Path) -> io::Result<Vec<(PathBuf, PathBuf)>> {
    let dirs = cross_library_dirs();
    let find = |name: &str| {
        dirs.iter()
            .map(|d| d.join(name))
            .find(|p| p.exists())
            .ok_or_else(|| {
                io::Error::other(format!(
                    "{}: needs {name}, found in none of {dirs:?}",
                    program.display()
                ))
            })
    };
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut todo = vec![program.to_path_buf()];
    while let Some(file) = todo.pop() {
        let (interp, needed) = elf_dynamic(&file)?;
        if let Some(interp) = interp {
            if seen.insert(interp.clone()) {
                let name = Path::new(&interp).file_name().map(|n| n.to_owned());
                let name = name.ok_or_else(|| io::Error::other(format!("interpreter {interp}")))?;
                out.push((PathBuf::from(&interp), find(&name.to_string_lossy())?));
            }
        }
        for name in needed {
            if seen.insert(name.clone()) {
                let here = find(&name)?;
                out.push((
                    Path::new("/lib/aarch64-linux-gnu").join(&name),
                    here.clone(),
                ));
                todo.push(here);
            }
        }
    }
    Ok(out)
}

/// `PT_INTERP` and the `DT_NEEDED` names of an ELF file, as `readelf` shows them (a static
/// program has neither).
fn elf_dynamic(file: &Path) -> io::Result<(Option<String>, Vec<String>)> {
    let out = Command::new("aarch64-linux-gnu-readelf")
        .args(["--wide", "--program-headers", "--dynamic"])
        .arg(file)
        .output()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "aarch64-linux-gnu-readelf (apt-get install binutils-aarch64-linux-gnu): {e}"
                ),
            )
        })?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "readelf {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let between = |line: &str, open: &str| {
        let rest = line.split_once(open)?.1;
        Some(rest.split_once(']')?.0.trim().to_owned())
    };
    let interp = text
        .lines()
        .find_map(|l| between(l, "[Requesting program interpreter:"));
    let needed = text
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| between(l, "Shared library: ["))
        .collect();
    Ok((interp, needed))
}

/// The libraries `ldd` says `program` loads, the dynamic loader among them.
fn shared_libraries(program: &Path) -> io::Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(program).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // A static program: ldd says so and fails.
        return if text.contains("not a dynamic executable")
            || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
        {
            Ok(Vec::new())
        } else {
            Err(io::Error::other(format!(
                "ldd {}: {text}",
                program.display()
            )))
        };
    }
    Ok(text
        .lines()
        .filter_map(|l| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
            // "/lib64/ld-linux-x86-64.so.2 (0x...)"; "linux-vdso.so.1 (0x...)" has no file.
            let path = l.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// The static x86_64 `/init`.
pub fn init_binary() -> io::Result<PathBuf> {
    init_binary_for(Arch::X86_64)
}

/// The static `/init` for `arch`, built from `init.rs` with `rustc` (for arm64 with the
/// `aarch64-unknown-linux-gnu` target and Debian's cross linker) and kept in the cache by
/// the hash of its source.
pub fn init_binary_for(arch: Arch) -> io::Result<PathBuf> {
    const SOURCE: &str = include_str!("init.rs");
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(SOURCE, &mut hasher);
    let hash = std::hash::Hasher::finish(&hasher);
    let dir = cache_dir().join("init");
    let binary = dir.join(format!("init-{}-{hash:016x}", arch.name()));
    if binary.is_file() {
        return Ok(binary);
    }
    fs::create_dir_all(&dir)?;
    // Per process: tests that build it at once must not rewrite a source another rustc reads.
    let source = dir.join(format!("init-{hash:016x}-{}.rs", std::process::id()));
    fs::write(&source, SOURCE)?;
    let partial = dir.join(format!(
        "init-{}-{hash:016x}.{}",
        arch.name(),
        std::process::id()
    ));
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut build = Command::new(rustc);
    build
        .args([
            "--edition",
            "2021",
            "--crate-name",
            "init",
            "-O",
            "-C",
            "target-feature=+crt-static",
        ])
        .args(["--target", arch.target(), "-o"])
        .arg(&partial)
        .arg(&source);
    if arch == Arch::Aarch64 {
        build.args(["-C", "linker=aarch64-linux-gnu-gcc"]);
    }
    let out = build.output();
    let _ = fs::remove_file(&source);
    let out = out?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "building the VM's /init: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    fs::rename(&partial, &binary)?;
    Ok(binary)
}

fn tempdir() -> io::Result<PathBuf> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("vmw-vm-{}-{n}", std::process::id()));
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A `newc` cpio archive, the format the kernel unpacks an initramfs from.
#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    inode: u32,
    dirs: BTreeSet<String>,
}

impl Cpio {
    fn dir(&mut self, path: &str) {
        if path.is_empty() || self.dirs.contains(path) {
            return;
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.dirs.insert(path.to_owned());
        self.entry(path, 0o040755, (0, 0), &[]);
    }

    fn file(&mut self, path: &str, perm: u32, data: &[u8]) {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.entry(path, 0o100000 | perm, (0, 0), data);
    }

    fn node(&mut self, path: &str, mode: u32, rdev: (u32, u32)) {
        self.entry(path, mode, rdev, &[]);
    }

    fn entry(&mut self, path: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.inode += 1;
        let name_len = path.len() + 1;
        let fields = [
            self.inode,
            mode,
            0, // uid
            0, // gid
            if mode & 0o040000 != 0 { 2 } else { 1 },
            0, // mtime
            data.len() as u32,
            0, // dev major
            0, // dev minor
            rdev.0,
            rdev.1,
            name_len as u32,
            0, // check
        ];
        let _ = write!(self.bytes, "070701");
        for f in fields {
            let _ = write!(self.bytes, "{f:08x}");
        }
        self.bytes.extend_from_slice(path.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.bytes.len() % 4 != 0 {
            self.bytes.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.bytes
    }
}
