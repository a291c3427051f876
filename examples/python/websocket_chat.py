"""A WebSocket chat client (the `websockets` package) against dialogd's
`GET /v1/dialogues/{id}:connect`: two turns over one socket, each reply
printed as its deltas stream in.

    pip install -r examples/python/requirements.txt
    python examples/python/websocket_chat.py --addr 127.0.0.1:50051
"""

import argparse
import asyncio
import json
import os

import websockets

parser = argparse.ArgumentParser()
parser.add_argument("--addr", default="127.0.0.1:50051")
parser.add_argument("--dialogue", default="ws-example")
args = parser.parse_args()


async def main():
    headers = {}
    if os.environ.get("DIALOGD_API_KEY"):
        headers["authorization"] = f"Bearer {os.environ['DIALOGD_API_KEY']}"
    url = f"ws://{args.addr}/v1/dialogues/{args.dialogue}:connect"
    async with websockets.connect(url, additional_headers=headers, subprotocols=["dialogd.v1"]) as socket:
        for text in ["hello over websocket", "and once more"]:
            turn = {"type": "turn", "content": [{"text": text}], "createIfMissing": True}
            await socket.send(json.dumps(turn))
            while True:
                event = json.loads(await socket.recv())
                if "delta" in event:
                    print(event["delta"]["text"], end="", flush=True)
                elif "end" in event:
                    print()
                    break
                elif "error" in event:
                    raise SystemExit(f"refused: {event['error']['message']}")


asyncio.run(main())
