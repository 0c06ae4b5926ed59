"""Real Codex CLI turns (`codex exec --json`) through tollgate to the mock upstream.

Codex speaks only the Responses API (`POST {base_url}/responses`, streamed). Each selector
routes to a different upstream API kind: passthrough to an OpenAI Responses upstream, or
translated to Anthropic Messages, Chat Completions (an OpenAI-compatible provider without
Responses) or Gemini. Each test gets its own CODEX_HOME and working directory; the config
turns off analytics and plugin sync, the only network Codex tries besides the provider.
"""
import json
import os
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

import pytest

TEXT = "Hello from mock upstream!"

# selector -> (upstream path the mock must see, upstream model in the body or None when it is in the path)
SELECTORS = {
    "openai:gpt-5.5": ("/v1/responses", "gpt-5.5"),
    "anthropic:claude-sonnet-4-6": ("/v1/messages", "claude-sonnet-4-6"),
    "chatonly:llama-3.3-70b": ("/v1/chat/completions", "llama-3.3-70b"),
    "gemini:gemini-2.5-flash": ("/v1beta/models/gemini-2.5-flash:streamGenerateContent", None),
}

CONFIG = """\
model = "{model}"
model_provider = "tollgate"
check_for_update_on_startup = false

[analytics]
enabled = false

[features]
plugins = false

[model_providers.tollgate]
name = "tollgate"
base_url = "{base}/v1"
env_key = "TOLLGATE_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
stream_idle_timeout_ms = 30000
"""


class Run:
    def __init__(self, proc):
        self.proc = proc
        self.events = []
        for line in proc.stdout.splitlines():
            line = line.strip()
            if line.startswith("{"):
                self.events.append(json.loads(line))

    def items(self, type_):
        return [e["item"] for e in self.events if e["type"] == "item.completed" and e["item"]["type"] == type_]

    @property
    def thread_id(self):
        return next(e["thread_id"] for e in self.events if e["type"] == "thread.started")

    @property
    def final_message(self):
        msgs = self.items("agent_message")
        return msgs[-1]["text"] if msgs else None

    def why(self):
        return f"rc={self.proc.returncode}\nstdout={self.proc.stdout[-3000:]}\nstderr={self.proc.stderr[-2000:]}"


def run_codex(base, key, model, prompt, stream_retries=0):
    work = os.environ["TG_WORK"]
    home = tempfile.mkdtemp(prefix="codex-home-", dir=work)
    cwd = tempfile.mkdtemp(prefix="codex-cwd-", dir=work)
    with open(os.path.join(home, "config.toml"), "w") as f:
        config = CONFIG.format(model=model, base=base)
        f.write(config.replace("stream_max_retries = 0", f"stream_max_retries = {stream_retries}"))
    env = {"PATH": os.environ["PATH"], "HOME": home, "CODEX_HOME": home, "TOLLGATE_KEY": key}
    proc = subprocess.run(
        [
            os.environ["TG_CODEX"], "exec", "--json", "--strict-config", "--skip-git-repo-check", "--ephemeral",
            "--dangerously-bypass-approvals-and-sandbox", "-C", cwd, prompt,
        ],
        env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )
    return Run(proc)


def upstream_calls(mock_log, before, selector):
    path, _ = SELECTORS[selector]
    return [r for r in mock_log()[before:] if r["path"] == path]


def tool_output_in_upstream_body(selector, body, needle):
    """Whether `needle` came back upstream as a tool result, in that API's own shape."""
    if selector.startswith("openai:"):
        return any(i.get("type") == "function_call_output" and needle in json.dumps(i.get("output")) for i in body.get("input", []))
    if selector.startswith("anthropic:"):
        return any(
            isinstance(m.get("content"), list)
            and any(b.get("type") == "tool_result" and needle in json.dumps(b.get("content")) for b in m["content"])
            for m in body.get("messages", [])
        )
    if selector.startswith("chatonly:"):
        return any(m.get("role") == "tool" and needle in json.dumps(m.get("content")) for m in body.get("messages", []))
    if selector.startswith("gemini:"):
        return any("functionResponse" in p and needle in json.dumps(p["functionResponse"]) for c in body.get("contents", []) for p in c.get("parts", []))
    raise AssertionError(selector)


