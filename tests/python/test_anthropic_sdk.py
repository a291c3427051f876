"""The official `anthropic` package against a live dialogd's Messages API
(`/v1/messages`, served by the built-in `echo` backend): unary and
streamed turns, a tool_use loop, an image, token counting, errors in
Anthropic's shape, and a dialogue started here and continued through the
OpenAI front and read over REST."""

import base64
import json
import urllib.request

import anthropic
import openai
import pytest

WEATHER = {
    "name": "get_weather",
    "description": "The weather of a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ASK = 'Weather in Paris? call get_weather {"city": "Paris"}'
PNG = bytes([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 1, 2, 3])


@pytest.fixture()
def client(server):
    return anthropic.Anthropic(base_url=f"http://{server}", api_key="unused-without-auth", max_retries=0)


def test_a_unary_message(client):
    message = client.messages.create(
        model="echo", max_tokens=256, system="be brief", messages=[{"role": "user", "content": "hello there"}]
    )
    assert message.type == "message" and message.role == "assistant"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "echo: hello there"
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


def test_a_streamed_message_in_anthropics_event_order(client):
    kinds, text = [], ""
    with client.messages.stream(
        model="echo", max_tokens=256, messages=[{"role": "user", "content": "one two three"}]
    ) as stream:
        for event in stream:
            kinds.append(event.type)
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "content_block_stop" in kinds and "message_delta" in kinds
    assert final.content[0].text == "echo: one two three"
    assert final.stop_reason == "end_turn"


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_use_loop(client, stream):
    messages = [{"role": "user", "content": ASK}]

    def ask():
        if not stream:
            return client.messages.create(model="echo", max_tokens=256, tools=[WEATHER], messages=messages)
        with client.messages.stream(model="echo", max_tokens=256, tools=[WEATHER], messages=messages) as s:
            return s.get_final_message()

    first = ask()
    assert first.stop_reason == "tool_use"
    [call] = [block for block in first.content if block.type == "tool_use"]
    assert call.name == "get_weather" and call.input == {"city": "Paris"}
    messages += [
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C and sunny"}]},
    ]
    final = ask()
    assert final.stop_reason == "end_turn"
    assert "18C and sunny" in final.content[0].text


def test_an_image(client):
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(PNG).decode()}},
    ]
    message = client.messages.create(model="echo", max_tokens=256, messages=[{"role": "user", "content": content}])
    assert message.content[0].text == f"echo: What is this? [image image/png, {len(PNG)} bytes]"


def test_count_tokens(client):
    counted = client.messages.count_tokens(
        model="echo", messages=[{"role": "user", "content": "how many tokens is this?"}], tools=[WEATHER]
    )
    assert counted.input_tokens > 6


def test_errors_come_in_anthropics_shape(client):
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert refused.value.body["type"] == "error"
    assert refused.value.body["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(
            model="echo", max_tokens=10, messages=[{"role": "user", "content": "hi"}], extra_body={"top_k": 5}
        )
    assert "top_k" in refused.value.body["error"]["message"]
    # Refused before any stream starts, as the SDK's typed error.
    with pytest.raises(anthropic.BadRequestError):
        with client.messages.stream(model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "hi"}]) as s:
            s.get_final_message()


def test_one_dialogue_across_fronts(client, server):
    dialogue = {"X-Dialogue-Id": "across-fronts"}
    first = client.messages.create(
        model="echo", max_tokens=64, messages=[{"role": "user", "content": "from anthropic"}], extra_headers=dialogue
    )
    assert first.content[0].text == "echo: from anthropic"
    chat = openai.OpenAI(base_url=f"http://{server}/v1", api_key="unused", max_retries=0)
    second = chat.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "from openai"}], extra_headers=dialogue
    )
    assert second.choices[0].message.content == "echo: from openai"
    with urllib.request.urlopen(f"http://{server}/v1/dialogues/across-fronts/turns") as response:
        turns = json.load(response)["turns"]
    texts = [part["text"] for turn in turns for part in turn["content"]]
    assert texts == ["from anthropic", "echo: from anthropic", "from openai", "echo: from openai"]
