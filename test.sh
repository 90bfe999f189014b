#!/usr/bin/env bash
# Runs every test: builds the BPF fixture objects from programs/, then the whole workspace suite.
set -euo pipefail
cd "$(dirname "$0")"
bash programs/build.sh
cargo test --workspace --all-targets
cargo test --workspace --doc
