#!/usr/bin/env bash
# tollgate's load kit: builds the release gateway, the Rust mock upstream and a plain Pingora
# passthrough (benches/passthrough, the ceiling), runs the same bounded wrk loads against the
# mock directly, the passthrough and tollgate, interleaved (A, B, C, A, B, C, ...), and prints one
# table of medians with ratios against the passthrough and the direct path.
#
#   bash benches/load/run.sh            # DURATION=5 ROUNDS=3 by default (~4 minutes)
#   DURATION=10 ROUNDS=5 bash benches/load/run.sh
#
# Loopback only; every process it starts is stopped by PID at exit. Client and mock are pinned
# to CPU 0, the proxy under test to CPU 1 (taskset), when the machine has two or more CPUs.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
DURATION="${DURATION:-5}"
ROUNDS="${ROUNDS:-3}"
command -v wrk >/dev/null || { sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo; $sudo apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q -p tollgate -p mock-upstream -p passthrough
bin="$root/target/release"

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

pin0=""; pin1=""
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then pin0="taskset -c 0"; pin1="taskset -c 1"; fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

$pin0 "$bin/mock-upstream" --listen 127.0.0.1:0 > "$work/mock.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q listening "$work/mock.out" 2>/dev/null && break; sleep 0.05; done
mock="$(sed -n 's/.*listening on //p' "$work/mock.out")"

pt_port="$(free_port)"
$pin1 "$bin/passthrough" --listen "127.0.0.1:$pt_port" --upstream "$mock" --threads 1 > "$work/pt.out" 2>&1 &
pids+=($!)

tg_port="$(free_port)"
master="bench-master-key-0123456789"
cat > "$work/tollgate.yaml" <<YAML
listen: 127.0.0.1:$tg_port
data_dir: $work/data
master_key: $master
threads: 1
grace_period_seconds: 0
graceful_shutdown_timeout_seconds: 1
presets: false
access_log: false
providers:
  openai: {kind: openai, base_url: "http://$mock/v1", api_key: sk-bench}
  anthropic: {kind: anthropic, base_url: "http://$mock", api_key: sk-bench}
pricing:
  openai:gpt-4o-mini: {input: 0.15, output: 0.60}
  anthropic:claude-x: {input: 3, output: 15}
YAML
RUST_LOG=warn $pin1 "$bin/tollgate" serve --config "$work/tollgate.yaml" > "$work/tg.out" 2> "$work/tg.log" &
pids+=($!)
for _ in $(seq 200); do curl -sf "127.0.0.1:$tg_port/health" 2>/dev/null | grep -q '"store":"open"' && break; sleep 0.05; done
# A key with a budget and limits, so reservation, rate limiting, metering and usage logging all run.
key="$(curl -sf -X POST "127.0.0.1:$tg_port/v1/keys" -H "authorization: Bearer $master" \
  -d '{"name":"bench","max_budget":1000000,"budget_duration":"monthly","rpm_limit":100000000}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')"

# Request bodies: 2 KB chat and messages, 80 KB Claude Code-sized messages.
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
pad = lambda n: "x" * n
def chat(model, size, stream=False):
    b = {"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": ""}]}
    if stream: b["stream"] = True
    b["messages"][0]["content"] = pad(size - len(json.dumps(b)))
    return json.dumps(b)
bodies = {
  "chat2k": chat("gpt-4o-mini", 2048), "msg2k": chat("claude-x", 2048), "a2c2k": chat("openai:gpt-4o-mini", 2048),
  "msg80k": chat("claude-x", 80 * 1024), "a2c80k": chat("openai:gpt-4o-mini", 80 * 1024),
  "chatsse": chat("gpt-4o-mini", 2048, True),
}
for name, body in bodies.items():
    path = "/v1/chat/completions" if name.startswith("chat") else "/v1/messages"
    with open(f"{work}/{name}.lua", "w") as f:
        f.write(f'wrk.method = "POST"\nwrk.path = "{path}"\nwrk.body = {json.dumps(body)}\n')
        f.write('wrk.headers["content-type"] = "application/json"\nwrk.headers["authorization"] = "Bearer " .. os.getenv("TG_KEY")\n')
        f.write('wrk.headers["x-mock-pieces"] = os.getenv("PIECES") or "7"\n')
        # the mock writes each event in one piece here (its split-write mode sleeps between pieces)
        f.write('wrk.headers["x-mock-split-writes"] = "0"\n')
