"""The real Claude Code with tollgate's own MCP endpoint added as an MCP server
(`claude mcp add --transport http tollgate …/mcp --header "Authorization: Bearer tg-…"`):
asked in `-p` mode to use a tool, its model (the mock, scripted to call that MCP tool) calls
it, and the call goes through tollgate to the Python MCP server (tests/mcp_servers). A tool
the key may not use is not among the tools Claude Code offers its model."""
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def api(method, path, body=None, key=None):
    req = urllib.request.Request(
        os.environ["TG_BASE"] + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"authorization": f"Bearer {key or os.environ['TG_MASTER']}",
                 "content-type": "application/json"},
    )
    with urllib.request.urlopen(req) as r:
        return json.load(r)


@pytest.fixture(scope="module")
def mcp_servers():
    """The test MCP servers (official Python SDK), one port each."""
    p = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "tests/mcp_servers/servers.py")],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    line = p.stdout.readline()
    assert line.startswith("mcp servers listening "), line
    yield json.loads(line[len("mcp servers listening "):])
    p.kill()
    p.wait()


def test_claude_code_uses_a_registered_mcp_tool_through_tollgate(mcp_servers, mock_log):
    server = "docs" + uuid.uuid4().hex[:6]
    api("POST", "/v1/mcp/servers", {
        "name": server, "url": f"http://127.0.0.1:{mcp_servers['tools']}/mcp",
        "description": "Test tools",
    })
    created = api("POST", "/v1/keys", {
        "name": "claude-code-mcp",
        "mcp": {server: {"tools": ["secret_word", "add"]}},
    })
    key = created["key"]
    home = tempfile.mkdtemp(prefix="claude-mcp-home-", dir=os.environ["TG_WORK"])
    tool = f"mcp__tollgate__{server}__secret_word"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": home,
        "ANTHROPIC_BASE_URL": os.environ["TG_BASE"],
        "ANTHROPIC_AUTH_TOKEN": key,
        "ANTHROPIC_MODEL": "claude-sonnet-4-6",
        # The mock model's first turn calls the MCP tool, the next one reports its result.
        "ANTHROPIC_CUSTOM_HEADERS": f"x-mock-tool-script: {tool}",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_MAX_RETRIES": "2",
    }
    claude = os.environ["TG_CLAUDE"]
    # The three commands of the README's set-up (the key is the developer's virtual key).
    add = subprocess.run(
        [claude, "mcp", "add", "--transport", "http", "tollgate",
         os.environ["TG_BASE"] + "/mcp", "--header", f"Authorization: Bearer {key}"],
        env=env, cwd=home, capture_output=True, text=True, timeout=60,
    )
    assert add.returncode == 0, add.stderr
    listed = subprocess.run([claude, "mcp", "list"], env=env, cwd=home,
                            capture_output=True, text=True, timeout=120)
    assert "tollgate" in listed.stdout and "Connected" in listed.stdout, listed.stdout + listed.stderr
    before = len(mock_log())
    p = subprocess.run(
        [claude, "-p", "Use the secret word tool and tell me the secret word.",
         "--output-format", "json", "--allowedTools", tool],
        env=env, cwd=home, capture_output=True, text=True, timeout=180,
    )
    assert p.returncode == 0, f"stdout={p.stdout[-2000:]} stderr={p.stderr[-2000:]}"
    out = json.loads(p.stdout)
    # The tool really ran on the MCP server, and its result reached the answer.
    assert "PAPAYA-42" in out["result"], out
    turns = [r for r in mock_log()[before:] if r["path"] == "/v1/messages"]
    offered = {t["name"] for r in turns for t in (r["body"] or {}).get("tools", [])}
    assert tool in offered
    assert f"mcp__tollgate__{server}__add" in offered
    # Not allowed for this key: not listed, so never offered to the model.
    assert f"mcp__tollgate__{server}__echo" not in offered
    assert f"mcp__tollgate__{server}__count_slowly" not in offered
    # The call went through tollgate: a usage row for the key, server and tool.
    for _ in range(50):  # the usage writer commits in groups: wait for the row
        rows = api("GET", f"/v1/usage?key_id={created['id']}&endpoint=mcp")["data"]
        if rows:
            break
        time.sleep(0.1)
    assert [(r["provider"], r["model"], r["status"]) for r in rows] == [(server, "secret_word", 200)], rows
