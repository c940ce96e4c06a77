//! Our library against the published `vmw_backdoor` 0.2.4 and open-vm-tools' libvmtools,
//! in the same run, on the same simulator: backdoor calls per operation and time per
//! operation, for every operation, size, host (HB, LB-only) and channel mode. Printed as
//! Markdown.
//!
//! ```text
//! benches/peers/build.sh                                   # the two peer programs
//! cargo bench --features sim --bench side_by_side          # ROUNDS=5 by default
//! ```
//!
//! Method, the same for all three implementations:
//!
//! - Each is a separate guest program run with [`HostConfig::run_command`]
//!   (`vmw_backdoor::sim`) on a host configured identically: the two peer programs of
//!   `benches/peers/` (paths from `VMW024_PEER` / `OVT_PEER`, else their build locations),
//!   and this binary itself in `guest` mode for our library. All three take the same command
//!   line (`bench get KEY N MODE`, `bench set KEY VALUE N MODE`, `bench log TEXT N MODE`,
//!   `bench version N`) and run the same loop: take the backdoor, do the operation once
//!   untimed (a check), then time N operations inside the one process, with the channel
//!   opened once around the loop (`reused`, open and close inside the timed region) or
//!   opened and closed per operation (`per-op`); they print the total and per-operation
//!   nanoseconds.
//! - Calls per operation: the host's counters after `bench … N` minus those after
//!   `bench … 0`, divided by N.
//! - Time: the whole table is measured ROUNDS times over (so a burst of load on the shared
//!   machine lands in one round of many rows, not in every round of one row), the three
//!   implementations taking turns within each row, starting with a different one each
//!   round; the median of the per-operation times is reported, and the ratio ours / theirs
//!   of those medians.
//! - Everything runs on one CPU (`support::pin_to_one_cpu`, inherited by the guests), so a
//!   call costs the same whether or not the other CPUs are idle.
//! - The tracer (this process) pins glibc's allocation thresholds
//!   (`support::pin_malloc_thresholds`), so the simulator's own buffer allocations cost
//!   the same in every run; the guests are exec'd with the default allocator settings.
//! - N is chosen per row so a timed loop makes about 60,000 backdoor calls (at most 5,000
//!   operations, at least 1), and is the same for the three.

#[cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]
#[path = "support/mod.rs"]
mod support;

#[cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("guest") {
        std::process::exit(ours::main(&args[1..]));
    }
    // `cargo test --all-targets` runs bench binaries without `--bench`: the comparison takes
    // minutes and needs the peers, so it only runs under `cargo bench`.
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("side_by_side: run it with `cargo bench --features sim --bench side_by_side`");
        return;
    }
    driver::main();
}

/// Our library behind the peers' command line.
#[cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]
mod ours {
    use std::hint::black_box;
    use std::time::Instant;

    use vmw_backdoor::{BackdoorGuard, EnhancedChan, VmwError};

