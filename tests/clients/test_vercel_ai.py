"""The Vercel AI SDK (`ai` 7 with `@ai-sdk/openai` 4, pinned in package.json) through tollgate:
`generateText` and `streamText` with a tool and a multi-step stop condition, `store` left at
its default (on), on a Claude model and on a chat-only model. Step 2 refers to step 1's items
with `item_reference`, which tollgate resolves from its stored responses."""
import json
import os
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize("mode", ["generate", "stream"])
@pytest.mark.parametrize("model", ["anthropic:claude-sonnet-4-6", "chatonly:llama-3.3-70b"])
def test_tool_loop_with_store_on(base, key, mock_log, model, mode):
    before = len(mock_log())
    out = subprocess.run(
        ["node", os.path.join(HERE, "vercel_ai.mjs"), model, mode],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "TG_BASE": base, "TG_KEY": key},
    )
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    # Step 1 calls the tool, step 2 answers with its output.
    assert [s["toolCalls"] for s in r["steps"]] == [["Bash"], []], r
    assert "vercel-tool-output" in r["text"], r
    assert all(s["store"] in (None, True) for s in r["sent"]), r
    # The provider got the whole conversation: the tool call and its output.
    upstream = json.dumps(mock_log()[before + 1]["body"])
    assert "echo hello-from-mock-tool" in upstream and "vercel-tool-output" in upstream, upstream
    if model.startswith("anthropic:"):
        # Claude writes text before its tool call: the SDK refers to that message item
        # (store on) instead of resending it, and the text came back from the stored
        # response. (The chat mock's call comes without text: the SDK resends the call.)
        assert "item_reference" in r["sent"][1]["types"], r
        assert "I'll run it." in upstream, upstream
