"""Key files, key rotation and administrative revocation."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from nacl.signing import SigningKey
from temporalio.client import Client

from golden_press.errors import Reason
from golden_press.models import Outcome, RevokeTicketInput, TicketState
from golden_press.signing import key_id_for
from service.store.key_files import KeyFileError, generate_key_file, load_key_file
from tests.helpers.servers import Servers
from tests.helpers.stack import Stack, golden_stack
from tests.helpers.worker import WorkerProcess
from worker import Keys, golden_worker
from workflows.revoke_ticket import RevokeTicketWorkflow


def test_key_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "issuer.key"
    key = generate_key_file(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert bytes(load_key_file(path)) == bytes(key)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="must not be readable by group or others"):
        load_key_file(path)


def test_key_error_never_contains_the_key(tmp_path: Path) -> None:
    path = tmp_path / "issuer.key"
    generate_key_file(path)
    secret = path.read_text().strip()
    os.chmod(path, 0o640)
    with pytest.raises(KeyFileError) as err:
        load_key_file(path)
    assert secret not in str(err.value)


async def test_worker_refuses_a_readable_key_file(
    servers: Servers, session_dir: Path, client: Client
) -> None:
    async with golden_stack(servers, session_dir, client, run_worker=False) as stack:
        os.chmod(stack.settings.signing_key_file, 0o644)
        worker = WorkerProcess(stack.settings, session_dir / "logs")
        with pytest.raises(RuntimeError, match="exited 2"):
            await worker.start(timeout=20)
        log = worker.log_path.read_text().strip().splitlines()
        assert len(log) == 1 and "mode 0644" in log[0]


async def test_tickets_under_two_issuer_keys_both_verify(
    servers: Servers, session_dir: Path, client: Client
) -> None:
    async with golden_stack(servers, session_dir, client, run_worker=False) as stack:
        first_keys = stack.keys
        second_keys = Keys(issuer=SigningKey.generate(), ledger=first_keys.ledger)
        async with golden_worker(stack.settings, client, stack.pool, stack.nc, first_keys):
            old = await stack.issue("before-rotation")
        async with golden_worker(stack.settings, client, stack.pool, stack.nc, second_keys):
            new = await stack.issue("after-rotation")
            assert old.key_id != new.key_id
            assert new.key_id == key_id_for(bytes(second_keys.issuer.verify_key))
            statuses = dict(
                (r["key_id"], r["status"])
                for r in await stack.pool.fetch(
                    "SELECT key_id, status FROM signing_keys WHERE purpose = 'issuer'"
                )
            )
            assert statuses == {old.key_id: "retired", new.key_id: "current"}
            for result, user in ((old, "before-rotation"), (new, "after-rotation")):
                assert result.ticket_id is not None
                bundle = await stack.bundle_for(result.ticket_id)
                redeemed = await stack.redeem(result.ticket_id, user, bundle)
                assert redeemed.outcome == Outcome.REDEEMED, redeemed


async def revoke(stack: Stack, ticket_id: uuid.UUID) -> object:
    return await stack.client.execute_workflow(
        RevokeTicketWorkflow.run,
        RevokeTicketInput(ticket_id=ticket_id, reason="fraud"),
        id=f"revoke-{ticket_id}",
        task_queue=stack.settings.task_queue,
    )


async def test_revoked_ticket_is_recorded_and_never_redeemable(stack: Stack) -> None:
    issued = await stack.issue("fraudster")
    assert issued.ticket_id is not None
    bundle = await stack.bundle_for(issued.ticket_id)
    result = await revoke(stack, issued.ticket_id)
    assert result.outcome == "revoked"  # type: ignore[attr-defined]
    state = await stack.pool.fetchval(
        "SELECT state FROM tickets WHERE ticket_id = $1", issued.ticket_id
    )
    assert state == TicketState.REVOKED
    kinds = [
        r["kind"]
        for r in await stack.pool.fetch("SELECT kind FROM ledger_entries ORDER BY leaf_index")
    ]
    assert kinds == ["issued", "revoked"]
    assert len(await stack.stream_messages("revoked")) == 1
    redeemed = await stack.redeem(issued.ticket_id, "fraudster", bundle)
    assert (redeemed.outcome, redeemed.reason) == (Outcome.REJECTED, Reason.TICKET_NOT_REDEEMABLE)
    unknown = await revoke(stack, uuid.uuid4())
    assert unknown.reason == Reason.TICKET_NOT_FOUND  # type: ignore[attr-defined]
