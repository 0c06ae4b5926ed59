"""MCP servers named in a request, with real clients: the anthropic SDK's MCP connector
(`mcp_servers`, beta `mcp-client-2025-04-04`) on an OpenAI-format model, and the openai SDK's
Responses `mcp` tool on a chat-only model. tollgate connects to the real MCP server
(tests/mcp_servers/servers.py, the official Python SDK), offers its tools to the mock model,
which calls the one named by `x-mock-tool-script`; the tool really runs, and its result
("the secret word is PAPAYA-42") reaches the answer."""
import json
import os
import subprocess
import sys

import pytest
from anthropic import Anthropic
from openai import OpenAI

HERE = os.path.dirname(os.path.abspath(__file__))
SERVERS = os.path.join(HERE, "..", "mcp_servers", "servers.py")
SCRIPT = {"x-mock-tool-script": "mcp__calc__secret_word"}


@pytest.fixture(scope="module")
def mcp_url():
    proc = subprocess.Popen([sys.executable, SERVERS], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("mcp servers listening "), line
        ports = json.loads(line[len("mcp servers listening "):])
        yield f"http://127.0.0.1:{ports['tools']}/mcp"
    finally:
        proc.kill()
        proc.wait()


def test_anthropic_sdk_mcp_connector_on_an_openai_model(base, key, mcp_url):
    client = Anthropic(base_url=base, api_key=key)
    kwargs = dict(
        model="openai:gpt-4o-mini",
        max_tokens=200,
        messages=[{"role": "user", "content": "What is the secret word?"}],
        mcp_servers=[{"type": "url", "url": mcp_url, "name": "calc"}],
        betas=["mcp-client-2025-04-04"],
        extra_headers=SCRIPT,
    )
    msg = client.beta.messages.create(**kwargs)
    types = [b.type for b in msg.content]
    assert types[:2] == ["mcp_tool_use", "mcp_tool_result"], types
    use, result = msg.content[0], msg.content[1]
    assert (use.name, use.server_name) == ("secret_word", "calc")
    assert result.tool_use_id == use.id and not result.is_error
    assert "PAPAYA-42" in result.content[0].text
    text = "".join(b.text for b in msg.content if b.type == "text")
    assert "Tool said: the secret word is PAPAYA-42" in text, text
    # Streamed: the SDK assembles the same blocks.
    with client.beta.messages.stream(**kwargs) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content][:2] == ["mcp_tool_use", "mcp_tool_result"]
    assert "PAPAYA-42" in "".join(b.text for b in final.content if b.type == "text")


def test_openai_sdk_responses_mcp_tool_on_a_chat_only_model(base, key, mcp_url):
    client = OpenAI(base_url=f"{base}/v1", api_key=key)
    kwargs = dict(
        model="llama-3.3-70b",
        input="What is the secret word?",
        tools=[{"type": "mcp", "server_label": "calc", "server_url": mcp_url, "require_approval": "never"}],
        extra_headers=SCRIPT,
    )
    resp = client.responses.create(**kwargs)
    kinds = [i.type for i in resp.output]
    assert kinds[:2] == ["mcp_list_tools", "mcp_call"], kinds
    listed = {t.name for t in resp.output[0].tools}
    assert {"add", "echo", "secret_word"} <= listed, listed
    call = resp.output[1]
    assert (call.server_label, call.name) == ("calc", "secret_word")
    assert "PAPAYA-42" in call.output and call.error is None
    assert "Tool said: the secret word is PAPAYA-42" in resp.output_text, resp.output_text
    # Streamed.
    done = [e.item.type for e in client.responses.create(stream=True, **kwargs) if e.type == "response.output_item.done"]
    assert done[:2] == ["mcp_list_tools", "mcp_call"], done
    # require_approval other than never cannot be honoured by tollgate's loop: a clear 400.
    bad = dict(kwargs, tools=[dict(kwargs["tools"][0], require_approval="always")])
    with pytest.raises(Exception) as e:
        client.responses.create(**bad)
    assert getattr(e.value, "status_code", None) == 400, e.value
    assert "require_approval" in str(e.value)
