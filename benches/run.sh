#!/usr/bin/env bash
# Reproduces every number in BENCHMARKS.md from a fresh checkout, with one command:
#
#   benches/run.sh
#
# Steps: build the peer programs (benches/peers/build.sh: open-vm-tools from apt, the
# published vmw_backdoor 0.2.4), assert the call and allocation targets
# (tests/perf_counts.rs), write the deterministic cost table (benches/counts.rs), run the
# side-by-side comparison (benches/side_by_side.rs), the simulator's cost of one call
# (benches/trap_cost.rs) and the criterion benches (benches/rpc.rs), then gather everything
# in one Markdown file.
#
# Output (default target/perf/, or $PERF_OUT): machine.txt, counts.md, side_by_side.md,
# trap_cost.txt, criterion.md, and RESULTS.md with all of them. Env: ROUNDS (side-by-side rounds,
# default 5). Takes about 5 minutes on 2 cores, plus the first build. Needs root for apt (peers, jq).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
out="${PERF_OUT:-$target/perf}"
mkdir -p "$out"
log() { echo "run.sh: $*" >&2; }

if ! command -v jq >/dev/null; then
    log "installing jq"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q jq >&2
fi

log "1/7 peers"
eval "$(benches/peers/build.sh | grep '_PEER=')"
export VMW024_PEER OVT_PEER

log "2/7 machine"
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "command: benches/run.sh (ROUNDS=${ROUNDS:-5})"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "kernel: $(uname -sr)"
    echo "virtualization: $(systemd-detect-virt 2>/dev/null || echo unknown) ($(lscpu 2>/dev/null | sed -n 's/^Hypervisor vendor: *//p' || true) hypervisor vendor)"
    echo "rustc: $(rustc --version)"
    echo "open-vm-tools: $(dpkg-query -W -f='${Version}' open-vm-tools 2>/dev/null || echo '?')"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$out/machine.txt"
start=$SECONDS
cat "$out/machine.txt" >&2

log "3/7 tests/perf_counts.rs (asserts the targets)"
# Built first, then run on one CPU: a ptrace-heavy test is many times slower when its
# wake-ups land on an idle vCPU (see BENCHMARKS.md, section 5).
cargo test --quiet --features sim --test perf_counts --no-run 2>/dev/null
taskset -c 0 cargo test --quiet --features sim --test perf_counts >&2

log "4/7 counts table"
PERF_COUNTS_TSV="$out/counts.tsv" cargo bench --quiet --features sim --bench counts >"$out/counts.md"

log "5/7 side by side (ROUNDS=${ROUNDS:-5})"
cargo bench --quiet --features sim --bench side_by_side >"$out/side_by_side.md"

log "6/7 trap cost (benches/trap_cost.rs: one emulated call against a bare ptrace round trip)"
# On one CPU, like the other timed benches (they pin themselves; trap_cost does not).
taskset -c 0 cargo bench --quiet --features sim --bench trap_cost >"$out/trap_cost.txt"

log "7/7 criterion"
marker="$out/.criterion-start"
touch "$marker"
cargo bench --features sim --bench rpc >"$out/criterion.log" 2>&1 || {
    tail -n 30 "$out/criterion.log" >&2
    exit 1
}
# Criterion's estimate (the slope where it has one, else the mean) with its 95% interval,
# next to the calls per operation from the counts table: time per call shows what the
# cost grows with.
{
    echo "| benchmark | time/op (µs) | 95% interval (µs) | calls/op | µs per call |"
    echo "|---|---:|---:|---:|---:|"
    find "$target/criterion" -path '*/new/benchmark.json' -newer "$marker" | sort |
        while read -r bench; do
            est="$(dirname "$bench")/estimates.json"
            jq -r --slurpfile e "$est" '
                ($e[0].slope // $e[0].mean) as $t
                | (.group_id | split("/")) as $g
                | [$g[0], $g[1], .function_id, (.value_str // "0"), .full_id,
                   ($t.point_estimate / 1000), ($t.confidence_interval.lower_bound / 1000),
                   ($t.confidence_interval.upper_bound / 1000)] | @tsv' "$bench"
        done |
        sort -t$'\t' -k1,1 -k2,2 -k3,3r -k4,4n |
        awk -F'\t' -v counts="$out/counts.tsv" '
            BEGIN { while ((getline line < counts) > 0) { split(line, c, "\t"); calls[c[1] SUBSEP c[2] SUBSEP c[3] SUBSEP c[4]] = c[5] } }
            { n = calls[$1 SUBSEP $2 SUBSEP $3 SUBSEP $4]
              printf "| %s | %.1f | %.1f – %.1f | %s | %s |\n", $5, $6, $7, $8, n, (n > 0 ? sprintf("%.2f", $6 / n) : "?") }'
} >"$out/criterion.md"
rm -f "$marker"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg); run took $(((SECONDS - start) / 60)) min $(((SECONDS - start) % 60)) s" >>"$out/machine.txt"

{
    echo "# vmw_backdoor performance run"
    echo
    echo '```'
    cat "$out/machine.txt"
    echo '```'
    echo
    echo "## Backdoor calls and heap allocations per operation"
    echo
    cat "$out/counts.md"
    echo
    echo "## Side by side: ours, vmw_backdoor 0.2.4, libvmtools"
    echo
    cat "$out/side_by_side.md"
    echo
    echo "## The simulator's cost of one backdoor call"
    echo
    echo '```'
    cat "$out/trap_cost.txt"
    echo '```'
    echo
    echo "## Criterion (our library, inside the traced guest)"
    echo
    cat "$out/criterion.md"
} >"$out/RESULTS.md"
log "done: $out/RESULTS.md"
