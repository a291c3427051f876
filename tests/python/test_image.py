"""The container image, built FROM scratch by deploy/image/check.sh, run
with podman as Kubernetes would: non-root, read-only root filesystem, the
data volume; gRPC health as the probes call it, a turn, a SIGTERM drain
with exit code 0, and a restart on the same volume with the history
intact. Runs when DIALOGD_IMAGE names the built image (.ci/run sets it)."""

import base64
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time

import grpc
import pytest

IMAGE = os.environ.get("DIALOGD_IMAGE")
pytestmark = pytest.mark.skipif(not IMAGE, reason="DIALOGD_IMAGE not set: deploy/image/check.sh builds it")

PODMAN = ["podman", "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--runtime", "runc"]
SECRET = "image-test-secret-of-at-least-32-bytes"
NONROOT = 65532


def podman(*args, check=True):
    done = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=120)
    if check:
        assert done.returncode == 0, f"podman {args}: {done.stderr}"
    return done.stdout.strip()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def token():
    """An HS256 JWT for the example config's verifier (DIALOGD_JWT_SECRET)."""
    b64 = lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=")
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"sub": "image-test", "tenant": "ci", "roles": ["user"], "iss": "dialogd", "aud": "dialogd",
              "exp": int(time.time()) + 600}
    payload = b64(json.dumps(claims).encode())
    signature = b64(hmac.new(SECRET.encode(), header + b"." + payload, hashlib.sha256).digest())
    return (header + b"." + payload + b"." + signature).decode()


def wait_listening(name, times):
    """Waits until the container's log holds `times` "listening" lines."""
    deadline = time.time() + 60
    while time.time() < deadline:
        logs = podman("logs", name, check=False)
        if logs.count("dialogd listening on") >= times:
            return
        assert podman("inspect", "-f", "{{.State.Running}}", name) == "true", f"exited: {logs}"
        time.sleep(0.2)
    raise AssertionError(f"{name} did not start: {podman('logs', name, check=False)}")


def test_the_image_runs_non_root_read_only_drains_and_keeps_its_history(pb):
    name = f"dialogd-image-test-{os.getpid()}"
    # The data volume: a directory owned by the image's user, as a
    # Kubernetes volume is with fsGroup.
    volume = tempfile.mkdtemp(prefix="dialogd-volume-", dir="/var/tmp")
    os.chown(volume, NONROOT, NONROOT)
    port, metrics_port = free_port(), free_port()
    try:
        podman("run", "-d", "--name", name, "--read-only", "--network", "host",
               "-v", f"{volume}:/var/lib/dialogd", "-e", f"DIALOGD_JWT_SECRET={SECRET}", IMAGE,
               "--config", "/etc/dialogd/dialogd.toml",
               "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{metrics_port}")
        wait_listening(name, 1)

        # Non-root, on a read-only root filesystem.
        pid = podman("inspect", "-f", "{{.State.Pid}}", name)
        with open(f"/proc/{pid}/status") as status:
            uids = next(line for line in status if line.startswith("Uid:")).split()[1:]
        assert all(int(u) == NONROOT for u in uids), uids
        assert podman("inspect", "-f", "{{.HostConfig.ReadonlyRootfs}}", name) == "true"

        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        # The probe: grpc.health.v1.Health/Check with an empty request;
        # SERVING is field 1 = 1.
        check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                    request_serializer=lambda b: b, response_deserializer=lambda b: b)
        assert check(b"", timeout=10) == b"\x08\x01"

        auth = (("authorization", f"Bearer {token()}"),)
        stub = pb.svc_grpc.DialogueServiceStub(channel)
        reply = stub.Converse(pb.svc.ConverseRequest(
            name="dialogues/in-a-container", content=[pb.res.ContentPart(text="hello from the image")],
            create_if_missing=True), metadata=auth, timeout=30)
        assert "".join(p.text for p in reply.turn.content) == "echo: hello from the image"
        channel.close()

        # SIGTERM (podman stop's signal): a drain, then exit code 0.
        podman("stop", "-t", "30", name)
        assert podman("inspect", "-f", "{{.State.ExitCode}}", name) == "0", podman("logs", name, check=False)

        # The same volume after a restart: the history is there.
        podman("start", name)
        wait_listening(name, 2)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = pb.svc_grpc.DialogueServiceStub(channel)
        turns = stub.ListTurns(pb.svc.ListTurnsRequest(parent="dialogues/in-a-container", page_size=10),
                               metadata=auth, timeout=30).turns
        assert ["".join(p.text for p in t.content) for t in turns] == [
            "hello from the image", "echo: hello from the image"]
        channel.close()
        podman("stop", "-t", "30", name)
        assert podman("inspect", "-f", "{{.State.ExitCode}}", name) == "0"
    finally:
        podman("rm", "-f", name, check=False)
        shutil.rmtree(volume, ignore_errors=True)
