//! Peer guest program built on the published `vmw_backdoor` 0.2.4.
//!
//! It exists to check that the simulator serves an unmodified third-party
//! implementation, and to time that implementation side by side with ours.
//! Run `vmw024-peer help` for the commands.

use std::hint::black_box;
use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use vmw_backdoor::{BackdoorGuard, VmwError};

const USAGE: &str = "\
usage: vmw024-peer [--access auto|priv|unpriv] COMMAND
commands:
  probe                 probe_backdoor_privileged(), then probe_backdoor()
  get KEY               print the guestinfo value raw to stdout; exit 1 if missing
  log TEXT              send `log TEXT`
  report                report_agent() (tools.set.version 2147483647)
  bench get KEY N [MODE]    time N guestinfo reads
  bench log TEXT N [MODE]   time N log calls
  bench version N           time N GETVERSION knocks (probe_vmware_backdoor)
MODE is reused (one channel for all N), per-op (open and close a channel per
operation) or both (default). --access picks how the backdoor guard is taken:
priv = iopl(3) first (probe_backdoor_privileged), unpriv = no iopl
(probe_backdoor), auto (default) = priv, falling back to unpriv if iopl fails.
Exit status: 0 ok, 1 key missing, 2 backdoor or usage error.";

/// How to take the backdoor guard.
#[derive(Clone, Copy)]
enum Access {
    Auto,
    Privileged,
    Unprivileged,
}

/// Whether a bench keeps one channel or opens one per operation.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Reused,
    PerOp,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Reused => "reused",
            Mode::PerOp => "per-op",
        }
    }
}

/// A failure to report on stderr with its exit status.
struct Failure {
    status: u8,
    message: String,
}

impl From<VmwError> for Failure {
    fn from(e: VmwError) -> Self {
        Failure {
            status: 2,
            message: e.to_string(),
        }
    }
}

fn usage_error(message: impl Into<String>) -> Failure {
    Failure {
        status: 2,
        message: format!("{}\n{USAGE}", message.into()),
    }
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let access = match take_access(&mut args) {
        Ok(a) => a,
        Err(f) => return report(f),
    };
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    match run(access, &argv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => report(f),
    }
}

fn report(f: Failure) -> ExitCode {
    eprintln!("vmw024-peer: {}", f.message);
    ExitCode::from(f.status)
}

/// Removes a leading `--access X` from `args`.
fn take_access(args: &mut Vec<String>) -> Result<Access, Failure> {
    if args.first().map(String::as_str) != Some("--access") {
        return Ok(Access::Auto);
    }
    let value = args.get(1).cloned().unwrap_or_default();
    args.drain(..2.min(args.len()));
    match value.as_str() {
        "auto" => Ok(Access::Auto),
        "priv" => Ok(Access::Privileged),
        "unpriv" => Ok(Access::Unprivileged),
        other => Err(usage_error(format!("bad --access value {other:?}"))),
    }
}

