#!/usr/bin/env bash
# Instructions per request (Ir under valgrind --tool=callgrind) for each request kind, tollgate
# and the plain Pingora passthrough. Unlike wall-clock figures these are stable across runs, so
# they can be tracked across commits.
#
#   bash benches/load/instructions.sh              # REQUESTS=200 per kind, ~5-10 minutes
#   REQUESTS=500 bash benches/load/instructions.sh
#   INSTRUCTIONS=1 bash benches/load/run.sh        # the same, after the load kit
#   KINDS="chat2k" KEEP=/tmp/cg bash benches/load/instructions.sh   # some kinds; keep the dumps
#                                                  # for callgrind_annotate --inclusive=yes
#
# Each proxy runs under callgrind with instrumentation off (--instr-atstart=no), so start-up,
# key creation and warm-up are not counted. For every kind: WARMUP requests uninstrumented,
# then `callgrind_control -z` (zero), `-i on`, REQUESTS requests over one keep-alive connection
# (benches/streamload requests), `-d` (dump), `-i off`; Ir of the dump / REQUESTS. The dump
# covers every thread of the proxy (workers, timers, the store's background flush), i.e. the
# whole cost a request causes in the process. The mock and the client are not counted.
# Loopback only; every process is stopped by PID at exit.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
REQUESTS="${REQUESTS:-200}"
WARMUP="${WARMUP:-20}"
command -v valgrind >/dev/null && command -v callgrind_control >/dev/null || { echo "valgrind (callgrind) is not installed" >&2; exit 1; }
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release -q -p tollgate -p mock-upstream -p passthrough -p streamload
bin="${CARGO_TARGET_DIR:-$root/target}/release"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  if [ -n "${KEEP:-}" ] && [ -d "$work/cg" ]; then mkdir -p "$KEEP" && cp "$work"/cg/done-* "$KEEP"/ 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
. "$root/benches/load/lib.sh"

start_mock
python3 "$root/benches/load/bodies.py" "$work"
mkdir -p "$work/cg"

# kind|body|mock pieces|targets|label
kinds=(
  "chat2k|chat2k|7|pt tg|OpenAI chat passthrough, 2 KB"
  "chat80k|chat80k|7|pt|OpenAI chat passthrough, 80 KB"
  "msg2k|msg2k|7|pt tg|Anthropic messages passthrough, 2 KB"
  "msg80k|msg80k|7|pt tg|Anthropic messages passthrough, 80 KB"
  "a2c2k|a2c2k|7|tg|Anthropic -> OpenAI translation, 2 KB"
  "a2c80k|a2c80k|7|tg|Anthropic -> OpenAI translation, 80 KB"
  "chatsse|chatsse|40|pt tg|SSE burst stream (40 chunks), 2 KB"
  "cc80k|cc80k|7|tg|Claude Code-like turn, 80 KB"
  "cc80kpii|cc80kpii|7|tg|Claude Code-like turn, 80 KB, one pii check"
)

# cg PID COMMAND...: a callgrind_control command, with a deadline (it waits for the tool to
# pick the command up)
cg() { local p="$1"; shift; timeout 120 callgrind_control "$@" "$p" > /dev/null 2>&1; }