PY
export TG_KEY="$key"

# run TARGET SCENARIO CONNECTIONS -> "rps p50_us p99_us"
run() {
  local base="$1" scen="$2" conns="$3" threads=1
  [ "$conns" -gt 1 ] && threads=2
  $pin0 wrk -t"$threads" -c"$conns" -d"${DURATION}s" --latency -s "$work/$scen.lua" "http://$base" 2>&1 | python3 -c '
import re, sys
t = sys.stdin.read()
def us(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v); n = float(m.group(1))
    return n * {"us": 1, "ms": 1000, "s": 1e6}[m.group(2)]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p50 = us(re.search(r"\s50%\s+(\S+)", t).group(1)); p99 = us(re.search(r"\s99%\s+(\S+)", t).group(1))
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(rps, p50, p99, errs.group(1) if errs else 0)'
}

results="$work/results.tsv"
: > "$results"
targets=("direct|$mock" "passthrough|127.0.0.1:$pt_port" "tollgate|127.0.0.1:$tg_port")
# scenario|connections|label|targets (tollgate-only scenarios compare with the passthrough of the same upstream call)
scenarios=(
  "chat2k|1|OpenAI chat passthrough, 2 KB, c=1|all"
  "msg2k|1|Anthropic messages passthrough, 2 KB, c=1|all"
  "msg80k|1|Anthropic messages passthrough, 80 KB, c=1|all"
  "a2c2k|1|Anthropic -> OpenAI translation, 2 KB, c=1|tg"
  "a2c80k|1|Anthropic -> OpenAI translation, 80 KB, c=1|tg"
  "chat2k|64|OpenAI chat, 2 KB, c=64 (RPS)|all"
  "chatsse|64|SSE bursts (40 chunks), c=64 (streams/s)|all"
)
for round in $(seq "$ROUNDS"); do
  for s in "${scenarios[@]}"; do
    IFS='|' read -r scen conns label which <<<"$s"
    pieces=7; [ "$scen" = chatsse ] && pieces=40
    for t in "${targets[@]}"; do
      name="${t%%|*}"; addr="${t#*|}"
      if [ "$which" = tg ] && [ "$name" != tollgate ]; then continue; fi
      r="$(PIECES=$pieces run "$addr" "$scen" "$conns")"
      printf "%s\t%s\t%s\t%s\t%s\n" "$round" "$label" "$name" "$scen" "${r// /$'\t'}" >> "$results"
    done
  done
  echo "round $round done" >&2
done

python3 - "$results" <<'PY'
import statistics, sys, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    rnd, label, name, scen, rps, p50, p99, errs = line.rstrip("\n").split("\t")
    rows[(label, name)].append((float(rps), float(p50), float(p99), int(errs)))
med = {k: tuple(statistics.median(x[i] for x in v) for i in range(3)) + (sum(x[3] for x in v),) for k, v in rows.items()}
labels = list(dict.fromkeys(k[0] for k in rows))
print(f"{'scenario':48} {'target':12} {'RPS':>9} {'p50 µs':>8} {'p99 µs':>8} {'p50 vs pt':>9} {'p99 vs pt':>9} {'RPS vs pt':>9} {'added p50':>9} {'non-2xx':>7}")
for label in labels:
    pt = med.get((label, "passthrough")) or med.get((label.replace("Anthropic -> OpenAI translation", "OpenAI chat passthrough"), "passthrough"))
    d = med.get((label, "direct")) or med.get((label.replace("Anthropic -> OpenAI translation", "OpenAI chat passthrough"), "direct"))
    for name in ("direct", "passthrough", "tollgate"):
        if (label, name) not in med: continue
        rps, p50, p99, errs = med[(label, name)]
        r = lambda a, b: f"{a / b:.2f}x" if b else "-"
        print(f"{label:48} {name:12} {rps:9.0f} {p50:8.0f} {p99:8.0f} {r(p50, pt[1]) if pt else '-':>9} {r(p99, pt[2]) if pt else '-':>9} {r(rps, pt[0]) if pt else '-':>9} {(p50 - d[1]) if d else 0:8.0f}µs {errs:7d}")
PY
echo "(medians of $ROUNDS interleaved rounds of ${DURATION}s; $(nproc) CPUs; mock and wrk on CPU 0, proxies on CPU 1; $(date -u +%Y-%m-%d))"
