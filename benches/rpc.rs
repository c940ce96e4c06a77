//! Criterion benches of the library's operations through the real instructions, under the
//! simulator: guestinfo get (0 B to 1 MiB), set (100 B to 60 KiB), `log` and GETVERSION, on an
//! HB host and an LB-only host, with the channel reused and opened per operation.
//!
//! ```text
//! cargo bench --features sim --bench rpc [-- FILTER]      # e.g. -- hb/get
//! ```
//!
//! How: for each host, criterion is configured here (so it reads the command line and finds
//! its output directory before any tracing), then moved into a guest closure that
//! [`HostConfig::run`](vmw_backdoor::sim::HostConfig::run) runs in a traced fork. Every
//! benchmark iteration inside that guest executes the library's inline assembly; each backdoor
//! instruction traps to the runner and is answered by the host model, as a VM exit would be
//! answered by VMware. Criterion's timing, analysis and reports all happen inside the guest,
//! which writes them to `target/criterion/` as usual. Benchmark ids: `HOST/OP/CHANNEL/SIZE`.
//!
//! The process is pinned to one CPU first ([`support::pin_to_one_cpu`]; the guest inherits
//! it): tracer and guest take turns, and wake-ups across idle vCPUs would otherwise cost more
//! than the calls. The tracer's glibc allocation thresholds are pinned too
//! ([`support::pin_malloc_thresholds`]): the host model allocates a buffer of the message
//! size per transfer, and whether those come from fresh mappings would otherwise depend on
//! the tracer's history. The guest, a fork, inherits the setting.
//!
//! The absolute times are the simulator's (a ptrace round trip per backdoor call, about
//! 5 µs on the machine in BENCHMARKS.md), not VMware's; what carries over is how the cost
//! grows with the calls each operation makes.

#[cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]
#[path = "support/mod.rs"]
mod support;

#[cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]
fn main() {
    use std::io::Write;
    use std::time::Duration;

    use criterion::Criterion;
    use support::HostKind;

    support::pin_malloc_thresholds();
    support::pin_to_one_cpu();
    for host in HostKind::ALL {
        // Small samples: two shared cores, and the slowest operation (1 MiB over LB) takes
        // over a second. `configure` sets the sample size per benchmark.
        let criterion = Criterion::default()
            .sample_size(20)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2))
            .nresamples(20_000)
            .configure_from_args();
        let run = host
            .config()
            .run(move || {
                guest::bench_host(criterion, host);
                // The guest leaves with `_exit`: flush what criterion printed.
                let _ = std::io::stdout().flush();
            })
            .expect("start the guest");
        assert!(
            run.exit.success(),
            "criterion guest on the {} host {}",
            host.name(),
            run.exit
        );
    }
}

#[cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]
mod guest {
    use std::time::Duration;

    use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};

    use super::support::{ChanMode, HostKind, Op};

    /// Runs every benchmark of `host`, in the guest.
    pub fn bench_host(mut c: Criterion, host: HostKind) {
        let mut guard = vmw_backdoor::probe_backdoor().expect("probe_backdoor");
        for name in ["get", "set", "log"] {
            let mut group = c.benchmark_group(format!("{}/{name}", host.name()));
            for op in Op::all().into_iter().filter(|op| op.name() == name) {
                configure(&mut group, host, op);
                let prepared = op.prepare();
                for mode in ChanMode::ALL {
                    let id = BenchmarkId::new(mode.name(), op.size());
                    match mode {
                        ChanMode::Reused => {
                            let mut chan = guard.open_enhanced_chan().expect("open");
                            group.bench_function(id, |b| b.iter(|| prepared.run(&mut chan)));
                            chan.close().expect("close");
                        }
                        ChanMode::PerOp => {
                            group
                                .bench_function(id, |b| b.iter(|| prepared.run_per_op(&mut guard)));
                        }
                    }
                }
            }
            group.finish();
        }
        let mut group = c.benchmark_group(format!("{}/version", host.name()));
        configure(&mut group, host, Op::Version);
        group.bench_function("none", |b| {
            b.iter(|| guard.get_version().expect("GETVERSION"))
        });
        group.finish();
        c.final_summary();
    }

    /// Per-benchmark settings: payload throughput, and few, flat samples where one operation
    /// is thousands of traps (large payloads over LB).
    fn configure(
        group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
        host: HostKind,
        op: Op,
    ) {
        if op.size() > 0 {
            group.throughput(Throughput::Bytes(op.size() as u64));
        }
        let slow = host == HostKind::LbOnly && op.size() >= 32 << 10;
        if slow {
            group.sampling_mode(SamplingMode::Flat);
            group.sample_size(10);
            group.warm_up_time(Duration::from_millis(100));
        } else {
            group.sampling_mode(SamplingMode::Auto);
            group.sample_size(20);
            group.warm_up_time(Duration::from_millis(300));
        }
    }
}

#[cfg(not(all(feature = "sim", target_os = "linux", target_arch = "x86_64")))]
fn main() {
    eprintln!("the rpc bench needs Linux x86_64 and `--features sim`");
}
