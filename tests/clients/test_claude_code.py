"""One real Claude Code turn (`claude -p`) through tollgate to the mock Anthropic upstream."""
import json
import os
import subprocess
import tempfile

import pytest


def run_claude(base, env_auth):
    home = tempfile.mkdtemp(prefix="claude-home-", dir=os.environ["TG_WORK"])
    env = {
        "PATH": os.environ["PATH"],
        "HOME": home,
        "ANTHROPIC_BASE_URL": base,
        "ANTHROPIC_MODEL": "claude-sonnet-4-6",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_MAX_RETRIES": "2",
        **env_auth,
    }
    p = subprocess.run(
        [os.environ["TG_CLAUDE"], "-p", "say hi", "--output-format", "json"],
        env=env, cwd=home, capture_output=True, text=True, timeout=180,
    )
    return p


@pytest.mark.parametrize("var", ["ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_API_KEY"])
def test_claude_code_turn(base, key, var, mock_log):
    before = len(mock_log())
    p = run_claude(base, {var: key})
    assert p.returncode == 0, f"stdout={p.stdout[-2000:]} stderr={p.stderr[-2000:]}"
    out = json.loads(p.stdout)
    assert out.get("is_error") is False, out
    assert "Hello from mock upstream" in out["result"]
    turns = [r for r in mock_log()[before:] if r["path"] == "/v1/messages"]
    assert turns, "Claude Code's turn reached the upstream"
    t = turns[-1]
    headers = {k: v for k, v in t["headers"]}
    assert t["query"] == "beta=true"
    assert headers.get("x-api-key") == "sk-ant-provider-key"
    assert "authorization" not in headers
    assert key not in json.dumps(t["headers"])
    assert "claude-code" in headers.get("anthropic-beta", "")
    assert t["body"]["model"] == "claude-sonnet-4-6"
