#!/usr/bin/env bash
# Builds the two peer guest programs used for simulator fidelity checks and
# side-by-side benches, installing what is missing first. Safe to re-run.
#
#   benches/peers/build.sh            # build both; prints where the binaries are
#
# Needs: Debian 12 (or similar) as root for apt, a Rust toolchain (cargo).
# Prints the binary paths as `VMW024_PEER=...` and `OVT_PEER=...` lines, so a
# caller can `eval "$(benches/peers/build.sh | grep _PEER=)"`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
libdir="$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)"
libvmtools="/usr/lib/${libdir}/libvmtools.so.0"

log() { echo "build.sh: $*" >&2; }

apt_updated=0
apt_install() {
    if [ "$(id -u)" != 0 ]; then
        log "need root to apt-get install $*"
        exit 1
    fi
    if [ "$apt_updated" = 0 ]; then
        apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2
}

# --- what is missing ---------------------------------------------------------
missing=()
command -v gcc >/dev/null || missing+=(gcc libc6-dev)
[ -e "$libvmtools" ] || missing+=(open-vm-tools)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    apt_install "${missing[@]}"
fi
if ! command -v cargo >/dev/null; then
    log "cargo not found: install a Rust toolchain first"
    exit 1
fi

# --- the published vmw_backdoor 0.2.4 ----------------------------------------
# Its own workspace and target dir, so the parent crate's build never sees it.
log "building vmw024 (vmw_backdoor =0.2.4)"
(
    cd "$here/vmw024"
    CARGO_TARGET_DIR="$here/vmw024/target" cargo build --release --locked --quiet
)
vmw024="$here/vmw024/target/release/vmw024-peer"

# --- open-vm-tools' libvmtools -----------------------------------------------
log "building ovt ($libvmtools, open-vm-tools $(dpkg-query -W -f='${Version}' open-vm-tools 2>/dev/null || echo '?'))"
mkdir -p "$here/ovt/build"
ovt="$here/ovt/build/ovt-peer"
if [ ! -x "$ovt" ] || [ "$here/ovt/ovt-peer.c" -nt "$ovt" ] || [ "$libvmtools" -nt "$ovt" ]; then
    gcc -O2 -g -std=c11 -Wall -Wextra -Wpedantic -Werror \
        -o "$ovt" "$here/ovt/ovt-peer.c" -L"/usr/lib/${libdir}" -l:libvmtools.so.0
fi

echo "VMW024_PEER=$vmw024"
echo "OVT_PEER=$ovt"