    /// One RPC, as the peers' benches define them.
    enum Rpc<'a> {
        Get(&'a [u8]),
        Set(&'a [u8], &'a [u8]),
        Log(&'a str),
        /// A raw request (`bench rpc CMD`, as the libvmtools peer has it).
        Raw(&'a [u8]),
    }

    impl Rpc<'_> {
        /// Runs once; returns the payload size (the value read, written or logged).
        fn call(&self, chan: &mut EnhancedChan<'_>) -> Result<usize, String> {
            let e = |e: VmwError| e.to_string();
            match *self {
                Rpc::Get(key) => match chan.get_guestinfo(key).map_err(e)? {
                    Some(v) => Ok(black_box(v).len()),
                    None => Err("no value".to_string()),
                },
                Rpc::Set(key, value) => chan
                    .set_guestinfo(key, value)
                    .map(|()| value.len())
                    .map_err(e),
                Rpc::Log(text) => chan.log(text).map(|()| text.len()).map_err(e),
                Rpc::Raw(request) => chan.rpc(request).map(|r| black_box(r).len()).map_err(e),
            }
        }
    }

    fn close(chan: EnhancedChan<'_>) -> Result<(), String> {
        chan.close()
            .map_err(|_| "closing the channel failed".to_string())
    }

    /// `bench OP ARGS… N [MODE]`; exit status 0, or 2 with the error on stderr.
    pub fn main(args: &[String]) -> i32 {
        match run(args) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("ours: {e}");
                2
            }
        }
    }

    fn run(args: &[String]) -> Result<(), String> {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut guard = vmw_backdoor::probe_backdoor().map_err(|e| e.to_string())?;
        let count = |n: &str| n.parse::<u64>().map_err(|_| format!("bad N {n:?}"));
        match argv.as_slice() {
            ["bench", "version", n] => bench_version(&mut guard, count(n)?),
            ["bench", "get", key, n, mode] => bench_rpc(
                &mut guard,
                "get",
                &Rpc::Get(key.as_bytes()),
                count(n)?,
                mode,
            ),
            ["bench", "set", key, value, n, mode] => bench_rpc(
                &mut guard,
                "set",
                &Rpc::Set(key.as_bytes(), value.as_bytes()),
                count(n)?,
                mode,
            ),
            ["bench", "log", text, n, mode] => {
                bench_rpc(&mut guard, "log", &Rpc::Log(text), count(n)?, mode)
            }
            ["bench", "rpc", request, n, mode] => bench_rpc(
                &mut guard,
                "rpc",
                &Rpc::Raw(request.as_bytes()),
                count(n)?,
                mode,
            ),
            _ => Err(format!("bad arguments {argv:?}")),
        }
    }

    fn bench_rpc(
        guard: &mut BackdoorGuard,
        op: &str,
        rpc: &Rpc<'_>,
        n: u64,
        mode: &str,
    ) -> Result<(), String> {
        let e = |e: VmwError| e.to_string();
        // The untimed check, on its own channel.
        let mut chan = guard.open_enhanced_chan().map_err(e)?;
        let size = rpc.call(&mut chan)?;
        close(chan)?;
        let start = Instant::now();
        match mode {
            "reused" => {
                let mut chan = guard.open_enhanced_chan().map_err(e)?;
                for _ in 0..n {
                    rpc.call(&mut chan)?;
                }
                close(chan)?;
            }
            "per-op" => {
                for _ in 0..n {
                    let mut chan = guard.open_enhanced_chan().map_err(e)?;
                    rpc.call(&mut chan)?;
                    close(chan)?;
                }
            }
            other => return Err(format!("bad MODE {other:?}")),
        }
        print_line(op, size, mode, n, start.elapsed().as_nanos());
        Ok(())
    }

    fn bench_version(guard: &mut BackdoorGuard, n: u64) -> Result<(), String> {
        let start = Instant::now();
        for _ in 0..n {
            black_box(guard.get_version().map_err(|e| e.to_string())?);
        }
        print_line("version", 0, "lb", n, start.elapsed().as_nanos());
        Ok(())
    }

    fn print_line(op: &str, size: usize, mode: &str, n: u64, total_ns: u128) {
        let per_op = if n == 0 { 0 } else { total_ns / u128::from(n) };
        println!(
            "peer=ours op={op} size={size} mode={mode} n={n} total_ns={total_ns} per_op_ns={per_op}"
        );
    }
}

