#!/usr/bin/env bash
# The whole test suite: unit and integration tests (the real binary on loopback against the
# mock upstream), then the acceptance tests with the real clients (Python SDKs, Claude Code).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins
cargo test --workspace
# The criterion benches run once each as tests: they must compile and run (numbers come from
# `cargo bench`, never from the test suite).
cargo test --benches -p tollgate
TOLLGATE_BIN="$PWD/target/debug/tollgate" MOCK_BIN="$PWD/target/debug/mock-upstream" bash tests/clients/run.sh
