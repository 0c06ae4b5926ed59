"""Stored Responses on translated models with the OpenAI Python SDK: `store` left at its
default, turns chained with `previous_response_id`, the response read back and deleted, and
its input items listed with the SDK's pager."""
import json

import openai
import pytest

TEXT = "Hello from mock upstream!"
TRANSLATED = ["anthropic:claude-sonnet-4-6", "chatonly:llama-3.3-70b", "gemini:gemini-2.5-flash"]


def oai(base, key):
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("selector", TRANSLATED)
def test_previous_response_id_chain(base, key, mock_log, selector, stream):
    c = oai(base, key)

    def turn(text, previous=None):
        kw = {"model": selector, "input": text}
        if previous:
            kw["previous_response_id"] = previous
        if not stream:
            return c.responses.create(**kw)
        with c.responses.stream(**kw) as s:
            for _ in s:
                pass
            return s.get_final_response()

    first = turn("py-first")
    assert first.output_text == TEXT and first.store is True
    second = turn("py-second", first.id)
    assert second.previous_response_id == first.id
    before = len(mock_log())
    third = turn("py-third", second.id)
    assert third.output_text == TEXT
    # The provider got the whole conversation, oldest first.
    sent = json.dumps(mock_log()[before]["body"])
    positions = [sent.find(s) for s in ("py-first", "py-second", "py-third")]
    assert -1 not in positions and positions == sorted(positions), sent
    assert sent.count(TEXT) == 2, sent
    # And the usage is the provider's count of that whole prompt.
    assert third.usage.input_tokens == max(mock_log()[before]["body_len"] // 4, 1)

    got = c.responses.retrieve(third.id)
    assert got.id == third.id and got.output_text == TEXT
    items = list(c.responses.input_items.list(third.id, limit=1))
    assert [i.content[0].text for i in items] == ["py-third"]
    c.responses.delete(third.id)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(third.id)
    with pytest.raises(openai.BadRequestError) as e:
        turn("py-fourth", third.id)
    assert e.value.code == "previous_response_not_found"


def test_another_key_cannot_read_or_continue(base, key):
    import os
    import urllib.request

    req = urllib.request.Request(
        f"{base}/v1/keys",
        method="POST",
        data=b'{"name": "other"}',
        headers={"authorization": f"Bearer {os.environ['TG_MASTER']}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(req) as r:
        other = json.load(r)["key"]
    mine = oai(base, key).responses.create(model=TRANSLATED[0], input="private")
    theirs = oai(base, other)
    with pytest.raises(openai.NotFoundError):
        theirs.responses.retrieve(mine.id)
    with pytest.raises(openai.BadRequestError):
        theirs.responses.create(model=TRANSLATED[0], input="x", previous_response_id=mine.id)


@pytest.mark.parametrize("selector", ["anthropic:claude-sonnet-4-6", "chatonly:llama-3.3-70b"])
def test_conversations(base, key, mock_log, selector):
    c = oai(base, key)
    conv = c.conversations.create(
        items=[{"type": "message", "role": "user", "content": "conv-py-seed"}], metadata={"topic": "demo"}
    )
    assert conv.id.startswith("conv_") and conv.metadata == {"topic": "demo"}
    first = c.responses.create(model=selector, input="conv-py-one", conversation=conv.id)
    assert first.output_text == TEXT and first.conversation.id == conv.id
    before = len(mock_log())
    with c.responses.stream(model=selector, input="conv-py-two", conversation={"id": conv.id}) as s:
        for _ in s:
            pass
        second = s.get_final_response()
    assert second.output_text == TEXT
    sent = json.dumps(mock_log()[before]["body"])
    positions = [sent.find(x) for x in ("conv-py-seed", "conv-py-one", TEXT, "conv-py-two")]
    assert -1 not in positions and positions == sorted(positions), sent
    c.conversations.items.create(conv.id, items=[{"type": "message", "role": "user", "content": "noted"}])
    items = list(c.conversations.items.list(conv.id, order="asc", limit=2))
    assert len(items) == 6, items  # seed, two turns of input and output, the added note
    assert all(i.id for i in items) and items[2].role == "assistant", items
    c.conversations.items.delete(items[-1].id, conversation_id=conv.id)
    assert len(list(c.conversations.items.list(conv.id))) == 5
    assert c.conversations.update(conv.id, metadata={"topic": "done"}).metadata == {"topic": "done"}
    assert c.conversations.retrieve(conv.id).id == conv.id
    c.conversations.delete(conv.id)
    with pytest.raises(openai.NotFoundError):
        c.conversations.retrieve(conv.id)
