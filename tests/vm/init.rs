//! `/init` of the test VMs: runs the programs of `/plan` one after another and reports each
//! one's stdout, stderr, exit status, new kernel log records and core dumps on a serial port,
//! then powers the machine off.
//!
//! Built by `harness.rs` with plain `rustc` as a static binary (no crates, no cargo), so it
//! runs in an initramfs that holds nothing else but the programs and their libraries.
//!
//! `/plan`: one case a line, tab-separated: an id, the uid to run as, then argv.
//! Report, on the port named by `vmw.results=` on the kernel command line, one record a line:
//! `@vmw ID FIELD HEX` (`out`, `err`, `kmsg`: bytes in hex, a field may take several lines,
//! to be concatenated), `@vmw ID status exit N` or `@vmw ID status signal N [core]`,
//! `@vmw ID cores N`, `@vmw ID ms N` (how long it ran), `@vmw ID file NAME HEX` for each file
//! the case left in [`OUT_DIR`], and `@vmw end` last. Hex keeps every byte exact through a
//! tty.

use std::ffi::{c_char, c_int, c_ulong, c_void, CString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};

extern "C" {
    fn mount(
        source: *const c_char,
        target: *const c_char,
        fstype: *const c_char,
        flags: c_ulong,
        data: *const c_void,
    ) -> c_int;
    fn reboot(cmd: c_int) -> c_int;
    fn setrlimit(resource: c_int, limit: *const [u64; 2]) -> c_int;
    fn ioctl(fd: c_int, request: c_ulong, ...) -> c_int;
    fn sync();
}

/// `RLIMIT_CORE`, `RB_POWER_OFF`, `TCSBRK`, `O_NONBLOCK`: the same numbers on x86 and arm64.
const RLIMIT_CORE: c_int = 4;
const RB_POWER_OFF: c_int = 0x4321_fedc;
const TCSBRK: c_ulong = 0x5409;
const O_NONBLOCK: i32 = 0o4000;
/// Core dumps land here, so that a case can be checked for them.
const CORE_DIR: &str = "/tmp/cores";
/// Files a case writes here (any user may) are reported with it, then removed.
const OUT_DIR: &str = "/tmp/out";
/// Bytes a report line carries (twice that in hex).
const CHUNK: usize = 512;

fn main() {
    if let Err(e) = run() {
        eprintln!("vm init: {e}");
    }
    // SAFETY: flushing caches and powering off take no pointers; nothing runs after this.
    unsafe {
        sync();
        reboot(RB_POWER_OFF);
    }
}

fn run() -> io::Result<()> {
    mount_fs("proc", "/proc", "proc")?;
    mount_fs("devtmpfs", "/dev", "devtmpfs")?;
    mount_fs("tmpfs", "/tmp", "tmpfs")?;
    fs::set_permissions("/tmp", fs::Permissions::from_mode(0o1777))?;
    fs::create_dir(CORE_DIR)?;
    fs::set_permissions(CORE_DIR, fs::Permissions::from_mode(0o1777))?;
    // Every program may dump core, and a dump is a file we can count.
    fs::write("/proc/sys/kernel/core_pattern", format!("{CORE_DIR}/core.%p"))?;
    fs::write("/proc/sys/fs/suid_dumpable", "1")?;
    let unlimited = [u64::MAX, u64::MAX];
    // SAFETY: setrlimit reads the two-u64 `struct rlimit` passed by pointer.
    if unsafe { setrlimit(RLIMIT_CORE, &unlimited) } != 0 {
        return Err(io::Error::last_os_error());
    }

    let cmdline = fs::read_to_string("/proc/cmdline")?;
    let port = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("vmw.results="))
        .ok_or_else(|| io::Error::other("no vmw.results= on the kernel command line"))?;
    let mut report = OpenOptions::new()
        .write(true)
        .open(format!("/dev/{port}"))?;
    let mut kmsg = OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open("/dev/kmsg")?;
    drain_kmsg(&mut kmsg); // boot messages are no case's

    let plan = fs::read_to_string("/plan")?;
    for line in plan.lines().filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split('\t').collect();
        let [id, uid, argv @ ..] = fields.as_slice() else {
            return Err(io::Error::other(format!("bad plan line {line:?}")));
        };
        let uid: u32 = uid.parse().map_err(io::Error::other)?;
        run_case(&mut report, &mut kmsg, id, uid, argv)?;
    }
    writeln!(report, "@vmw end")?;
    report.flush()?;
    // SAFETY: TCSBRK with a non-zero argument waits until the port has sent its output.
    unsafe { ioctl(report.as_raw_fd(), TCSBRK, 1 as c_int) };
    Ok(())
}

