#!/usr/bin/env bash
# The latency one built-in guardrail check adds: the mean time of a Claude Code-like 80 KB
# turn (benches/load/bodies.py `cc80k`) without and with `guardrails: [{"profile": "pii",
# "scope": "full"}]` (`cc80kpii`), sent to tollgate (release build) over one keep-alive
# connection, REQUESTS at a time in ROUNDS alternating rounds; the medians and their difference.
#
#   bash benches/load/guardrail_latency.sh               # REQUESTS=300 ROUNDS=5, ~1 minute
#
# Loopback only; every process is stopped by PID at exit.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
REQUESTS="${REQUESTS:-300}"
ROUNDS="${ROUNDS:-5}"
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release -q -p tollgate -p mock-upstream -p streamload
bin="${CARGO_TARGET_DIR:-$root/target}/release"

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
. "$root/benches/load/lib.sh"

start_mock
python3 "$root/benches/load/bodies.py" "$work"
start_tollgate
: > "$work/runs.tsv"
for r in $(seq "$ROUNDS"); do
  for kind in cc80k cc80kpii; do
    $pin0 "$bin/streamload" requests --addr "127.0.0.1:$tg_port" --path /v1/messages \
      --body "$work/$kind.json" -H "authorization: Bearer $key" -H "x-mock-pieces: 7" \
      -H "x-mock-split-writes: 0" --requests "$REQUESTS" --timeout-s 300 > "$work/run.out"
    printf "%s\t%s\n" "$kind" "$(cat "$work/run.out")" >> "$work/runs.tsv"
    mock_reset
  done
done
echo "== added latency of one built-in pii check (scope full) on a Claude Code-like 80 KB turn: $ROUNDS rounds x $REQUESTS sequential requests, one keep-alive connection"
machine
pinning
python3 - "$work/runs.tsv" <<'PY'
import json, statistics, sys
per = {}
for line in open(sys.argv[1]):
    kind, js = line.rstrip("\n").split("\t", 1)
    r = json.loads(js)
    assert r["errors"] == 0, r
    per.setdefault(kind, []).append(r["wall_s"] / r["requests"] * 1e6)
a, b = statistics.median(per["cc80k"]), statistics.median(per["cc80kpii"])
print(f"without: {a:,.0f} us/request (rounds: {', '.join(f'{x:,.0f}' for x in per['cc80k'])})")
print(f"with pii: {b:,.0f} us/request (rounds: {', '.join(f'{x:,.0f}' for x in per['cc80kpii'])})")
print(f"added: {b - a:+,.0f} us/request")
PY
