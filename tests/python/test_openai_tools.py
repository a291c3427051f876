"""The official `openai` package runs rich turns against a live dialogd (its
built-in `echo` backend, whose tool-calling mode is deterministic): a tool
loop, an image message and structured output, unary and streamed,
stateless and bound to a stored dialogue; and every parameter of the SDK's
request type is either honoured, refused by name or on the documented
accepted-and-ignored list."""

import base64
import json
import typing

import openai
import pydantic
import pytest
import urllib.request
from openai.types.chat import completion_create_params

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
ASK = 'Weather in Paris? call get_weather {"city": "Paris"}'


@pytest.fixture()
def client(server):
    return openai.OpenAI(base_url=f"http://{server}/v1", api_key="unused-without-auth", max_retries=0)


def streamed(stream):
    """Content, tool calls (assembled from their deltas) and finish reason
    of a stream; checks each call's first delta carries id, type and name."""
    text, calls, finish = "", {}, None
    for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for delta in choice.delta.tool_calls or []:
                if delta.index not in calls:
                    assert delta.id and delta.type == "function" and delta.function.name, delta
                    calls[delta.index] = {"id": delta.id, "name": delta.function.name, "arguments": ""}
                calls[delta.index]["arguments"] += delta.function.arguments or ""
            finish = choice.finish_reason or finish
    return text, [calls[i] for i in sorted(calls)], finish


def tool_message(call_id, content):
    return {"role": "tool", "tool_call_id": call_id, "content": content}


@pytest.mark.parametrize("bound", [False, True])
def test_tool_loop_unary(client, bound):
    headers = {"X-Dialogue-Id": "sdk-tools-unary"} if bound else {}
    messages = [{"role": "user", "content": ASK}]
    first = client.chat.completions.create(model="echo", messages=messages, tools=[WEATHER], extra_headers=headers)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}

    messages += [choice.message.model_dump(exclude_none=True), tool_message(call.id, "18C and sunny")]
    final = client.chat.completions.create(model="echo", messages=messages, tools=[WEATHER], extra_headers=headers)
    assert final.choices[0].finish_reason == "stop"
    assert "18C and sunny" in final.choices[0].message.content
    assert final.choices[0].message.tool_calls is None


@pytest.mark.parametrize("bound", [False, True])
def test_tool_loop_streamed_with_parallel_calls(client, server, bound):
    dialogue = "sdk-tools-stream"
    headers = {"X-Dialogue-Id": dialogue} if bound else {}
    messages = [{"role": "user", "content": ASK + " and the time: call get_time"}]
    text, calls, finish = streamed(
        client.chat.completions.create(
            model="echo", messages=messages, tools=[WEATHER, TIME], stream=True, extra_headers=headers
        )
    )
    assert finish == "tool_calls" and text == ""
    assert [c["name"] for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}
    assert calls[1]["arguments"] == "{}"

    assistant = {
        "role": "assistant",
        "tool_calls": [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in calls
        ],
    }
    messages += [assistant, tool_message(calls[0]["id"], "18C"), tool_message(calls[1]["id"], "09:00")]
    text, calls, finish = streamed(
        client.chat.completions.create(
            model="echo", messages=messages, tools=[WEATHER, TIME], stream=True, extra_headers=headers
        )
    )
    assert finish == "stop" and calls == []
    assert "18C" in text and "09:00" in text
    if bound:
        # The whole loop is stored: user, calls, results, answer.
        with urllib.request.urlopen(f"http://{server}/v1/dialogues/{dialogue}/turns") as response:
            turns = json.load(response)["turns"]
        assert [t["role"] for t in turns] == ["ROLE_USER", "ROLE_ASSISTANT", "ROLE_TOOL", "ROLE_ASSISTANT"]
        assert [p["toolCall"]["name"] for p in turns[1]["content"]] == ["get_weather", "get_time"]
        assert turns[2]["content"][0]["toolResult"]["content"] == [{"text": "18C"}]