results="$work/ir.tsv"
: > "$results"
measure() { # TARGET-NAME PID ADDR AUTH
  local tname="$1" pid="$2" addr="$3" auth="$4" k kind body pieces which label before f ir
  for k in "${kinds[@]}"; do
    IFS='|' read -r kind body pieces which label <<<"$k"
    [[ " $which " == *" $tname "* ]] || continue
    [ -z "${KINDS:-}" ] || [[ " $KINDS " == *" $kind "* ]] || continue
    local args=(requests --addr "$addr" --path "$(cat "$work/$body.path")" --body "$work/$body.json"
      -H "authorization: Bearer $auth" -H "x-mock-pieces: $pieces" -H "x-mock-split-writes: 0" --timeout-s 300)
    $pin0 "$bin/streamload" "${args[@]}" --requests "$WARMUP" > "$work/warm.out"
    cg "$pid" -z
    cg "$pid" -i on
    $pin0 "$bin/streamload" "${args[@]}" --requests "$REQUESTS" > "$work/run.out"
    before="$(ls "$work/cg" | wc -l)"
    cg "$pid" -d "$kind"
    cg "$pid" -i off
    for _ in $(seq 100); do [ "$(ls "$work/cg" | wc -l)" -gt "$before" ] && break; sleep 0.1; done
    f="$(ls -t "$work/cg"/* | head -1)"
    ir="$(awk '/^(summary|totals):/ {print $2; exit}' "$f")"
    mv "$f" "$work/cg/done-$tname-$kind"
    mock_reset
    printf "%s\t%s\t%s\t%s\t%s\n" "$tname" "$kind" "$label" "$ir" "$(cat "$work/run.out")" >> "$results"
    echo "callgrind: $tname $kind done" >&2
  done
  # the idle cost of the same process, 2 s with no requests (timers, background tasks)
  cg "$pid" -z; cg "$pid" -i on; sleep 2
  before="$(ls "$work/cg" | wc -l)"
  cg "$pid" -d idle; cg "$pid" -i off
  for _ in $(seq 100); do [ "$(ls "$work/cg" | wc -l)" -gt "$before" ] && break; sleep 0.1; done
  f="$(ls -t "$work/cg"/* | head -1)"
  printf "%s\tidle\tidle, 2 s\t%s\t{}\n" "$tname" "$(awk '/^(summary|totals):/ {print $2; exit}' "$f")" >> "$results"
  mv "$f" "$work/cg/done-$tname-idle"
}

vg=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/cg/cg.%p")
start_passthrough "${vg[@]}"
measure pt "$pt_pid" "127.0.0.1:$pt_port" none
stop "$pt_pid"
start_tollgate "${vg[@]}"
measure tg "$tg_pid" "127.0.0.1:$tg_port" "$key"
stop "$tg_pid"

echo "== 4. CPU cost: instructions per request (callgrind Ir / $REQUESTS requests, after $WARMUP uninstrumented warm-up requests, one keep-alive connection)"
machine
pinning
python3 - "$results" "$REQUESTS" <<'PY'
import json, sys
n = int(sys.argv[2])
ir, labels, errs = {}, {}, {}
for line in open(sys.argv[1]):
    t, kind, label, v, js = line.rstrip("\n").split("\t", 4)
    ir[(t, kind)] = int(v) if v else None
    labels[kind] = label
    try: r = json.loads(js)
    except ValueError: r = {}
    errs[(t, kind)] = r.get("errors", 0) if r else 0
# A->C rows compare with the passthrough of the upstream call they make (OpenAI chat, same size)
ref = {"a2c2k": "chat2k", "a2c80k": "chat80k"}
print(f"{'kind':58} {'passthrough Ir/req':>18} {'tollgate Ir/req':>16} {'tg / pt':>8} {'tg - pt':>10} {'errors':>6}")
for kind, label in labels.items():
    if kind == "idle": continue
    pt = ir.get(("pt", ref.get(kind, kind))); tg = ir.get(("tg", kind))
    ptr = pt / n if pt else None; tgr = tg / n if tg else None
    f = lambda v: f"{v:,.0f}" if v else "-"
    note = " (pt: OpenAI chat, same size)" if kind in ref else ""
    e = errs.get(("pt", kind), 0) + errs.get(("tg", kind), 0)
    print(f"{label + note:58} {f(ptr) if kind not in ref else '(' + f(ptr) + ')':>18} {f(tgr):>16} {(f'{tgr / ptr:.2f}x' if ptr and tgr else '-'):>8} {(f'{tgr - ptr:+,.0f}' if ptr and tgr else '-'):>10} {e:6d}")
for t, name in (("pt", "passthrough"), ("tg", "tollgate")):
    v = ir.get((t, "idle"))
    if v is not None: print(f"idle {name}: {v / 2:,.0f} Ir/s (not subtracted above)")
PY
