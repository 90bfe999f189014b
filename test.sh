#!/usr/bin/env bash
# Runs every test: builds the BPF fixture objects from programs/, then the whole workspace suite.
# Benchmarks are not tests (`--all-targets` would run them): they run with `cargo bench`,
# and clippy (.ci/run) still compiles them.
set -euo pipefail
cd "$(dirname "$0")"
bash programs/build.sh
cargo test --workspace --lib --bins --tests --examples
cargo test --workspace --doc
