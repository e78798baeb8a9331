#!/usr/bin/env bash
# The edge suite (tests/edge) on device userlands under qemu user-mode emulation:
#   aarch64 (64-bit Raspberry Pi OS, Coral Dev Board): tflite-runtime and ai-edge-litert
#   armv7l  (32-bit Raspberry Pi OS): tflite-runtime (ai-edge-litert has no armv7l wheel)
#
# Everything comes from Debian's archive and PyPI: qemu-user-static, binfmt-support and debootstrap
# on the host; a Debian bookworm root filesystem per architecture (debootstrap --foreign
# --variant=minbase, then `dpkg -x` of the downloaded .debs instead of the ~12 min emulated second
# stage); wheels downloaded on the host (`pip download --only-binary=:all: --platform ...`; pip in
# the chroot cannot verify TLS) and installed offline (`--no-index`). Only /proc is mounted in the
# chroot (with /sys mounted, ai-edge-litert crashes under qemu 7.2).
#
# Usage: tools/devices/test-devices.sh [TARGET...]   TARGET: aarch64-tflite aarch64-litert
#        armv7l-tflite (default: all three), or `prepare` to build everything without testing.
# Environment: SHIFTER_DEVICES_CACHE  root filesystems, wheels, venvs (default
#                                     /var/cache/shifter-tf-devices; outside the repository)
#              DEBIAN_MIRROR          (default: the first Debian mirror in /etc/apt/sources*)
#              PYTEST_ARGS            extra pytest arguments (e.g. "-x -k switcher")
# Needs root (debootstrap, chroot, binfmt_misc); as another user it says so and exits 0.
# Re-runs reuse the cache; a changed constraints file rebuilds only that venv.
set -euo pipefail
shopt -s inherit_errexit   # errors inside $(...) stop the script too

REPO=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${SHIFTER_DEVICES_CACHE:-/var/cache/shifter-tf-devices}
SUITE=bookworm
HOST_PY=${PYTHON:-python3}
ALL_TARGETS="aarch64-tflite aarch64-litert armv7l-tflite"

say() { printf '[test-devices] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

if [ "$(id -u)" -ne 0 ]; then
    echo "make test-devices: skipped, needs root (debootstrap, chroot, binfmt_misc); run it as root"
    exit 0
fi

# --------------------------------------------------------------------------------- targets
# target -> Debian architecture, interpreter backend, pip platform tags, requirements files
target_arch()    { case $1 in aarch64-*) echo arm64;; armv7l-*) echo armhf;; *) return 1;; esac; }
target_backend() {
    case $1 in *-tflite) echo tflite_runtime;; *-litert) echo ai_edge_litert;; esac
}
pip_platforms() {
    case $1 in
        arm64) echo "manylinux2014_aarch64 manylinux_2_17_aarch64 manylinux_2_27_aarch64" \
                    "manylinux_2_28_aarch64 manylinux_2_31_aarch64 manylinux_2_34_aarch64";;
        armhf) echo "manylinux_2_17_armv7l manylinux_2_27_armv7l manylinux_2_28_armv7l" \
                    "manylinux_2_31_armv7l manylinux_2_34_armv7l linux_armv7l";;
    esac
}
# A target's Python environment: requirements and constraints files, the same as on x86
# (.venv-edge, .venv-edge-litert) except armv7l, where numpy and cryptography come from Debian
# (PyPI has no armv7l numpy or cffi wheel) and the rest is an explicit pinned list (--no-deps).
# A change to these files rebuilds the target's wheels and venv.
target_files() {
    case $1 in
        aarch64-tflite) echo "$REPO/requirements-edge.txt $REPO/constraints-edge.txt";;
        aarch64-litert)
            echo "$REPO/requirements-edge-litert.txt $REPO/constraints-edge-litert.txt";;
        armv7l-tflite)  echo "$REPO/tools/devices/requirements-armv7l.txt";;
    esac
}

# ------------------------------------------------------------------------------- host tools
host_tools() {
    local need=()
    command -v debootstrap >/dev/null || need+=(debootstrap)
    command -v update-binfmts >/dev/null || need+=(binfmt-support)
    { command -v qemu-aarch64-static && command -v qemu-arm-static; } >/dev/null \
        || need+=(qemu-user-static)
    if [ ${#need[@]} -gt 0 ]; then
        say "installing ${need[*]} from Debian's archive"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            "${need[@]}" >/dev/null
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
            || die "cannot mount binfmt_misc (a container without the privilege?)"
    fi
    local fmt
    for fmt in qemu-aarch64 qemu-arm; do
        [ -e /proc/sys/fs/binfmt_misc/$fmt ] || update-binfmts --enable $fmt >/dev/null 2>&1 || true
        [ -e /proc/sys/fs/binfmt_misc/$fmt ] || update-binfmts --import $fmt >/dev/null 2>&1 || true
        grep -q '^enabled' /proc/sys/fs/binfmt_misc/$fmt 2>/dev/null \
            || die "binfmt handler $fmt not registered (update-binfmts --enable $fmt)"
    done
}

debian_mirror() {
    if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
    local m
    m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}')
    [ -n "$m" ] || m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk '$1 == "deb" && $0 !~ /security/ {
                 for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}')
    echo "${m:-http://deb.debian.org/debian}"
}

