"""The gRPC API over TLS and mutual TLS, the CLI over TLS, certificate rotation, plaintext warning.

Certificates come from a CA made at test time (tests/helpers/tls.py); nothing is committed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from golden_press.checkpoint import NoteVerifier
from service.api.pb import golden_pb2, golden_pb2_grpc
from service.api.server import bound_port, serve, shutdown
from service.api.tls import channel_credentials
from service.cli import app as cli
from service.cli.client import EXIT_UNAVAILABLE
from starter import issue_via_api
from tests.helpers.api import write_tokens
from tests.helpers.stack import Stack
from tests.helpers.tls import Leaf, TestCA, served_certificate_serial

pytestmark = pytest.mark.asyncio(loop_scope="session")

TOKEN = "tls-token-" + uuid.uuid4().hex


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    """A fresh CA per test."""
    return TestCA(tmp_path / "pki")


@pytest_asyncio.fixture(loop_scope="session")
async def tls_api(stack: Stack, ca: TestCA) -> AsyncIterator[tuple[str, Leaf]]:
    """The API served with a server certificate (no client certificate asked)."""
    write_tokens(stack.settings, TOKEN)
    leaf = ca.server()
    settings = stack.settings.model_copy(
        update={"tls_cert_file": leaf.cert_file, "tls_key_file": leaf.key_file}
    )
    server = await serve(settings, pool=stack.pool, client=stack.client, address="127.0.0.1:0")
    try:
        yield f"127.0.0.1:{bound_port(server)}", leaf
    finally:
        await shutdown(server, grace=None)


@pytest_asyncio.fixture(loop_scope="session")
async def mtls_api(stack: Stack, ca: TestCA) -> AsyncIterator[str]:
    """The API served with mutual TLS: client certificates from `ca` required."""
    write_tokens(stack.settings, TOKEN)
    leaf = ca.server()
    settings = stack.settings.model_copy(
        update={
            "tls_cert_file": leaf.cert_file,
            "tls_key_file": leaf.key_file,
            "tls_client_ca_file": ca.cert_file,
        }
    )
    server = await serve(settings, pool=stack.pool, client=stack.client, address="127.0.0.1:0")
    try:
        yield f"127.0.0.1:{bound_port(server)}"
    finally:
        await shutdown(server, grace=None)


async def public_keys(address: str, credentials: grpc.ChannelCredentials | None) -> int:
    """GetPublicKeys over a fresh channel; the number of keys."""
    channel = (
        grpc.aio.secure_channel(address, credentials)
        if credentials
        else grpc.aio.insecure_channel(address)
    )
    async with channel:
        stub = golden_pb2_grpc.GoldenPressStub(channel)
        resp = await stub.GetPublicKeys(golden_pb2.GetPublicKeysRequest(), timeout=10)
        return len(resp.keys)


async def test_api_serves_tls(tls_api: tuple[str, Leaf], ca: TestCA) -> None:
    address, _ = tls_api
    assert await public_keys(address, channel_credentials(ca.cert_file)) > 0
    # A plaintext client cannot talk to a TLS port.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await public_keys(address, None)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # Nor can a client that trusts another CA.
    other = TestCA(ca.directory / "other")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await public_keys(address, channel_credentials(other.cert_file))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mtls_requires_a_client_certificate(mtls_api: str, ca: TestCA) -> None:
    client = ca.client()
    ok = channel_credentials(ca.cert_file, client.cert_file, client.key_file)
    assert await public_keys(mtls_api, ok) > 0
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await public_keys(mtls_api, channel_credentials(ca.cert_file))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # A certificate from another CA is refused too.
    stranger = TestCA(ca.directory / "stranger").client()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await public_keys(
            mtls_api, channel_credentials(ca.cert_file, stranger.cert_file, stranger.key_file)
        )
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def run_main(
    main: Callable[[list[str]], Awaitable[int]], capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, str, str]:
    """An in-process entry point (the CLI's or the starter's run): exit code, stdout, stderr."""
    capsys.readouterr()
    code = await main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    return await run_main(cli.run, capsys, *argv)


def mtls_flags(ca: TestCA, client: Leaf) -> list[str]:
    """The CLI's flags for mutual TLS: the CA to trust, and the client's certificate and key."""
    return [
        *("--ca-file", str(ca.cert_file)),
        *("--cert-file", str(client.cert_file)),
        *("--key-file", str(client.key_file)),
    ]


async def test_cli_over_mtls(
    mtls_api: str,
    ca: TestCA,
    stack: Stack,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Flags and GOLDEN_TLS_* variables both work; without a client certificate: Unavailable."""
    monkeypatch.setenv("GOLDEN_STATE_DIR", str(tmp_path))  # never a real dev stack
    monkeypatch.setenv("GOLDEN_PG_DSN", stack.settings.pg_dsn)
    client = ca.client()
    flags = ["--addr", mtls_api, "--token", TOKEN]
    tls = mtls_flags(ca, client)
    code, out, err = await run_cli(capsys, "issue", "--user", "tls-alice", *flags, *tls, "--json")
    assert code == 0, err
    ticket_id = json.loads(out)["ticket"]["ticket_id"]

    monkeypatch.setenv("GOLDEN_TLS_CA_FILE", str(ca.cert_file))
    monkeypatch.setenv("GOLDEN_TLS_CLIENT_CERT_FILE", str(client.cert_file))
    monkeypatch.setenv("GOLDEN_TLS_CLIENT_KEY_FILE", str(client.key_file))
    code, out, err = await run_cli(capsys, "get", ticket_id, *flags, "--json")
    assert code == 0, err
    assert json.loads(out)["ticket"]["ticket_id"] == ticket_id

    monkeypatch.delenv("GOLDEN_TLS_CLIENT_CERT_FILE")
    monkeypatch.delenv("GOLDEN_TLS_CLIENT_KEY_FILE")
    code, out, err = await run_cli(capsys, "get", ticket_id, *flags)
    assert code == EXIT_UNAVAILABLE, (out, err)
    assert err.startswith("error: Unavailable:")


