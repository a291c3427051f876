"""The official `openai` package, unchanged, with base_url pointed at a live
dialogd: chat completions unary and streamed, stateless and tied to a
stored dialogue, model listing, and errors raised as the SDK's own."""

import openai
import pytest


@pytest.fixture()
def client(server):
    return openai.OpenAI(base_url=f"http://{server}/v1", api_key="unused-without-auth", max_retries=0)


def test_unary_completion(client):
    reply = client.chat.completions.create(
        model="echo",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello sdk"}],
    )
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == "echo: hello sdk"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streamed_completion(client):
    stream = client.chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert text == "echo: one two three"
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 0


def test_a_dialogue_keeps_history_server_side(client):
    first = client.chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "remember me"}],
        extra_headers={"X-Dialogue-Id": "sdk-chat"},
    )
    second = client.chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "again"}],
        extra_body={"dialogue_id": "sdk-chat"},
    )
    assert second.choices[0].message.content == "echo: again"
    # The stored first exchange was part of the second prompt.
    assert second.usage.prompt_tokens > first.usage.prompt_tokens


def test_models_and_errors(client):
    assert [m.id for m in client.models.list()] == ["echo"]
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert error.value.status_code == 400
    assert "no-such-model" in error.value.message