def usage_records(**query):
    url = f"{os.environ['TG_BASE']}/v1/usage?{urllib.parse.urlencode(query)}"
    req = urllib.request.Request(url, headers={"authorization": f"Bearer {os.environ['TG_MASTER']}"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)["data"]


@pytest.mark.parametrize("selector", list(SELECTORS))
def test_codex_plain_turn(base, key, mock_log, selector):
    before = len(mock_log())
    run = run_codex(base, key, selector, "say hi")
    assert run.proc.returncode == 0, run.why()
    assert run.final_message and TEXT in run.final_message, run.why()
    assert not [e for e in run.events if e["type"] in ("turn.failed", "error")], run.why()
    done = [e for e in run.events if e["type"] == "turn.completed"]
    assert done and done[-1]["usage"]["input_tokens"] > 0 and done[-1]["usage"]["output_tokens"] > 0, run.why()
    calls = upstream_calls(mock_log, before, selector)
    assert len(calls) == 1, f"expected one {SELECTORS[selector][0]} call, mock saw {[r['path'] for r in mock_log()[before:]]}"
    _, upstream_model = SELECTORS[selector]
    if upstream_model:
        assert calls[0]["body"]["model"] == upstream_model
    assert key not in json.dumps(calls[0]["headers"]), "the virtual key must not reach the provider"


@pytest.mark.parametrize("selector", list(SELECTORS))
def test_codex_tool_round_trip(base, key, mock_log, selector):
    """The model calls exec_command; Codex runs it and sends the output; the answer quotes it."""
    before = len(mock_log())
    run = run_codex(base, key, selector, "CALL_TOOL: run the echo")
    assert run.proc.returncode == 0, run.why()
    ran = run.items("command_execution")
    assert ran and "echo hello-from-mock-tool" in ran[0]["command"], run.why()
    assert ran[0]["exit_code"] == 0 and "hello-from-mock-tool" in ran[0]["aggregated_output"].splitlines(), run.why()
    final = run.final_message or ""
    assert "Tool said:" in final and "hello-from-mock-tool" in final, run.why()
    calls = upstream_calls(mock_log, before, selector)
    assert len(calls) == 2, f"a tool turn is two upstream calls, mock saw {[r['path'] for r in mock_log()[before:]]}"
    assert not tool_output_in_upstream_body(selector, calls[0]["body"], "hello-from-mock-tool")
    assert tool_output_in_upstream_body(selector, calls[1]["body"], "hello-from-mock-tool"), json.dumps(calls[1]["body"])[-3000:]


@pytest.mark.parametrize("selector", list(SELECTORS))
def test_codex_usage_is_recorded(base, key, selector):
    run = run_codex(base, key, selector, "say hi")
    assert run.proc.returncode == 0, run.why()
    # Codex sends its thread id as `session-id`; tollgate records it on each usage record.
    records = []
    for _ in range(50):
        records = usage_records(session_id=run.thread_id, model=selector)
        if records:
            break
        time.sleep(0.1)
    assert len(records) == 1, records
    r = records[0]
    assert r["endpoint"] == "responses" and r["status"] == 200 and r["stream"] is True, r
    assert r["provider"] == selector.split(":")[0] and r["upstream_model"] == selector.split(":", 1)[1], r
    assert r["prompt_tokens"] > 0 and r["completion_tokens"] > 0 and r["total_tokens"] > 0, r
    # The tokens are the upstream's own count, the same Codex was shown in response.completed
    # (Codex hangs up right after that event: the record must not fall back to an estimate).
    shown = [e for e in run.events if e["type"] == "turn.completed"][-1]["usage"]
    assert r["estimated"] is False, r
    assert (r["prompt_tokens"], r["completion_tokens"]) == (shown["input_tokens"], shown["output_tokens"]), (r, shown)


def test_codex_wrong_key_fails_fast(base, mock_log):
    before = len(mock_log())
    run = run_codex(base, "tg-wrong", "openai:gpt-5.5", "say hi")
    assert run.proc.returncode == 1, run.why()
    failed = [e for e in run.events if e["type"] == "turn.failed"]
    assert failed and "401" in failed[-1]["error"]["message"], run.why()
    assert not mock_log()[before:], "refused before reaching the upstream"
