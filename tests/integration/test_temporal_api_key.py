"""The API key from TEMPORAL_API_KEY reaches Temporal on the wire, on every call.

Temporal Cloud authenticates each gRPC call by its `authorization: Bearer <key>` metadata (the
SDK's core adds it to every call when the client has an API key). The dev server ignores API keys,
so a recording proxy (tests/helpers/recording_proxy.py) stands in front of it: the client that
service.sagas.client.connect_client builds from the environment talks TLS to the proxy (an API key
implies TLS), the proxy forwards each call to the session's dev server and keeps its metadata.

The key is random per test and never appears in an assertion: calls are compared by the kind of
authorization they carried (absent, the expected bearer key, or something else).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client

from golden_press.settings import Settings
from service.sagas.client import connect_client
from tests.helpers.recording_proxy import RecordedCall, RecordingProxy, recording_grpc_proxy
from tests.helpers.servers import Servers
from tests.helpers.tls import TestCA

pytestmark = pytest.mark.asyncio(loop_scope="session")

WORKFLOW_SERVICE = "/temporal.api.workflowservice.v1.WorkflowService/"
GET_SYSTEM_INFO = WORKFLOW_SERVICE + "GetSystemInfo"  # made by Client.connect itself
DESCRIBE_NAMESPACE = WORKFLOW_SERVICE + "DescribeNamespace"


@pytest.fixture
def temporal_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> TestCA:
    """Only what the test sets: no TEMPORAL_* from the machine, no ~/.config/temporalio profile
    (either could add or drop a key). The proxy's certificate comes from a test CA the client
    trusts through the SDK's own variables, as a self-hosted cluster's client would."""
    for name in [n for n in os.environ if n.startswith("TEMPORAL_")]:
        monkeypatch.delenv(name)
    (tmp_path / "temporal.toml").write_text("")
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(tmp_path / "temporal.toml"))
    ca = TestCA(tmp_path / "pki")
    monkeypatch.setenv("TEMPORAL_TLS_SERVER_CA_CERT_PATH", str(ca.cert_file))
    monkeypatch.setenv("TEMPORAL_TLS_SERVER_NAME", "localhost")
    return ca


@dataclass(frozen=True)
class ApiKey:
    """A random key whose repr hides it (`pytest -l` prints a failing test's locals)."""

    value: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)


def authorization(call: RecordedCall, key: ApiKey | None) -> str:
    """What the call carried, without the key: "absent", "bearer-key" or "other"."""
    values = call.values("authorization")
    if not values:
        return "absent"
    return "bearer-key" if key is not None and values == [f"Bearer {key.value}"] else "other"


async def connect_and_call(proxy: RecordingProxy, namespace: str) -> None:
    """connect_client through the proxy, then one real namespace-scoped call."""
    settings = Settings(temporal_address=proxy.address, temporal_namespace=namespace)  # type: ignore[call-arg]
    client = await connect_client(settings)
    response = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=namespace)
    )
    assert response.namespace_info.name == namespace  # the proxy reached the real server


async def authorizations_sent(
    servers: Servers, namespace: str, ca: TestCA, key: ApiKey | None
) -> list[tuple[str, str]]:
    """(method, what its authorization header was) of every call connect_client and one
    namespace call made through the recording proxy."""
    async with recording_grpc_proxy(servers.temporal_address, ca.server("temporal")) as proxy:
        await connect_and_call(proxy, namespace)
    assert {GET_SYSTEM_INFO, DESCRIBE_NAMESPACE} <= proxy.methods()
    return [(call.method, authorization(call, key)) for call in proxy.calls]


async def test_api_key_is_sent_as_bearer_on_every_call(
    servers: Servers,
    client: Client,
    temporal_environment: TestCA,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = ApiKey()
    monkeypatch.setenv("TEMPORAL_API_KEY", key.value)
    seen = await authorizations_sent(servers, client.namespace, temporal_environment, key)
    assert seen == [(method, "bearer-key") for method, _ in seen]


async def test_without_api_key_no_authorization_is_sent(
    servers: Servers,
    client: Client,
    temporal_environment: TestCA,
) -> None:
    seen = await authorizations_sent(servers, client.namespace, temporal_environment, None)
    assert seen == [(method, "absent") for method, _ in seen]
