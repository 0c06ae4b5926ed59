#!/usr/bin/env bash
# Runs every fuzz target for a bounded time. With cargo-fuzz (nightly, or stable with
# RUSTC_BOOTSTRAP=1) the libFuzzer targets run; otherwise the same target bodies run as the
# deterministic mutation loops in tests/fuzz_loops.rs. FUZZ_SECS per target (default 20).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${FUZZ_SECS:-20}"
if cargo fuzz --version >/dev/null 2>&1; then
  for t in config requests sse transcoders; do
    echo "== cargo fuzz run $t (${secs}s)"
    (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" -- -max_total_time="$secs" -rss_limit_mb=2048)
  done
else
  echo "== cargo-fuzz not installed: stable mutation loops (${secs}s per target)"
  TOLLGATE_FUZZ_SECS="$secs" cargo test --test fuzz_loops -- --nocapture
fi
