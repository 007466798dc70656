"""The API healthcheck of docker-compose.yml, run as written against real TLS servers.

No container engine runs here, so the command is run the way the container would run it: a
`python -c` with the api service's GOLDEN_TLS_* variables, against a gRPC server that serves the
health service with the API's own TLS credentials (service.api.tls). A healthcheck that cannot
speak TLS would mark a TLS API unhealthy and keep everything that waits on it from starting.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from service.api.tls import ReloadingServerCredentials, ServerTlsFiles
from tests.helpers.tls import Leaf, TestCA

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def api_service() -> dict[str, Any]:
    """The api service of the compose file (anchors and merge keys resolved)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]["api"]  # type: ignore[no-any-return]


def healthcheck(port: int, env: dict[str, str]) -> int:
    """Exit status of the api healthcheck's command with these variables, against `port`."""
    test = [str(part) for part in api_service()["healthcheck"]["test"]]
    assert test[:3] == ["CMD", "python", "-c"], "the healthcheck is no longer a python -c"
    result = subprocess.run(
        [sys.executable, "-c", test[3]],
        env={"GOLDEN_GRPC_ADDR": f"0.0.0.0:{port}", **env},
        capture_output=True,
        timeout=30,
        check=False,
    )
    return result.returncode


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    """The operator's CA."""
    return TestCA(tmp_path / "pki")


def _serve(credentials: grpc.ServerCredentials | None, status: int) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    servicer.set("", status)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = (
        server.add_secure_port("127.0.0.1:0", credentials)
        if credentials is not None
        else server.add_insecure_port("127.0.0.1:0")
    )
    server.start()
    return server, port


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start health servers (TLS from files, or plaintext); all stopped after the test."""
    started: list[grpc.Server] = []

    def start(
        files: ServerTlsFiles | None, status: int = health_pb2.HealthCheckResponse.SERVING
    ) -> int:
        creds = ReloadingServerCredentials(files).credentials if files else None
        server, port = _serve(creds, status)
        started.append(server)
        return port

    yield start
    for server in started:
        server.stop(None)


def env_for(ca: TestCA, client: Leaf | None = None) -> dict[str, str]:
    env = {"GOLDEN_TLS_CA_FILE": str(ca.cert_file)}
    if client is not None:
        env["GOLDEN_TLS_CLIENT_CERT_FILE"] = str(client.cert_file)
        env["GOLDEN_TLS_CLIENT_KEY_FILE"] = str(client.key_file)
    return env


def test_healthy_over_tls_with_a_certificate_for_api(ca: TestCA, serve: Any) -> None:
    """A certificate naming `api` (as docs/operations.md asks) verified against the CA passes;
    NOT_SERVING fails, so the check still reads the health status."""
    leaf = ca.server("api", dns_names=("api",))
    assert healthcheck(serve(ServerTlsFiles(leaf.cert_file, leaf.key_file)), env_for(ca)) == 0
    not_serving = serve(
        ServerTlsFiles(leaf.cert_file, leaf.key_file), health_pb2.HealthCheckResponse.NOT_SERVING
    )
    assert healthcheck(not_serving, env_for(ca)) == 1


def test_unhealthy_when_plaintext_another_ca_or_another_name(
    ca: TestCA, serve: Any, tmp_path: Path
) -> None:
    """The check verifies what it talks to: a plaintext server (the old compose API), a
    certificate from another CA, or one that does not name `api` all fail it."""
    leaf = ca.server("api", dns_names=("api",))
    assert healthcheck(serve(None), env_for(ca)) != 0
    other = TestCA(tmp_path / "other", name="another CA")
    assert healthcheck(serve(ServerTlsFiles(leaf.cert_file, leaf.key_file)), env_for(other)) != 0
    localhost_only = ca.server("localhost")
    port = serve(ServerTlsFiles(localhost_only.cert_file, localhost_only.key_file))
    assert healthcheck(port, env_for(ca)) != 0


def test_mutual_tls_needs_the_client_certificate_variables(ca: TestCA, serve: Any) -> None:
    """Under mutual TLS (GOLDEN_TLS_CLIENT_CA_FILE) the check presents GOLDEN_TLS_CLIENT_CERT_FILE
    and GOLDEN_TLS_CLIENT_KEY_FILE; without them the handshake is refused."""
    leaf = ca.server("api", dns_names=("api",))
    port = serve(ServerTlsFiles(leaf.cert_file, leaf.key_file, ca.cert_file))
    assert healthcheck(port, env_for(ca)) != 0
    assert healthcheck(port, env_for(ca, ca.client("health"))) == 0