def test_the_sdk_stream_helper_assembles_tool_calls(client):
    with client.chat.completions.stream(
        model="echo", messages=[{"role": "user", "content": ASK}], tools=[WEATHER]
    ) as stream:
        final = stream.get_final_completion()
    [call] = final.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


PNG = bytes([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 1, 2, 3])


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("bound", [False, True])
def test_an_image_message(client, stream, bound):
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    content = [
        {"type": "text", "text": "What are these?"},
        {"type": "image_url", "image_url": {"url": data_url, "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    headers = {"X-Dialogue-Id": f"sdk-image-{stream}"} if bound else {}
    args = dict(model="echo", messages=[{"role": "user", "content": content}], extra_headers=headers)
    if stream:
        text, _, finish = streamed(client.chat.completions.create(stream=True, **args))
    else:
        reply = client.chat.completions.create(**args)
        text, finish = reply.choices[0].message.content, reply.choices[0].finish_reason
    assert finish == "stop"
    assert text == f"echo: What are these? [image image/png, {len(PNG)} bytes] [image https://example.com/cat.jpg]"


class Place(pydantic.BaseModel):
    city: str
    population: int
    capital: bool


@pytest.mark.parametrize("bound", [False, True])
def test_structured_output(client, bound):
    headers = {"X-Dialogue-Id": "sdk-json"} if bound else {}
    # The SDK's own parse helper: a strict json_schema from the model class.
    parsed = client.chat.completions.parse(
        model="echo", messages=[{"role": "user", "content": "Paris"}], response_format=Place, extra_headers=headers
    )
    place = parsed.choices[0].message.parsed
    assert place == Place(city="Paris", population=0, capital=False)

    schema = {"name": "place", "strict": True, "schema": Place.model_json_schema()}
    text, _, finish = streamed(
        client.chat.completions.create(
            model="echo",
            messages=[{"role": "user", "content": "Oslo"}],
            response_format={"type": "json_schema", "json_schema": schema},
            stream=True,
            extra_headers=headers,
        )
    )
    assert finish == "stop"
    assert json.loads(text) == {"city": "Oslo", "population": 0, "capital": False}
    reply = client.chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "Reply in JSON: Rome"}],
        response_format={"type": "json_object"},
    )
    assert json.loads(reply.choices[0].message.content) == {"echo": "Reply in JSON: Rome"}


def test_log_probabilities(client):
    reply = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "one two"}], logprobs=True, top_logprobs=1
    )
    tokens = reply.choices[0].logprobs.content
    assert "".join(t.token for t in tokens) == "echo: one two"
    assert all(t.logprob == 0 and len(t.top_logprobs) == 1 for t in tokens)
    stream = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "three"}], logprobs=True, stream=True
    )
    streamed_tokens = [t.token for c in stream for ch in c.choices if ch.logprobs for t in ch.logprobs.content]
    assert "".join(streamed_tokens) == "echo: three"


def test_models_retrieve_and_errors_before_the_stream(client):
    assert client.models.retrieve("echo").id == "echo"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    # Refusals come as HTTP errors before any stream starts, so the SDK
    # raises its typed errors for streamed calls too.
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert "nope" in error.value.message
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "hi"}], tool_choice="required", stream=True
        )
    assert error.value.body["param"] == "tool_choice"
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(
            model="echo",
            messages=[{"role": "user", "content": "hi"}, tool_message("call_9", "x")],
            tools=[WEATHER],
        )
    assert error.value.body["param"] == "messages[1].tool_call_id"


