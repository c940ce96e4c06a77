//! Starting a guest under the runner: fork, prepare the child, attach, serve, collect the
//! outcome.
//!
//! The child installs the seccomp filter, then blocks on a pipe until the parent has seized
//! it with ptrace, so not one guest instruction runs untraced. `PTRACE_SEIZE` (rather than
//! `PTRACE_TRACEME`) is what lets group-stops work: a guest stopped by SIGSTOP stays stopped
//! until SIGCONT, as it would without the runner. The child reports a panic message or an
//! `exec` failure through a second pipe, read once every tracee is gone.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::panic::{self, AssertUnwindSafe};
use std::process::Command;
use std::sync::Mutex;

use super::sys::{self, exit_now, Forked};
use super::{cpuid, seccomp, Tracer};
use crate::sim::{GuestExit, Host, HostConfig, IoplPolicy, SimRun};

/// The longest panic message carried back (well under a pipe's buffer, so the child's write
/// never blocks).
const MAX_REPORT: usize = 4096;
/// Exit code of a guest closure that panicked.
pub(crate) const PANIC_EXIT: i32 = 101;
/// Exit code of a child whose set-up or `exec` failed.
const SETUP_EXIT: i32 = 127;

// Report tags: what the child writes before it exits abnormally.
const TAG_PANIC: u8 = b'P';
const TAG_EXEC: u8 = b'X';
const TAG_SETUP: u8 = b'S';

/// What the forked child runs once it is traced.
pub(crate) enum Guest<'a> {
    /// A closure of the calling program.
    Closure(Box<dyn FnOnce() + 'a>),
    /// A program to `exec`.
    Command(&'a mut Command),
}

/// The runner's side of a [`HostConfig`]: the guest's kernel and CPU, and the caller's
/// signals.
pub(crate) struct Settings {
    pub(crate) iopl: IoplPolicy,
    pub(crate) vmware_cpuid: bool,
    pub(crate) forward_signals: bool,
    /// Whether the host offers vsock.
    pub(crate) vsock: bool,
}

impl Settings {
    pub(crate) fn of(config: &HostConfig) -> Settings {
        Settings {
            iopl: config.iopl,
            vmware_cpuid: config.vmware_cpuid,
            forward_signals: config.forward_signals,
            vsock: config.vsock_offered(),
        }
    }
}

/// The names a run's vsock sockets get (x86_64; nothing to name elsewhere).
#[cfg(target_arch = "x86_64")]
pub(crate) type VsockNames = super::vsock::Names;
#[cfg(not(target_arch = "x86_64"))]
pub(crate) type VsockNames = ();

/// The vsock endpoint of a run, stopped when this goes out of scope however the run ends,
/// so that the scope's threads can be joined.
#[cfg(target_arch = "x86_64")]
struct StopOnDrop<'e>(&'e super::vsock::endpoint::Endpoint);

