#!/usr/bin/env bash
# tollgate's load kit: builds the release gateway, the Rust mock upstream, a plain Pingora
# passthrough (benches/passthrough, the ceiling) and the stream load client (benches/streamload),
# runs the same bounded loads against the mock directly, the passthrough and tollgate,
# interleaved (A, B, C, A, B, C, ...), and prints one table per section with ratios against the
# passthrough and the direct path:
#   1. wrk: added latency at c=1 (2 KB / 80 KB, passthrough and A->C translation), RPS at c=64,
#      SSE bursts (40 chunks) streams/s;
#   2. paced streams (streamload): 64 deltas 20 ms apart, N concurrent streams; time to first
#      frame, per-frame lateness, stalls (frames > 100 ms late), errors;
#   3. memory: VmRSS of tollgate and the passthrough idle, at 1,000 paced streams, after the load;
#   4. with INSTRUCTIONS=1: instructions per request under callgrind (benches/load/instructions.sh,
#      slow: ~10 minutes more);
#   5. with LITELLM=1: a LiteLLM proxy (pinned version, venv in benches/load/.venv, 1 worker) in the
#      c=1 and c=64 rows of the wrk table; skipped cleanly if it cannot be installed.
#
#   bash benches/load/run.sh                   # SCENARIOS=all: ~10 minutes
#   SCENARIOS=quick bash benches/load/run.sh   # 1 round of 2 s, N = 100 and 500: ~2 minutes
#   SCENARIOS=paced bash benches/load/run.sh   # paced streams and memory only
#   SCENARIOS=wrk bash benches/load/run.sh     # the wrk table only
#   DURATION=10 ROUNDS=5 PACED_N="1000 2000" INSTRUCTIONS=1 LITELLM=1 bash benches/load/run.sh
#
# Loopback only; every process it starts is stopped by PID at exit. Client and mock are pinned
# to CPU 0, the proxy under test to CPU 1 (taskset), when the machine has two or more CPUs.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
SCENARIOS="${SCENARIOS:-all}"
case "$SCENARIOS" in
  quick) DURATION="${DURATION:-2}"; ROUNDS="${ROUNDS:-1}"; PACED_N="${PACED_N:-100 500}"; PACED_ROUNDS="${PACED_ROUNDS:-1}" ;;
  all|wrk|paced) ;;
  *) echo "SCENARIOS must be all, quick, wrk or paced" >&2; exit 2 ;;
esac
DURATION="${DURATION:-5}"
ROUNDS="${ROUNDS:-3}"
PACED_N="${PACED_N:-100 500 1000 2000}"
PACED_ROUNDS="${PACED_ROUNDS:-3}"
do_wrk=1; do_paced=1
[ "$SCENARIOS" = paced ] && do_wrk=0
[ "$SCENARIOS" = wrk ] && do_paced=0
command -v wrk >/dev/null || { sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo; $sudo apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q -p tollgate -p mock-upstream -p passthrough -p streamload
bin="${CARGO_TARGET_DIR:-$root/target}/release"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
# 2,000 streams through a proxy are 4,000 sockets in it and 2,000 in the client and the mock.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" -ge 8192 ] || echo "warning: ulimit -n is $(ulimit -n); N=2000 paced streams need ~8192" >&2

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
start_passthrough
start_tollgate
python3 "$root/benches/load/bodies.py" "$work"
export TG_KEY="$key"
sleep 1
mem_idle_tg="$(rss "$tg_pid")"; mem_idle_pt="$(rss "$pt_pid")"

# Optional: LiteLLM proxy, one worker, pointed at the mock (OpenAI-compatible).
LITELLM_VERSION="${LITELLM_VERSION:-1.110.2}"
ll_port=""
if [ "${LITELLM:-0}" = 1 ] && [ "$do_wrk" = 1 ]; then
  venv="$root/benches/load/.venv"
  if { [ -x "$venv/bin/litellm" ] && "$venv/bin/python" -c "import litellm, sys; from importlib.metadata import version; sys.exit(version('litellm') != '$LITELLM_VERSION')" 2>/dev/null; } \
     || { python3 -m venv "$venv" && "$venv/bin/pip" install -q "litellm[proxy]==$LITELLM_VERSION" >"$work/pip.log" 2>&1; }; then
    ll_port="$(free_port)"
    cat > "$work/litellm.yaml" <<YAML
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {model: openai/gpt-4o-mini, api_base: "http://$mock/v1", api_key: sk-bench}
litellm_settings: {telemetry: false, set_verbose: false}
YAML
    LITELLM_LOG=ERROR LITELLM_TELEMETRY=False $pin1 "$venv/bin/litellm" --config "$work/litellm.yaml" --host 127.0.0.1 --port "$ll_port" --num_workers 1 > "$work/litellm.log" 2>&1 &
    ll_pid=$!; pids+=("$ll_pid")
    for _ in $(seq 600); do curl -sf "127.0.0.1:$ll_port/health/liveliness" >/dev/null 2>&1 && break; kill -0 "$ll_pid" 2>/dev/null || break; sleep 0.2; done
    if ! curl -sf "127.0.0.1:$ll_port/health/liveliness" >/dev/null 2>&1; then
      echo "LiteLLM did not start; skipped (log: $(tail -3 "$work/litellm.log" | tr '\n' ' '))" >&2; stop "$ll_pid"; ll_port=""
    fi
  else
    echo "LiteLLM $LITELLM_VERSION could not be installed; skipped ($(tail -2 "$work/pip.log" 2>/dev/null | tr '\n' ' '))" >&2
  fi
fi

echo "== tollgate load kit"
machine
pinning
echo "tollgate: 1 worker thread, a virtual key with a budget and an rpm limit (auth, routing, budget reservation, rate limiting, metering, usage logging on), limits.max_inflight(_per_key) raised to 20000; passthrough: 1 worker thread; both use mimalloc"
echo

# ---------------------------------------------------------------- 1. wrk
# run TARGET SCENARIO CONNECTIONS -> "rps p50_us p99_us non2xx"
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
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
print(rps, p50, p99, int(errs.group(1) if errs else 0) + (sum(map(int, sock.groups())) if sock else 0))'
}

