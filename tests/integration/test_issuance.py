"""Issuance saga against real PostgreSQL, NATS JetStream and a Temporal dev server."""

from __future__ import annotations

import asyncio

import pytest

from golden_press.errors import Reason
from golden_press.models import Outcome, TicketState
from tests.helpers.stack import Stack
from workflows.issue_ticket import IssueTicketWorkflow

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def states(stack: Stack) -> dict[str, int]:
    rows = await stack.pool.fetch("SELECT state, count(*) AS n FROM tickets GROUP BY state")
    return {r["state"]: r["n"] for r in rows}


async def test_five_issued_then_cap_reached(stack: Stack) -> None:
    results = [await stack.issue(f"user-{i}") for i in range(5)]
    assert [r.outcome for r in results] == [Outcome.ISSUED] * 5
    assert sorted(r.serial or 0 for r in results) == [1, 2, 3, 4, 5]
    sixth = await stack.issue("user-6")
    assert sixth.outcome == Outcome.REJECTED
    assert sixth.reason == Reason.CAP_REACHED
    assert await states(stack) == {"issued": 5}
    ledger = await stack.pool.fetchval("SELECT count(*) FROM ledger_entries")
    assert ledger == 5
    events = await stack.stream_messages("issued")
    assert len(events) == 5
    leafs = [int((m.headers or {})["Golden-Leaf-Index"]) for m in events]
    assert leafs == sorted(leafs) == list(range(5))


async def test_one_per_user(stack: Stack) -> None:
    first = await stack.issue("alice")
    assert first.outcome == Outcome.ISSUED
    second = await stack.issue("alice")
    assert second.outcome == Outcome.REJECTED
    assert second.reason == Reason.ONE_PER_USER


async def test_deny_list(stack: Stack) -> None:
    await stack.pool.execute("INSERT INTO deny_list (user_id, reason) VALUES ('mallory', 'bot')")
    result = await stack.issue("mallory")
    assert (result.outcome, result.reason) == (Outcome.REJECTED, Reason.USER_DENIED)
    assert await states(stack) == {}


async def test_same_request_id_concurrently_gives_one_ticket(stack: Stack) -> None:
    results = await asyncio.gather(*(stack.issue("bob", "req-bob-1") for _ in range(10)))
    assert {r.outcome for r in results} == {Outcome.ISSUED}
    assert len({r.ticket_id for r in results}) == 1
    assert await states(stack) == {"issued": 1}


async def test_same_request_id_other_user_is_rejected(stack: Stack) -> None:
    assert (await stack.issue("carol", "req-shared")).outcome == Outcome.ISSUED
    # A new workflow run for the same id (the first one closed) must not mint for dave.
    other = await stack.issue("dave", "req-shared")
    assert (other.outcome, other.reason) == (Outcome.REJECTED, Reason.IDEMPOTENCY_KEY_REUSED)
    assert await states(stack) == {"issued": 1}


async def test_progress_query_and_search_attributes(stack: Stack) -> None:
    handle = await stack.start_issue("erin")
    result = await handle.result()
    progress = await handle.query(IssueTicketWorkflow.progress)
    assert progress.current_step == "done"
    assert progress.steps_done == ["reserve", "sign", "finalise", "ledger_append", "publish"]
    desc = await handle.describe()
    attrs = {k.name: v for k, v in ((p.key, p.value) for p in desc.typed_search_attributes)}
    assert attrs["GoldenTicketId"] == str(result.ticket_id)
    assert attrs["GoldenUserId"] == "erin"
    assert attrs["GoldenOutcome"] == "issued"
    row = await stack.pool.fetchrow("SELECT * FROM tickets WHERE ticket_id = $1", result.ticket_id)
    assert row["state"] == TicketState.ISSUED


async def test_rate_limit_is_rechecked_inside_the_saga(stack: Stack) -> None:
    limit = stack.settings.rate_limit_attempts
    await stack.pool.execute(
        "INSERT INTO rate_limit (user_id, window_start, attempts) VALUES ('hammer', now(), $1)",
        limit + 1,
    )
    result = await stack.issue("hammer")
    assert (result.outcome, result.reason) == (Outcome.REJECTED, Reason.RATE_LIMITED)
    assert await states(stack) == {}


async def test_lifetime_scope_counts_redeemed_tickets(stack: Stack) -> None:
    await stack.pool.execute("UPDATE golden_config SET cap = 2, scope = 'lifetime'")
    first = await stack.issue("life-1")
    assert first.ticket_id is not None
    await stack.redeem(first.ticket_id, "life-1", await stack.bundle_for(first.ticket_id))
    assert (await stack.issue("life-2")).outcome == Outcome.ISSUED
    third = await stack.issue("life-3")
    assert (third.outcome, third.reason) == (Outcome.REJECTED, Reason.CAP_REACHED)
