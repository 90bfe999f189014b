#!/usr/bin/env bash
# The privileged test suite on Debian's kernels under qemu, and on the running kernel.
#
#   tests/kernels/run.sh [VERSION...]      VERSION: 5.10, 6.1, 6.12 or host
#                                          (none: 5.10 6.1 6.12 host)
#
# For each VERSION but host: the cloud-amd64 kernel image package of that series from
# Debian (6.1 through the machine's own apt sources, 5.10 from bullseye and 6.12 from
# bookworm-backports through a private apt configuration that leaves the system's
# alone), unpacked under target/kernels/VERSION/; the test binaries named kernel_*
# built once as static executables; an initramfs of busybox, those binaries, the
# workspace's programs, fixture objects and insta snapshots at the paths the binaries
# were built to find them at, bpftool with
# its libraries, and the kernel's own config as /boot/config-RELEASE; booted with qemu
# (software emulation, no network device), its serial console saved to
# target/kernels/VERSION/console.log. `host` runs the same binaries through the same
# runner on the running kernel.
#
# Exits non-zero when any test failed, any binary broke, or a run printed no result.
# Environment: HANDOVER_KERNELS_TIMEOUT (seconds per VM, default 2400),
# HANDOVER_KERNELS_REFRESH=1 (fetch the kernel packages again),
# HANDOVER_DEBIAN_MIRROR (default http://deb.debian.org).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="$root/target/kernels"
timeout_s="${HANDOVER_KERNELS_TIMEOUT:-2400}"
mirror="${HANDOVER_DEBIAN_MIRROR:-http://deb.debian.org}"
# Without cmpxchg16b: qemu 7.2 (bookworm) emulates it wrongly under multi-threaded TCG,
# which corrupts 6.12's slab allocator and panics the guest.
cpu="${HANDOVER_KERNELS_CPU:-qemu64,-cx16}"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
triple=x86_64-unknown-linux-gnu

versions=("$@")
[ "${#versions[@]}" -gt 0 ] || versions=(5.10 6.1 6.12 host)
for v in "${versions[@]}"; do
    case "$v" in
    5.10 | 6.1 | 6.12 | host) ;;
    *)
        echo "run.sh: unknown kernel $v (known: 5.10 6.1 6.12 host)" >&2
        exit 2
        ;;
    esac
done

say() { printf '== %s\n' "$*" >&2; }
die() {
    printf 'run.sh: %s\n' "$*" >&2
    exit 1
}

for tool in qemu-system-x86_64 dpkg-deb gzip jq readelf; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install qemu-system-x86 jq binutils)"
done
busybox=/bin/busybox
[ -x "$busybox" ] || die "$busybox not found (apt-get install busybox-static)"

# A binary is static when it asks for no program interpreter.
is_static() { ! readelf -l "$1" 2>/dev/null | grep -q 'Requesting program interpreter'; }
is_static "$busybox" || die "$busybox is not static (apt-get install busybox-static)"

# apt-get/apt-cache arguments for VERSION: the machine's configuration for 6.1, a
# private one under target/kernels/apt/SUITE otherwise.
apt_args() {
    local suites
    case "$1" in
    6.1) return 0 ;;
    5.10) suites="debian bullseye|debian-security bullseye-security" ;;
    6.12) suites="debian bookworm-backports" ;;
    esac
    local d="$cache/apt/$1"
    mkdir -p "$d/etc/sources.list.d" "$d/etc/preferences.d" "$d/etc/apt.conf.d" \
        "$d/state/lists/partial" "$d/cache/archives/partial"
    : >"$d/state/status"
    : >"$d/etc/sources.list"
    local IFS='|' s
    for s in $suites; do
        echo "deb [signed-by=$keyring] $mirror/${s% *} ${s#* } main" >>"$d/etc/sources.list"
    done
    printf '%s\n' \
        -o "Dir::Etc::SourceList=$d/etc/sources.list" \
        -o "Dir::Etc::SourceParts=$d/etc/sources.list.d" \
        -o "Dir::Etc::Preferences=$d/etc/preferences" \
        -o "Dir::Etc::PreferencesParts=$d/etc/preferences.d" \
        -o "Dir::Etc::Parts=$d/etc/apt.conf.d" \
        -o "Dir::State=$d/state" \
        -o "Dir::State::status=$d/state/status" \
        -o "Dir::Cache=$d/cache"
}

