"""One real Claude Code turn (`claude -p`) through tollgate to the mock Anthropic upstream."""
import json
import os
import subprocess
import tempfile

import pytest


def run_claude(base, env_auth, prompt="say hi", extra=()):
    home = tempfile.mkdtemp(prefix="claude-home-", dir=os.environ["TG_WORK"])
    env = {
        "PATH": os.environ["PATH"],
        "HOME": home,
        "ANTHROPIC_BASE_URL": base,
        "ANTHROPIC_MODEL": env_auth.pop("ANTHROPIC_MODEL", "claude-sonnet-4-6"),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_MAX_RETRIES": "2",
        **env_auth,
    }
    p = subprocess.run(
        [os.environ["TG_CLAUDE"], "-p", prompt, "--output-format", "json", *extra],
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


def test_claude_code_on_an_openai_model(base, key, mock_log):
    """ANTHROPIC_MODEL=openai:<model>: the turn is translated to Chat Completions and back."""
    before = len(mock_log())
    p = run_claude(base, {"ANTHROPIC_AUTH_TOKEN": key, "ANTHROPIC_MODEL": "openai:gpt-4o-mini"})
    assert p.returncode == 0, f"stdout={p.stdout[-2000:]} stderr={p.stderr[-2000:]}"
    out = json.loads(p.stdout)
    assert "Hello from mock upstream" in out["result"], out
    upstream = [r for r in mock_log()[before:] if r["path"] == "/v1/chat/completions"]
    assert upstream, "translated to Chat Completions"
    body = upstream[-1]["body"]
    assert body["model"] == "gpt-4o-mini"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"][0]["role"] == "system"
    assert any(t["function"]["name"] == "Bash" for t in body["tools"])


def test_claude_code_tool_round_trip_on_an_openai_model(base, key, mock_log):
    """The model asks for Bash; Claude Code runs it and sends the result; the answer uses it."""
    p = run_claude(
        base,
        {"ANTHROPIC_AUTH_TOKEN": key, "ANTHROPIC_MODEL": "openai:gpt-4o-mini"},
        prompt="CALL_TOOL: run the echo",
        extra=["--allowedTools", "Bash(echo:*)"],
    )
    assert p.returncode == 0, f"stdout={p.stdout[-2000:]} stderr={p.stderr[-2000:]}"
    out = json.loads(p.stdout)
    last = [r for r in mock_log() if r["path"] == "/v1/chat/completions"][-1]["body"]
    shape = [(m.get("role"), "CALL_TOOL" in json.dumps(m.get("content")), type(m.get("content")).__name__) for m in last["messages"]]
    assert "Tool said:" in out["result"] and "hello-from-mock-tool" in out["result"], (out["result"], shape, [t["function"]["name"] for t in last.get("tools", [])][:5])
    turns = [r for r in mock_log() if r["path"] == "/v1/chat/completions" and r["body"] and any(m.get("role") == "tool" for m in r["body"]["messages"])]
    assert turns, "the tool result went back upstream as a tool message"


def test_claude_code_context_uses_count_tokens(base, key):
    """`/context` asks count_tokens for its breakdown; on an OpenAI model tollgate counts locally."""
    import re
    import urllib.request

    def count_calls():
        with urllib.request.urlopen(f"{base}/metrics") as r:
            text = r.read().decode()
        return sum(int(float(m)) for m in re.findall(r'tollgate_requests_total\{endpoint="count_tokens"[^}]*status="200"\} (\S+)', text))

    before = count_calls()
    p = run_claude(base, {"ANTHROPIC_AUTH_TOKEN": key, "ANTHROPIC_MODEL": "openai:gpt-4o-mini"}, prompt="/context")
    assert p.returncode == 0, f"stdout={p.stdout[-2000:]} stderr={p.stderr[-2000:]}"
    assert count_calls() > before, f"no count_tokens call; output: {p.stdout[-1500:]}"
