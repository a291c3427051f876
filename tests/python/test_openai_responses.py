"""The official `openai` package's Responses API against a live dialogd:
unary and streamed responses read back by ID, a three-step
previous_response_id chain stored as one dialogue (read over REST and
continued there), a function tool loop, store=false, input items,
deletion of a chain's responses (the latest, and an older one in place), a conversation used by responses,
gRPC and its items, and branching from an older response."""

import json
import urllib.request

import openai
import pytest

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ASK = 'Weather in Paris? call get_weather {"city": "Paris"}'


@pytest.fixture()
def client(server):
    return openai.OpenAI(base_url=f"http://{server}/v1", api_key="unused-without-auth", max_retries=0)


def dialogue_of(response_id):
    return response_id.removeprefix("resp_").rsplit("~", 1)[0]


def turns(server, dialogue):
    with urllib.request.urlopen(f"http://{server}/v1/dialogues/{dialogue}/turns") as answer:
        return json.load(answer)["turns"]


def test_a_response_is_stored_and_read_back(client):
    response = client.responses.create(model="echo", input="hello there", instructions="be brief")
    assert response.status == "completed"
    assert response.output_text == "echo: hello there"
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    again = client.responses.retrieve(response.id)
    assert again.output_text == "echo: hello there" and again.instructions == "be brief"
    items = client.responses.input_items.list(response.id)
    assert items.data[0].content[0].text == "hello there"


def test_a_streamed_response_in_order(client):
    kinds, sequence, text, completed = [], [], "", None
    for event in client.responses.create(model="echo", input="one two three", stream=True):
        kinds.append(event.type)
        sequence.append(event.sequence_number)
        if event.type == "response.output_text.delta":
            text += event.delta
        if event.type == "response.completed":
            completed = event.response
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert sequence == sorted(sequence) and len(set(sequence)) == len(sequence)
    for kind in ["response.output_item.added", "response.content_part.added", "response.output_text.done",
                 "response.content_part.done", "response.output_item.done"]:
        assert kind in kinds, kind
    assert text == "echo: one two three"
    # The ID in the stream is the one GET reads back, at once.
    assert client.responses.retrieve(completed.id).output_text == text


def test_a_chain_is_one_dialogue(client, server):
    first = client.responses.create(model="echo", input="a")
    second = client.responses.create(model="echo", input="b", previous_response_id=first.id)
    third = client.responses.create(model="echo", input="c", previous_response_id=second.id)
    assert dialogue_of(first.id) == dialogue_of(third.id)
    assert client.responses.retrieve(third.id).previous_response_id == second.id
    stored = turns(server, dialogue_of(third.id))
    assert [t["content"][0]["text"] for t in stored] == ["a", "echo: a", "b", "echo: b", "c", "echo: c"]
    # Continued over REST, like any dialogue.
    body = json.dumps({"content": [{"text": "over rest"}]}).encode()
    request = urllib.request.Request(
        f"http://{server}/v1/dialogues/{dialogue_of(third.id)}:converse", data=body, method="POST",
        headers={"content-type": "application/json"},
    )
    urllib.request.urlopen(request).read()
    assert len(turns(server, dialogue_of(third.id))) == 8


def test_a_function_tool_loop(client):
    first = client.responses.create(model="echo", input=ASK, tools=[WEATHER])
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    final = client.responses.create(
        model="echo", previous_response_id=first.id, tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18C and sunny"}],
    )
    assert "18C and sunny" in final.output_text


