#!/bin/sh
# Runs every privileged test binary named in LIST, one after another, each with
# --test-threads=1 and from the directory of its package (as cargo test does); names
# each failed test on a line "HANDOVER-MATRIX-FAILED BINARY TEST"; closes with one
# marker line:
#   HANDOVER-MATRIX-RESULT pass=N fail=M binaries=B broken=K
# where broken counts binaries that exited non-zero without a failed test (a crash, a
# panic outside a test). Exits 0 only when nothing failed.
#
# Usage: runner.sh LIST      (LIST: lines "BINARY PACKAGE_DIR")
# The same script runs as the VM's test stage (tests/kernels/init) and, for
# `run.sh host`, on the running kernel; it only starts the test binaries, which set up
# their own bpffs, cgroup and network namespace.
set -u
list="$1"
export CI=1
export RUST_BACKTRACE=1
pass=0
fail=0
binaries=0
broken=0
out="${TMPDIR:-/tmp}/handover-runner.$$"
while read -r bin dir; do
    [ -n "$bin" ] || continue
    binaries=$((binaries + 1))
    echo "HANDOVER-MATRIX-BINARY $(basename "$bin")"
    # --nocapture: what each test says about the kernel (probes, skips) is the point.
    (cd "$dir" && "$bin" --test-threads=1 --nocapture) >"$out" 2>&1
    rc=$?
    cat "$out"
    # The names listed under the last "failures:" heading.
    awk '/^failures:$/ { n = NR; delete names; next }
         n && /^    [^ ]/ { names[$1] = 1 }
         n && /^$/ { n = 0 }
         END { for (t in names) print t }' "$out" | sort |
        sed "s|^|HANDOVER-MATRIX-FAILED $(basename "$bin") |"
    # "test result: ok. 5 passed; 0 failed; ..." (or FAILED.)
    result="$(grep '^test result:' "$out" | tail -n 1)"
    p="$(echo "$result" | sed -n 's/.* \([0-9][0-9]*\) passed;.*/\1/p')"
    f="$(echo "$result" | sed -n 's/.* \([0-9][0-9]*\) failed;.*/\1/p')"
    pass=$((pass + ${p:-0}))
    fail=$((fail + ${f:-0}))
    if [ "$rc" -ne 0 ] && [ "${f:-0}" -eq 0 ]; then
        broken=$((broken + 1))
        echo "HANDOVER-MATRIX-BROKEN $(basename "$bin") exit=$rc"
    fi
done <"$list"
rm -f "$out"
echo "HANDOVER-MATRIX-RESULT pass=$pass fail=$fail binaries=$binaries broken=$broken"
[ "$fail" -eq 0 ] && [ "$broken" -eq 0 ]