if [ "$do_wrk" = 1 ]; then
  results="$work/results.tsv"
  : > "$results"
  targets=("direct|$mock" "passthrough|127.0.0.1:$pt_port" "tollgate|127.0.0.1:$tg_port")
  [ -n "$ll_port" ] && targets+=("litellm|127.0.0.1:$ll_port")
  # scenario|connections|label|targets (tollgate-only scenarios compare with the passthrough of the
  # same upstream call; litellm only runs in the rows marked +ll)
  scenarios=(
    "chat2k|1|OpenAI chat passthrough, 2 KB, c=1|all+ll"
    "msg2k|1|Anthropic messages passthrough, 2 KB, c=1|all"
    "msg80k|1|Anthropic messages passthrough, 80 KB, c=1|all"
    "a2c2k|1|Anthropic -> OpenAI translation, 2 KB, c=1|tg"
    "a2c80k|1|Anthropic -> OpenAI translation, 80 KB, c=1|tg"
    "chat2k|64|OpenAI chat, 2 KB, c=64 (RPS)|all+ll"
    "chatsse|64|SSE bursts (40 chunks), c=64 (streams/s)|all"
  )
  for round in $(seq "$ROUNDS"); do
    for s in "${scenarios[@]}"; do
      IFS='|' read -r scen conns label which <<<"$s"
      pieces=7; [ "$scen" = chatsse ] && pieces=40
      for t in "${targets[@]}"; do
        name="${t%%|*}"; addr="${t#*|}"
        if [ "$which" = tg ] && [ "$name" != tollgate ]; then continue; fi
        if [ "$name" = litellm ] && [ "$which" != all+ll ]; then continue; fi
        r="$(PIECES=$pieces run "$addr" "$scen" "$conns")"
        mock_reset
        printf "%s\t%s\t%s\t%s\t%s\n" "$round" "$label" "$name" "$scen" "${r// /$'\t'}" >> "$results"
      done
    done
    echo "wrk round $round done" >&2
  done

  echo "== 1. wrk: latency at c=1, RPS at c=64, SSE bursts (medians of $ROUNDS interleaved rounds of ${DURATION}s)"
  python3 - "$results" <<'PY'
import statistics, sys, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    rnd, label, name, scen, rps, p50, p99, errs = line.rstrip("\n").split("\t")
    rows[(label, name)].append((float(rps), float(p50), float(p99), int(float(errs))))
