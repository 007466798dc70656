"""Temporal over mutual TLS through the SDK's own variables (TEMPORAL_TLS_*), end to end.

The dev server serves no TLS, so a TLS-terminating proxy (tests/helpers/tls_proxy.py) with a
certificate from a test CA stands in front of it and requires a client certificate: the client the
API, the starters and the worker build (service.sagas.client.connect_client, from the environment
only) must handshake, present its certificate and then run a whole issuance saga through it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import Client

from golden_press.errors import Unreachable
from golden_press.models import Outcome
from golden_press.settings import Settings
from service.sagas.client import connect_client
from tests.helpers.servers import Servers
from tests.helpers.stack import golden_stack
from tests.helpers.tls import TestCA
from tests.helpers.tls_proxy import tls_proxy

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_worker_and_admission_over_temporal_mtls(
    servers: Servers,
    session_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ca = TestCA(tmp_path / "pki")
    client_leaf = ca.client("temporal-client")
    async with tls_proxy(servers.temporal_address, ca.server("temporal"), ca.cert_file) as proxy:
        monkeypatch.setenv("TEMPORAL_ADDRESS", proxy.address)
        monkeypatch.setenv("TEMPORAL_TLS_SERVER_CA_CERT_PATH", str(ca.cert_file))
        monkeypatch.setenv("TEMPORAL_TLS_SERVER_NAME", "localhost")
        # Without a client certificate the handshake is refused: nothing reaches Temporal.
        with pytest.raises(Unreachable, match=f"^cannot connect to Temporal at {proxy.address}: "):
            await connect_client(Settings())
        monkeypatch.setenv("TEMPORAL_TLS_CLIENT_CERT_PATH", str(client_leaf.cert_file))
        monkeypatch.setenv("TEMPORAL_TLS_CLIENT_KEY_PATH", str(client_leaf.key_file))
        client = await connect_client(Settings())  # the environment only, as in production
        assert isinstance(client, Client)
        assert await client.service_client.check_health()
        async with golden_stack(servers, session_dir, client) as stack:  # worker polls via TLS
            result = await stack.issue("temporal-mtls")
        assert result.outcome == Outcome.ISSUED
        assert proxy.sessions >= 1  # completed TLS sessions (the refused one never completed)
