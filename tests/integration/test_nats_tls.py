"""NATS over TLS with a client certificate, through the one connect function (settings only)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.errors import NoServersError

from golden_press.settings import Settings
from service.devstack.servers import find_binary, free_port, port_in_use
from service.store.nats_client import connect_nats
from tests.helpers.tls import TestCA

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "pki")


@pytest.fixture
def tls_nats(tmp_path: Path, ca: TestCA) -> Iterator[str]:
    """A private nats-server that requires TLS and verifies client certificates."""
    binary = find_binary("nats-server")
    if binary is None:
        pytest.skip("no nats-server binary")
    leaf = ca.server("nats")
    port = free_port()
    proc = subprocess.Popen(
        [
            str(binary),
            "-a", "127.0.0.1", "-p", str(port),
            "--tls", "--tlscert", str(leaf.cert_file), "--tlskey", str(leaf.key_file),
            "--tlscacert", str(ca.cert_file), "--tlsverify",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "nats.log").open("wb"),
    )  # fmt: skip
    try:
        for _ in range(200):
            if port_in_use("127.0.0.1", port):
                break
            if proc.poll() is not None:
                raise RuntimeError((tmp_path / "nats.log").read_text())
            time.sleep(0.02)
        yield f"tls://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


async def test_nats_mutual_tls_from_settings(tls_nats: str, ca: TestCA) -> None:
    client = ca.client("nats-client")
    settings = Settings(  # type: ignore[call-arg]
        nats_url=tls_nats,
        nats_tls_ca_file=ca.cert_file,
        nats_tls_cert_file=client.cert_file,
        nats_tls_key_file=client.key_file,
    )
    nc = await connect_nats(settings, max_reconnect_attempts=0, allow_reconnect=False)
    try:
        sub = await nc.subscribe("golden.tls.check")
        await nc.publish("golden.tls.check", b"over tls")
        msg = await sub.next_msg(timeout=5)
        assert msg.data == b"over tls"
    finally:
        await nc.close()

    # Without the client certificate the server refuses the connection.
    bare = settings.model_copy(update={"nats_tls_cert_file": None, "nats_tls_key_file": None})
    with pytest.raises((NoServersError, OSError, asyncio.TimeoutError)):
        nc = await connect_nats(
            bare, max_reconnect_attempts=0, allow_reconnect=False, connect_timeout=2
        )
        await nc.close()
