"""The official `openai` SDK against dialogd's Responses and Conversations
APIs, as README shows them: a stored chain, a streamed continuation, a
branch from the first response, and a conversation with an initial item.

    pip install -r examples/python/requirements.txt
    python examples/python/openai_responses.py --addr 127.0.0.1:50051
"""

import argparse
import os

import openai

parser = argparse.ArgumentParser()
parser.add_argument("--addr", default="127.0.0.1:50051")
args = parser.parse_args()

client = openai.OpenAI(
    base_url=f"http://{args.addr}/v1",
    api_key=os.environ.get("DIALOGD_API_KEY", "unused-without-auth"),
)

first = client.responses.create(model="echo", input="a", instructions="be brief")
second = client.responses.create(model="echo", input="b", previous_response_id=first.id)
print(client.responses.retrieve(second.id).output_text)        # "echo: b"
for event in client.responses.create(model="echo", input="c", previous_response_id=second.id, stream=True):
    if event.type == "response.output_text.delta":
        print(event.delta, end="")
print()
branch = client.responses.create(model="echo", input="d", previous_response_id=first.id)
print(branch.output_text, "| branched from", branch.previous_response_id == first.id)

conversation = client.conversations.create(
    metadata={"topic": "demo"}, items=[{"type": "message", "role": "user", "content": "my name is Ada"}]
)
client.responses.create(model="echo", input="hi", conversation=conversation.id)
for item in client.conversations.items.list(conversation.id, order="asc").data:
    print(item.role, item.content[0].text)
