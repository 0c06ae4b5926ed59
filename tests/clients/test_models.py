"""Model discovery through tollgate with the real clients: the SDKs' `models.list()` and Claude
Code's gateway model discovery see the providers' own lists, beyond the `models:` that run.sh
configures (the mock lists more models than that)."""
import json
import os
import subprocess
import tempfile
import urllib.request

import anthropic
import openai
import pytest


def list_calls():
    with urllib.request.urlopen(f"{os.environ['TG_MOCK']}/__mock/list-requests") as r:
        return json.load(r)


def test_openai_sdk_lists_discovered_models(base, key):
    models = {m.id: m for m in openai.OpenAI(base_url=f"{base}/v1", api_key=key).models.list()}
    # Configured (run.sh `models:`) and discovered only (the mock's lists).
    for id in ["openai:gpt-4o-mini", "openai:gpt-4.1", "anthropic:claude-opus-4-8", "claude-opus-4-8",
               "gemini:gemini-2.5-pro", "gemini-2.5-pro", "chatonly:mock-model"]:
        assert id in models, f"{id} not in {sorted(models)}"
    assert models["claude-opus-4-8"].owned_by == "anthropic"
    assert models["gemini:gemini-2.5-pro"].model_extra["context_window"] == 1048576
    # openai and chatonly both list it: listed under each, not bare.
    assert "openai:llama-3.3-70b-versatile" in models and "chatonly:llama-3.3-70b-versatile" in models
    assert "llama-3.3-70b-versatile" not in models
    m = openai.OpenAI(base_url=f"{base}/v1", api_key=key).models.retrieve("gemini-2.5-pro")
    assert m.id == "gemini-2.5-pro" and m.owned_by == "gemini"


def test_anthropic_sdk_pages_through_discovered_models(base, key):
    c = anthropic.Anthropic(base_url=base, api_key=key)
    # The SDK pages by 20 with after_id; every row comes back once.
    models = list(c.models.list())
    ids = [m.id for m in models]
    assert len(ids) > 20 and len(ids) == len(set(ids)), ids
    assert ids == sorted(ids)
    opus = next(m for m in models if m.id == "claude-opus-4-8")
    assert opus.display_name == "Claude Opus 4.8"
    assert opus.created_at.isoformat().startswith("2026-05-01")
    assert "anthropic:claude-haiku-4-5" in ids
    assert c.models.retrieve("anthropic:claude-sonnet-4-6").display_name == "Claude Sonnet 4.6"
    with pytest.raises(anthropic.NotFoundError):
        c.models.retrieve("nope-model-1")
    # tollgate followed the mock's Anthropic paging (pages of 2) with the provider's key.
    ant = [r for r in list_calls() if any(k == "anthropic-version" for k, _ in r["headers"])]
    assert any("after_id=" in (r["query"] or "") for r in ant), ant
    assert all(dict(r["headers"]).get("x-api-key") == "sk-ant-provider-key" for r in ant)


def test_a_discovered_bare_name_routes_and_an_ambiguous_one_is_refused(base, key):
    c = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    r = c.chat.completions.create(model="gemini-2.5-pro", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "Hello from mock upstream!"
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="llama-3.3-70b-versatile", messages=[{"role": "user", "content": "hi"}])
    assert "chatonly:llama-3.3-70b-versatile" in str(e.value) and "openai:llama-3.3-70b-versatile" in str(e.value)


def test_claude_code_gateway_model_discovery(base, key):
    """CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY=1: Claude Code calls GET /v1/models?limit=1000
    (Anthropic shape) and caches the ids starting with claude/anthropic for its /model picker."""
    home = tempfile.mkdtemp(prefix="claude-home-", dir=os.environ["TG_WORK"])
    env = {
        "PATH": os.environ["PATH"],
        "HOME": home,
        "ANTHROPIC_BASE_URL": base,
        "ANTHROPIC_AUTH_TOKEN": key,
        "ANTHROPIC_MODEL": "claude-sonnet-4-6",
        "CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY": "1",
        # Discovery is nonessential traffic: leave that allowed, but nothing else leaves loopback.
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_MAX_RETRIES": "2",
    }
    p = subprocess.run(
        [os.environ["TG_CLAUDE"], "-p", "say hi", "--output-format", "json"],
        env=env, cwd=home, capture_output=True, text=True, timeout=180,
    )
    assert p.returncode == 0, f"stdout={p.stdout[-2000:]} stderr={p.stderr[-2000:]}"
    cache = os.path.join(home, ".claude", "cache", "gateway-models.json")
    assert os.path.exists(cache), f"Claude Code cached no gateway models; files: {list(os.walk(home))[:5]}"
    with open(cache) as f:
        cached = json.load(f)
    by_id = {m["id"]: m for m in cached["models"]}
    # claude-opus-4-8 is not in run.sh's `models:`: only discovery knows it.
    assert "claude-opus-4-8" in by_id and "anthropic:claude-opus-4-8" in by_id, sorted(by_id)
    assert by_id["claude-opus-4-8"].get("display_name") == "Claude Opus 4.8"
