"""Fixtures: stubs generated from the repo's proto at test time, and a real
dialogd process on a free port with its own data dir."""

import os
import pathlib
import signal
import subprocess
import sys

import grpc
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto"


@pytest.fixture(scope="session")
def pb(tmp_path_factory):
    """Generates Python stubs for dialogue/v1 with grpc_tools and imports them."""
    import grpc_tools
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("stubs")
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in (PROTO_DIR / "dialogue" / "v1").glob("*.proto"))
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        *protos,
    ]
    assert protoc.main(args) == 0, "protoc failed on the repo's proto files"
    sys.path.insert(0, str(out))
    from dialogue.v1 import (  # noqa: E402
        dialogue_service_pb2,
        dialogue_service_pb2_grpc,
        model_service_pb2,
        model_service_pb2_grpc,
        resources_pb2,
    )

    class Stubs:
        svc = dialogue_service_pb2
        svc_grpc = dialogue_service_pb2_grpc
        models = model_service_pb2
        models_grpc = model_service_pb2_grpc
        res = resources_pb2

    return Stubs


def _start(tmp_path, extra):
    binary = os.environ.get("DIALOGD_BIN", str(ROOT / "target" / "debug" / "dialogd"))
    proc = subprocess.Popen(
        [binary, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
         "--data-dir", str(tmp_path / "data"), "--log-level", "warn", *extra],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().strip()
    assert line.startswith("dialogd listening on "), f"unexpected first line: {line!r}"
    return proc, line.removeprefix("dialogd listening on ")


def _stop(proc):
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, "dialogd did not stop cleanly on SIGTERM"


@pytest.fixture()
def server(tmp_path):
    """A dialogd process; yields its address and checks it stops cleanly."""
    proc, addr = _start(tmp_path, [])
    yield addr
    _stop(proc)


@pytest.fixture()
def server_with_config(tmp_path):
    """Starts dialogd with the given config file text; returns its address."""
    started = []

    def start(config_text):
        config = tmp_path / "dialogd.toml"
        config.write_text(config_text)
        proc, addr = _start(tmp_path, ["--config", str(config)])
        started.append(proc)
        return addr

    yield start
    for proc in started:
        _stop(proc)


@pytest.fixture()
def channel(server):
    with grpc.insecure_channel(server) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        yield ch
