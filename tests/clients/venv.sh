#!/usr/bin/env bash
# Creates or updates tests/clients/.venv with the pinned Python packages of requirements.txt
# (the SDK clients, pytest, and the MCP SDK that the test MCP servers in tests/mcp_servers run
# on). Called by tests/clients/run.sh and, before `cargo test`, by tests/run.sh: the Rust MCP
# tests start their servers with this venv's python.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
log() { printf '[venv] %s\n' "$*"; }
if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv"
  python3 -m venv "$venv"
fi
# Up to date when every pinned line of requirements.txt is in `pip freeze`.
# (grep -c, not -q: an early exit would SIGPIPE pip and, with pipefail, reinstall every run)
if [ "$("$venv/bin/pip" freeze 2>/dev/null | grep -cxF -f "$here/requirements.txt")" != "$(grep -c . "$here/requirements.txt")" ]; then
  log "installing $(tr '\n' ' ' < "$here/requirements.txt")"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt"
fi