/// Runs the three implementations and prints the tables.
#[cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]
mod driver {
    use std::fs::{self, File};
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};

    use vmw_backdoor::sim::Counters;

    use super::support::{floor, Calls, ChanMode, HostKind, Op};

    /// How the reason of a failed run starts.
    const FAILS: &str = "fails";

    /// Backdoor calls one timed loop aims at.
    const TARGET_CALLS: u64 = 60_000;
    /// Most operations in one timed loop.
    const MAX_N: u64 = 5_000;

    /// One implementation under test.
    struct Impl {
        /// Column name.
        name: &'static str,
        /// The program and the arguments before `bench …`; `None` when it is not built.
        program: Option<(PathBuf, Vec<String>)>,
        /// Operations its API does not have at all (never run).
        lacks: fn(Op) -> Option<&'static str>,
    }

    /// What one implementation did for one row.
    enum Outcome {
        /// Not run (the API lacks the operation, or the program is not built), or the
        /// program failed: the reason.
        Cannot(String),
        /// Ran: calls per operation, the per-operation times of every round (ns).
        Ran {
            calls: Calls,
            n: u64,
            times: Vec<f64>,
        },
    }

    /// One line of a table: an operation, size, host and channel mode, for every
    /// implementation.
    struct Row {
        host: HostKind,
        op: Op,
        mode: Option<ChanMode>,
        /// Operations per timed loop, the same for every implementation.
        n: u64,
        /// Per implementation: the counters of the `bench … 0` run, and the outcome.
        cells: Vec<(Option<Counters>, Outcome)>,
    }

    pub fn main() {
        // The tracer only: the guests are exec'd and start with glibc's defaults.
        super::support::pin_malloc_thresholds();
        // Tracer and guests on one CPU (the guests inherit it): see pin_to_one_cpu.
        super::support::pin_to_one_cpu();
        let rounds: usize = std::env::var("ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(5)
            .max(1);
        let impls = implementations();
        let work = std::env::temp_dir().join(format!("vmw-side-by-side-{}", std::process::id()));
        fs::create_dir_all(&work).expect("create the work directory");

        let mut rows = Vec::new();
        for host in HostKind::ALL {
            for op in Op::all() {
                let modes: &[Option<ChanMode>] = if op.is_rpc() {
                    &[Some(ChanMode::Reused), Some(ChanMode::PerOp)]
                } else {
                    &[None]
                };
                for &mode in modes {
                    let calls = floor(op, host, mode.unwrap_or(ChanMode::Reused)).total();
                    rows.push(Row {
                        host,
                        op,
                        mode,
                        n: (TARGET_CALLS / calls).clamp(1, MAX_N),
                        cells: impls
                            .iter()
                            .map(|i| {
                                let outcome = match (&i.program, (i.lacks)(op)) {
                                    (_, Some(why)) => Outcome::Cannot(why.to_string()),
                                    (None, _) => Outcome::Cannot("not built".to_string()),
                                    (Some(_), None) => Outcome::Ran {
                                        calls: Calls::default(),
                                        n: 0,
                                        times: Vec::new(),
                                    },
                                };
                                (None, outcome)
                            })
                            .collect(),
                    });
                }
            }
        }

        // The untimed baselines (`bench … 0`) for the call counts.
        eprintln!("side_by_side: baselines");
        for row in &mut rows {
            for (i, (base, outcome)) in impls.iter().zip(&mut row.cells) {
                if let (Outcome::Ran { .. }, Some(program)) = (&*outcome, &i.program) {
                    match run_guest(program, &work, row.host, row.op, row.mode, 0) {
                        Ok((counters, _)) => *base = Some(counters),
                        Err(e) => *outcome = Outcome::Cannot(e),
                    }
                }
            }
        }
        // Timed rounds over the whole table, so a burst of load on the shared machine
        // lands in one round of many rows rather than every round of one; within a row
        // the implementations take turns, starting with a different one each round.
        for round in 0..rounds {
            eprintln!("side_by_side: round {} of {rounds}", round + 1);
            for row in &mut rows {
                for k in 0..impls.len() {
                    let idx = (k + round) % impls.len();
                    let (Some(i), Some((Some(base), outcome))) =
                        (impls.get(idx), row.cells.get_mut(idx))
                    else {
                        continue;
                    };
                    let (Outcome::Ran { calls, n, times }, Some(program)) =
                        (&mut *outcome, &i.program)
                    else {
                        continue;
                    };
                    match run_guest(program, &work, row.host, row.op, row.mode, row.n) {
                        Ok((counters, ns)) => {
                            if times.is_empty() {
                                match Calls::between(base, &counters) {
                                    Ok(c) => (*calls, *n) = (c, row.n),
                                    Err(e) => {
                                        *outcome = Outcome::Cannot(e);
                                        continue;
                                    }
                                }
                            }
                            times.push(ns);
                        }
                        Err(e) => *outcome = Outcome::Cannot(e),
                    }
                }
            }
        }
        let _ = fs::remove_dir_all(&work);
        print_tables(&impls, &rows, rounds);
    }

    /// Ours (this binary in `guest` mode) and the two peers, where built.
    fn implementations() -> [Impl; 3] {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let peer = |var: &str, default: &str| -> Option<PathBuf> {
            let path = std::env::var_os(var)
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join(default));
            path.is_file().then_some(path)
        };
        let impls = [
            Impl {
                name: "ours",
                program: std::env::current_exe()
                    .ok()
                    .map(|exe| (exe, vec!["guest".to_string()])),
                lacks: |_| None,
            },
            Impl {
                name: "0.2.4",
                program: peer(
                    "VMW024_PEER",
                    "benches/peers/vmw024/target/release/vmw024-peer",
                )
                // Unprivileged, like the other two (the simulator would grant iopl).
                .map(|p| (p, vec!["--access".into(), "unpriv".into()])),
                lacks: |op| match op {
                    Op::Set(_) => Some("no set API"),
                    _ => None,
                },
            },
            Impl {
                name: "libvmtools",
                program: peer("OVT_PEER", "benches/peers/ovt/build/ovt-peer").map(|p| (p, vec![])),
                lacks: |_| None,
            },
        ];
        for i in &impls {
            match &i.program {
                Some((p, _)) => eprintln!("side_by_side: {}: {}", i.name, p.display()),
                None => eprintln!(
                    "side_by_side: {}: not built (run benches/peers/build.sh)",
                    i.name
                ),
            }
        }
        impls
    }

    fn print_tables(impls: &[Impl], rows: &[Row], rounds: usize) {
        println!(
            "Rounds: {rounds} (median per-operation time). Calls: per operation, from the \
             simulator's counters.\n"
        );
        for host in HostKind::ALL {
            println!(
                "### {} host\n",
                match host {
                    HostKind::Hb => "HB",
                    HostKind::LbOnly => "LB-only (`no_hb()`)",
                }
            );
            println!("| operation | channel | N | calls/op: ours | 0.2.4 | libvmtools | µs/op: ours | 0.2.4 | libvmtools | ours / 0.2.4 | ours / libvmtools |");
            println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            let mut details = Vec::new();
            let mut failures: Vec<String> = Vec::new();
            for row in rows.iter().filter(|r| r.host == host) {
                let outcomes: Vec<&Outcome> = row.cells.iter().map(|(_, o)| o).collect();
                print_row(row.op, row.mode, row.n, &outcomes);
                for (i, o) in impls.iter().zip(&outcomes) {
                    match o {
                        Outcome::Cannot(why) if why.starts_with(FAILS) => {
                            let note = format!("- {}: {why}", i.name);
                            if !failures.contains(&note) {
                                failures.push(note);
                            }
                        }
                        Outcome::Cannot(_) => {}
                        Outcome::Ran { calls, n, .. } => details.push(format!(
                            "| {} | {} | {} | {} |",
                            row.op,
                            row.mode.map_or("none", ChanMode::name),
                            i.name,
                            per_op_breakdown(calls, *n)
                        )),
                    }
                }
            }
            if !failures.is_empty() {
                println!("\nWhere a run failed, what the program said:\n");
                for f in &failures {
                    println!("{f}");
                }
            }
            println!("\nCalls per operation by kind ({} host):\n", host.name());
            println!("| operation | channel | implementation | calls per operation |");
            println!("|---|---|---|---|");
            for d in details {
                println!("{d}");
            }
            println!();
        }
    }

    /// Runs `bench …` of one implementation as a guest of `host`; returns the host's
    /// counters and the per-operation time it printed.
    fn run_guest(
        (program, pre): &(PathBuf, Vec<String>),
        work: &Path,
        host: HostKind,
        op: Op,
        mode: Option<ChanMode>,
        n: u64,
    ) -> Result<(Counters, f64), String> {
        let mut args = pre.clone();
        args.push("bench".into());
        args.push(op.name().into());
        match op {
            Op::Get(_) => args.push(op.key()),
            Op::Set(_) => args.extend([op.key(), op.argument()]),
            Op::Log => args.push(op.argument()),
            Op::Version => {}
        }
        args.push(n.to_string());
        if let Some(mode) = mode {
            args.push(mode.name().into());
        }
        let (out_path, err_path) = (work.join("stdout"), work.join("stderr"));
        let out = File::create(&out_path).map_err(|e| e.to_string())?;
        let err = File::create(&err_path).map_err(|e| e.to_string())?;
        let run = host
            .config()
            .run_command(
                Command::new(program)
                    .args(&args)
                    .stdin(Stdio::null())
                    .stdout(out)
                    .stderr(err),
            )
            .map_err(|e| format!("cannot start: {e}"))?;
        let stdout = fs::read_to_string(&out_path).unwrap_or_default();
        if !run.exit.success() {
            let stderr = fs::read_to_string(&err_path).unwrap_or_default();
            let last = stderr.lines().last().unwrap_or("").trim();
            return Err(format!("{FAILS}: {}: {last}", run.exit));
        }
        let line = stdout
            .lines()
            .find(|l| l.contains(" total_ns="))
            .ok_or_else(|| format!("no bench line in {stdout:?}"))?;
        let field = |name: &str| -> Option<f64> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .and_then(|v| v.parse().ok())
        };
        let total = field("total_ns=").ok_or("no total_ns")?;
        let per_op = if n == 0 { 0.0 } else { total / n as f64 };
        Ok((run.host.counters().clone(), per_op))
    }

    fn median(times: &[f64]) -> Option<f64> {
        let mut t = times.to_vec();
        t.sort_by(f64::total_cmp);
        t.get(t.len() / 2).copied()
    }

    /// `5`, or `4.5` when the calls do not divide evenly among the operations.
    fn calls_per_op(calls: &Calls, n: u64) -> String {
        match calls.per_op(n) {
            Some(c) => c.total().to_string(),
            None => format!("{:.2}", calls.total() as f64 / n as f64),
        }
    }

    fn per_op_breakdown(calls: &Calls, n: u64) -> String {
        match calls.per_op(n) {
            Some(c) => c.breakdown(),
            None => format!("{} over {n} operations", calls.breakdown()),
        }
    }

    fn print_row(op: Op, mode: Option<ChanMode>, n: u64, outcomes: &[&Outcome]) {
        let mut cells = vec![
            op.to_string(),
            mode.map_or("none", ChanMode::name).to_string(),
            n.to_string(),
        ];
        for o in outcomes {
            cells.push(match o {
                Outcome::Cannot(why) if why.starts_with(FAILS) => FAILS.to_string(),
                Outcome::Cannot(why) => format!("cannot: {why}"),
                Outcome::Ran { calls, n, .. } => calls_per_op(calls, *n),
            });
        }
        let medians: Vec<Option<f64>> = outcomes
            .iter()
            .map(|o| match o {
                Outcome::Ran { times, .. } => median(times),
                Outcome::Cannot(_) => None,
            })
            .collect();
        for m in &medians {
            cells.push(m.map_or("—".to_string(), |ns| format!("{:.1}", ns / 1000.0)));
        }
        for theirs in medians.iter().skip(1) {
            cells.push(match (medians.first().copied().flatten(), theirs) {
                (Some(ours), Some(theirs)) if *theirs > 0.0 => format!("{:.2}", ours / theirs),
                _ => "—".to_string(),
            });
        }
        println!("| {} |", cells.join(" | "));
    }
}

#[cfg(not(all(feature = "sim", target_os = "linux", target_arch = "x86_64")))]
fn main() {
    eprintln!("side_by_side needs Linux x86_64 and `--features sim`");
}
