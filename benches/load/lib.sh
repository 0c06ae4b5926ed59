# Shared by benches/load/run.sh and benches/load/instructions.sh (sourced, not run).
# Expects: root (the repository), bin (the release binaries), work (a scratch directory) and a
# `pids` array that the caller's EXIT trap stops by PID.

pin0=""; pin1=""
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then pin0="taskset -c 0"; pin1="taskset -c 1"; fi
pinning() {
  if [ -n "$pin0" ]; then echo "pinned with taskset: mock upstream and load clients (wrk, streamload, curl) on CPU 0, the proxy under test on CPU 1"
  else echo "not pinned (fewer than 2 CPUs or no taskset)"; fi
}
machine() {
  echo "machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo), kernel $(uname -r); date: $(date -u '+%Y-%m-%d %H:%M UTC')"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# rss PID -> resident set in KiB (VmRSS), or 0 if the process is gone
rss() { awk '/^VmRSS:/ {print $2; found=1} END {if (!found) print 0}' "/proc/$1/status" 2>/dev/null || echo 0; }

# start_mock -> sets mock (HOST:PORT) and mock_pid
start_mock() {
  $pin0 "$bin/mock-upstream" --listen 127.0.0.1:0 > "$work/mock.out" 2>&1 &
  mock_pid=$!; pids+=("$mock_pid")
  for _ in $(seq 100); do grep -q listening "$work/mock.out" 2>/dev/null && break; sleep 0.05; done
  mock="$(sed -n 's/.*listening on //p' "$work/mock.out")"
}

# The mock records every request (bodies included): clear its log after each load, or it grows
# by gigabytes over a run.
mock_reset() { curl -sf -X POST "http://$mock/__mock/reset" > /dev/null 2>&1 || true; }

# start_passthrough [WRAPPER...] -> sets pt_port and pt_pid (the PID of the wrapper, e.g. valgrind)
start_passthrough() {
  pt_port="$(free_port)"
  $pin1 "$@" "$bin/passthrough" --listen "127.0.0.1:$pt_port" --upstream "$mock" --threads 1 > "$work/pt.out" 2>&1 &
  pt_pid=$!; pids+=("$pt_pid")
  for _ in $(seq 600); do grep -q listening "$work/pt.out" 2>/dev/null && python3 -c "import socket; socket.create_connection(('127.0.0.1', $pt_port), 1)" 2>/dev/null && break; sleep 0.1; done
}

# start_tollgate [WRAPPER...] -> sets tg_port, tg_pid and key (a virtual key with a budget and a
# rate limit, so reservation, rate limiting, metering and usage logging all run)
master="bench-master-key-0123456789"
start_tollgate() {
  tg_port="$(free_port)"
  rm -rf "$work/data"
  cat > "$work/tollgate.yaml" <<YAML
listen: 127.0.0.1:$tg_port
data_dir: $work/data
master_key: $master
threads: 1
grace_period_seconds: 0
graceful_shutdown_timeout_seconds: 1
presets: false
access_log: false
# request traces: off (the default) unless TRACES_CAPTURE=metadata
traces: {capture: ${TRACES_CAPTURE:-off}}
# raised from 256/4096 so that 2,000 concurrent paced streams on one key are not refused
limits: {max_inflight: 20000, max_inflight_per_key: 20000}
providers:
  openai: {kind: openai, base_url: "http://$mock/v1", api_key: sk-bench}
  anthropic: {kind: anthropic, base_url: "http://$mock", api_key: sk-bench}
pricing:
  openai:gpt-4o-mini: {input: 0.15, output: 0.60}
  anthropic:claude-x: {input: 3, output: 15}
YAML
  RUST_LOG=warn $pin1 "$@" "$bin/tollgate" serve --config "$work/tollgate.yaml" > "$work/tg.out" 2> "$work/tg.log" &
  tg_pid=$!; pids+=("$tg_pid")
  for _ in $(seq 1200); do curl -sf "127.0.0.1:$tg_port/health" 2>/dev/null | grep -q '"store":"open"' && break; sleep 0.1; done
  key="$(curl -sf -X POST "127.0.0.1:$tg_port/v1/keys" -H "authorization: Bearer $master" \
    -d '{"name":"bench","max_budget":1000000,"budget_duration":"monthly","rpm_limit":100000000}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')"
}

# forget PID: drop a process that has been waited for from pids (so a reused PID is not killed)
forget() {
  local keep=() p
  for p in "${pids[@]:-}"; do [ -n "$p" ] && [ "$p" != "$1" ] && keep+=("$p"); done
  pids=("${keep[@]:-}")
}

# stop PID: SIGTERM, wait up to 10 s, then SIGKILL
stop() {
  local p="$1"
  kill "$p" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  forget "$p"
}
