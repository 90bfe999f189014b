#!/usr/bin/env bash
# Runs fuzz targets for SECONDS each (default 60) from the committed seeds:
#   fuzz/smoke.sh [SECONDS] [TARGET...]      (default: every target in fuzz/fuzz_targets/)
# New corpus entries go to a temporary directory; crashes land in fuzz/artifacts/.
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -euo pipefail
seconds="${1:-60}"
shift || true
cd "$(dirname "$0")/.."
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    for f in fuzz/fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi
for target in "${targets[@]}"; do
    corpus="$(mktemp -d)"
    seeds="fuzz/seeds/$target"
    [ -d "$seeds" ] || seeds=""
    echo "== $target for ${seconds}s"
    cargo +nightly fuzz run "$target" "$corpus" $seeds -- \
        -max_total_time="$seconds" -max_len=65536 -print_final_stats=1
    rm -rf "$corpus"
done
