//! The deterministic cost table: backdoor calls and heap allocations per operation, for
//! every operation and size, on an HB host and an LB-only host, with the channel reused and
//! opened per operation; each against the protocol's floor. Printed as Markdown.
//!
//! ```text
//! cargo bench --features sim --bench counts
//! ```
//!
//! Calls come from the simulator's counters (a guest doing N operations minus the same
//! guest doing none, divided by N); allocations are counted by this binary's global
//! allocator around each operation, inside the guest. `tests/perf_counts.rs` asserts the
//! same numbers.
//!
//! With `PERF_COUNTS_TSV=FILE` it also writes `host op channel size calls allocations`
//! lines there, for `benches/run.sh` to put calls next to criterion's times.

#[cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]
#[path = "support/mod.rs"]
mod support;

#[cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]
#[global_allocator]
static ALLOC: support::CountingAlloc = support::CountingAlloc;

#[cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]
fn main() {
    use support::{floor, human, measure, ChanMode, HostKind, Op};

    // `cargo test --all-targets` runs bench binaries without `--bench`: stay out of its way
    // (the same measurements are asserted by tests/perf_counts.rs).
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("counts: run it with `cargo bench --features sim --bench counts`");
        return;
    }
    // Counts do not depend on it, but the run is many times faster on an idle machine.
    support::pin_to_one_cpu();

    /// Operations per guest.
    const N: u64 = 2;

    println!("| operation | host | channel | calls/op | floor | calls | bytes to host / guest | allocations/op | targets |");
    println!("|---|---|---|---:|---:|---|---:|---:|---|");
    let mut tsv = String::new();
    let mut all_met = true;
    for host in HostKind::ALL {
        for op in Op::all() {
            let modes: &[ChanMode] = if op.is_rpc() {
                &ChanMode::ALL
            } else {
                &[ChanMode::Reused]
            };
            for &mode in modes {
                let m = match measure(op, host, mode, N) {
                    Ok(m) => m,
                    Err(e) => {
                        all_met = false;
                        println!(
                            "| {op} | {} | {} | error: {e} |||||",
                            host.name(),
                            mode.name()
                        );
                        continue;
                    }
                };
                let floor = floor(op, host, mode);
                let max_allocs = if op.is_rpc() { 2 } else { 0 };
                let met = m.calls == floor && m.allocs_max <= max_allocs;
                all_met &= met;
                let allocs = if m.allocs_min == m.allocs_max {
                    m.allocs_max.to_string()
                } else {
                    format!("{}–{}", m.allocs_min, m.allocs_max)
                };
                tsv.push_str(&format!(
                    "{}\t{}\t{}\t{}\t{}\t{}\n",
                    host.name(),
                    op.name(),
                    if op.is_rpc() { mode.name() } else { "none" },
                    op.size(),
                    m.calls.total(),
                    m.allocs_max
                ));
                println!(
                    "| {op} | {} | {} | {} | {} | {} | {} / {} | {allocs} | {} |",
                    host.name(),
                    if op.is_rpc() { mode.name() } else { "none" },
                    m.calls.total(),
                    floor.total(),
                    m.calls.breakdown(),
                    human(m.bytes_to_host as usize),
                    human(m.bytes_to_guest as usize),
                    if met { "met" } else { "MISSED" },
                );
            }
        }
    }
    if let Some(path) = std::env::var_os("PERF_COUNTS_TSV") {
        std::fs::write(&path, tsv).expect("write PERF_COUNTS_TSV");
    }
    println!();
    println!(
        "Floor: HB 5 calls per RPC, 7 with OPEN and CLOSE; LB 3 + ⌈request/4⌉ + ⌈reply/4⌉ \
         (+2); GETVERSION 1; at most 2 heap allocations per RPC. {}",
        if all_met {
            "Every target met."
        } else {
            "Some targets MISSED."
        }
    );
}

#[cfg(not(all(feature = "sim", target_os = "linux", target_arch = "x86_64")))]
fn main() {
    eprintln!("counts needs Linux x86_64 and `--features sim`");
}
