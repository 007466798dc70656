"""`dev up` with the API's TLS variables: serves TLS, says `"tls": true`, passes OTEL_* on.

Stand-ins for worker.py and the API (as in test_devstack.py), the API one serving TLS from the
GOLDEN_TLS_* files it is given; the certificates come from a CA made at test time.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers.cli_process import run_cli
from tests.helpers.devstack_stubs import StubStack, needs_postgres
from tests.helpers.tls import TestCA

STUB_TLS_API = """
import os
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2_grpc

def read(name):
    with open(os.environ[name], "rb") as f:
        return f.read()

server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
creds = grpc.ssl_server_credentials([(read("GOLDEN_TLS_KEY_FILE"), read("GOLDEN_TLS_CERT_FILE"))])
server.add_secure_port(os.environ["GOLDEN_GRPC_ADDR"], creds)
server.start()
server.wait_for_termination()
"""


@pytest.fixture
def tls_env(stack_env: dict[str, str], tmp_path: Path) -> tuple[dict[str, str], TestCA]:
    """A user's environment naming the API's certificate, key and CA (made at test time)."""
    ca = TestCA(tmp_path / "pki")
    leaf = ca.server()
    env = {
        **stack_env,
        "GOLDEN_TLS_CERT_FILE": str(leaf.cert_file),
        "GOLDEN_TLS_KEY_FILE": str(leaf.key_file),
        "GOLDEN_TLS_CA_FILE": str(ca.cert_file),
    }
    return env, ca


def environ_of(pid: int) -> dict[str, str]:
    """The environment a running process was started with."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(): v.decode(errors="replace") for k, v in pairs}


@needs_postgres
def test_dev_up_serves_tls_and_passes_otel_on(
    state_dir: Path, tmp_path: Path, tls_env: tuple[dict[str, str], TestCA]
) -> None:
    env, ca = tls_env
    env.update(
        # Nothing listens there: the stand-ins never export, they only must be given it.
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
        OTEL_SERVICE_NAME="golden-press-devstack-test",
    )

    stack = StubStack(env, state_dir, tmp_path, api=STUB_TLS_API)
    up = stack.run("up", "--detach")
    try:
        assert up.returncode == 0, up.stderr
        info = json.loads(up.stdout)
        assert info["tls"] is True  # the stack health-checked the stand-in API over TLS
        recorded = json.loads((state_dir / "stack.json").read_text())
        assert recorded["env"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:9"
        assert recorded["env"]["GOLDEN_TLS_CA_FILE"] == str(ca.cert_file)
        for proc in recorded["processes"]:
            if proc["name"] == "postgres":
                continue  # started through pg_ctl as the postgres user, with its own environment
            seen = environ_of(proc["pid"])
            assert seen.get("OTEL_SERVICE_NAME") == "golden-press-devstack-test", proc["name"]
            assert seen.get("OTEL_EXPORTER_OTLP_ENDPOINT") == "http://127.0.0.1:9", proc["name"]
        # A killed TLS API is restarted by `dev up`, health-checked over TLS like the first time.
        stack.kill("api")
        again = stack.run("up", "--detach")
        assert again.returncode == 0, again.stderr
        assert "restarted api" in again.stderr, again.stderr
        assert json.loads(again.stdout) == info
    finally:
        down = stack.run("down")
        assert down.returncode == 0, down.stderr


@needs_postgres
def test_the_real_stack_serves_tls_to_the_cli(
    tls_env: tuple[dict[str, str], TestCA],
) -> None:
    """The real API under `dev up` with GOLDEN_TLS_*: the CLI reaches it over TLS (the CA from
    the environment), a plaintext client is refused, and `dev down` stops it all."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    env, _ = tls_env

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(env, *args)

    up = cli("dev", "up", "--detach")
    try:
        assert up.returncode == 0, up.stderr
        info = json.loads(up.stdout.strip().splitlines()[-1])
        assert info["tls"] is True
        checkpoint = cli("checkpoint", "--json")
        assert checkpoint.returncode == 0, checkpoint.stdout + checkpoint.stderr
        assert json.loads(checkpoint.stdout)["ok"] is True
        with grpc.insecure_channel(info["grpc"]) as plain:
            with pytest.raises(grpc.RpcError):
                health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=5)
    finally:
        down = cli("dev", "down")
        assert down.returncode == 0, down.stderr