#[cfg(target_arch = "x86_64")]
impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// Runs `guest` in a traced child served by `host`; returns once the child and every
/// process and thread it created are gone (or only stopped ones remain).
pub(crate) fn run(host: Host, settings: Settings, guest: Guest<'_>) -> io::Result<SimRun> {
    let Settings {
        iopl: policy,
        vmware_cpuid,
        forward_signals,
        vsock,
    } = settings;
    // Only CPUID faulting lets the runner show the CPUID the machine has; say so when it
    // cannot, instead of showing the real CPUID without a word.
    if vmware_cpuid && !host.shows_vmware_cpuid() {
        log::warn!(
            "a VMware CPUID was asked for on a machine that is not VMware: CPUID stays real"
        );
    }
    let cpuid_faulting = cpuid::supported();
    if vmware_cpuid && host.shows_vmware_cpuid() && !cpuid_faulting {
        log::warn!(
            "this CPU or kernel cannot make CPUID fault (arch_prctl(ARCH_SET_CPUID)): the guest \
             sees the real CPUID, not VMware's"
        );
    }
    let cpuid = vmware_cpuid && host.shows_vmware_cpuid() && cpuid_faulting;
    // The vsock filter is built and the host's end listening before the fork: the child
    // only installs the one and closes the other.
    #[cfg(target_arch = "x86_64")]
    let vsock_filter = super::vsock::filter::program(vsock);
    #[cfg(target_arch = "x86_64")]
    let endpoint = if vsock {
        let names = super::vsock::Names::new();
        Some(super::vsock::endpoint::Endpoint::bind(names).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot start the vsock endpoint: {e}"))
        })?)
    } else {
        None
    };
    #[cfg(not(target_arch = "x86_64"))]
    if vsock {
        log::warn!("vsock is not served on this architecture: the guest's vsock calls reach this machine's kernel");
    }
    let (go_read, go_write) = sys::pipe(false)?;
    let (report_read, report_write) = sys::pipe(true)?;
    // The child only makes raw system calls (no allocation, no locks) until it runs the
    // guest; the guest (the closure, or `Command::exec`) then runs in a copy of this
    // process, which is the documented contract of `HostConfig::run`.
    let pid = match sys::fork()? {
        Forked::Child => {
            drop(go_write);
            drop(report_read);
            #[cfg(target_arch = "x86_64")]
            {
                drop(endpoint);
                child(go_read, report_write, cpuid, Some(vsock_filter), guest);
            }
            #[cfg(not(target_arch = "x86_64"))]
            child(go_read, report_write, cpuid, None, guest);
        }
        Forked::Parent(pid) => pid,
    };
    drop(go_read);
    drop(report_write);
    let mut report_read = File::from(report_read);

    if let Err(e) = sys::seize(pid) {
        sys::kill_and_reap(pid);
        return Err(read_report(&mut report_read).map_or(e, |r| r.into_error()));
    }
    let forwarding = if forward_signals {
        match sys::forward_signals(pid) {
            Ok(f) => Some(f),
            Err(e) => {
                sys::kill_and_reap(pid);
                return Err(e);
            }
        }
    } else {
        None
    };
    let host = Mutex::new(host);
    let traced = std::thread::scope(|scope| {
        #[cfg(target_arch = "x86_64")]
        let (_stop, names) = match &endpoint {
            Some(ep) => {
                let accepting = std::thread::Builder::new()
                    .name("vmw-sim-vsock-accept".into())
                    .spawn_scoped(scope, || ep.accept_loop(scope, &host));
                if let Err(e) = accepting {
                    sys::kill_and_reap(pid);
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot start the vsock endpoint: {e}"),
                    ));
                }
                (Some(StopOnDrop(ep)), Some(ep.names().clone()))
            }
            None => (None, None),
        };
        #[cfg(not(target_arch = "x86_64"))]
        let names = {
            let _ = scope; // no endpoint threads here
            None
        };
        // Let the child go; from here on it runs traced.
        // If this fails the child is already gone; the loop below collects its exit.
        let _ = File::from(go_write).write_all(b"g");
        Tracer::new(&host, policy, cpuid, pid, names).run()
    });
    let host = host
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (root, traps) = traced?;
    drop(forwarding);
    let exit = match (read_report(&mut report_read), root) {
        (Some(Report::Panic(msg)), Some(GuestExit::Exited(PANIC_EXIT))) => GuestExit::Panicked(msg),
        (
            Some(report @ (Report::Exec(_) | Report::Setup(_))),
            Some(GuestExit::Exited(SETUP_EXIT)),
        ) => return Err(report.into_error()),
        (_, Some(exit)) => exit,
        (_, None) => {
            return Err(io::Error::other(
                "the guest's exit status was never reported",
            ))
        }
    };
    Ok(SimRun { exit, host, traps })
}

