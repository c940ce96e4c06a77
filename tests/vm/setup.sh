#!/usr/bin/env bash
# Installs what the real-kernel tests need and fetches the kernels, once per machine:
# QEMU from Debian, and Debian's kernel packages for each suite below, unpacked (not
# installed) into the cache. Safe to rerun: what is cached is not fetched again.
#
#   VMW_VM_CACHE   where kernels and downloads are kept (default /var/cache/vmw-backdoor-vm)
#
# The suites' package lists come from a private apt state under the cache, with source
# entries derived from this machine's own Debian entry, so the machine's apt sources are
# left as they are.
set -euo pipefail

cache=${VMW_VM_CACHE:-/var/cache/vmw-backdoor-vm}
# suite:architecture, one per kernel line to test.
kernels=(bullseye:amd64 bookworm:amd64 trixie:amd64)

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

mkdir -p "$cache"
apt_dir=$cache/apt
apt_opts=(
    -o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt_dir/sources"
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
    -o "Debug::NoLocking=1" -o "APT::Get::List-Cleanup=0"
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

fetched_lists=""
for entry in "${kernels[@]}"; do
    suite=${entry%%:*} arch=${entry##*:}
    qemu_arch=$([ "$arch" = amd64 ] && echo x86_64 || echo "$arch")
    if ls "$cache/$qemu_arch"/*/"$suite" >/dev/null 2>&1; then
        continue # this suite's kernel is unpacked already
    fi
    if [ -z "$fetched_lists" ]; then
        rm -rf "$apt_dir/sources"
        mkdir -p "$apt_dir/sources" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
        for e in "${kernels[@]}"; do
            debian_entry "${e%%:*}" "${e##*:}" >"$apt_dir/sources/${e%%:*}-${e##*:}.sources"
        done
        apt-get "${apt_opts[@]}" -qq update
        fetched_lists=yes
    fi
    # The suite's current kernel ABI, from its metapackage: linux-image-amd64 in bullseye
    # depends on linux-image-5.10.0-32-amd64.
    version=$(apt-cache "${apt_opts[@]}" madison "linux-image-$arch" |
        awk -F'|' -v suite="$suite" '$3 ~ " " suite "/" {gsub(/ /, "", $2); print $2; exit}')
    [ -n "$version" ] || { echo "setup.sh: $suite has no linux-image-$arch" >&2; exit 1; }
    abi=$(apt-cache "${apt_opts[@]}" show "linux-image-$arch=$version" |
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

for dir in "$cache"/*/*/; do
    [ -f "$dir/vmlinuz" ] && echo "kernel $(basename "$dir"): $(cat "$dir/package")"
done