# Downloads and unpacks the kernel of series $1 into target/kernels/$1/root (once).
fetch_kernel() {
    local v="$1" dir="$cache/$1"
    if [ -f "$dir/release" ] && [ -z "${HANDOVER_KERNELS_REFRESH:-}" ]; then
        return 0
    fi
    local args=()
    mapfile -t args < <(apt_args "$v")
    if [ "${#args[@]}" -gt 0 ]; then
        say "$v: apt-get update (private configuration under $cache/apt/$v)"
        apt-get "${args[@]}" update -q >"$cache/apt-$v.log" 2>&1 ||
            die "apt-get update for $v failed: $cache/apt-$v.log"
    fi
    # The meta-package names the current image package of its suite.
    local pkg
    pkg="$(apt-cache "${args[@]}" depends linux-image-cloud-amd64 |
        awk '/Depends: linux-image-/ { print $2; exit }')"
    [ -n "$pkg" ] || die "no linux-image-cloud-amd64 in the $v suites (for 6.1, the machine's: run apt-get update)"
    case "$pkg" in
    linux-image-"$v".*) ;;
    *) die "linux-image-cloud-amd64 of the $v suites depends on '$pkg', not a $v kernel" ;;
    esac
    rm -rf "$dir"
    mkdir -p "$dir/deb"
    say "$v: apt-get download $pkg"
    (cd "$dir/deb" && apt-get "${args[@]}" -o APT::Sandbox::User=root download -q "$pkg") >&2
    dpkg-deb -x "$dir"/deb/*.deb "$dir/root"
    local release
    release="$(ls "$dir/root/lib/modules")"
    [ -f "$dir/root/boot/vmlinuz-$release" ] || die "$pkg has no /boot/vmlinuz-$release"
    [ -f "$dir/root/boot/config-$release" ] || die "$pkg has no /boot/config-$release"
    echo "$release" >"$dir/release"
}

# Builds the fixture objects and the kernel_* test binaries (static); writes
# target/kernels/tests.list: "BINARY PACKAGE_DIR" per line.
build_tests() {
    say "building fixtures and static test binaries"
    bash "$root/programs/build.sh"
    (cd "$root" && RUSTFLAGS='-C target-feature=+crt-static' cargo test --profile matrix \
        --target "$triple" --workspace --test 'kernel_*' --no-run --message-format=json) >"$cache/build.json"
    jq -r 'select(.reason == "compiler-artifact" and .profile.test and .executable != null
            and (.target.name | startswith("kernel_")))
           | "\(.executable) \(.manifest_path | rtrimstr("/Cargo.toml"))"' \
        "$cache/build.json" | sort -u >"$cache/tests.list"
    [ -s "$cache/tests.list" ] || die "no kernel_* test binary was built"
    # The workspace's programs (handover, meshd, handoff-testd...), which the tests start
    # through CARGO_BIN_EXE_NAME: an absolute path into this target directory.
    jq -r 'select(.reason == "compiler-artifact" and (.profile.test | not)
            and .executable != null and (.target.kind | index("bin")))
           | .executable' "$cache/build.json" | sort -u >"$cache/bins.list"
    local bin _
    while read -r bin _; do
        is_static "$bin" || die "$bin is not static"
    done < <(cat "$cache/tests.list" "$cache/bins.list")
}

# The part of the initramfs every kernel shares: busybox, init, runner, test binaries,
# fixtures, xdp-tools objects, bpftool and its libraries.
pack_common() {
    say "packing the shared initramfs"
    local stage="$cache/stage"
    rm -rf "$stage"
    mkdir -p "$stage/bin" "$stage/handover/bin" "$stage/boot" "$stage/usr/lib/x86_64-linux-gnu"
    cp "$busybox" "$stage/bin/busybox"
    cp "$here/init" "$stage/init"
    cp "$here/runner.sh" "$stage/handover/runner.sh"
    chmod +x "$stage/init"
    : >"$stage/handover/tests.list"
    local bin dir
    while read -r bin dir; do
        cp "$bin" "$stage/handover/bin/"
        mkdir -p "$stage$dir"
        echo "/handover/bin/$(basename "$bin") $dir" >>"$stage/handover/tests.list"
    done <"$cache/tests.list"
    while read -r bin; do
        mkdir -p "$stage$(dirname "$bin")"
        cp "$bin" "$stage$bin"
    done <"$cache/bins.list"
    # Fixture objects and insta snapshots where the binaries' CARGO_MANIFEST_DIR says
    # they are.
    mkdir -p "$stage$root/programs"
    cp -a "$root/programs/build" "$stage$root/programs/"
    # The tests find the workspace's root by this file.
    cp "$root/programs/build.sh" "$stage$root/programs/"
    cp -a "$root/snapshots" "$stage$root/"
    if [ -d /usr/lib/x86_64-linux-gnu/bpf ]; then
        cp -a /usr/lib/x86_64-linux-gnu/bpf "$stage/usr/lib/x86_64-linux-gnu/"
    fi
    # bpftool, dynamically linked, with its loader and libraries at their own paths.
    local bpftool lib
    if bpftool="$(command -v bpftool)"; then
        mkdir -p "$stage/usr/sbin"
        cp -L "$bpftool" "$stage/usr/sbin/bpftool"
        for lib in $(ldd "$bpftool" | grep -o '/[^ ]*'); do
            mkdir -p "$stage$(dirname "$lib")"
            cp -L "$lib" "$stage$lib"
        done
    fi
    (cd "$stage" && find . | "$busybox" cpio -o -H newc 2>/dev/null | gzip -1) >"$cache/common.cpio.gz"
    rm -rf "$stage"
}

# The initramfs of kernel $1: the shared part, then its config (a second archive the
# kernel unpacks over the first).
pack_kernel() {
    local dir="$cache/$1" release stage
    release="$(cat "$dir/release")"
    stage="$dir/stage"
    rm -rf "$stage"
    mkdir -p "$stage/boot"
    cp "$dir/root/boot/config-$release" "$stage/boot/"
    (cd "$stage" && find . | "$busybox" cpio -o -H newc 2>/dev/null | gzip -1) >"$dir/extra.cpio.gz"
    rm -rf "$stage"
    cat "$cache/common.cpio.gz" "$dir/extra.cpio.gz" >"$dir/initramfs.cpio.gz"
}

# Prints the lines of a console log worth following live.
progress() {
    stdbuf -oL tr -d '\r' | tee "$1" |
        grep --line-buffered -E '^HANDOVER-MATRIX|^test result:|panicked|!!!!!!!!|Kernel panic' || true
}

boot() {
    local v="$1" dir="$cache/$1" release
    release="$(cat "$dir/release")"
    say "$v: booting $release (timeout ${timeout_s}s)"
    timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 \
        -m 2048 -smp 2 -cpu "$cpu" -nographic -no-reboot -nic none \
        -kernel "$dir/root/boot/vmlinuz-$release" \
        -initrd "$dir/initramfs.cpio.gz" \
        -append "console=ttyS0 panic=-1 quiet loglevel=3" \
        </dev/null 2>&1 | progress "$dir/console.log"
}

run_host() {
    mkdir -p "$cache/host"
    say "host: $(uname -r), the same binaries through the same runner"
    sh "$here/runner.sh" "$cache/tests.list" 2>&1 | progress "$cache/host/console.log"
}

mkdir -p "$cache"
for v in "${versions[@]}"; do
    [ "$v" = host ] || fetch_kernel "$v"
done
build_tests
if [ "${versions[*]}" != host ]; then
    pack_common
fi

declare -A seconds
for v in "${versions[@]}"; do
    start="$(date +%s)"
    if [ "$v" = host ]; then
        run_host || true
    else
        pack_kernel "$v"
        boot "$v" || true
    fi
    seconds[$v]=$(($(date +%s) - start))
done

# Summary: one row per kernel, then every failed and every skipped test by kernel.
status=0
# skipped: tests that printed a SKIPPED line (a tool the initramfs lacks, say); they
# count as passed in pass, so they are named below the table.
printf '\n%-6s %-28s %6s %6s %8s %8s %8s  %s\n' kernel release pass fail broken skipped seconds result
for v in "${versions[@]}"; do
    log="$cache/$v/console.log"
    if [ "$v" = host ]; then release="$(uname -r)"; else release="$(cat "$cache/$v/release")"; fi
    marker="$(grep -o 'HANDOVER-MATRIX-RESULT.*' "$log" | tail -n 1 || true)"
    if [ -z "$marker" ]; then
        printf '%-6s %-28s %6s %6s %8s %8s %8s  %s\n' "$v" "$release" - - - - "${seconds[$v]}" "NO RESULT (see $log)"
        status=1
        continue
    fi
    get() { echo "$marker" | sed -n "s/.* $1=\([0-9]*\).*/\1/p"; }
    pass="$(get pass)" fail="$(get fail)" broken="$(get broken)"
    skipped="$(grep -c 'SKIPPED: ' "$log" || true)"
    result=ok
    if [ "$fail" != 0 ] || [ "$broken" != 0 ]; then
        result=FAILED
        status=1
    fi
    printf '%-6s %-28s %6s %6s %8s %8s %8s  %s\n' "$v" "$release" "$pass" "$fail" "$broken" "$skipped" "${seconds[$v]}" "$result"
done
for v in "${versions[@]}"; do
    log="$cache/$v/console.log"
    failed="$(grep -E '^HANDOVER-MATRIX-(FAILED|BROKEN)' "$log" 2>/dev/null | cut -d' ' -f2- || true)"
    [ -z "$failed" ] || printf '\nfailed on %s:\n%s\n' "$v" "$failed"
    skips="$(grep -o 'SKIPPED: .*' "$log" 2>/dev/null | sed 's/ *!*\r*$//' || true)"
    [ -z "$skips" ] || printf '\nskipped on %s:\n%s\n' "$v" "$skips"
done
exit "$status"
