"""The OpenAI Agents SDK (`openai-agents`, pinned) running a two-tool agent on translated
models through tollgate, chaining its model calls with `previous_response_id` (the SDK's
`auto_previous_response_id`, and a second run continuing the first): tollgate's stored
responses supply the history the provider needs."""
import json

import pytest
from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI, DefaultAsyncHttpxClient

set_tracing_disabled(True)


@function_tool
def Bash(command: str) -> str:
    """Runs a shell command."""
    return f"agents-ran {command}"


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@pytest.mark.parametrize("selector", ["anthropic:claude-sonnet-4-6", "gemini:gemini-2.5-flash"])
def test_two_tool_agent_chains_with_previous_response_id(base, key, mock_log, selector):
    sent = []

    async def record(request):
        sent.append(json.loads(request.content or b"{}"))

    client = AsyncOpenAI(
        base_url=f"{base}/v1",
        api_key=key,
        http_client=DefaultAsyncHttpxClient(event_hooks={"request": [record]}),
    )
    agent = Agent(
        name="ops",
        instructions="Use the tools.",
        tools=[Bash, get_weather],
        model=OpenAIResponsesModel(model=selector, openai_client=client),
    )
    before = len(mock_log())
    first = Runner.run_sync(agent, "CALL_TOOL please", auto_previous_response_id=True)
    assert "agents-ran echo hello-from-mock-tool" in first.final_output, first.final_output
    # The tool step was sent as a continuation (only the tool's output, and the id of the
    # response it continues); the provider still got the whole turn.
    assert sent[1].get("previous_response_id", "").startswith("resp_"), sent[1]
    assert "CALL_TOOL please" not in json.dumps(sent[1]["input"]), sent[1]
    step2 = json.dumps(mock_log()[before + 1]["body"])
    assert "CALL_TOOL please" in step2 and "agents-ran" in step2, step2
    second = Runner.run_sync(agent, "and now a summary", previous_response_id=first.last_response_id)
    assert second.final_output == "Hello from mock upstream!"
    last = json.dumps(mock_log()[-1]["body"])
    positions = [last.find(s) for s in ("CALL_TOOL please", "agents-ran", "and now a summary")]
    assert -1 not in positions and positions == sorted(positions), last
