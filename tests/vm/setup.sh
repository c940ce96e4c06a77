#!/usr/bin/env bash
# Installs what the real-kernel tests need and fetches the kernels, once per machine:
# QEMU from Debian, and Debian's kernel packages for each suite below, unpacked (not
# installed) into the cache; for the arm64 guests also a QEMU 10 (`qemu-system-aarch64`
# from the machine's backports suite, unpacked into the cache unless the machine's own is
# new enough: QEMU 7.2 does not trap an EL0 `mrs xzr, mdccsr_el0`) and Debian's
# `open-vm-tools` for arm64 with the libraries it loads. Safe to rerun: what is cached is
# not fetched again.
#
#   VMW_VM_CACHE   where kernels and downloads are kept (default /var/cache/vmw-backdoor-vm)
#
# The suites' package lists come from a private apt state under the cache, with source
# entries derived from this machine's own Debian entry, so the machine's apt sources are
# left as they are.
set -euo pipefail

cache=${VMW_VM_CACHE:-/var/cache/vmw-backdoor-vm}
# suite:architecture, one per kernel line to test.
kernels=(bullseye:amd64 bookworm:amd64 trixie:amd64 bookworm:arm64)
# The QEMU for arm64 guests must trap an EL0 `mrs xzr, mdccsr_el0` (10.0 does, 7.2 not).
qemu_arm_min=10
# arm64 packages whose libraries the fidelity check's C program loads (tests/vm/libvmtools.c).
arm64_libs=(open-vm-tools libtirpc3 libglib2.0-0 libpcre2-8-0 libgssapi-krb5-2 libkrb5-3
    libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1)

need_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "setup.sh: $1 needs root (apt-get); run it as root once" >&2
        exit 1
    fi
}

if ! command -v qemu-system-x86_64 >/dev/null; then
    need_root "installing qemu-system-x86"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        qemu-system-x86 >/dev/null
fi
# Cross-building the arm64 guests: the linker .cargo/config.toml names, and readelf.
# (gcc-aarch64-linux-gnu conflicts with the gcc-multilib metapackage, not with the
# gcc-12-multilib it stands for, which the i686 build needs; see .ci/run.)
if ! command -v aarch64-linux-gnu-gcc >/dev/null; then
    need_root "installing gcc-aarch64-linux-gnu"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        gcc-aarch64-linux-gnu libc6-dev-arm64-cross >/dev/null
fi

mkdir -p "$cache"
apt_dir=$cache/apt
apt_opts=(
    -o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt_dir/sources"
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
    -o "Debug::NoLocking=1" -o "APT::Get::List-Cleanup=0"
    -o "APT::Architectures::=amd64" -o "APT::Architectures::=arm64"
)

# The machine's first Debian entry (deb822 or one-line form), re-pointed at `suite`.
debian_entry() {
    local suite=$1 arch=$2 uri keyring
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        uri=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
        keyring=$(awk '/^Signed-By:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    else
        uri=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) {print $i; exit}}' /etc/apt/sources.list)
    fi
    [ -n "$uri" ] || { echo "setup.sh: no Debian source entry found on this machine" >&2; exit 1; }
    printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nArchitectures: %s\n' "$uri" "$suite" "$arch"
    [ -z "${keyring:-}" ] || printf 'Signed-By: %s\n' "$keyring"
}

# The machine's own suite, whose backports hold the newer QEMU.
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")

fetched_lists=""
# The private package lists, fetched once per run and only when something is missing.
private_lists() {
    [ -z "$fetched_lists" ] || return 0
    rm -rf "$apt_dir/sources"
    mkdir -p "$apt_dir/sources" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
    # One entry per suite, with every architecture it is wanted for (two entries for one
    # suite would list its architecture-independent packages twice).
    local suite archs
    for suite in $(printf '%s\n' "${kernels[@]%%:*}" | sort -u); do
        archs=$(printf '%s\n' "${kernels[@]}" | sed -n "s/^$suite://p" | sort -u | tr '\n' ' ')
        debian_entry "$suite" "${archs% }" >"$apt_dir/sources/$suite.sources"
    done
    if [ -n "$codename" ]; then
        debian_entry "$codename-backports" amd64 >"$apt_dir/sources/$codename-backports-amd64.sources"
    fi
    apt-get "${apt_opts[@]}" -qq update
    fetched_lists=yes
}

