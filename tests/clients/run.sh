#!/usr/bin/env bash
# Acceptance: the real clients (openai and anthropic Python SDKs, the Claude Code and Codex CLIs, the
# Vercel AI SDK), pinned,
# driven through a real tollgate to the mock upstream, all on loopback.
# Usage (from the repo root): bash tests/clients/run.sh [pytest args, e.g. -k codex]
# TOLLGATE_BIN / MOCK_BIN (and GUARD_BIN) may point at prebuilt binaries.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

log() { printf '[acceptance] %s\n' "$*"; }

# --- clients -------------------------------------------------------------------------------
venv="$here/.venv"
bash "$here/venv.sh"
claude="$here/node_modules/.bin/claude"
# Codex: bin/codex.js runs the native binary of the optional dependency @openai/codex-linux-x64
# (an alias of @openai/codex@<version>-linux-x64, no install script): `--omit=optional` would
# leave it out.
codex="$here/node_modules/.bin/codex"
if ! "$claude" --version >/dev/null 2>&1 || ! "$codex" --version >/dev/null 2>&1 \
   || [ ! -f "$here/node_modules/ai/package.json" ] || [ ! -f "$here/node_modules/@ai-sdk/openai/package.json" ]; then
  log "installing Claude Code, Codex and the Vercel AI SDK (npm ci)"
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error --include=optional)
  if ! "$claude" --version >/dev/null 2>&1; then
    # npm may skip install scripts: run the package's own installer (no network needed).
    (cd "$here/node_modules/@anthropic-ai/claude-code" && node install.cjs)
  fi
  "$codex" --version >/dev/null || { echo "codex did not install (its native binary is an optional dependency)"; exit 1; }
fi
log "clients: $("$venv/bin/python" -c 'import openai, anthropic; print("openai", openai.__version__, "anthropic", anthropic.__version__)'), claude $("$claude" --version), $("$codex" --version)"

# --- binaries ------------------------------------------------------------------------------
if [ -z "${TOLLGATE_BIN:-}" ] || [ -z "${MOCK_BIN:-}" ]; then
  cargo build --quiet --bin tollgate && cargo build --quiet -p mock-upstream
  TOLLGATE_BIN="${TOLLGATE_BIN:-$root/target/debug/tollgate}"
  MOCK_BIN="${MOCK_BIN:-$root/target/debug/mock-upstream}"
fi

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

"$MOCK_BIN" --listen 127.0.0.1:0 --log "$work/mock.jsonl" \
  --search-listen 127.0.0.1:0 --sandbox-listen 127.0.0.1:0 > "$work/mock.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q listening "$work/mock.out" 2>/dev/null && break; sleep 0.05; done
mock_addr="$(sed -n 's/^mock-upstream listening on //p' "$work/mock.out")"
search_addr="$(sed -n 's/^mock search listening on //p' "$work/mock.out")"
sandbox_addr="$(sed -n 's/^mock sandbox listening on //p' "$work/mock.out")"
[ -n "$mock_addr" ] || { cat "$work/mock.out"; echo "mock did not start"; exit 1; }
# The mock guardrail service (built with the mock, in the same crate).
"${GUARD_BIN:-$(dirname "$MOCK_BIN")/guardrail-mock}" --listen 127.0.0.1:0 > "$work/guard.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q listening "$work/guard.out" 2>/dev/null && break; sleep 0.05; done
guard_addr="$(sed -n 's/.*listening on //p' "$work/guard.out")"
[ -n "$guard_addr" ] || { cat "$work/guard.out"; echo "guardrail mock did not start"; exit 1; }

port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
master="acceptance-master-key-0123456789"
cat > "$work/tollgate.yaml" <<YAML
listen: 127.0.0.1:$port
data_dir: $work/data
master_key: $master
grace_period_seconds: 1
graceful_shutdown_timeout_seconds: 1
presets: false
providers:
  openai: {kind: openai, base_url: "http://$mock_addr/v1", api_key: sk-openai-provider-key, models: [gpt-4o-mini, text-embedding-3-small]}
  anthropic: {kind: anthropic, base_url: "http://$mock_addr", api_key: sk-ant-provider-key, models: [claude-sonnet-4-6]}
  chatonly: {kind: openai, base_url: "http://$mock_addr/v1", api_key: sk-chat-provider-key, native_responses: false, models: [llama-3.3-70b]}
  gemini: {kind: gemini, base_url: "http://$mock_addr", api_key: gm-provider-key, models: [gemini-2.5-flash]}
tools:
  web_search: {url: "http://$search_addr"}
  code_execution: {url: "http://$sandbox_addr"}
  # test_mcp.py: the MCP test servers run on loopback
  mcp: {allow_private_hosts: true}
# test_console.py: the Traces page lists the requests it makes
traces: {capture: metadata}
guardrails:
  url: "http://$guard_addr"
  policies:
    # test_guardrails.py: Claude Code stopped when a tool result it sends holds the mock tool's output
    tool-injection: [{profile: prompt-injection, mode: block, scope: tool_results, validate_kwargs: {mock: {marker: hello-from-mock-tool}}}]
YAML
RUST_LOG=info "$TOLLGATE_BIN" serve --config "$work/tollgate.yaml" > "$work/tollgate.out" 2> "$work/tollgate.log" &
pids+=($!)
for _ in $(seq 200); do
  curl -sf "http://127.0.0.1:$port/health" 2>/dev/null | grep -q '"store":"open"' && break
  sleep 0.05
done
curl -sf "http://127.0.0.1:$port/health" >/dev/null || { tail -20 "$work/tollgate.log"; echo "tollgate did not start"; exit 1; }
key="$(curl -sf -X POST "http://127.0.0.1:$port/v1/keys" -H "authorization: Bearer $master" -d '{"name":"acceptance"}' \
  | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["key"])')"
log "tollgate on 127.0.0.1:$port, mock on $mock_addr"

export TG_BASE="http://127.0.0.1:$port" TG_KEY="$key" TG_MASTER="$master" TG_MOCK="http://$mock_addr" \
       TG_SEARCH="http://$search_addr" TG_SANDBOX="http://$sandbox_addr" TG_GUARD="http://$guard_addr" \
       TG_CLAUDE="$claude" TG_CODEX="$codex" TG_WORK="$work"
status=0
# Extra arguments go to pytest, e.g. `bash tests/clients/run.sh -k codex`.
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$here" "$@" || status=$?
if [ "$status" -ne 0 ]; then
  log "tollgate log (tail):"; tail -30 "$work/tollgate.log" | sed 's/tg-[A-Za-z0-9_-]*/tg-<redacted>/g'
fi
exit "$status"
