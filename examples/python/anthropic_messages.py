"""The official `anthropic` SDK against dialogd's Messages API: a unary
turn, then a streamed one continuing the same stored dialogue.

    pip install -r examples/python/requirements.txt
    python examples/python/anthropic_messages.py --addr 127.0.0.1:50051
"""

import argparse
import os

import anthropic

parser = argparse.ArgumentParser()
parser.add_argument("--addr", default="127.0.0.1:50051")
parser.add_argument("--dialogue", default="anthropic-example")
args = parser.parse_args()

client = anthropic.Anthropic(
    base_url=f"http://{args.addr}",
    api_key=os.environ.get("DIALOGD_API_KEY", "unused-without-auth"),
)
bound = {"X-Dialogue-Id": args.dialogue}  # keep the conversation in dialogd
reply = client.messages.create(
    model="echo",
    max_tokens=256,
    system="You are terse.",
    messages=[{"role": "user", "content": "hello from anthropic"}],
    extra_headers=bound,
)
print(reply.content[0].text)
with client.messages.stream(
    model="echo",
    max_tokens=256,
    messages=[{"role": "user", "content": "and streamed"}],
    extra_headers=bound,
) as stream:
    for text in stream.text_stream:
        print(text, end="", flush=True)
print()