# ------------------------------------------------------------------------------- root filesystem
rootfs() {  # build $CACHE/rootfs/ARCH once; prints its path
    local arch=$1 root="$CACHE/rootfs/$1"
    local pkgs=python3,python3-venv
    # armhf: no numpy/cffi wheels on PyPI for armv7l -> Debian's numpy and cryptography (its cffi
    # backend named too: debootstrap does not resolve the virtual package it depends on).
    [ "$arch" = armhf ] && pkgs=$pkgs,python3-numpy,python3-cryptography,python3-cffi-backend
    if [ "$(cat "$root/.shifter-ready" 2>/dev/null)" = "$SUITE $pkgs" ]; then
        echo "$root"; return
    fi
    if [ -e "$root/proc" ] && mountpoint -q "$root/proc"; then umount "$root/proc"; fi
    say "building the $arch root filesystem ($SUITE, minbase, $pkgs)"
    rm -rf "$root"
    mkdir -p "$root"
    debootstrap --arch="$arch" --foreign --variant=minbase --include="$pkgs" \
        "$SUITE" "$root" "$(debian_mirror)" >"$CACHE/debootstrap-$arch.log" 2>&1 \
        || die "debootstrap failed, see $CACHE/debootstrap-$arch.log"
    # Unpack every downloaded package (the emulated `--second-stage` takes ~12 min; this ~1 min).
    # Maintainer scripts do not run, so do by hand what they would have done that matters here.
    local deb
    for deb in "$root"/var/cache/apt/archives/*.deb; do
        dpkg-deb -x "$deb" "$root"
    done
    cp "$root/usr/share/base-passwd/passwd.master" "$root/etc/passwd"
    cp "$root/usr/share/base-passwd/group.master" "$root/etc/group"
    local triplet lib d
    triplet=$(case $arch in arm64) echo aarch64-linux-gnu;; armhf) echo arm-linux-gnueabihf;; esac)
    for lib in libblas.so.3 liblapack.so.3; do   # update-alternatives of libblas3/liblapack3
        d=$(cd "$root/usr/lib/$triplet" && ls -d */"$lib" 2>/dev/null | head -1 || true)
        [ -n "$d" ] && ln -sf "$d" "$root/usr/lib/$triplet/$lib"
    done
    chroot "$root" /sbin/ldconfig
    chroot "$root" /usr/bin/python3 -c 'import sys, venv, ensurepip; print(sys.version)' >&2 \
        || die "python3 does not run in $root"
    rm -f "$root"/var/cache/apt/archives/*.deb
    echo "$SUITE $pkgs" >"$root/.shifter-ready"
    echo "$root"
}

# ------------------------------------------------------------------------------- wheels + venv
env_key() {  # a hash of what defines a target's environment
    cat $(target_files "$1") | sha256sum | cut -c1-16
}

wheels() {  # download a target's wheels on the host once; prints the folder
    local t=$1 key dir arch plats=() p req con
    key=$(env_key "$t"); dir="$CACHE/wheels/$t-$key"; arch=$(target_arch "$t")
    if [ -e "$dir/.complete" ]; then echo "$dir"; return; fi
    read -r req con <<<"$(target_files "$t")"
    for p in $(pip_platforms "$arch"); do plats+=(--platform "$p"); done
    say "downloading wheels for $t"
    rm -rf "$CACHE/wheels/$t-"*; mkdir -p "$dir"
    # pytest is the test runner, not a device requirement; its pin is in the constraints file.
    { cat "$req"; echo pytest; } >"$dir/requirements.txt"
    local opts=(-c "$con")
    [ -n "${con:-}" ] || opts=(--no-deps)
    "$HOST_PY" -m pip download -q --disable-pip-version-check \
        --only-binary=:all: --python-version 311 --implementation cp --abi cp311 --abi abi3 \
        --abi none "${plats[@]}" "${opts[@]}" -r "$dir/requirements.txt" -d "$dir" >&2 \
        || die "pip download failed for $t"
    touch "$dir/.complete"
    echo "$dir"
}

venv() {  # the target's venv inside its root filesystem (/opt/venv-TARGET); prints its path there
    local t=$1 root=$2 wh=$3 key v arch sys= site p plats=()
    key=$(env_key "$t"); v=/opt/venv-$t; arch=$(target_arch "$t")
    if [ "$(cat "$root$v/.shifter-key" 2>/dev/null)" = "$key" ]; then echo "$v"; return; fi
    say "installing the $t venv (offline)"
    rm -rf "$root$v"
    mkdir -p "$root/opt"
    [ "$arch" = armhf ] && sys=--system-site-packages   # Debian's numpy and cryptography
    # The venv is made by the device's Python; the host's pip unpacks the downloaded wheels into
    # it (installing a wheel is unpacking it: the same files as pip inside the chroot would
    # write, in seconds instead of ~3 emulated minutes per venv).
    in_chroot "$root" /usr/bin/python3 -m venv --without-pip $sys "$v"
    site=$(echo "$root$v"/lib/python3*/site-packages)
    [ -d "$site" ] || die "no site-packages in $root$v"
    for p in $(pip_platforms "$arch"); do plats+=(--platform "$p"); done
    "$HOST_PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore \
        --no-index --no-deps --only-binary=:all: --python-version 311 --implementation cp \
        --abi cp311 --abi abi3 --abi none "${plats[@]}" --target "$site" "$wh"/*.whl >&2 \
        || die "offline install failed for $t"
    echo "$key" >"$root$v/.shifter-key"
    echo "$v"
}

