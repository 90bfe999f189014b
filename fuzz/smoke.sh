#!/usr/bin/env bash
# Runs the btf_parse fuzz target for SECONDS (default 60) from the committed seeds.
# New corpus entries go to a temporary directory; crashes land in fuzz/artifacts/.
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -euo pipefail
seconds="${1:-60}"
cd "$(dirname "$0")/.."
corpus="$(mktemp -d)"
trap 'rm -rf "$corpus"' EXIT
cargo +nightly fuzz run btf_parse "$corpus" fuzz/seeds/btf_parse -- \
    -max_total_time="$seconds" -max_len=65536 -print_final_stats=1
