"""The CLI in-process against a served API: verbs, --json, and one-line rejections."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from service.api.server import bound_port, serve, shutdown
from service.cli import app as cli
from service.cli.client import EXIT_REJECTED, EXIT_UNAVAILABLE
from tests.helpers.stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")

TOKEN = "cli-token-" + uuid.uuid4().hex


@pytest_asyncio.fixture(loop_scope="session")
async def api_addr(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    """Serve the API and point the CLI's environment at it (never at a real dev stack)."""
    tokens = stack.settings.api_tokens_file
    tokens.parent.mkdir(parents=True, exist_ok=True)
    tokens.write_text(TOKEN + "\n")
    os.chmod(tokens, 0o600)
    server = await serve(
        stack.settings, pool=stack.pool, client=stack.client, address="127.0.0.1:0"
    )
    address = f"127.0.0.1:{bound_port(server)}"
    monkeypatch.setenv("GOLDEN_GRPC_ADDR", address)
    monkeypatch.setenv("GOLDEN_API_TOKENS_FILE", str(tokens))
    monkeypatch.setenv("GOLDEN_PG_DSN", stack.settings.pg_dsn)
    monkeypatch.setenv("GOLDEN_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("TEMPORAL_ADDRESS", stack.settings.temporal_address)
    monkeypatch.setenv("GOLDEN_TASK_QUEUE", stack.settings.task_queue)
    try:
        yield address
    finally:
        await shutdown(server, grace=None)


async def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    capsys.readouterr()
    code = await cli.run([*argv, "--json"])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, captured
    return json.loads(out)


async def test_cli_verbs(api_addr: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """issue, get, list, verify, proof, keys export, ledger verify, checkpoint, redeem."""
    issued = await run_json(capsys, "issue", "--user", "alice", "--request-id", "cli-1")
    assert isinstance(issued, dict)
    tid = issued["ticket"]["ticket_id"]
    assert issued["ticket"]["state"] == "issued" and not issued["replayed"]
    again = await run_json(capsys, "issue", "--user", "alice", "--request-id", "cli-1")
    assert isinstance(again, dict) and again["replayed"]

    got = await run_json(capsys, "get", tid)
    assert isinstance(got, dict) and got["user_id"] == "alice"
    listed = await run_json(capsys, "list", "--user", "alice")
    assert isinstance(listed, list) and [t["ticket_id"] for t in listed] == [tid]
    verified = await run_json(capsys, "verify", tid)
    assert isinstance(verified, dict) and verified["valid"] and verified["redeemable"]

    bundle = tmp_path / "bundle.json"
    assert await cli.run(["proof", tid, "-o", str(bundle)]) == 0
    assert json.loads(bundle.read_text())["ticket"]["ticket_id"] == tid
    assert await cli.run(["keys", "export"]) == 0
    assert (tmp_path / "public-keys.json").is_file()
    offline = await run_json(capsys, "ledger", "verify", str(bundle))
    assert isinstance(offline, dict) and offline["valid"] and offline["ticket_id"] == tid
    by_bundle = await run_json(capsys, "verify", str(bundle))
    assert isinstance(by_bundle, dict) and by_bundle["proof_valid"]
    checkpoint = await run_json(capsys, "checkpoint")
    assert isinstance(checkpoint, dict) and checkpoint["tree_size"] >= 1

    redeemed = await run_json(capsys, "redeem", tid, "--user", "alice")
    assert isinstance(redeemed, dict) and redeemed["leaf_index"] is not None
    capsys.readouterr()
    assert await cli.run(["list", "--state", "redeemed"]) == 0
    assert "redeemed" in capsys.readouterr().out

    other = await run_json(capsys, "issue", "--user", "erin")
    assert isinstance(other, dict)
    oid = other["ticket"]["ticket_id"]
    revoked = await run_json(capsys, "admin", "revoke", oid, "--reason", "fraud")
    assert isinstance(revoked, dict) and revoked["revoked"] == oid
    assert await cli.run(["verify", oid]) == EXIT_REJECTED
    assert capsys.readouterr().err.startswith("error: TicketNotRedeemable: ticket is revoked")


async def test_cli_rejections_are_one_line(
    api_addr: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rejection exits non-zero with `error: <Reason>: <message>` on stderr."""
    await run_json(capsys, "admin", "set-cap", "--cap", "0", "--scope", "live")
    assert await cli.run(["issue", "--user", "bob"]) == EXIT_REJECTED
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: CapReached: ")

    assert await cli.run(["get", str(uuid.uuid4())]) == EXIT_REJECTED
    assert capsys.readouterr().err.startswith("error: TicketNotFound: ")

    assert await cli.run(["issue", "--user", "carol", "--token", "wrong"]) == EXIT_REJECTED
    assert capsys.readouterr().err.startswith("error: Unauthenticated: ")

    assert await cli.run(["admin", "deny", "dave"]) == 0
    await run_json(capsys, "admin", "set-cap", "--cap", "5", "--scope", "live")
    assert await cli.run(["issue", "--user", "dave"]) == EXIT_REJECTED
    assert capsys.readouterr().err.startswith("error: UserDenied: ")

    forged = tmp_path / "forged.json"
    forged.write_text("{}")
    assert await cli.run(["ledger", "verify", str(forged), "--keys", str(forged)]) != 0
    assert capsys.readouterr().err.startswith("error: ")

    assert await cli.run(["list", "--addr", "127.0.0.1:1"]) == EXIT_UNAVAILABLE
    assert capsys.readouterr().err.startswith("error: Unavailable: ")
