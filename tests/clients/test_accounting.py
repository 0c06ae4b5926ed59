"""Budgets and rate limits as the SDKs see them."""
import json
import os
import time
import urllib.request

import anthropic
import openai
import pytest


def admin(method, path, body=None):
    req = urllib.request.Request(
        f"{os.environ['TG_BASE']}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"authorization": f"Bearer {os.environ['TG_MASTER']}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def set_mock_fault(fault):
    req = urllib.request.Request(f"{os.environ['TG_MOCK']}/__mock/fault", method="POST", data=json.dumps(fault).encode())
    urllib.request.urlopen(req).read()


def test_budget_runs_out_mid_session_with_a_readable_403(base):
    # $0.001 at the default price of gpt-4o-mini ($0.15 in / $0.60 out per M): each request
    # reserves its worst case (~20 prompt tokens + max_tokens=300, ~$0.000183) and, with the
    # mock reporting exactly that usage, spends it; five fit, the sixth is refused.
    k = admin("POST", "/v1/keys", {"name": "budget", "max_budget": 0.001})
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=k["key"], max_retries=0)
    ok = 0
    with pytest.raises(openai.PermissionDeniedError) as e:
        for _ in range(100):
            client.chat.completions.create(
                model="gpt-4o-mini", max_tokens=300, messages=[{"role": "user", "content": "hi"}], extra_headers={"x-mock-usage": "20,300"}
            )
            ok += 1
    assert ok == 5, ok
    msg = str(e.value)
    assert "Budget exceeded" in msg and "$0.001" in msg, msg
    assert e.value.status_code == 403
    info = admin("GET", f"/v1/keys/{k['id']}")
    assert info["standing"]["reserved"] == "0.00"
    # The same refusal in the Anthropic shape.
    c = anthropic.Anthropic(base_url=base, api_key=k["key"], max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as e:
        c.messages.create(model="claude-sonnet-4-6", max_tokens=300, messages=[{"role": "user", "content": "hi"}])
    assert "Budget exceeded" in str(e.value)


def test_rpm_limit_gives_429_with_retry_after(base):
    k = admin("POST", "/v1/keys", {"name": "rpm", "rpm_limit": 1})
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=k["key"], max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    ra = int(e.value.response.headers["retry-after"])
    assert 1 <= ra <= 120
    assert "requests per minute" in str(e.value)


def test_upstream_retry_after_is_passed_through_and_honoured_by_the_sdk(base, key):
    set_mock_fault({"status": 429, "retry_after": 1, "times": 1})
    try:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=2)
        t0 = time.monotonic()
        r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        waited = time.monotonic() - t0
    finally:
        set_mock_fault(None)
    assert r.choices[0].message.content
    assert waited >= 0.9, f"the SDK retried after retry-after: 1 ({waited:.2f}s)"
