#!/usr/bin/env python3
"""A streaming chat client for dialogd over gRPC (grpcio): each line on stdin
is a turn of one dialogue, and the reply is printed as it streams.

    pip install -r examples/python/requirements.txt
    python examples/python/chat.py [--addr 127.0.0.1:50051] [--dialogue my-chat] [--key dk_...]

Stubs are generated from the repository's proto/ at start (grpcio-tools), so
nothing generated is checked in."""

import argparse
import os
import pathlib
import sys
import tempfile
import time

import grpc
import grpc_tools
from grpc_tools import protoc

PROTO_DIR = pathlib.Path(__file__).resolve().parents[2] / "proto"


def load_stubs():
    out = tempfile.mkdtemp(prefix="dialogd-stubs-")
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in (PROTO_DIR / "dialogue" / "v1").glob("*.proto"))
    args = ["protoc", f"-I{PROTO_DIR}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}", *protos]
    if protoc.main(args) != 0:
        sys.exit("cannot generate stubs from proto/")
    sys.path.insert(0, out)
    from dialogue.v1 import dialogue_service_pb2, dialogue_service_pb2_grpc, resources_pb2

    return dialogue_service_pb2, dialogue_service_pb2_grpc, resources_pb2


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", default="127.0.0.1:50051")
    parser.add_argument("--dialogue", default=f"py-{int(time.time())}")
    parser.add_argument("--key", default=os.environ.get("DIALOGD_API_KEY"))
    args = parser.parse_args()
    svc, svc_grpc, res = load_stubs()
    metadata = [("authorization", f"Bearer {args.key}")] if args.key else []
    with grpc.insecure_channel(args.addr) as channel:
        stub = svc_grpc.DialogueServiceStub(channel)
        interactive = sys.stdin.isatty()
        if interactive:
            print(f"dialogue {args.dialogue} on {args.addr}; type a message")
        for line in iter(lambda: input("> ") if interactive else sys.stdin.readline(), ""):
            text = line.strip()
            if not text:
                continue
            request = svc.ConverseRequest(
                name=f"dialogues/{args.dialogue}",
                content=[res.ContentPart(text=text)],
                create_if_missing=True,
            )
            try:
                for event in stub.ConverseStream(request, metadata=metadata):
                    kind = event.WhichOneof("event")
                    if kind == "delta":
                        print(event.delta.text, end="", flush=True)
                    elif kind == "end":
                        usage = event.end.usage
                        reason = res.FinishReason.Name(event.end.finish_reason)
                        print(f"\n[{reason}, {usage.prompt_tokens}+{usage.completion_tokens} tokens]")
            except grpc.RpcError as error:
                sys.exit(f"error: {error.code().name} {error.details()}")


if __name__ == "__main__":
    try:
        main()
    except (EOFError, KeyboardInterrupt):
        pass
