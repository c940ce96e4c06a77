#!/usr/bin/env bash
# Fidelity check: runs both peer programs (published vmw_backdoor 0.2.4 and
# open-vm-tools' libvmtools) under vmw-sim, on an HB host and on an LB-only
# host (--no-hb), and prints what each printed, its exit status, and the
# simulator's counters. Then the backdoor calls per operation, measured as
# (counters after `bench OP N`) - (counters after `bench OP 0`), divided by N.
#
#   benches/peers/fidelity.sh [N]        # N defaults to 10
#
# Not part of CI: it needs open-vm-tools from apt and the published crate.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
n="${1:-10}"

eval "$("$here/build.sh" | grep '_PEER=')"
(cd "$root" && cargo build --quiet --features sim --bin vmw-sim) || exit 1
sim="${CARGO_TARGET_DIR:-$root/target}/debug/vmw-sim"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# A value of exactly 100 bytes for the size-dependent checks.
value100="$(printf 'v%.0s' $(seq 100))"

# The numeric top-level counters of a --stats file as `key value` lines.
counters() {
    grep -oE '"[a-z_]+"[[:space:]]*:[[:space:]]*[0-9]+' "$1" 2>/dev/null |
        tr -d '"' | tr -d ' ' | tr ':' ' '
}

# run LABEL SIM_FLAGS -- PEER ARGS...: one guest run, everything it showed.
run() {
    local label="$1" flags="$2"
    shift 3
    local stats="$work/stats.json"
    rm -f "$stats"
    # shellcheck disable=SC2086 # flags is a word list on purpose
    "$sim" $flags -e guestinfo.foo=bar -e "guestinfo.v100=$value100" \
        --stats "$stats" --vmx-log "$work/vmx.log" --dump-guestinfo "$work/gi.txt" \
        -- "$@" >"$work/out" 2>"$work/err"
    local rc=$?
    echo "--- $label: $(basename "$1") ${*:2}"
    echo "exit: $rc"
    echo "stdout: $(head -c 300 "$work/out" | cat -v)"
    [ -s "$work/err" ] && echo "stderr: $(tail -n 5 "$work/err" | cat -v)"
    [ -s "$work/vmx.log" ] && echo "vmx-log: $(tail -n 3 "$work/vmx.log" | cat -v)"
    grep -q '^guestinfo.foo=' "$work/gi.txt" 2>/dev/null &&
        echo "guestinfo.foo after: $(grep '^guestinfo.foo=' "$work/gi.txt" | cut -d= -f2- | head -c 80)"
    echo "stats: $(tr -d '\n' <"$stats" 2>/dev/null | head -c 600)"
}

# per_op LABEL SIM_FLAGS PEER ARGS-BEFORE-N -- MODE: calls per operation
# (MODE "-" for benches that take none).
per_op() {
    local label="$1" flags="$2" peer="$3"
    shift 3
    local mode="${*: -1}" args=("${@:1:$#-2}") tail=()
    [ "$mode" != - ] && tail=("$mode")
    local s0="$work/s0.json" sn="$work/sn.json"
    # shellcheck disable=SC2086
    "$sim" $flags -e guestinfo.foo=bar -e "guestinfo.v100=$value100" --stats "$s0" \
        -- "$peer" bench "${args[@]}" 0 "${tail[@]}" >/dev/null 2>"$work/err0"
    local rc0=$?
    # shellcheck disable=SC2086
    "$sim" $flags -e guestinfo.foo=bar -e "guestinfo.v100=$value100" --stats "$sn" \
        -- "$peer" bench "${args[@]}" "$n" "${tail[@]}" >"$work/outn" 2>"$work/errn"
    local rcn=$?
    if [ "$rc0" != 0 ] || [ "$rcn" != 0 ]; then
        echo "$label $(basename "$peer") ${args[*]} $mode: FAILED (exit $rc0 / $rcn): $(tail -n 2 "$work/errn" | tr '\n' ' ')"
        return
    fi
    local line
    line="$(join <(counters "$s0" | sort) <(counters "$sn" | sort) |
        awk -v n="$n" '$3 != $2 { printf "%s=%g ", $1, ($3 - $2) / n }')"
    echo "$label $(basename "$peer") ${args[*]} $mode: per op: ${line:-nothing}"
}

for host in hb lb; do
    flags=""
    [ "$host" = lb ] && flags="--no-hb"
    echo "===== host: $host ${flags:+($flags)}"
    run "$host" "$flags" -- "$VMW024_PEER" probe
    run "$host" "$flags" -- "$VMW024_PEER" get guestinfo.foo
    run "$host" "$flags" -- "$VMW024_PEER" get guestinfo.missing
    run "$host" "$flags" -- "$VMW024_PEER" log hello-from-vmw024
    run "$host" "$flags" -- "$VMW024_PEER" report
    run "$host" "$flags" -- "$OVT_PEER" version
    run "$host" "$flags" -- "$OVT_PEER" get guestinfo.foo
    run "$host" "$flags" -- "$OVT_PEER" get guestinfo.missing
    run "$host" "$flags" -- "$OVT_PEER" set guestinfo.foo baz
    run "$host" "$flags" -- "$OVT_PEER" log hello-from-ovt
    run "$host" "$flags" -- "$OVT_PEER" rpc machine.id.get
    run "$host" "$flags" -- "$OVT_PEER" --via channel get guestinfo.foo
done

echo "===== backdoor calls per operation (N=$n)"
for host in hb lb; do
    flags=""
    [ "$host" = lb ] && flags="--no-hb"
    for mode in reused per-op; do
        per_op "$host" "$flags" "$VMW024_PEER" get guestinfo.foo -- "$mode"
        per_op "$host" "$flags" "$VMW024_PEER" get guestinfo.v100 -- "$mode"
        per_op "$host" "$flags" "$VMW024_PEER" log hello -- "$mode"
        per_op "$host" "$flags" "$OVT_PEER" get guestinfo.foo -- "$mode"
        per_op "$host" "$flags" "$OVT_PEER" get guestinfo.v100 -- "$mode"
        per_op "$host" "$flags" "$OVT_PEER" set guestinfo.foo baz -- "$mode"
        per_op "$host" "$flags" "$OVT_PEER" log hello -- "$mode"
    done
    per_op "$host" "$flags" "$VMW024_PEER" version -- -
    per_op "$host" "$flags" "$OVT_PEER" version -- -
done