for entry in "${kernels[@]}"; do
    suite=${entry%%:*} arch=${entry##*:}
    qemu_arch=$(case $arch in amd64) echo x86_64 ;; arm64) echo aarch64 ;; *) echo "$arch" ;; esac)
    if ls "$cache/$qemu_arch"/*/"$suite" >/dev/null 2>&1; then
        continue # this suite's kernel is unpacked already
    fi
    private_lists
    # The suite's current kernel ABI, from its metapackage: linux-image-amd64 in bullseye
    # depends on linux-image-5.10.0-32-amd64.
    version=$(apt-cache "${apt_opts[@]}" madison "linux-image-$arch:$arch" |
        awk -F'|' -v suite="$suite" '$3 ~ " " suite "/" {gsub(/ /, "", $2); print $2; exit}')
    [ -n "$version" ] || { echo "setup.sh: $suite has no linux-image-$arch" >&2; exit 1; }
    abi=$(apt-cache "${apt_opts[@]}" show "linux-image-$arch:$arch=$version" |
        awk '/^Depends:/ {for (i = 2; i <= NF; i++) if ($i ~ /^linux-image-[0-9]/) {sub(/,$/, "", $i); print $i; exit}}')
    [ -n "$abi" ] || { echo "setup.sh: cannot tell $suite's kernel package" >&2; exit 1; }
    debs=$cache/debs
    mkdir -p "$debs"
    (cd "$debs" && apt-get "${apt_opts[@]}" -qq download "$abi:$arch" 2>&1 | grep -v unsandboxed || true)
    deb=$(ls "$debs/${abi}_"*"_$arch.deb" | tail -1)
    unpacked=$(mktemp -d)
    dpkg-deb -x "$deb" "$unpacked"
    release=$(ls "$unpacked/boot" | sed -n 's/^vmlinuz-//p' | head -1)
    upstream=$(dpkg-deb -f "$deb" Version | sed 's/-.*//')
    dir=$cache/$qemu_arch/$upstream
    mkdir -p "$dir"
    cp "$unpacked/boot/vmlinuz-$release" "$dir/vmlinuz"
    printf '%s %s (Debian %s, kernel %s)\n' "$abi" "$(dpkg-deb -f "$deb" Version)" "$suite" "$release" >"$dir/package"
    touch "$dir/$suite"
    rm -rf "$unpacked" "$deb" # the kernel image is all that is kept
done

# QEMU for the arm64 guests: the machine's own if it is new enough, else the backports
# suite's, unpacked (not installed: its qemu-system-common would have to replace the one
# qemu-system-x86 uses, so the x86 matrix would change QEMU too).
qemu_major() { "$1" --version 2>/dev/null | sed -n 's/^QEMU emulator version \([0-9]*\).*/\1/p'; }
qemu_arm=$cache/qemu-aarch64/usr/bin/qemu-system-aarch64
system_major=$(qemu_major qemu-system-aarch64 || true)
if [ "${system_major:-0}" -ge "$qemu_arm_min" ]; then
    rm -rf "$cache/qemu-aarch64" # the machine's own serves
elif [ "$(qemu_major "$qemu_arm" || true)" -lt "$qemu_arm_min" ] 2>/dev/null ||
    [ ! -x "$qemu_arm" ]; then
    [ -n "$codename" ] || { echo "setup.sh: cannot tell this machine's Debian suite" >&2; exit 1; }
    private_lists
    debs=$cache/debs
    mkdir -p "$debs"
    rm -f "$debs"/qemu-*.deb
    (cd "$debs" && apt-get "${apt_opts[@]}" -qq download \
        "qemu-system-arm/$codename-backports" "qemu-system-common/$codename-backports" \
        "qemu-system-data/$codename-backports" 2>&1 | grep -v unsandboxed || true)
    rm -rf "$cache/qemu-aarch64"
    for deb in "$debs"/qemu-*.deb; do dpkg-deb -x "$deb" "$cache/qemu-aarch64"; done
    rm -f "$debs"/qemu-*.deb
    missing=$(ldd "$qemu_arm" | awk '/not found/ {print $1}')
    [ -z "$missing" ] || { echo "setup.sh: $qemu_arm needs $missing (apt-get install them)" >&2; exit 1; }
    [ "$(qemu_major "$qemu_arm")" -ge "$qemu_arm_min" ] ||
        { echo "setup.sh: $codename-backports has no QEMU $qemu_arm_min" >&2; exit 1; }
fi

# open-vm-tools for arm64 and the libraries its libvmtools loads, unpacked (the fidelity
# check of tests/kernels_arm64.rs runs a C program on it inside the arm64 VM).
libs_dir=$cache/aarch64-libs
if [ ! -f "$libs_dir/done" ]; then
    private_lists
    debs=$cache/debs/arm64
    rm -rf "$debs" "$libs_dir"
    mkdir -p "$debs"
    (cd "$debs" && apt-get "${apt_opts[@]}" -qq download \
        "${arm64_libs[@]/%/:arm64}" 2>&1 | grep -v unsandboxed || true)
    for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$libs_dir"; done
    for pkg in "${arm64_libs[@]}"; do
        ls "$debs/${pkg}_"*_arm64.deb >/dev/null 2>&1 || ls "$debs/${pkg}_"*_all.deb >/dev/null 2>&1 ||
            { echo "setup.sh: $pkg:arm64 not downloaded" >&2; exit 1; }
    done
    dpkg-deb -f "$debs"/open-vm-tools_*_arm64.deb Version | tr -d '\n' >"$libs_dir/open-vm-tools.version"
    rm -rf "$debs"
    touch "$libs_dir/done"
fi

for dir in "$cache"/*/*/; do
    [ -f "$dir/vmlinuz" ] && echo "kernel $(basename "$(dirname "$dir")") $(basename "$dir"): $(cat "$dir/package")"
done
if [ -x "$qemu_arm" ]; then
    echo "arm64 QEMU: $("$qemu_arm" --version | head -1) (unpacked in $cache/qemu-aarch64)"
else
    echo "arm64 QEMU: $(qemu-system-aarch64 --version | head -1)"
fi
echo "open-vm-tools for arm64: $(cat "$libs_dir/open-vm-tools.version") (unpacked in $libs_dir)"
