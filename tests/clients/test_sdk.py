"""The OpenAI and Anthropic Python SDKs, pinned, through tollgate to the mock upstream."""
import anthropic
import openai
import pytest

TEXT = "Hello from mock upstream!"


def oai(base, key, **kw):
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, **kw)


def test_openai_chat_non_stream(base, key):
    r = oai(base, key).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == TEXT
    assert r.usage.total_tokens > 0


def test_openai_chat_stream_with_usage(base, key):
    chunks = list(
        oai(base, key).chat.completions.create(
            model="openai:gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == TEXT
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_openai_chat_stream_without_usage_hides_the_injected_chunk(base, key):
    chunks = list(oai(base, key).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert all(c.choices for c in chunks), "a client that did not ask for usage gets no usage-only chunk"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == TEXT


def test_openai_models_list(base, key):
    ids = [m.id for m in oai(base, key).models.list()]
    assert "openai:gpt-4o-mini" in ids


def test_openai_embeddings(base, key):
    r = oai(base, key).embeddings.create(model="openai:text-embedding-3-small", input=["a", "b"])
    assert len(r.data) == 2 and len(r.data[0].embedding) == 8


def test_openai_wrong_key(base):
    with pytest.raises(openai.AuthenticationError):
        oai(base, "tg-wrong", max_retries=0).chat.completions.create(model="gpt-4o-mini", messages=[])


def test_openai_unknown_model_names_what_exists(base, key):
    with pytest.raises(openai.NotFoundError) as e:
        oai(base, key, max_retries=0).chat.completions.create(model="nope-1", messages=[])
    assert "openai:gpt-4o-mini" in str(e.value)


@pytest.mark.parametrize("auth", ["api_key", "auth_token"])
def test_anthropic_messages_create(base, key, auth):
    c = anthropic.Anthropic(base_url=base, **{auth: key})
    m = c.messages.create(model="claude-sonnet-4-6", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    assert m.content[0].text == TEXT
    assert m.usage.output_tokens > 0


def test_anthropic_messages_stream(base, key):
    c = anthropic.Anthropic(base_url=base, api_key=key)
    with c.messages.stream(model="claude-sonnet-4-6", max_tokens=50, messages=[{"role": "user", "content": "hi"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == TEXT
    assert final.usage.input_tokens > 0 and final.stop_reason == "end_turn"


def test_anthropic_count_tokens(base, key):
    c = anthropic.Anthropic(base_url=base, api_key=key)
    r = c.messages.count_tokens(model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hello there"}])
    assert r.input_tokens > 0


def test_anthropic_models_list(base, key):
    ids = [m.id for m in anthropic.Anthropic(base_url=base, api_key=key).models.list()]
    assert "anthropic:claude-sonnet-4-6" in ids


def test_anthropic_wrong_key(base):
    c = anthropic.Anthropic(base_url=base, api_key="tg-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        c.messages.create(model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "hi"}])


def test_old_sdk_header_shapes_are_accepted(base, key):
    """anthropic 0.x sends x-api-key and anthropic-version 2023-06-01; 2.x sends Bearer and 2026-10-21."""
    import json
    import urllib.request

    body = json.dumps({"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}).encode()
    for headers in ({"x-api-key": key, "anthropic-version": "2023-06-01"}, {"authorization": f"Bearer {key}", "anthropic-version": "2026-10-21"}):
        req = urllib.request.Request(f"{base}/v1/messages", data=body, headers={**headers, "content-type": "application/json"})
        with urllib.request.urlopen(req) as r:
            assert r.status == 200
            assert json.load(r)["type"] == "message"


def test_anthropic_sdk_on_an_openai_upstream_with_tools(base, key):
    c = anthropic.Anthropic(base_url=base, api_key=key)
    tools = [{"name": "Bash", "description": "run", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}}]
    m = c.messages.create(model="openai:gpt-4o-mini", max_tokens=50, tools=tools, messages=[{"role": "user", "content": "CALL_TOOL"}])
    assert m.stop_reason == "tool_use"
    call = [b for b in m.content if b.type == "tool_use"][0]
    assert call.name == "Bash" and call.input == {"command": "echo hello-from-mock-tool"}
    with c.messages.stream(model="openai:gpt-4o-mini", max_tokens=50, messages=[{"role": "user", "content": "hi"}]) as s:
        assert "".join(s.text_stream) == TEXT
        assert s.get_final_message().usage.output_tokens > 0
    n = c.messages.count_tokens(model="openai:gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])
    assert n.input_tokens > 0


def test_openai_sdk_on_an_anthropic_upstream_with_tools(base, key):
    c = oai(base, key)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    r = c.chat.completions.create(model="anthropic:claude-sonnet-4-6", tools=tools, messages=[{"role": "user", "content": "CALL_TOOL"}])
    assert r.choices[0].finish_reason == "tool_calls"
    assert r.choices[0].message.tool_calls[0].function.name == "get_weather"
    chunks = list(c.chat.completions.create(model="anthropic:claude-sonnet-4-6", stream=True, stream_options={"include_usage": True}, messages=[{"role": "user", "content": "hi"}]))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == TEXT
    assert chunks[-1].usage.total_tokens > 0
    r = c.chat.completions.create(model="anthropic:claude-sonnet-4-6", response_format={"type": "json_object"}, messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == TEXT