async def run_starter(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    return await run_main(issue_via_api.run, capsys, *argv)


async def test_starter_over_tls_with_flags(
    tls_api: tuple[str, Leaf], ca: TestCA, capsys: pytest.CaptureFixture[str]
) -> None:
    """The API client starter dials TLS with --ca-file; an untrusting client cannot connect."""
    address, _ = tls_api
    flags = ["--addr", address, "--token", TOKEN]
    code, out, err = await run_starter(
        capsys, "--user", "starter-tls", *flags, "--ca-file", str(ca.cert_file)
    )
    assert code == 0, err
    assert "for starter-tls" in out
    code, out, err = await run_starter(capsys, "--user", "starter-plain", *flags)  # plaintext
    assert code == EXIT_UNAVAILABLE and err.startswith("error: UNAVAILABLE"), (out, err)
    other = TestCA(ca.directory / "other")
    code, _, err = await run_starter(
        capsys, "--user", "starter-other", *flags, "--ca-file", str(other.cert_file)
    )
    assert code == EXIT_UNAVAILABLE, err


async def test_starter_over_mtls_with_the_environment(
    mtls_api: str,
    ca: TestCA,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GOLDEN_TLS_CA_FILE / _CLIENT_CERT_FILE / _CLIENT_KEY_FILE, as for the CLI; without a
    client certificate the mTLS API refuses the starter; half a certificate is a usage error."""
    client = ca.client()
    monkeypatch.setenv("GOLDEN_GRPC_ADDR", mtls_api)
    monkeypatch.setenv("GOLDEN_TLS_CA_FILE", str(ca.cert_file))
    monkeypatch.setenv("GOLDEN_TLS_CLIENT_CERT_FILE", str(client.cert_file))
    monkeypatch.setenv("GOLDEN_TLS_CLIENT_KEY_FILE", str(client.key_file))
    code, out, err = await run_starter(capsys, "--user", "starter-mtls", "--token", TOKEN)
    assert code == 0, err
    assert "for starter-mtls" in out
    # The same user again: a business rejection, exit 1 with its ErrorInfo reason.
    code, _, err = await run_starter(capsys, "--user", "starter-mtls", "--token", TOKEN)
    assert (code, err.split(":")[0:2]) == (1, ["error", " OnePerUser"]), err

    monkeypatch.delenv("GOLDEN_TLS_CLIENT_KEY_FILE")
    code, _, err = await run_starter(capsys, "--user", "starter-half", "--token", TOKEN)
    assert code == 2 and "both --cert-file and --key-file" in err, err
    monkeypatch.delenv("GOLDEN_TLS_CLIENT_CERT_FILE")
    code, _, err = await run_starter(capsys, "--user", "starter-anon", "--token", TOKEN)
    assert code == EXIT_UNAVAILABLE, err


async def test_certificate_rotation_without_restart(tls_api: tuple[str, Leaf], ca: TestCA) -> None:
    """New files in place of the old ones: new connections get the new certificate."""
    address, leaf = tls_api
    assert await asyncio.to_thread(served_certificate_serial, address, ca.cert_file) == leaf.serial
    fresh = ca.server("rotated")
    await asyncio.sleep(1.1)  # the server looks at the files at most once a second
    os.replace(fresh.key_file, leaf.key_file)
    os.replace(fresh.cert_file, leaf.cert_file)
    served = await asyncio.to_thread(served_certificate_serial, address, ca.cert_file)
    if served != fresh.serial:  # the first handshake after the change may still be the old one
        await asyncio.sleep(1.1)
        served = await asyncio.to_thread(served_certificate_serial, address, ca.cert_file)
    assert served == fresh.serial
    assert await public_keys(address, channel_credentials(ca.cert_file)) > 0


async def test_plaintext_on_a_public_address_warns(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    write_tokens(stack.settings, TOKEN)
    with caplog.at_level(logging.WARNING, logger="golden_press.api"):
        server = await serve(
            stack.settings, pool=stack.pool, client=stack.client, address="0.0.0.0:0"
        )
        await shutdown(server, grace=None)
    warnings = [
        r for r in caplog.records if r.levelno >= logging.WARNING and "PLAINTEXT" in r.getMessage()
    ]
    assert len(warnings) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="golden_press.api"):
        server = await serve(
            stack.settings, pool=stack.pool, client=stack.client, address="127.0.0.1:0"
        )
        await shutdown(server, grace=None)
    assert not [r for r in caplog.records if "PLAINTEXT" in r.getMessage()]


async def test_monitor_reads_the_log_over_mtls(
    mtls_api: str,
    ca: TestCA,
    stack: Stack,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`monitor grpc://…` dials TLS with the same flags as every other verb (plaintext failed)."""
    monkeypatch.setenv("GOLDEN_STATE_DIR", str(tmp_path))  # never a real dev stack
    await stack.issue("tls-monitored")
    vkey = NoteVerifier(stack.settings.ledger_origin, bytes(stack.keys.ledger.verify_key)).vkey
    client = ca.client()
    tls = mtls_flags(ca, client)
    argv = ["monitor", f"grpc://{mtls_api}", "--vkey", vkey, "--json"]
    code, out, err = await run_cli(capsys, *argv, *tls)
    assert code == 0, out + err
    assert json.loads(out)["monitor"]["tree_size"] >= 1

    code, out, _err = await run_cli(capsys, *argv, "--ca-file", str(ca.cert_file))
    assert code != 0  # no client certificate: the API refuses the handshake
    assert json.loads(out)["error"]["reason"] != "Internal"
