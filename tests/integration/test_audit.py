"""The audit: clean after real sagas, and each check fires on the damage it exists to catch."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from temporalio.client import Client

from activities.faults import Faults
from golden_press.ledger_entry import EntryKind, LedgerEntry
from golden_press.models import Outcome, RevokeTicketInput
from service.ops.audit import SeenCheckpoint, audit_main, load_seen, save_seen
from service.store.config import set_cap
from service.store.outbox import stream_config
from tests.helpers.ledger import insert_expired_reservation, populated
from tests.helpers.servers import Servers
from tests.helpers.stack import Stack, assert_audit_clean, audit, golden_stack
from tests.helpers.waiting import wait_until
from workflows.revoke_ticket import RevokeTicketWorkflow

pytestmark = pytest.mark.asyncio(loop_scope="session")


def checks(report: object) -> set[str]:
    return {f.check for f in report.findings}  # type: ignore[attr-defined]


async def test_clean_after_issue_redeem_and_compensation(
    servers: Servers, session_dir: Path, client: Client
) -> None:
    faults = Faults(plan={"sign": "fail"})
    async with golden_stack(servers, session_dir, client, faults=faults) as stack:
        assert (await stack.issue("unlucky")).outcome == Outcome.COMPENSATED
        faults.plan.clear()
        await populated(stack)
        report = await assert_audit_clean(stack)
        assert (report.tickets, report.ledger_size, report.stream_events) == (4, 5, 5)
        seen = load_seen(stack.settings.state_dir / "audit-state.json")
        assert seen is not None and seen.size == 5
        # Growth after the last audit is checked with a consistency proof, then remembered.
        await stack.issue("dee")
        assert (await assert_audit_clean(stack)).checkpoint_size == 6


async def test_empty_ledger_is_clean(stack: Stack) -> None:
    report = await assert_audit_clean(stack)
    assert (report.tickets, report.ledger_size, report.stream_events) == (0, 0, 0)


async def test_state_without_entry_is_found(stack: Stack) -> None:
    ids = await populated(stack)
    # A row that claims redemption without its ledger entry (e.g. a hand edit).
    await stack.pool.execute("UPDATE tickets SET state = 'redeemed' WHERE ticket_id = $1", ids[1])
    report = await audit(stack)
    assert "ticket_ledger" in checks(report)
    assert any(str(ids[1]) in f.detail for f in report.findings)


async def test_stale_reservation_and_unpublished_event_are_found(stack: Stack) -> None:
    await populated(stack)
    await insert_expired_reservation(stack)
    await stack.pool.execute(
        "UPDATE event_outbox SET published_at = NULL"
        " WHERE leaf_index = (SELECT max(leaf_index) FROM event_outbox)"
    )
    report = await audit(stack)
    assert {"stale_reservation", "outbox"} <= checks(report)


async def test_missing_and_duplicate_stream_events_are_found(stack: Stack) -> None:
    await populated(stack)
    msgs = await stack.stream_messages()
    # The stream denies deletes: rebuild it without the first event (the stream itself may be
    # deleted), then publish the last one again under a fresh msg id.
    await stack.js.delete_stream(stack.settings.stream_name)
    await stack.js.add_stream(stream_config(stack.settings))
    for msg in msgs[1:]:
        await stack.js.publish(msg.subject, msg.data, headers=dict(msg.headers or {}))
    last = msgs[-1]
    headers = dict(last.headers or {})
    headers["Nats-Msg-Id"] = str(uuid.uuid4())
    await stack.js.publish(last.subject, last.data, headers=headers)
    report = await audit(stack)
    details = " ".join(f.detail for f in report.findings)
    assert "stream" in checks(report) and "stream_order" in checks(report)
    assert "leaf 0" in details and "2 times" in details


async def test_forked_ledger_is_inconsistent_with_the_last_audit(stack: Stack) -> None:
    await populated(stack)
    state = stack.settings.state_dir / "audit-state.json"
    report = await audit(stack, state)
    assert report.ok
    seen = load_seen(state)
    assert seen is not None
    # Pretend the previous audit saw a different tree of the same size: a fork.
    save_seen(state, SeenCheckpoint(size=seen.size, root="11" * 32))
    assert "checkpoint_consistency" in checks(await audit(stack, state))
    # A bigger tree than today's: the ledger shrank.
    save_seen(state, SeenCheckpoint(size=seen.size + 3, root=seen.root))
    assert "checkpoint_consistency" in checks(await audit(stack, state))


async def test_cap_history_disagreeing_with_the_ledger_is_found(stack: Stack) -> None:
    await populated(stack)  # no cap entry: the ledger says 5 live for every serial
    # Forge the private history: it now claims the issuances were decided under a cap of 2.
    await stack.pool.execute("UPDATE cap_history SET cap = 2")
    report = await audit(stack)
    assert checks(report) == {"cap_history"}
    assert "cap 2 live (cap_history), the ledger's cap entries say 5 live" in (
        report.findings[0].detail
    )
    await stack.pool.execute("UPDATE cap_history SET cap = 5")
    assert (await audit(stack)).ok


async def checkpoint_covers_the_ledger(stack: Stack) -> None:
    """Until a signed checkpoint covers every entry (set-cap appends; the worker signs after)."""

    async def covered() -> bool:
        async with stack.pool.acquire() as conn:
            size = await conn.fetchval("SELECT count(*) FROM ledger_entries")
            return bool((await stack.ledger.latest_checkpoint(conn)).size == size)

    await wait_until(covered, timeout=20)


def forged_issue(serial: int) -> LedgerEntry:
    """An `issued` entry for a ticket the database never had (as a tampered ledger would hold)."""
    return LedgerEntry(
        kind=EntryKind.ISSUED,
        ticket_id=uuid.uuid4(),
        serial=serial,
        key_id="ab12",
        signature_digest="d1" * 32,
        user_commitment="c0" * 32,
        at=datetime.now(UTC),
    )


async def test_the_monitors_supply_check_runs_on_the_database_ledger(stack: Stack) -> None:
    """A sixth live ticket in the ledger is `over-cap`, named as the monitor names it."""
    await populated(stack)  # ann redeemed: ben and cyd live
    async with stack.pool.acquire() as conn, conn.transaction():
        await stack.ledger.append_many(conn, [forged_issue(s) for s in range(100, 104)])
    report = await audit(stack)
    assert "over-cap" in checks(report), report.findings
    over = next(f.detail for f in report.findings if f.check == "over-cap")
    assert "6 tickets count under scope live" in over and "leaf 7" in over, over


async def test_the_monitors_lifecycle_check_runs_on_the_database_ledger(stack: Stack) -> None:
    ids = await populated(stack)
    row = await stack.pool.fetchrow("SELECT serial FROM tickets WHERE ticket_id = $1", ids[0])
    assert row is not None
    again = LedgerEntry(  # ann's ticket was redeemed: a revoke after it is illegal
        kind=EntryKind.REVOKED,
        ticket_id=ids[0],
        serial=row["serial"],
        user_commitment="c0" * 32,
        at=datetime.now(UTC),
        reason="fraud",
    )
    async with stack.pool.acquire() as conn, conn.transaction():
        await stack.ledger.append_many(conn, [again])
    report = await audit(stack)
    assert "illegal-lifecycle" in checks(report), report.findings
    assert any("revoked after redeemed" in f.detail for f in report.findings)


async def test_lowering_the_cap_later_does_not_rewrite_history(stack: Stack) -> None:
    await populated(stack)
    await stack.pool.execute("UPDATE golden_config SET cap = 1, scope = 'lifetime'")
    await assert_audit_clean(stack)


async def test_audit_main_prints_and_exits_non_zero_on_findings(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    await populated(stack)
    assert await audit_main(stack.settings) == 0
    assert "audit clean" in capsys.readouterr().out
    await stack.pool.execute("UPDATE event_outbox SET published_at = NULL WHERE leaf_index = 0")
    assert await audit_main(stack.settings, json_output=True) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and out["audit"]["findings"][0]["check"] == "outbox"
    assert out["error"]["reason"] == "AuditFinding" and out["error"]["exit_code"] == 1


async def test_revocation_is_clean_and_lifetime_scope_counts_it(stack: Stack) -> None:
    ids = await populated(stack)
    revoked = await stack.client.execute_workflow(
        RevokeTicketWorkflow.run,
        RevokeTicketInput(ticket_id=ids[2], reason="fraud"),
        id=f"revoke-{uuid.uuid4()}",
        task_queue=stack.settings.task_queue,
    )
    assert revoked.outcome == "revoked"
    await assert_audit_clean(stack)
    # ann redeemed, cyd revoked, then dee: live counts 2, lifetime 4.
    assert (await stack.issue("dee")).outcome == Outcome.ISSUED
    # Lowering the cap below the count is legal (issuance waits), in the ledger and the audit;
    # under `lifetime` the redeemed and the revoked ticket still count: 4 of 3, so eve waits.
    await set_cap(stack.settings.pg_dsn, 3, "lifetime")
    await checkpoint_covers_the_ledger(stack)  # the worker signs the cap entry's checkpoint
    await assert_audit_clean(stack)
    assert (await stack.issue("eve")).outcome == Outcome.REJECTED
    await assert_audit_clean(stack)