# Each parameter of the SDK's request type, with a value to send and what
# dialogd does with it: "works" (answered), "ignored" (answered, on the
# README's accepted-and-ignored list) or "refused" (400 naming it).
FIELDS = {
    "messages": ([{"role": "user", "content": "hi"}], "works"),
    "model": ("echo", "works"),
    "audio": ({"voice": "alloy", "format": "mp3"}, "refused"),
    "frequency_penalty": (0.5, "works"),
    "function_call": ("auto", "refused"),
    "functions": ([{"name": "f", "parameters": {"type": "object"}}], "refused"),
    "logit_bias": ({"50256": -100}, "refused"),
    "logprobs": (True, "works"),
    "max_completion_tokens": (2, "works"),
    "max_tokens": (2, "works"),
    "metadata": ({"team": "search"}, "ignored"),
    "modalities": (["text", "audio"], "refused"),
    "moderation": ({"model": "omni-moderation-latest"}, "refused"),
    "n": (2, "refused"),
    "parallel_tool_calls": (False, "works"),
    "prediction": ({"type": "content", "content": "hi"}, "refused"),
    "presence_penalty": (0.5, "works"),
    "prompt_cache_key": ("k", "ignored"),
    "prompt_cache_options": ({"mode": "implicit"}, "ignored"),
    "prompt_cache_retention": ("24h", "ignored"),
    "reasoning_effort": ("low", "refused"),
    "response_format": ({"type": "json_object"}, "works"),
    "safety_identifier": ("user-1", "ignored"),
    "seed": (7, "works"),
    "service_tier": ("flex", "refused"),
    "stop": (["i"], "works"),
    "store": (True, "ignored"),
    "stream": (False, "works"),
    "stream_options": ({"include_usage": True}, "works"),
    "temperature": (0.2, "works"),
    "tool_choice": ("auto", "works"),
    "tools": ([WEATHER], "works"),
    "top_logprobs": (2, "works"),
    "top_p": (0.9, "works"),
    "user": ("user-1", "ignored"),
    "verbosity": ("low", "refused"),
    "web_search_options": ({}, "refused"),
}


def sdk_request_fields():
    fields = set()
    for cls in (completion_create_params.CompletionCreateParamsBase,):
        fields |= set(typing.get_type_hints(cls).keys())
    return fields | {"stream"}


def test_every_parameter_of_the_sdk_request_is_handled_refused_or_documented(client):
    assert sdk_request_fields() == set(FIELDS), "the SDK's request type changed: classify its parameters"
    for field, (value, expected) in FIELDS.items():
        args = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
        if field in ("logprobs", "top_logprobs"):
            args["logprobs"] = True
        if field in ("tool_choice", "parallel_tool_calls"):
            args["tools"] = [WEATHER]
        if field == "stream_options":
            args["stream"] = True
        args[field] = value
        raw = client.chat.completions.with_raw_response
        if expected == "refused":
            with pytest.raises(openai.BadRequestError) as error:
                raw.create(**args)
            assert error.value.body["param"] == field, field
            continue
        response = raw.create(**args)
        assert response.http_request is not None and response.status_code == 200, field
    # "works" means it takes effect, where echo can show it.
    cut = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "a b c d"}], max_tokens=2)
    assert cut.choices[0].message.content == "echo: a " and cut.choices[0].finish_reason == "length"
    stopped = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi there"}], stop=["there"])
    assert stopped.choices[0].message.content == "echo: hi "


def test_unknown_parameters_are_refused_by_name(client):
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}], extra_body={"temprature": 1})
    assert error.value.body["param"] == "temprature"
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(
            model="echo",
            messages=[{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}],
        )
    assert error.value.body["param"] == "messages[0].content[0].type"


def test_a_tool_may_return_nothing_and_assistant_messages_come_back_as_sent(client):
    messages = [
        {"role": "user", "content": ASK},
        {
            "role": "assistant",
            "content": "",
            "annotations": [],
            "refusal": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}],
        },
        tool_message("c1", ""),
    ]
    reply = client.chat.completions.create(model="echo", messages=messages, tools=[WEATHER])
    assert reply.choices[0].message.content == "echo: [call c1 returned: ]"
