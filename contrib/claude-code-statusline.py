#!/usr/bin/env python3
"""Claude Code status line for tollgate: the session's spend and the remaining budget.

Claude Code runs the `statusLine` command after each assistant message, with the session as
JSON on stdin (`session_id`, `model.display_name`, ...), and shows the first line it prints.
This script asks the gateway's `GET /v1/key/info?session=<session_id>` what the key's
requests in this session cost (from tollgate's usage records, so the gateway's prices, not
a client-side estimate) and how much budget is left (the tighter of the key's and its
user's). Python standard library only.

Settings (~/.claude/settings.json):
    {"statusLine": {"type": "command", "command": "python3 /path/to/claude-code-statusline.py"}}

The gateway and the key: TOLLGATE_URL and TOLLGATE_KEY, else Claude Code's own
ANTHROPIC_BASE_URL and ANTHROPIC_AUTH_TOKEN (or ANTHROPIC_API_KEY). It never fails loudly:
whatever goes wrong, it prints one short line and exits 0 (a failing command blanks the
status line).
"""

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

TIMEOUT_SECONDS = 2.0


def gateway():
    url = os.environ.get("TOLLGATE_URL") or os.environ.get("ANTHROPIC_BASE_URL") or ""
    key = (
        os.environ.get("TOLLGATE_KEY")
        or os.environ.get("ANTHROPIC_AUTH_TOKEN")
        or os.environ.get("ANTHROPIC_API_KEY")
        or ""
    )
    return url.rstrip("/"), key


def key_info(url, key, session_id):
    path = "/v1/key/info"
    if session_id:
        path += "?" + urllib.parse.urlencode({"session": session_id})
    req = urllib.request.Request(url + path, headers={"authorization": "Bearer " + key})
    with urllib.request.urlopen(req, timeout=TIMEOUT_SECONDS) as r:
        return json.load(r)


def tightest(info):
    """The standing with the least budget left, of the key's and its user's (None: none)."""
    standings = [info.get("standing") or {}, (info.get("user") or {}).get("standing") or {}]
    limited = [s for s in standings if s.get("remaining") is not None]
    return min(limited, key=lambda s: float(s["remaining"])) if limited else None


def line(session, info):
    parts = []
    model = (session.get("model") or {}).get("display_name")
    if model:
        parts.append(f"[{model}]")
    spent = (info.get("session") or {}).get("cost")
    if spent is not None:
        n = info["session"].get("requests", 0)
        parts.append(f"session ${spent} ({n} req)")
    s = tightest(info)
    if s is None:
        parts.append("no budget limit")
    else:
        left = f"budget ${s['remaining']} of ${s['max_budget']} left"
        if s.get("budget_period"):
            left += f" ({s['budget_period']})"
        parts.append(left)
    return "tollgate " + " · ".join(parts)


def main():
    try:
        session = json.load(sys.stdin)
        if not isinstance(session, dict):
            session = {}
    except (ValueError, OSError):
        session = {}
    url, key = gateway()
    if not url or not key:
        print("tollgate: set TOLLGATE_URL and TOLLGATE_KEY (or ANTHROPIC_BASE_URL and a key)")
        return
    try:
        info = key_info(url, key, session.get("session_id"))
    except urllib.error.HTTPError as e:
        print(f"tollgate: HTTP {e.code}")
        return
    except (urllib.error.URLError, OSError, ValueError):
        print("tollgate: unreachable")
        return
    print(line(session, info))


if __name__ == "__main__":
    main()
