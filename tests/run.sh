#!/usr/bin/env bash
# The whole test suite: unit and integration tests (the real binary on loopback against the
# mock upstream), then the acceptance tests with the real clients (Python SDKs, Claude Code).
set -euo pipefail
cd "$(dirname "$0")/.."
# A PostgreSQL of our own on loopback (own data dir, user, database and port) for the shared
# store tests; stopped by its PID when this script exits, however it exits.
pg_dir=$(mktemp -d /tmp/tollgate-pg.XXXXXX)
chmod 755 "$pg_dir"
pg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
trap 'bash tests/postgres.sh stop "$pg_dir"; rm -rf "$pg_dir"' EXIT
TOLLGATE_TEST_PG_URL=$(bash tests/postgres.sh start "$pg_dir" "$pg_port")
export TOLLGATE_TEST_PG_URL TOLLGATE_TEST_PG_DATA="$pg_dir"
# Everything a test could skip for is here: a skip would be a silent gap, so it fails instead.
export TOLLGATE_NO_SKIP=1
echo "test PostgreSQL on 127.0.0.1:$pg_port (data in $pg_dir)"
cargo build --workspace --bins
# The Python of tests/clients/.venv runs the MCP test servers (tests/mcp_servers) that the
# Rust MCP tests start.
bash tests/clients/venv.sh
cargo test --workspace
# The criterion benches run once each as tests: they must compile and run (numbers come from
# `cargo bench`, never from the test suite).
cargo test --benches -p tollgate
TOLLGATE_BIN="$PWD/target/debug/tollgate" MOCK_BIN="$PWD/target/debug/mock-upstream" bash tests/clients/run.sh