def test_store_false_keeps_nothing(client):
    response = client.responses.create(model="echo", input="forget me", store=False)
    assert response.output_text == "echo: forget me"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_deleting_responses_of_a_chain(client, server):
    first = client.responses.create(model="echo", input="keep")
    second = client.responses.create(model="echo", input="drop", previous_response_id=first.id)
    client.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(second.id)
    assert len(turns(server, dialogue_of(first.id))) == 2
    # The chain goes on from the response that is now its latest.
    third = client.responses.create(model="echo", input="again", previous_response_id=first.id)
    assert third.output_text == "echo: again"
    # An older response goes in place: later IDs stay, the chain no longer sees it.
    before = client.responses.create(model="echo", input="z", previous_response_id=third.id, store=False)
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    assert client.responses.retrieve(third.id).output_text == "echo: again"
    stored = [[p["text"] for p in t.get("content", [])] for t in turns(server, dialogue_of(third.id))]
    assert stored == [[], [], ["again"], ["echo: again"]]
    after = client.responses.create(model="echo", input="z", previous_response_id=third.id, store=False)
    assert after.usage.input_tokens < before.usage.input_tokens


def test_branching_from_the_first_response(client, server):
    first = client.responses.create(model="echo", input="a")
    second = client.responses.create(model="echo", input="b", previous_response_id=first.id)
    client.responses.create(model="echo", input="c", previous_response_id=second.id)
    branch = client.responses.create(model="echo", input="d", previous_response_id=first.id)
    assert branch.output_text == "echo: d" and branch.previous_response_id == first.id
    # A new dialogue holding the first exchange (shared, not copied) and its own.
    assert dialogue_of(branch.id) != dialogue_of(first.id)
    texts = [t["content"][0]["text"] for t in turns(server, dialogue_of(branch.id))]
    assert texts == ["a", "echo: a", "d", "echo: d"]
    assert client.responses.retrieve(branch.id).previous_response_id == first.id
    # The model saw the shared history: more input than "d" alone, less
    # than the whole chain.
    alone = client.responses.create(model="echo", input="d")
    chained = client.responses.create(model="echo", input="d", previous_response_id=second.id)
    assert alone.usage.input_tokens < branch.usage.input_tokens < chained.usage.input_tokens
    # The branch goes on alone; the chain is untouched.
    onward = client.responses.create(model="echo", input="e", previous_response_id=branch.id)
    assert dialogue_of(onward.id) == dialogue_of(branch.id)
    assert len(turns(server, dialogue_of(first.id))) == 6
    # store=False from an older response reads that history and keeps nothing.
    loose = client.responses.create(model="echo", input="d", previous_response_id=first.id, store=False)
    assert loose.usage.input_tokens == branch.usage.input_tokens
    assert len(turns(server, dialogue_of(first.id))) == 6
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="echo", input="x", truncation="disabled")
    assert "truncation" in str(refused.value)


def test_a_conversation_across_responses_grpc_and_items(client, pb, channel):
    conversation = client.conversations.create(metadata={"topic": "demo"})
    assert conversation.id.startswith("conv_")
    assert client.conversations.retrieve(conversation.id).metadata == {"topic": "demo"}
    first = client.responses.create(model="echo", input="hi", conversation=conversation.id, instructions="be kind")
    second = client.responses.create(model="echo", input="again", conversation=conversation.id)
    assert first.output_text == "echo: hi" and second.output_text == "echo: again"
    # Continued over gRPC Converse, like any dialogue.
    stub = pb.svc_grpc.DialogueServiceStub(channel)
    stub.Converse(pb.svc.ConverseRequest(
        name=f"dialogues/{conversation.id}", content=[pb.res.ContentPart(text="over grpc")]
    ))
    items = client.conversations.items.list(conversation.id, order="asc")
    texts = [(item.role, item.content[0].text) for item in items.data]
    assert texts == [
        ("user", "hi"), ("assistant", "echo: hi"), ("user", "again"),
        ("assistant", "echo: again"), ("user", "over grpc"), ("assistant", "echo: over grpc"),
    ]
    newest = client.conversations.items.list(conversation.id, limit=1)
    assert newest.data[0].content[0].text == "echo: over grpc" and newest.has_more
    oldest = client.conversations.items.list(conversation.id, limit=2, order="asc")
    assert [item.content[0].text for item in oldest.data] == ["hi", "echo: hi"] and oldest.has_more
    item = client.conversations.items.retrieve("msg_2", conversation_id=conversation.id)
    assert item.content[0].text == "again"
    client.conversations.update(conversation.id, metadata={"topic": "done"})
    assert client.conversations.retrieve(conversation.id).metadata == {"topic": "done"}
    client.conversations.delete(conversation.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conversation.id)


