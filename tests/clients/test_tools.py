"""Gateway-run tools with real clients: the OpenAI SDK's code really runs in the reference
sandbox; Claude Code's WebSearch on an OpenAI-format model runs through tollgate's search
backend; Codex's web_search on a chat-only model too. The mock model calls the tools when the
prompt says SEARCH_WEB or RUN_CODE, and answers "Tool said: <result>" after a tool result."""
import json
import os
import urllib.request

from openai import OpenAI

from test_claude_code import run_claude
from test_codex import run_codex


def get(url):
    with urllib.request.urlopen(url) as r:
        return json.load(r)


def test_openai_sdk_code_execution_runs_in_the_sandbox(base, key):
    before = get(f"{os.environ['TG_SANDBOX']}/__mock/sessions")
    client = OpenAI(base_url=f"{base}/v1", api_key=key)
    for stream in (False, True):
        kwargs = dict(
            model="openai:gpt-4o-mini",
            messages=[{"role": "user", "content": "RUN_CODE: what is 6 * 7?"}],
            tools=[{"type": "tollgate_code_execution"}],
        )
        if stream:
            text = "".join(
                c.choices[0].delta.content or ""
                for c in client.chat.completions.create(stream=True, **kwargs)
                if c.choices
            )
        else:
            text = client.chat.completions.create(**kwargs).choices[0].message.content
        # The sandbox printed it: python3 ran print(6 * 7, 'ok').
        assert "42 ok" in text, text
        assert "return code: 0" in text, text
    after = get(f"{os.environ['TG_SANDBOX']}/__mock/sessions")
    created = after["created"][len(before["created"]):]
    assert len(created) == 2
    assert set(created) <= set(after["deleted"]), "every session deleted"
    assert after["execs"][-1] == "print(6 * 7, 'ok')"


def test_claude_code_web_search_on_an_openai_model(base, key, mock_log):
    before = len(get(f"{os.environ['TG_SEARCH']}/__mock/queries"))
    p = run_claude(
        base,
        {"ANTHROPIC_AUTH_TOKEN": key, "ANTHROPIC_MODEL": "openai:gpt-4o-mini"},
        prompt="SEARCH_WEB: what is tollgate?",
        extra=["--allowedTools", "WebSearch"],
    )
    assert p.returncode == 0, f"stdout={p.stdout[-2000:]} stderr={p.stderr[-2000:]}"
    out = json.loads(p.stdout)
    queries = get(f"{os.environ['TG_SEARCH']}/__mock/queries")[before:]
    assert queries == ["tollgate mock search"], (queries, out)
    # The search results reached the answer through Claude Code's WebSearch tool.
    assert "Result 2 for tollgate mock search" in out["result"] or "search-result-marker-2" in out["result"], out
    # Claude Code's search request declared its server tool; the provider got a function.
    searches = [
        r for r in mock_log()
        if r["path"] == "/v1/chat/completions" and r["body"]
        and any(t.get("function", {}).get("name") == "web_search" for t in r["body"].get("tools", []))
    ]
    assert searches, "the web_search function was offered to the OpenAI-format model"


def test_codex_web_search_on_a_chat_only_model(base, key, mock_log):
    before = len(get(f"{os.environ['TG_SEARCH']}/__mock/queries"))
    run = run_codex(base, key, "chatonly:llama-3.3-70b", "SEARCH_WEB: look tollgate up")
    assert run.proc.returncode == 0, run.why()
    final = run.final_message or ""
    assert "search-result-marker-2" in final, run.why()
    assert get(f"{os.environ['TG_SEARCH']}/__mock/queries")[before:] == ["tollgate mock search"]
    assert run.items("web_search"), run.why()