fn run(access: Access, argv: &[&str]) -> Result<(), Failure> {
    match argv {
        ["probe"] => probe(),
        ["get", key] => get(access, key),
        ["log", text] => {
            let mut guard = take_guard(access)?;
            guard.open_enhanced_chan()?.log(text)?;
            Ok(())
        }
        ["report"] => {
            let mut guard = take_guard(access)?;
            guard.open_enhanced_chan()?.report_agent()?;
            Ok(())
        }
        ["bench", "get", key, n, rest @ ..] => {
            bench_rpc(access, Op::Get(key), parse_n(n)?, parse_modes(rest)?)
        }
        ["bench", "log", text, n, rest @ ..] => {
            bench_rpc(access, Op::Log(text), parse_n(n)?, parse_modes(rest)?)
        }
        ["bench", "version", n] => bench_version(access, parse_n(n)?),
        ["help"] | ["--help"] | ["-h"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(usage_error("bad arguments")),
    }
}

fn parse_n(n: &str) -> Result<u64, Failure> {
    n.parse()
        .map_err(|_| usage_error(format!("N must be a count, got {n:?}")))
}

fn parse_modes(rest: &[&str]) -> Result<Vec<Mode>, Failure> {
    match rest {
        [] | ["both"] => Ok(vec![Mode::Reused, Mode::PerOp]),
        ["reused"] => Ok(vec![Mode::Reused]),
        ["per-op"] => Ok(vec![Mode::PerOp]),
        _ => Err(usage_error(format!("bad MODE {rest:?}"))),
    }
}

/// The two probes the crate offers, each reported on its own line.
fn probe() -> Result<(), Failure> {
    println!("is_vmware_cpu: {}", vmw_backdoor::is_vmware_cpu());
    flush();
    match vmw_backdoor::probe_backdoor_privileged() {
        Ok(_) => println!("probe_backdoor_privileged: ok"),
        Err(e) => println!("probe_backdoor_privileged: error: {e}"),
    }
    // The unprivileged probe runs `in` at ring 3: outside VMware (and outside
    // the simulator) it dies here with SIGSEGV, so flush what we have first.
    flush();
    match vmw_backdoor::probe_backdoor() {
        Ok(_) => println!("probe_backdoor: ok"),
        Err(e) => println!("probe_backdoor: error: {e}"),
    }
    Ok(())
}

fn flush() {
    let _ = std::io::stdout().flush();
}

/// Takes the guard as `--access` says, probing with GETVERSION.
fn take_guard(access: Access) -> Result<BackdoorGuard, Failure> {
    match access {
        Access::Privileged => Ok(vmw_backdoor::probe_backdoor_privileged()?),
        Access::Unprivileged => Ok(vmw_backdoor::probe_backdoor()?),
        Access::Auto => match vmw_backdoor::access_backdoor_privileged() {
            Ok(mut guard) => {
                guard.probe_vmware_backdoor()?;
                Ok(guard)
            }
            Err(e) => {
                eprintln!("vmw024-peer: {e}; trying without I/O privilege");
                Ok(vmw_backdoor::probe_backdoor()?)
            }
        },
    }
}

fn get(access: Access, key: &str) -> Result<(), Failure> {
    let mut guard = take_guard(access)?;
    let value = guard.open_enhanced_chan()?.get_guestinfo(key.as_bytes())?;
    match value {
        Some(v) => {
            let mut out = std::io::stdout().lock();
            out.write_all(&v)
                .and_then(|()| out.flush())
                .map_err(|e| Failure {
                    status: 2,
                    message: format!("writing stdout: {e}"),
                })
        }
        None => Err(Failure {
            status: 1,
            message: format!("no value for {key}"),
        }),
    }
}

/// One RPC the bench repeats.
#[derive(Clone, Copy)]
enum Op<'a> {
    Get(&'a str),
    Log(&'a str),
}

impl Op<'_> {
    fn name(self) -> &'static str {
        match self {
            Op::Get(_) => "get",
            Op::Log(_) => "log",
        }
    }

    /// Runs once on `chan`; returns the payload size: the value for get, the text for log.
    fn call(self, chan: &mut vmw_backdoor::EnhancedChan) -> Result<usize, Failure> {
        match self {
            Op::Get(key) => match chan.get_guestinfo(key.as_bytes())? {
                Some(v) => Ok(black_box(v).len()),
                None => Err(Failure {
                    status: 1,
                    message: format!("no value for {key}"),
                }),
            },
            Op::Log(text) => {
                chan.log(text)?;
                Ok(text.len())
            }
        }
    }
}

/// Times `n` runs of `op` per mode, after one untimed run that checks it works.
///
/// Backdoor calls per operation are (stats with N) − (stats with N = 0), / N:
/// the guard probe and the check run happen in both.
fn bench_rpc(access: Access, op: Op, n: u64, modes: Vec<Mode>) -> Result<(), Failure> {
    let mut guard = take_guard(access)?;
    let size = op.call(&mut guard.open_enhanced_chan()?)?;
    for mode in modes {
        let start = Instant::now();
        match mode {
            Mode::Reused => {
                let mut chan = guard.open_enhanced_chan()?;
                for _ in 0..n {
                    op.call(&mut chan)?;
                }
                // Close inside the timed region: the per-op mode pays for it too.
                chan.close().map_err(|_| Failure {
                    status: 2,
                    message: "closing the channel failed".into(),
                })?;
            }
            Mode::PerOp => {
                for _ in 0..n {
                    op.call(&mut guard.open_enhanced_chan()?)?;
                }
            }
        }
        print_line(op.name(), size, mode.name(), n, start.elapsed().as_nanos());
    }
    Ok(())
}

/// Times `n` GETVERSION knocks on one guard (no channel involved).
fn bench_version(access: Access, n: u64) -> Result<(), Failure> {
    let mut guard = take_guard(access)?;
    let start = Instant::now();
    for _ in 0..n {
        guard.probe_vmware_backdoor()?;
    }
    print_line("version", 0, "lb", n, start.elapsed().as_nanos());
    Ok(())
}

fn print_line(op: &str, size: usize, mode: &str, n: u64, total_ns: u128) {
    let per_op = if n == 0 { 0 } else { total_ns / u128::from(n) };
    println!(
        "peer=vmw024 op={op} size={size} mode={mode} n={n} total_ns={total_ns} per_op_ns={per_op}"
    );
}