def test_conversation_items_added_paged_and_used(client):
    conversation = client.conversations.create(
        items=[{"type": "message", "role": "user", "content": "my name is Ada"}]
    )
    listed = client.conversations.items.list(conversation.id, order="asc")
    assert [(i.role, i.content[0].text) for i in listed.data] == [("user", "my name is Ada")]
    added = client.conversations.items.create(conversation.id, items=[
        {"type": "message", "role": "assistant", "content": "noted"},
        {"type": "message", "role": "user", "content": "and I like tea"},
    ])
    assert [i.id for i in added.data] == ["msg_1", "msg_2"]
    # A response follows them: the model sees them before its input.
    alone = client.responses.create(model="echo", input="what do you know?")
    reply = client.responses.create(model="echo", input="what do you know?", conversation=conversation.id)
    assert reply.output_text == "echo: what do you know?"
    assert reply.usage.input_tokens > alone.usage.input_tokens
    # Paging with after, both ways (msg_3 is the response's input, msg_4 its reply).
    page = client.conversations.items.list(conversation.id, order="asc", limit=2)
    assert [i.id for i in page.data] == ["msg_0", "msg_1"] and page.has_more
    page = client.conversations.items.list(conversation.id, order="asc", limit=2, after="msg_1")
    assert [i.id for i in page.data] == ["msg_2", "msg_3"] and page.has_more
    page = client.conversations.items.list(conversation.id, limit=3, after="msg_3")
    assert [i.id for i in page.data] == ["msg_2", "msg_1", "msg_0"] and not page.has_more
    # A tool call and its result as items, each found by its ID; a call
    # must be answered before anything else is added.
    client.conversations.items.create(conversation.id, items=[
        {"type": "function_call", "call_id": "call_9", "name": "get_weather", "arguments": '{"city":"Oslo"}'},
    ])
    with pytest.raises(openai.BadRequestError) as refused:
        client.conversations.items.create(conversation.id, items=[{"type": "message", "role": "user", "content": "x"}])
    assert "call_9" in str(refused.value)
    client.conversations.items.create(conversation.id, items=[
        {"type": "function_call_output", "call_id": "call_9", "output": "-3C"},
    ])
    assert client.conversations.items.retrieve("fc_call_9", conversation_id=conversation.id).name == "get_weather"
    assert client.conversations.items.retrieve("fco_call_9", conversation_id=conversation.id).output == "-3C"
    page = client.conversations.items.list(conversation.id, order="asc", after="msg_4")
    assert [i.id for i in page.data] == ["fc_call_9", "fco_call_9"] and not page.has_more
    # A deleted message leaves the list; the other IDs stay as they were.
    assert client.conversations.items.delete("msg_1", conversation_id=conversation.id).id == conversation.id
    ids = [i.id for i in client.conversations.items.list(conversation.id, order="asc", limit=100).data]
    assert ids == ["msg_0", "msg_2", "msg_3", "msg_4", "fc_call_9", "fco_call_9"]
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve("msg_1", conversation_id=conversation.id)
    with pytest.raises(openai.BadRequestError) as refused:
        client.conversations.items.delete("fc_call_9", conversation_id=conversation.id)
    assert "function_call" in str(refused.value)
    # Bad items are refused whole, naming the item.
    with pytest.raises(openai.BadRequestError) as refused:
        client.conversations.items.create(conversation.id, items=[{"type": "message", "role": "system", "content": "x"}])
    assert "items[0].role" in str(refused.value)
    with pytest.raises(openai.BadRequestError):
        client.conversations.create(items=[{"type": "message", "role": "user", "content": ""}])
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve("fc_nope", conversation_id=conversation.id)