in_chroot() {  # run a command in ROOT with only /proc mounted and a clean environment
    local root=$1; shift
    mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
    chroot "$root" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
        TMPDIR=/tmp "$@"
}

cleanup() {
    local r
    for r in "$CACHE"/rootfs/*; do
        mountpoint -q "$r/proc" 2>/dev/null && umount "$r/proc" || true
    done
}

copy_repo() {  # this checkout's tracked (and new, not ignored) files -> ROOT/opt/shifter-tf
    local root=$1 dst=$1/opt/shifter-tf
    rm -rf "$dst"; mkdir -p "$dst"
    if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
        (cd "$REPO" && git ls-files -z -co --exclude-standard | tar --null -T - -cf - 2>/dev/null) \
            | tar -xf - -C "$dst"
    else
        tar -C "$REPO" --exclude='./.venv*' --exclude=./.git -cf - . | tar -xf - -C "$dst"
    fi
}

# ------------------------------------------------------------------------------- main
main() {
    local targets=() t prepare_only=0
    for t in "$@"; do
        case $t in
            prepare) prepare_only=1;;
            aarch64-tflite|aarch64-litert|armv7l-tflite) targets+=("$t");;
            *) die "unknown target $t (aarch64-tflite aarch64-litert armv7l-tflite prepare)";;
        esac
    done
    [ ${#targets[@]} -gt 0 ] || read -r -a targets <<<"$ALL_TARGETS"
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.lock"
    flock -n 9 || die "another test-devices run holds $CACHE/.lock"
    trap cleanup EXIT
    host_tools

    local root wh v t0 t1 rc fails=() summary=() start
    start=$(date +%s)
    for t in "${targets[@]}"; do
        t0=$(date +%s)
        root=$(rootfs "$(target_arch "$t")")
        wh=$(wheels "$t")
        v=$(venv "$t" "$root" "$wh")
        [ $prepare_only = 1 ] && { say "$t ready ($(( $(date +%s) - t0 )) s)"; continue; }
        copy_repo "$root"
        say "$t: tests/edge under qemu ($(in_chroot "$root" "$v/bin/python" -c "
import importlib.metadata as m, platform, sys, numpy, pytest, $(target_backend "$t")
print(platform.machine(), 'Python', sys.version.split()[0], 'numpy', numpy.__version__,
      '$(target_backend "$t")', m.version('$(target_backend "$t")'.replace('_', '-')))"))"
        t1=$(date +%s)
        set +e
        in_chroot "$root" EDGE_RUNTIME_BACKEND="$(target_backend "$t")" EDGE_TESTS_TIME_SCALE=5 \
            /bin/sh -c "cd /opt/shifter-tf && exec $v/bin/python -m pytest -q \
            -p no:cacheprovider tests/edge ${PYTEST_ARGS:-}"
        rc=$?
        set -e
        summary+=("$t: $([ $rc = 0 ] && echo passed || echo "FAILED (rc $rc)") in $((
            $(date +%s) - t1 )) s (set-up $(( t1 - t0 )) s)")
        [ $rc = 0 ] || fails+=("$t")
    done
    [ $prepare_only = 1 ] && return 0
    summary+=("total $(( $(date +%s) - start )) s")
    printf '[test-devices] %s\n' "${summary[@]}" >&2
    [ ${#fails[@]} = 0 ] || die "failed: ${fails[*]}"
}

main "$@"; exit  # one line: bash has read all of it before main runs (safe to edit meanwhile)
