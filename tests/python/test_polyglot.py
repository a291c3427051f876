"""A Python grpcio client holds a conversation and a stream with dialogd,
using stubs generated from the repo's proto files."""

import grpc
import pytest


def text(pb, s):
    return pb.res.ContentPart(text=s)


def joined(turn):
    return "".join(part.text for part in turn.content)


def test_conversation_is_stored_turn_by_turn(pb, channel):
    stub = pb.svc_grpc.DialogueServiceStub(channel)
    created = stub.CreateDialogue(
        pb.svc.CreateDialogueRequest(
            dialogue=pb.res.Dialogue(dialogue_id="py_session_1", system_prompt="Be brief.", labels={"lang": "python"})
        )
    )
    assert created.name == "dialogues/py_session_1"
    assert created.model == "echo"

    first = stub.Converse(pb.svc.ConverseRequest(name=created.name, content=[text(pb, "hello from python")]))
    assert joined(first.turn) == "echo: hello from python"
    assert first.turn.index == 1
    assert first.finish_reason == pb.res.FINISH_REASON_STOP
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens

    stub.Converse(pb.svc.ConverseRequest(name=created.name, content=[text(pb, "second")], request_id="py-req-2"))
    replay = stub.Converse(pb.svc.ConverseRequest(name=created.name, content=[text(pb, "second")], request_id="py-req-2"))
    assert replay.metadata.replayed

    turns = stub.ListTurns(pb.svc.ListTurnsRequest(parent=created.name, page_size=10)).turns
    assert [joined(t) for t in turns] == ["hello from python", "echo: hello from python", "second", "echo: second"]
    assert [t.role for t in turns] == [pb.res.ROLE_USER, pb.res.ROLE_ASSISTANT] * 2

    got = stub.GetDialogue(pb.svc.GetDialogueRequest(name=created.name, last_turns=1))
    assert got.turn_count == 4
    assert got.labels["lang"] == "python"
    assert joined(got.recent_turns[0]) == "echo: second"

    models = pb.models_grpc.ModelServiceStub(channel).ListModels(pb.models.ListModelsRequest()).models
    assert [m.model_id for m in models] == ["echo"]


def test_stream_delivers_start_deltas_and_end(pb, channel):
    stub = pb.svc_grpc.DialogueServiceStub(channel)
    request = pb.svc.ConverseRequest(
        name="dialogues/py_stream",
        content=[text(pb, "stream me word by word")],
        create_if_missing=True,
    )
    events = list(stub.ConverseStream(request))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end"
    assert set(kinds[1:-1]) == {"delta"}
    deltas = [e.delta for e in events[1:-1]]
    assert [d.offset for d in deltas] == [sum(len(x.text.encode()) for x in deltas[:i]) for i in range(len(deltas))]
    reply = "".join(d.text for d in deltas)
    assert reply == "echo: stream me word by word"
    assert joined(events[-1].end.turn) == reply
    assert events[0].start.turn_index == events[-1].end.turn.index == 1


def test_errors_carry_grpc_status_codes(pb, channel):
    stub = pb.svc_grpc.DialogueServiceStub(channel)
    with pytest.raises(grpc.RpcError) as missing:
        stub.Converse(pb.svc.ConverseRequest(name="dialogues/nobody", content=[text(pb, "hi")]))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND

    with pytest.raises(grpc.RpcError) as bad:
        stub.GetDialogue(pb.svc.GetDialogueRequest(name="not-a-name"))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # AIP-193 details travel in the grpc-status-details-bin trailer.
    trailers = dict(bad.value.trailing_metadata() or ())
    assert "grpc-status-details-bin" in trailers


def tools_and_results(pb):
    """Generation settings declaring get_weather, and a builder of results."""
    from google.protobuf import struct_pb2

    schema = struct_pb2.Struct()
    schema.update({"type": "object", "properties": {"city": {"type": "string"}}})
    generation = pb.res.GenerationConfig(tools=[pb.res.Tool(name="get_weather", description="Weather", parameters=schema)])

    def result(call_id, output):
        return pb.res.ContentPart(
            tool_result=pb.res.ToolResult(call_id=call_id, content=[pb.res.ContentPart(text=output)])
        )

    return generation, result


def test_tool_loop_unary_and_streamed(pb, channel):
    """The loop the proto documents: the model calls a tool, the caller runs
    it and answers with a tool_result, the model goes on; unary, then
    streamed with the call forming in tool_call_delta events."""
    stub = pb.svc_grpc.DialogueServiceStub(channel)
    generation, result = tools_and_results(pb)
    ask = 'Weather in Paris? call get_weather {"city": "Paris"}'
    name = "dialogues/py_tools"

    asked = stub.Converse(
        pb.svc.ConverseRequest(name=name, content=[text(pb, ask)], generation=generation, create_if_missing=True)
    )
    assert asked.finish_reason == pb.res.FINISH_REASON_TOOL_CALLS
    call = asked.turn.content[0].tool_call
    assert (call.name, call.arguments) == ("get_weather", '{"city": "Paris"}')
    answered = stub.Converse(
        pb.svc.ConverseRequest(name=name, content=[result(call.id, "18C")], generation=generation)
    )
    assert answered.finish_reason == pb.res.FINISH_REASON_STOP
    assert "18C" in joined(answered.turn)

    events = list(
        stub.ConverseStream(pb.svc.ConverseRequest(name=name, content=[text(pb, ask)], generation=generation))
    )
    pieces = [e.tool_call_delta for e in events if e.WhichOneof("event") == "tool_call_delta"]
    assert pieces[0].id and pieces[0].name == "get_weather"
    assert "".join(p.arguments for p in pieces) == '{"city": "Paris"}'
    end = events[-1].end
    assert end.turn.content[0].tool_call.id == pieces[0].id
    events = list(
        stub.ConverseStream(
            pb.svc.ConverseRequest(name=name, content=[result(pieces[0].id, "19C")], generation=generation)
        )
    )
    assert "19C" in joined(events[-1].end.turn)

    # Answering what was not asked is refused with the field named.
    with pytest.raises(grpc.RpcError) as error:
        stub.Converse(pb.svc.ConverseRequest(name=name, content=[result("call_x", "?")], generation=generation))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    turns = stub.ListTurns(pb.svc.ListTurnsRequest(parent=name, page_size=20)).turns
    roles = [t.role for t in turns]
    assert roles == [pb.res.ROLE_USER, pb.res.ROLE_ASSISTANT, pb.res.ROLE_TOOL, pb.res.ROLE_ASSISTANT] * 2
