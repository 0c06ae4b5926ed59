"""End users as the SDKs send them (`user`, `safety_identifier`, `metadata.user_id`):
attribution by default, refusal only when the operator asked for it, per-end-user budgets."""
import json
import os
import time
import urllib.parse
import urllib.request
import uuid

import anthropic
import openai
import pytest

HI = [{"role": "user", "content": "hi"}]


def admin(method, path, body=None):
    req = urllib.request.Request(
        f"{os.environ['TG_BASE']}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"authorization": f"Bearer {os.environ['TG_MASTER']}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def usage_of(end_user, n=1):
    """Usage rows naming `end_user`, once there are `n` (the writer commits in batches)."""
    q = urllib.parse.urlencode({"end_user": end_user})
    for _ in range(50):
        rows = admin("GET", f"/v1/usage?{q}")["data"]
        if len(rows) >= n:
            return rows
        time.sleep(0.1)
    return rows


def oai(base, key):
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_openai_user_is_recorded_and_forwarded_on_the_default_key(base, key, mock_log):
    r = oai(base, key).chat.completions.create(model="gpt-4o-mini", messages=HI, user="u-123")
    assert r.choices[0].message.content
    rows = usage_of("u-123")
    assert rows and all(row["end_user"] == "u-123" for row in rows)
    sent = [x["body"] for x in mock_log() if x["path"].endswith("/chat/completions")]
    assert any(b.get("user") == "u-123" for b in sent), "forwarded unchanged"


def test_every_sdk_field_names_the_end_user(base, key):
    who = {f: unique(f) for f in ("safety", "responses", "anthropic", "translated")}
    oai(base, key).chat.completions.create(model="gpt-4o-mini", messages=HI, safety_identifier=who["safety"])
    oai(base, key).responses.create(model="gpt-4o-mini", input="hi", user=who["responses"])
    a = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
    a.messages.create(model="claude-sonnet-4-6", max_tokens=20, messages=HI, metadata={"user_id": who["anthropic"]})
    # An OpenAI app on a Claude model: `user` travels as metadata.user_id.
    oai(base, key).chat.completions.create(model="claude-sonnet-4-6", messages=HI, user=who["translated"])
    for name in who.values():
        rows = usage_of(name)
        assert len(rows) == 1 and rows[0]["status"] == 200, (name, rows)
    groups = {g["group"]: g["requests"] for g in admin("GET", "/v1/usage?group_by=end_user")["data"]}
    assert all(groups.get(name) == 1 for name in who.values()), groups


def test_a_key_bound_to_a_user_accepts_other_end_users_by_default(base):
    owner = unique("owner")
    admin("POST", "/v1/users", {"user_id": owner})
    k = admin("POST", "/v1/keys", {"name": "bound", "user_id": owner})
    r = oai(base, k["key"]).chat.completions.create(model="gpt-4o-mini", messages=HI, user="someone-else")
    assert r.choices[0].message.content


def test_reject_user_mismatch_on_a_bound_key_is_a_403(base):
    owner = unique("owner")
    admin("POST", "/v1/users", {"user_id": owner})
    k = admin("POST", "/v1/keys", {"name": "strict", "user_id": owner, "reject_user_mismatch": True})
    client = oai(base, k["key"])
    with pytest.raises(openai.PermissionDeniedError) as e:
        client.chat.completions.create(model="gpt-4o-mini", messages=HI, user="not-the-owner")
    assert e.value.status_code == 403
    assert e.value.code == "user_mismatch"
    # The owner's own id, or none at all, passes.
    client.chat.completions.create(model="gpt-4o-mini", messages=HI, user=owner)
    client.chat.completions.create(model="gpt-4o-mini", messages=HI)
    # Anthropic SDK: the same refusal in its own error shape.
    a = anthropic.Anthropic(base_url=os.environ["TG_BASE"], api_key=k["key"], max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError):
        a.messages.create(model="claude-sonnet-4-6", max_tokens=20, messages=HI, metadata={"user_id": "not-the-owner"})


def test_end_user_budget_refuses_one_customer_and_serves_another(base):
    # $0.0005 per end user at gpt-4o-mini's shipped price ($0.15 in / $0.60 out per M): each
    # request reserves and (the mock reporting exactly that) spends ~$0.000183; two fit.
    k = admin("POST", "/v1/keys", {"name": "saas", "end_user_limits": {"max_budget": 0.0005}})
    client = oai(base, k["key"])
    heavy, light = unique("heavy"), unique("light")

    def ask(who):
        return client.chat.completions.create(
            model="gpt-4o-mini", max_tokens=300, messages=HI, user=who, extra_headers={"x-mock-usage": "20,300"}
        )

    ask(heavy)
    ask(heavy)
    with pytest.raises(openai.PermissionDeniedError) as e:
        ask(heavy)
    assert f"end user '{heavy}'" in str(e.value)
    assert ask(light).choices[0].message.content
    standing = admin("GET", f"/v1/keys/{k['id']}/end_users/{heavy}")["standing"]
    assert standing["reserved"] == "0.00" and standing["max_budget"] == "0.0005"