/// The child side: never returns. `vsock_filter`: the second seccomp program, for the
/// vsock calls (x86_64).
fn child(
    go: OwnedFd,
    report: OwnedFd,
    cpuid: bool,
    vsock_filter: Option<&'static [libc::sock_filter]>,
    guest: Guest<'_>,
) -> ! {
    // Files only to use std's read and writev on the pipes: neither allocates.
    let mut report = File::from(report);
    if let Err(errno) = seccomp::install() {
        send(&mut report, TAG_SETUP, &errno.to_le_bytes());
        exit_now(SETUP_EXIT);
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(filter) = vsock_filter {
        if let Err(errno) = sys::seccomp_filter(filter) {
            send(&mut report, TAG_SETUP, &errno.to_le_bytes());
            exit_now(SETUP_EXIT);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = vsock_filter;
    // A program about to exec is re-armed by the tracer at its exec stop instead.
    if cpuid && matches!(guest, Guest::Closure(_)) {
        cpuid::arm_self();
    }
    // Wait until the parent has seized us; EOF means it died first: run nothing untraced.
    let mut go = File::from(go);
    let mut byte = [0u8; 1];
    let mut n = Ok(0);
    for _ in 0..100 {
        n = go.read(&mut byte);
        if !matches!(&n, Err(e) if e.kind() == io::ErrorKind::Interrupted) {
            break;
        }
    }
    if !matches!(n, Ok(1)) {
        exit_now(SETUP_EXIT);
    }
    drop(go);
    match guest {
        Guest::Closure(f) => {
            let me = std::process::id();
            let result = panic::catch_unwind(AssertUnwindSafe(f));
            // A process the guest forked that returns from `f` ends here too, silently.
            if std::process::id() != me {
                exit_now(if result.is_ok() { 0 } else { PANIC_EXIT });
            }
            let Err(payload) = result else { exit_now(0) };
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "Box<dyn Any>".to_string());
            let cut = floor_char_boundary(&msg, MAX_REPORT);
            send(
                &mut report,
                TAG_PANIC,
                msg.as_bytes().get(..cut).unwrap_or_default(),
            );
            exit_now(PANIC_EXIT);
        }
        Guest::Command(cmd) => {
            // `exec` only returns on failure.
            let err = cmd.exec();
            let errno = err.raw_os_error().unwrap_or(libc::ENOEXEC);
            send(&mut report, TAG_EXEC, &errno.to_le_bytes());
            exit_now(SETUP_EXIT);
        }
    }
}

/// Writes one tagged report (best effort: nothing to do if it fails). One `writev`, no
/// allocation: it runs in the forked child before the guest.
fn send(fd: &mut File, tag: u8, body: &[u8]) {
    let _ = fd.write_vectored(&[IoSlice::new(&[tag]), IoSlice::new(body)]);
}

/// What the child reported before exiting.
enum Report {
    Panic(String),
    Exec(i32),
    Setup(i32),
}

impl Report {
    fn into_error(self) -> io::Error {
        match self {
            Report::Exec(errno) => io::Error::from_raw_os_error(errno),
            Report::Setup(errno) => {
                let e = io::Error::from_raw_os_error(errno);
                io::Error::new(
                    e.kind(),
                    format!("installing the seccomp filter in the guest failed: {e}"),
                )
            }
            Report::Panic(msg) => io::Error::other(msg),
        }
    }
}

/// Reads the child's report, if any (the pipe is non-blocking: descendants of the guest may
/// still hold its write end, so EOF cannot be waited for).
fn read_report(fd: &mut File) -> Option<Report> {
    let mut buf = vec![0u8; MAX_REPORT + 8];
    let n = fd.read(&mut buf).ok()?;
    let body = buf.get(1..n)?;
    let errno = || Some(i32::from_le_bytes(body.get(..4)?.try_into().ok()?));
    match *buf.first()? {
        TAG_PANIC => Some(Report::Panic(String::from_utf8_lossy(body).into_owned())),
        TAG_EXEC => Some(Report::Exec(errno()?)),
        TAG_SETUP => Some(Report::Setup(errno()?)),
        _ => None,
    }
}

/// The largest index <= `max` that starts a character of `s`.
fn floor_char_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    (0..=max)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}
