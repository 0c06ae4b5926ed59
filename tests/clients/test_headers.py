"""Where a client stands, as the real SDKs see it: the rate-limit headers in each dialect's
convention, the cost and remaining-budget headers, read through `with_raw_response`, and
nothing in the default config that a client could trip on (streams included: no unknown
field in the usage events unless `cost_in_stream` is on)."""
import json
import os
import re
import urllib.request

import anthropic
import openai
import pytest

TEXT = "Hello from mock upstream!"


def make_key(base, limits):
    body = json.dumps({"name": "headers", **limits}).encode()
    req = urllib.request.Request(
        f"{base}/v1/keys",
        data=body,
        headers={"authorization": f"Bearer {os.environ['TG_MASTER']}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(req) as r:
        return json.load(r)["key"]


@pytest.fixture(scope="module")
def limited(base):
    return make_key(base, {"rpm_limit": 1000, "tpm_limit": 10000000, "max_budget": 10})


def reset_ms(v):
    """OpenAI's reset form: 250ms, 7s, 1m5s."""
    m = re.fullmatch(r"(?:(\d+)m)?(\d+)(ms|s)", v)
    assert m, v
    minutes, n, unit = int(m.group(1) or 0), int(m.group(2)), m.group(3)
    return minutes * 60_000 + (n if unit == "ms" else n * 1000)


def check_openai_headers(h, requests_left_below):
    assert h["x-ratelimit-limit-requests"] == "1000"
    assert int(h["x-ratelimit-remaining-requests"]) < requests_left_below
    assert 0 < reset_ms(h["x-ratelimit-reset-requests"]) <= 120_000
    assert h["x-ratelimit-limit-tokens"] == "10000000"
    assert int(h["x-ratelimit-remaining-tokens"]) <= 10000000
    reset_ms(h["x-ratelimit-reset-tokens"])
    assert 0 < float(h["x-tollgate-budget-remaining-usd"]) <= 10
    assert "anthropic-ratelimit-requests-limit" not in h


def test_openai_chat_raw_response_has_the_headers(base, limited):
    c = openai.OpenAI(base_url=f"{base}/v1", api_key=limited)
    raw = c.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    check_openai_headers(raw.headers, 1000)
    assert float(raw.headers["x-tollgate-cost-usd"]) > 0
    r = raw.parse()
    assert r.choices[0].message.content == TEXT
    # The next answer: one request fewer, the first one's cost spent.
    raw2 = c.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert int(raw2.headers["x-ratelimit-remaining-requests"]) < int(raw.headers["x-ratelimit-remaining-requests"])
    assert float(raw2.headers["x-tollgate-budget-remaining-usd"]) < float(raw.headers["x-tollgate-budget-remaining-usd"])


def test_openai_chat_stream_raw_response_and_default_usage_chunk(base, limited):
    c = openai.OpenAI(base_url=f"{base}/v1", api_key=limited)
    raw = c.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    check_openai_headers(raw.headers, 1000)
    assert "x-tollgate-cost-usd" not in raw.headers, "a stream's cost is not known at its header"
    chunks = list(raw.parse())
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == TEXT
    usage = chunks[-1].usage
    assert usage.completion_tokens > 0
    assert not (usage.model_extra or {}), "cost_in_stream is off by default: no unknown fields"


def test_openai_responses_raw_response(base, limited):
    c = openai.OpenAI(base_url=f"{base}/v1", api_key=limited)
    raw = c.responses.with_raw_response.create(model="gpt-4o-mini", input="hi")
    check_openai_headers(raw.headers, 1000)
    assert float(raw.headers["x-tollgate-cost-usd"]) > 0
    assert raw.parse().output_text == TEXT
    with c.responses.with_streaming_response.create(model="gpt-4o-mini", input="hi", stream=True) as s:
        check_openai_headers(s.headers, 1000)
        events = list(s.parse())
    done = [e for e in events if e.type == "response.completed"]
    assert done and not (done[0].response.usage.model_extra or {})


def check_anthropic_headers(h):
    assert h["anthropic-ratelimit-requests-limit"] == "1000"
    assert int(h["anthropic-ratelimit-requests-remaining"]) < 1000
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", h["anthropic-ratelimit-requests-reset"])
    assert h["anthropic-ratelimit-tokens-limit"] == "10000000"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", h["anthropic-ratelimit-tokens-reset"])
    assert "x-ratelimit-limit-requests" not in h


def test_anthropic_raw_response_has_its_own_headers(base, limited):
    c = anthropic.Anthropic(base_url=base, api_key=limited)
    raw = c.messages.with_raw_response.create(
        model="claude-sonnet-4-6", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    )
    check_anthropic_headers(raw.headers)
    assert float(raw.headers["x-tollgate-cost-usd"]) > 0
    assert raw.parse().content[0].text == TEXT


def test_anthropic_stream_and_translated(base, limited):
    c = anthropic.Anthropic(base_url=base, api_key=limited)
    with c.messages.with_streaming_response.create(
        model="claude-sonnet-4-6", max_tokens=50, messages=[{"role": "user", "content": "hi"}], stream=True
    ) as s:
        check_anthropic_headers(s.headers)
        events = list(s.parse())
    delta = [e for e in events if e.type == "message_delta"][0]
    assert delta.usage.output_tokens > 0 and not (delta.usage.model_extra or {})
    # The stream helper of the SDK, on a translated route (an OpenAI model from Messages).
    with c.messages.stream(model="gpt-4o-mini", max_tokens=50, messages=[{"role": "user", "content": "hi"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == TEXT and final.stop_reason == "end_turn"
    raw = c.messages.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    )
    check_anthropic_headers(raw.headers)
    assert float(raw.headers["x-tollgate-cost-usd"]) > 0


def test_a_429_reads_the_same_way_and_the_sdks_follow_retry_after(base):
    key = make_key(base, {"rpm_limit": 1})
    c = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    h = e.value.response.headers
    assert h["x-ratelimit-limit-requests"] == "1"
    assert h["x-ratelimit-remaining-requests"] == "0"
    assert reset_ms(h["x-ratelimit-reset-requests"]) > 0
    assert int(h["retry-after"]) >= 1
    a = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as e:
        a.messages.create(model="claude-sonnet-4-6", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    assert e.value.response.headers["anthropic-ratelimit-requests-remaining"] == "0"