fn run_case(
    report: &mut File,
    kmsg: &mut File,
    id: &str,
    uid: u32,
    argv: &[&str],
) -> io::Result<()> {
    let (out_path, err_path) = ("/tmp/case.out", "/tmp/case.err");
    fs::create_dir(OUT_DIR)?;
    fs::set_permissions(OUT_DIR, fs::Permissions::from_mode(0o1777))?;
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::other(format!("case {id} has no program")))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", "/bin")
        .current_dir("/tmp")
        .stdin(Stdio::null())
        .stdout(File::create(out_path)?)
        .stderr(File::create(err_path)?);
    if uid != 0 {
        cmd.uid(uid).gid(uid); // std drops the supplementary groups too
    }
    let started = std::time::Instant::now();
    let status = match cmd.status() {
        Ok(s) => s,
        Err(e) => {
            record(report, id, "err", format!("vm init: cannot run: {e}").as_bytes())?;
            writeln!(report, "@vmw {id} status exit 127")?;
            return Ok(());
        }
    };
    record(report, id, "out", &fs::read(out_path)?)?;
    record(report, id, "err", &fs::read(err_path)?)?;
    record(report, id, "kmsg", &drain_kmsg(kmsg))?;
    let status = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(sig)) if status.core_dumped() => format!("signal {sig} core"),
        (None, Some(sig)) => format!("signal {sig}"),
        (None, None) => "unknown".to_owned(),
    };
    writeln!(report, "@vmw {id} status {status}")?;
    let mut cores = 0;
    for entry in fs::read_dir(CORE_DIR)? {
        fs::remove_file(entry?.path())?;
        cores += 1;
    }
    writeln!(report, "@vmw {id} cores {cores}")?;
    writeln!(report, "@vmw {id} ms {}", started.elapsed().as_millis())?;
    let mut files: Vec<_> = fs::read_dir(OUT_DIR)?.collect::<Result<_, _>>()?;
    files.sort_by_key(|e| e.file_name());
    for entry in files {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.contains(char::is_whitespace) {
            let bytes = fs::read(entry.path())?;
            if bytes.is_empty() {
                writeln!(report, "@vmw {id} file {name} ")?; // present, empty
            }
            record(report, id, &format!("file {name}"), &bytes)?;
        }
    }
    fs::remove_dir_all(OUT_DIR)?;
    Ok(())
}

/// Every kernel log record written since the last call, one a line.
fn drain_kmsg(kmsg: &mut File) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match kmsg.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            // EPIPE: records were overwritten before we read them; go on with the rest.
            Err(e) if e.raw_os_error() == Some(32) => continue,
            Err(_) => break, // EAGAIN: nothing more
        }
    }
    all
}

fn record(report: &mut File, id: &str, field: &str, bytes: &[u8]) -> io::Result<()> {
    for chunk in bytes.chunks(CHUNK) {
        let hex: String = chunk.iter().map(|b| format!("{b:02x}")).collect();
        writeln!(report, "@vmw {id} {field} {hex}")?;
    }
    Ok(())
}

fn mount_fs(source: &str, target: &str, fstype: &str) -> io::Result<()> {
    let _ = fs::create_dir(target);
    let c = |s: &str| CString::new(s).expect("no NUL in a literal");
    let (source, target_c, fstype) = (c(source), c(target), c(fstype));
    // SAFETY: three NUL-terminated strings that outlive the call, no flags, no data.
    let rc = unsafe {
        mount(
            source.as_ptr(),
            target_c.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("mount {target}: {e}")));
    }
    Ok(())
}