med = {k: tuple(statistics.median(x[i] for x in v) for i in range(3)) + (sum(x[3] for x in v),) for k, v in rows.items()}
labels = list(dict.fromkeys(k[0] for k in rows))
print(f"{'scenario':48} {'target':12} {'RPS':>9} {'p50 µs':>8} {'p99 µs':>8} {'p50 vs pt':>9} {'p99 vs pt':>9} {'RPS vs pt':>9} {'RPS vs dir':>10} {'added p50':>10} {'errors':>7}")
for label in labels:
    ref = label.replace("Anthropic -> OpenAI translation", "OpenAI chat passthrough")
    pt = med.get((label, "passthrough")) or med.get((ref, "passthrough"))
    d = med.get((label, "direct")) or med.get((ref, "direct"))
    for name in ("direct", "passthrough", "tollgate", "litellm"):
        if (label, name) not in med: continue
        rps, p50, p99, errs = med[(label, name)]
        r = lambda a, b: f"{a / b:.2f}x" if b else "-"
        print(f"{label:48} {name:12} {rps:9.0f} {p50:8.0f} {p99:8.0f} {r(p50, pt[1]) if pt else '-':>9} {r(p99, pt[2]) if pt else '-':>9} {r(rps, pt[0]) if pt else '-':>9} {r(rps, d[0]) if d else '-':>10} {(p50 - d[1]) if d else 0:8.0f}µs {errs:7d}")
tg = med.get(("OpenAI chat, 2 KB, c=64 (RPS)", "tollgate")); ll = med.get(("OpenAI chat, 2 KB, c=64 (RPS)", "litellm"))
if tg and ll and ll[0]:
    print(f"tollgate / LiteLLM RPS at c=64: {tg[0] / ll[0]:.0f}x")
PY
  echo "(added p50 = target minus direct; A->C rows compare with the OpenAI chat 2 KB / 80 KB-messages rows' direct and passthrough)"
  echo
  sleep 5
  mem_wrk_tg="$(rss "$tg_pid")"; mem_wrk_pt="$(rss "$pt_pid")"
fi

# ---------------------------------------------------------------- 2. paced streams, 3. memory
if [ "$do_paced" = 1 ]; then
  paced="$work/paced.tsv"
  : > "$paced"
  hdr=(-H "authorization: Bearer $key" -H "x-mock-pieces: 64" -H "x-mock-chunk-delay-ms: 20" -H "x-mock-split-writes: 0")
  targets=("direct|$mock|" "passthrough|127.0.0.1:$pt_port|$pt_pid" "tollgate|127.0.0.1:$tg_port|$tg_pid")
  mem_peak_tg=0; mem_peak_pt=0
  for n in $PACED_N; do
    for round in $(seq "$PACED_ROUNDS"); do
      for t in "${targets[@]}"; do
        IFS='|' read -r name addr pid <<<"$t"
        $pin0 "$bin/streamload" paced --addr "$addr" --path /v1/chat/completions --body "$work/chatsse.json" \
          "${hdr[@]}" --streams "$n" --interval-ms 20 --timeout-s 120 > "$work/sl.out" 2> "$work/sl.err" &
        sl=$!; pids+=("$sl")
        peak=0
        # VmRSS of the proxy under test every 100 ms while the streams run; the peak is kept.
        while kill -0 "$sl" 2>/dev/null; do
          if [ -n "$pid" ]; then v="$(rss "$pid")"; [ "$v" -gt "$peak" ] && peak="$v"; fi
          sleep 0.1
        done
        wait "$sl" || { echo "streamload failed against $name: $(cat "$work/sl.err")" >&2; }
        forget "$sl"
        mock_reset
        if [ "$n" = 1000 ]; then
          [ "$name" = tollgate ] && [ "$peak" -gt "$mem_peak_tg" ] && mem_peak_tg="$peak"
          [ "$name" = passthrough ] && [ "$peak" -gt "$mem_peak_pt" ] && mem_peak_pt="$peak"
        fi
        printf "%s\t%s\t%s\t%s\n" "$n" "$round" "$name" "$(cat "$work/sl.out")" >> "$paced"
        sleep 0.5
      done
    done
    echo "paced N=$n done" >&2
  done
  sleep 5
  mem_after_tg="$(rss "$tg_pid")"; mem_after_pt="$(rss "$pt_pid")"

  echo "== 2. paced streams: 64 deltas 20 ms apart (67-68 SSE frames per stream), N concurrent streams opened at once (medians of $PACED_ROUNDS interleaved rounds; errors and stalls summed)"
  python3 - "$paced" <<'PY'
