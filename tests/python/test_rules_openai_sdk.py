"""Traffic rules seen through the official `openai` package: a canned reply
(no model, no tokens), a routed request answered by the rule's model, and
a refusal raised as the SDK's own error with the configured message."""

import openai
import pytest

CONFIG = """
[[models]]
name = "echo"
backend = "echo"

[[models]]
name = "small"
backend = "echo"

[[rules.rule]]
name = "opening-hours"
when = { keywords = ["opening hours"] }
then = { reply = "We are open 9 to 5." }

[[rules.rule]]
name = "cheap"
when = { keywords = ["quick question"] }
then = { route = "small" }

[[rules.rule]]
name = "no-passwords"
when = { patterns = ['(?i)\\bpassword\\b'] }
then = { refuse = { status = "permission_denied", message = "we do not discuss passwords" } }
"""


@pytest.fixture()
def client(server_with_config):
    addr = server_with_config(CONFIG)
    return openai.OpenAI(base_url=f"http://{addr}/v1", api_key="unused-without-auth", max_retries=0)


def ask(client, text, **extra):
    return client.chat.completions.with_raw_response.create(
        model="echo", messages=[{"role": "user", "content": text}], **extra
    )


def test_a_canned_reply_calls_no_model(client):
    raw = ask(client, "What are your opening hours?")
    reply = raw.parse()
    assert reply.choices[0].message.content == "We are open 9 to 5."
    assert reply.usage.total_tokens == 0
    assert raw.headers["x-dialogd-rule"] == "opening-hours"
    stream = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "opening hours?"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "We are open 9 to 5."


def test_a_routed_request_is_answered_by_the_rules_model(client):
    raw = ask(client, "quick question: 2+2?")
    reply = raw.parse()
    assert reply.model == "small"
    assert reply.choices[0].message.content == "echo: quick question: 2+2?"
    assert raw.headers["x-dialogd-rule"] == "cheap"
    plain = ask(client, "hello").parse()
    assert plain.model == "echo"


def test_a_refusal_is_the_sdks_error(client):
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "my Password is 123"}]
        )
    assert "we do not discuss passwords" in str(refused.value)
