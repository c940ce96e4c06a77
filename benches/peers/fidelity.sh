#!/usr/bin/env bash
# Fidelity check: runs both peer programs (published vmw_backdoor 0.2.4 and
# open-vm-tools' libvmtools) under vmw-sim, on an HB host and on an LB-only
# host (--no-hb), and prints what each printed, its exit status, and the
# simulator's counters. Then the backdoor calls per operation, measured as
# (counters after `bench OP N`) - (counters after `bench OP 0`), divided by N.
#
#   benches/peers/fidelity.sh [N]        # N defaults to 10
#   VMW_SIM=/path/to/vmw-sim benches/peers/fidelity.sh   # use a prebuilt vmw-sim
#
# Not part of CI: it needs open-vm-tools from apt and the published crate.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
n="${1:-10}"

eval "$("$here/build.sh" | grep '_PEER=')"
command -v jq >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q jq >&2
sim="${VMW_SIM:-}"
if [ -z "$sim" ]; then
    if ! (cd "$root" && cargo build --quiet --features sim --bin vmw-sim 2>/tmp/vmw-sim-build.$$); then
        cat /tmp/vmw-sim-build.$$ >&2
        exit 1
    fi
    rm -f /tmp/vmw-sim-build.$$
    sim="${CARGO_TARGET_DIR:-$root/target}/debug/vmw-sim"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# A value of exactly 100 bytes for the size-dependent checks.
value100="$(printf 'v%.0s' $(seq 100))"

# A --stats file as `name value` lines: the top-level counters, then the LB calls by
# command (getversion, msg.open, msg.sendsize, ...).
counters() {
    jq -r '
        def sub: ["open","sendsize","sendpayload","recvsize","recvpayload","recvstatus","close"][.] // tostring;
        (to_entries[] | select(.value | type == "number") | "\(.key) \(.value)"),
        (.lb_by_command[]? | (if .command == 30 then "msg.\(.subcommand | sub)"
                              elif .command == 10 then "getversion"
                              else "lb.\(.command).\(.subcommand)" end) + " \(.calls)")
    ' "$1" 2>/dev/null
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
    # Counters absent from one file count as 0 there.
    line="$( (counters "$s0" | sed 's/^/0 /'; counters "$sn" | sed 's/^/1 /') |
        awk -v n="$n" '{ v[$2, $1] = $3; k[$2] = 1 }
            END { for (x in k) { d = (v[x, 1] - v[x, 0]) / n; if (d != 0) printf "%s=%g\n", x, d } }' |
        grep -E '^(lb_calls|hb_in_calls|hb_out_calls|rpcs|getversion|msg\.)' | sort | tr '\n' ' ')"
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

echo "===== other hosts and machines"
run no-cookies "--no-cookies" -- "$VMW024_PEER" get guestinfo.foo
run no-cookies "--no-cookies" -- "$OVT_PEER" get guestinfo.foo
run no-cookies+lb "--no-cookies --no-hb" -- "$OVT_PEER" get guestinfo.foo
run cpt-every-2 "--cpt-every 2" -- "$VMW024_PEER" get guestinfo.foo
run cpt-every-2 "--cpt-every 2" -- "$OVT_PEER" get guestinfo.foo
run cpt-every-3+lb "--cpt-every 3 --no-hb" -- "$OVT_PEER" get guestinfo.foo
run deny-guestinfo "--deny-guestinfo" -- "$VMW024_PEER" get guestinfo.foo
run deny-guestinfo "--deny-guestinfo" -- "$OVT_PEER" set guestinfo.foo baz
run restrict-backdoor "--restrict-backdoor" -- "$VMW024_PEER" get guestinfo.foo
run restrict-backdoor "--restrict-backdoor" -- "$VMW024_PEER" --access unpriv get guestinfo.foo
run restrict-backdoor "--restrict-backdoor" -- "$OVT_PEER" get guestinfo.foo
run not-vmware "--not-vmware" -- "$VMW024_PEER" probe
run not-vmware "--not-vmware" -- "$OVT_PEER" get guestinfo.foo
run iopl-enosys "--iopl enosys" -- "$VMW024_PEER" probe
# CPUID says VMwareVMware: libvmtools then reads leaf 0x40000010 for VMCALL/VMMCALL.
run vmware-cpuid "--vmware-cpuid" -- "$VMW024_PEER" probe
run vmware-cpuid "--vmware-cpuid" -- "$OVT_PEER" get guestinfo.foo
run vmware-cpuid+lb "--vmware-cpuid --no-hb" -- "$OVT_PEER" set guestinfo.foo baz
run vmware-cpuid "--vmware-cpuid" -- /usr/bin/vmware-rpctool "info-get guestinfo.foo"
run real-cpuid "" -- /usr/bin/vmware-rpctool "info-get guestinfo.foo"

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