import collections, json, statistics, sys
rows = collections.defaultdict(list)
order = []
for line in open(sys.argv[1]):
    n, rnd, name, js = line.rstrip("\n").split("\t", 3)
    try:
        r = json.loads(js)
    except ValueError:
        r = {"errors": int(n), "ok": 0}
    rows[(int(n), name)].append(r)
    if int(n) not in order: order.append(int(n))
def med(v, k): return statistics.median(x.get(k, 0) for x in v)
print(f"{'N':>5} {'target':12} {'ok':>6} {'errors':>6} {'TTFT p50':>9} {'TTFT p99':>9} {'late p50':>9} {'late p99':>9} {'late max':>9} {'stalls':>6} {'+TTFT p50':>10} {'+TTFT p99':>10} {'+frame p99':>10} {'TTFT p50 vs pt':>14} {'late p99 vs pt':>14}")
for n in order:
    d = rows.get((n, "direct")); pt = rows.get((n, "passthrough"))
    for name in ("direct", "passthrough", "tollgate"):
        v = rows.get((n, name))
        if not v: continue
        ok = sum(x.get("ok", 0) for x in v); err = sum(x.get("errors", 0) for x in v); st = sum(x.get("stalls", 0) for x in v)
        t50, t99, l50, l99, lmax = (med(v, k) for k in ("ttft_p50_us", "ttft_p99_us", "late_p50_us", "late_p99_us", "late_max_us"))
        add = lambda k: f"{med(v, k) - med(d, k):+.0f}" if d and name != "direct" else "-"
        ratio = lambda k: f"{med(v, k) / med(pt, k):.2f}x" if pt and name == "tollgate" and med(pt, k) else "-"
        print(f"{n:5d} {name:12} {ok:6d} {err:6d} {t50:9.0f} {t99:9.0f} {l50:9.0f} {l99:9.0f} {lmax:9.0f} {st:6d} {add('ttft_p50_us'):>10} {add('ttft_p99_us'):>10} {add('late_p99_us'):>10} {ratio('ttft_p50_us'):>14} {ratio('late_p99_us'):>14}")
        errs = [x.get("first_error") for x in v if x.get("first_error")]
        if errs: print(f"{'':18} first error: {errs[0]}")
print("(all µs. TTFT: request written -> first SSE frame. late: a frame's gap to the previous frame minus 20 ms,")
print(" so the mock's own timer overshoot (~1 ms) is in every row; data: [DONE] is not timed (tollgate strips the usage chunk it asked for,\n so its [DONE] comes one interval later); stall: a frame > 100 ms late.")
print(" +TTFT / +frame = target minus direct (tollgate - direct, passthrough - direct).)")
PY
  echo
  echo "== 3. memory: VmRSS (/proc/PID/status), MB"
  python3 - "$mem_idle_tg" "$mem_idle_pt" "${mem_wrk_tg:-}" "${mem_wrk_pt:-}" "$mem_peak_tg" "$mem_peak_pt" "$mem_after_tg" "$mem_after_pt" <<'PY'
import sys
a = [int(x) / 1024 if x else None for x in sys.argv[1:]]
idle, wrk, peak, after = (a[0], a[1]), (a[2], a[3]), (a[4], a[5]), (a[6], a[7])
f = lambda v: f"{v:8.1f}" if v else f"{'-':>8}"
print(f"{'process':12} {'idle':>8} {'after wrk':>9} {'1000 str':>8} {'after':>8} {'after/idle':>10}")
for i, name in ((0, "tollgate"), (1, "passthrough")):
    print(f"{name:12} {f(idle[i])} {f(wrk[i]):>9} {f(peak[i])} {f(after[i])} {after[i] / idle[i] if idle[i] and after[i] else 0:9.2f}x")
r = lambda x: f"{x[0] / x[1]:7.2f}x" if x[0] and x[1] else f"{'-':>8}"
print(f"{'tg / pt':12} {r(idle)} {r(wrk):>9} {r(peak)} {r(after)}")
print("(idle: after start, before any load; after wrk: 5 s after the wrk section; 1000 str: peak of 100 ms samples")
print(" during the N=1000 paced runs; after: 5 s after the last paced run)")
PY
  echo
fi

if [ "${INSTRUCTIONS:-0}" = 1 ]; then
  for p in "${pids[@]}"; do stop "$p"; done; pids=()
  SKIP_BUILD=1 bash "$root/benches/load/instructions.sh"
fi
