"""A provider stream that breaks half-way: the real clients retry through tollgate and finish
the turn (shared/reference/clients.md §1.5 and §2 say how each one retries).

The mock truncates the first streamed answer after it (no finish, no terminal event), and
answers every later request whole. Claude Code must retry (its retry is a non-streamed
request) and print the second answer; Codex must reconnect after `response.failed`.
"""
import json
import os
import urllib.request

import pytest

from test_claude_code import run_claude
from test_codex import TEXT, run_codex


def break_next_stream():
    body = json.dumps({"fault": "truncate", "pieces": 12, "times": 1, "only_streams": True}).encode()
    req = urllib.request.Request(f"{os.environ['TG_MOCK']}/__mock/fault", method="POST", data=body)
    urllib.request.urlopen(req).read()


def clear_fault():
    req = urllib.request.Request(f"{os.environ['TG_MOCK']}/__mock/fault", method="POST", data=b"null")
    urllib.request.urlopen(req).read()


@pytest.fixture
def broken_first_stream():
    break_next_stream()
    yield
    clear_fault()


@pytest.mark.parametrize("model,path", [
    ("openai:gpt-4o-mini", "/v1/chat/completions"),   # translated: Chat upstream, Anthropic client
    ("claude-sonnet-4-6", "/v1/messages"),             # same format: passthrough
])
def test_claude_code_retries_a_broken_stream(base, key, mock_log, broken_first_stream, model, path):
    before = len(mock_log())
    p = run_claude(base, {"ANTHROPIC_AUTH_TOKEN": key, "ANTHROPIC_MODEL": model})
    calls = [r for r in mock_log()[before:] if r["path"] == path]
    why = f"rc={p.returncode} stdout={p.stdout[-1500:]} stderr={p.stderr[-1500:]} calls={[(c['path'], (c['body'] or {}).get('stream')) for c in calls]}"
    assert p.returncode == 0, why
    out = json.loads(p.stdout)
    assert out.get("is_error") is False, why
    # The whole second answer, not the first one's half taken as complete.
    assert "Hello from mock upstream!" in out["result"], why
    streamed = [c for c in calls if (c["body"] or {}).get("stream")]
    assert streamed, why
    assert len(calls) >= 2 and calls.index(streamed[0]) < len(calls) - 1, "the broken stream was retried: " + why


def test_codex_reconnects_after_a_broken_translated_stream(base, key, mock_log, broken_first_stream):
    before = len(mock_log())
    # chatonly has no Responses API: Codex's Responses stream is translated from Chat.
    run = run_codex(base, key, "chatonly:llama-3.3-70b", "say hi", stream_retries=2)
    calls = [r for r in mock_log()[before:] if r["path"] == "/v1/chat/completions"]
    assert run.proc.returncode == 0, run.why()
    assert run.final_message and TEXT in run.final_message, run.why()
    assert not [e for e in run.events if e["type"] == "turn.failed"], run.why()
    assert len(calls) == 2, f"one broken attempt, one reconnect: {len(calls)} calls\n{run.why()}"


# --- the SDKs: a broken stream raises, it never ends quietly as if complete ------------------

FAULTS = ["truncate", "reset-mid-stream", "event-error"]


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("model", ["openai:gpt-4o-mini", "anthropic:claude-sonnet-4-6", "gemini:gemini-2.5-flash"])
def test_openai_sdk_raises_on_a_broken_chat_stream(base, key, model, fault):
    import openai
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    got = []
    with pytest.raises(openai.APIError) as e:
        for c in client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], stream=True,
            extra_headers={"x-mock-fault": fault, "x-mock-pieces": "12"},
        ):
            got.extend(ch.delta.content or "" for ch in c.choices)
    assert got, f"some text arrived before the break ({e.value})"


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("model", ["claude-sonnet-4-6", "openai:gpt-4o-mini"])
def test_anthropic_sdk_raises_on_a_broken_messages_stream(base, key, model, fault):
    import anthropic
    client = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
    with pytest.raises(anthropic.APIError):
        with client.messages.stream(
            model=model, max_tokens=100, messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock-fault": fault, "x-mock-pieces": "12"},
        ) as s:
            for _ in s.text_stream:
                pass
            s.get_final_message()


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("model", ["openai:gpt-5.5", "chatonly:llama-3.3-70b", "anthropic:claude-sonnet-4-6"])
def test_openai_sdk_sees_response_failed_on_a_broken_responses_stream(base, key, model, fault):
    import openai
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    types = [ev.type for ev in client.responses.create(
        model=model, input="hi", stream=True,
        extra_headers={"x-mock-fault": fault, "x-mock-pieces": "12"},
    )]
    assert types[-1] == "response.failed" and "response.completed" not in types, types
