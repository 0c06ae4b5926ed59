"""The OpenAI Python SDK's Responses API (and embeddings, models) through tollgate.

The same four selectors as test_codex.py: passthrough to an OpenAI Responses upstream, and
translated to Anthropic Messages, Chat Completions and Gemini.
"""
import json
import os
import time
import urllib.request

import openai
import pytest

TEXT = "Hello from mock upstream!"

SELECTORS = {
    "openai:gpt-5.5": "/v1/responses",
    "anthropic:claude-sonnet-4-6": "/v1/messages",
    "chatonly:llama-3.3-70b": "/v1/chat/completions",
    "gemini:gemini-2.5-flash": "/v1beta/models/gemini-2.5-flash:",  # :generateContent or :streamGenerateContent
}
TRANSLATED = [s for s in SELECTORS if not s.startswith("openai:")]

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def oai(base, key, **kw):
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, **kw)


def admin(method, path, body=None):
    req = urllib.request.Request(
        f"{os.environ['TG_BASE']}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"authorization": f"Bearer {os.environ['TG_MASTER']}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def went_to(mock_log, before, selector):
    return [r["path"] for r in mock_log()[before:] if r["path"].startswith(SELECTORS[selector])]


@pytest.mark.parametrize("selector", list(SELECTORS))
def test_responses_create(base, key, mock_log, selector):
    before = len(mock_log())
    r = oai(base, key).responses.create(model=selector, input="hi")
    assert r.output_text == TEXT
    assert r.status == "completed"
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.input_tokens_details is not None and r.usage.input_tokens_details.cached_tokens is not None
    assert went_to(mock_log, before, selector), [x["path"] for x in mock_log()[before:]]


@pytest.mark.parametrize("selector", list(SELECTORS))
def test_responses_stream(base, key, mock_log, selector):
    before = len(mock_log())
    with oai(base, key).responses.stream(model=selector, input="hi") as s:
        events = list(s)
        final = s.get_final_response()
    types = [e.type for e in events]
    assert types[0] == "response.created", types
    assert types[-1] == "response.completed", types
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == TEXT == final.output_text, (deltas, final.output_text)
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0
    assert went_to(mock_log, before, selector), [x["path"] for x in mock_log()[before:]]


@pytest.mark.parametrize("selector", list(SELECTORS))
def test_responses_function_tool_round_trip(base, key, selector):
    c = oai(base, key)
    history = [{"role": "user", "content": "CALL_TOOL: what is the weather?"}]
    r1 = c.responses.create(model=selector, input=history, tools=[WEATHER])
    calls = [o for o in r1.output if o.type == "function_call"]
    assert calls, r1.output
    call = calls[0]
    assert call.name == "get_weather" and call.call_id
    assert isinstance(json.loads(call.arguments), dict)
    # The documented way to continue: resend the output items, then the tool's result.
    history += r1.output
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": "sunny and 22C"})
    r2 = c.responses.create(model=selector, input=history, tools=[WEATHER])
    assert "Tool said:" in r2.output_text and "sunny and 22C" in r2.output_text, r2.output_text


@pytest.mark.parametrize("selector", TRANSLATED)
def test_an_unknown_previous_response_id_on_a_translated_selector_is_a_400(base, key, mock_log, selector):
    # tollgate stores responses of translated models (test_stored_responses.py); one it does
    # not have is refused as OpenAI refuses it.
    before = len(mock_log())
    with pytest.raises(openai.BadRequestError) as e:
        oai(base, key, max_retries=0).responses.create(model=selector, input="hi", previous_response_id="resp_abc123")
    assert e.value.code == "previous_response_not_found" and e.value.param == "previous_response_id"
    assert not went_to(mock_log, before, selector), "refused before reaching the upstream"


def test_embeddings_and_usage_recorded(base):
    k = admin("POST", "/v1/keys", {"name": "responses-embeddings"})
    r = oai(base, k["key"]).embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(r.data) == 2 and all(len(d.embedding) > 0 for d in r.data)
    assert r.usage.prompt_tokens > 0
    records = []
    for _ in range(50):
        records = admin("GET", f"/v1/usage?key_id={k['id']}")["data"]
        if records:
            break
        time.sleep(0.1)
    assert len(records) == 1, records
    rec = records[0]
    assert rec["endpoint"] == "embeddings" and rec["model"] == "text-embedding-3-small" and rec["status"] == 200, rec
    assert rec["prompt_tokens"] > 0, rec


def test_models_retrieve(base, key):
    m = oai(base, key).models.retrieve("gpt-4o-mini")
    assert m.id in ("gpt-4o-mini", "openai:gpt-4o-mini") and m.object == "model", m
    assert m.owned_by == "openai", m
