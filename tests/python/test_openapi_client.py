"""The OpenAPI document dialogd serves at /openapi.json: valid OpenAPI 3.1
(openapi-spec-validator), and a Python client generated from it
(openapi-python-client) holds a conversation over the REST routes."""

import importlib
import json
import subprocess
import sys
import urllib.request

from openapi_spec_validator import validate


def test_the_document_validates_and_a_generated_client_converses(server, tmp_path):
    with urllib.request.urlopen(f"http://{server}/openapi.json", timeout=10) as answer:
        assert answer.headers["content-type"] == "application/json"
        document = json.load(answer)
    assert document["openapi"].startswith("3.1")
    validate(document)

    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(document))
    generated = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(spec),
         "--output-path", str(tmp_path / "dialogd_client"), "--meta", "none"],
        capture_output=True, text=True, timeout=300,
    )
    assert (tmp_path / "dialogd_client" / "client.py").exists(), generated.stdout + generated.stderr
    sys.path.insert(0, str(tmp_path))
    client_module = importlib.import_module("dialogd_client.client")
    models = importlib.import_module("dialogd_client.models")
    api = "dialogd_client.api.dialogue_v_1_dialogue_service"

    class dialogues:  # noqa: N801 - the generated modules, one per operation
        create_dialogue = importlib.import_module(f"{api}.create_dialogue")
        converse = importlib.import_module(f"{api}.converse")
        list_turns = importlib.import_module(f"{api}.list_turns")
        get_dialogue = importlib.import_module(f"{api}.get_dialogue")

    client = client_module.AuthenticatedClient(base_url=f"http://{server}", token="local")
    created = dialogues.create_dialogue.sync(
        client=client, body=models.Dialogue(dialogue_id="generated", system_prompt="Be brief."))
    assert created.name == "dialogues/generated"
    reply = dialogues.converse.sync(
        "generated", client=client,
        body=models.ConverseRequest(content=[models.ContentPart(text="hello from a generated client")]))
    assert reply.turn.content[0].text == "echo: hello from a generated client"
    turns = dialogues.list_turns.sync("generated", client=client)
    assert [t.content[0].text for t in turns.turns] == [
        "hello from a generated client", "echo: hello from a generated client"]
    # Errors come back in the documented shape.
    missing = dialogues.get_dialogue.sync("no-such-dialogue", client=client)
    assert type(missing).__name__ == "GoogleError" and missing.error.status == "NOT_FOUND"
