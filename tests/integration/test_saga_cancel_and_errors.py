"""Cancellation is honoured and deterministic errors are never retried (issue 13: 5, 6).

A cancel during `reserve` reaches the activity (it heartbeats), so the saga never goes on to
issue; a cancel at any step before the ledger compensates (the void is recorded) and the
workflow ends Canceled, not Completed as `compensated`. A revoke reason that can never be
written to the ledger is refused at the input model, and a workflow or activity input that fails
validation fails at once instead of being retried forever.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from pydantic import ValidationError
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

from activities.faults import Faults
from golden_press.errors import InvalidRequest, Reason
from golden_press.models import Outcome, RevokeTicketInput, TicketState
from service.sagas.runs import revoke_ticket
from service.store.db import GOLDEN_KEY
from tests.helpers.faults import VALUE_ERROR, OutageFaults, value_error_message
from tests.helpers.servers import Servers
from tests.helpers.stack import Stack, assert_audit_clean, golden_stack
from tests.helpers.waiting import wait_until
from workflows.issue_ticket import IssueTicketWorkflow
from workflows.revoke_ticket import RevokeTicketWorkflow

pytestmark = pytest.mark.asyncio(loop_scope="session")


@asynccontextmanager
async def holding_the_cap_lock(dsn: str) -> AsyncIterator[None]:
    """The golden advisory lock held by a connection of the test until the block ends."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", GOLDEN_KEY)
            yield
    finally:
        await conn.close()


async def ends_canceled(handle: object) -> None:
    """The workflow's result is a cancellation and its status Canceled."""
    with pytest.raises(WorkflowFailureError) as caught:
        await asyncio.wait_for(handle.result(), 60)  # type: ignore[attr-defined]
    assert isinstance(caught.value.cause, CancelledError)
    status = (await handle.describe()).status  # type: ignore[attr-defined]
    assert status == WorkflowExecutionStatus.CANCELED


async def test_cancel_during_reserve_is_honoured(stack: Stack) -> None:
    async with holding_the_cap_lock(stack.settings.pg_dsn):
        handle = await stack.start_issue(f"cancel-reserve-{uuid.uuid4().hex[:6]}")

        async def reserving() -> bool:
            return bool(
                await stack.pool.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND database = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database())"
                )
            )

        await wait_until(reserving, 30)
        await handle.cancel()
        await asyncio.sleep(1.5)  # the reserve learns of the cancel while it waits
    await ends_canceled(handle)
    held = await stack.pool.fetchval("SELECT count(*) FROM tickets WHERE state <> 'voided'")
    assert held == 0
    await assert_audit_clean(stack)


@pytest.mark.parametrize("step", ["sign", "finalise"])
async def test_cancel_before_the_ledger_compensates_and_ends_canceled(
    servers: Servers, session_dir: Path, client: Client, step: str
) -> None:
    faults = Faults(plan={step: "hang"})
    async with golden_stack(servers, session_dir, client, faults=faults) as stack:
        handle = await stack.start_issue(f"cancel-{step}")

        async def at_step() -> bool:
            return (await handle.query(IssueTicketWorkflow.progress)).current_step == step

        await wait_until(at_step, 30)
        await asyncio.sleep(0.2)  # the activity started and hangs
        await handle.cancel()
        await ends_canceled(handle)
        rows = await stack.pool.fetch("SELECT state FROM tickets")
        assert [r["state"] for r in rows] == [TicketState.VOIDED]
        kinds = await stack.pool.fetch("SELECT kind FROM ledger_entries ORDER BY leaf_index")
        assert [r["kind"] for r in kinds] == ["voided"]
        assert len(await stack.stream_messages("voided")) == 1
        await assert_audit_clean(stack)


async def test_revoke_reason_with_a_control_character_is_refused_at_once(stack: Stack) -> None:
    issued = await stack.issue("revokee")
    assert issued.ticket_id is not None
    with pytest.raises(ValidationError):
        RevokeTicketInput(ticket_id=issued.ticket_id, reason="fraud\x07")
    before = await stack.snapshot()
    # Through the operator's path (`golden-press admin revoke`): typed, prompt, nothing written.
    with pytest.raises(InvalidRequest):
        await asyncio.wait_for(revoke_ticket(stack.settings, issued.ticket_id, "fraud\x07"), 20)
    # A client that skips the model: the workflow fails at once instead of retrying forever.
    handle = await stack.client.start_workflow(
        RevokeTicketWorkflow.run,
        RevokeTicketInput.model_construct(ticket_id=issued.ticket_id, reason="fraud\x1b[2J"),
        id=f"revoke-{issued.ticket_id}",
        task_queue=stack.settings.task_queue,
    )
    with pytest.raises(WorkflowFailureError):
        await asyncio.wait_for(handle.result(), 20)
    assert await stack.snapshot() == before
    # A good reason still revokes (the failed run does not block the next one).
    result = await asyncio.wait_for(revoke_ticket(stack.settings, issued.ticket_id, "fraud"), 30)
    assert result.outcome == "revoked"
    await assert_audit_clean(stack)


async def test_a_value_error_in_a_bounded_step_compensates_at_once(
    servers: Servers, session_dir: Path, client: Client
) -> None:
    """sign raises a plain ValueError (input it can never process): the StepGuard makes it a
    non-retryable InvalidRequest, so sign runs once and the saga compensates, instead of sign
    running BOUNDED_RETRY's 6 attempts (~6 s) and compensating with reason ValueError."""
    faults = OutageFaults(plan={"sign": VALUE_ERROR})
    async with golden_stack(servers, session_dir, client, faults=faults) as stack:
        handle = await stack.start_issue("bad-input-sign")
        result = await asyncio.wait_for(handle.result(), 20)
        assert result.outcome == Outcome.COMPENSATED, result
        assert result.reason == Reason.INVALID_REQUEST.value, result
        assert value_error_message("sign") in result.message, result
        assert faults.attempts["sign"] == 1, faults.attempts
        rows = await stack.pool.fetch("SELECT state FROM tickets")
        assert [r["state"] for r in rows] == [TicketState.VOIDED]
        await assert_audit_clean(stack)


async def test_a_value_error_in_a_forward_step_fails_the_saga_at_once(
    servers: Servers, session_dir: Path, client: Client
) -> None:
    """ledger_append (past the point of no return, retried forever) raises a plain ValueError:
    the saga fails at once with InvalidRequest after one attempt instead of retrying forever."""
    faults = OutageFaults(plan={"ledger_append": VALUE_ERROR})
    async with golden_stack(servers, session_dir, client, faults=faults) as stack:
        handle = await stack.start_issue("bad-input-ledger")
        try:
            with pytest.raises(WorkflowFailureError) as caught:
                await asyncio.wait_for(handle.result(), 20)
        finally:
            faults.plan.clear()  # a saga that retries after all must not go on forever
        activity_error = caught.value.cause
        assert isinstance(activity_error, ActivityError), caught.value
        cause = activity_error.cause
        assert isinstance(cause, ApplicationError), activity_error
        assert cause.type == Reason.INVALID_REQUEST.value and cause.non_retryable, cause
        assert value_error_message("ledger_append") in str(cause), cause
        assert faults.attempts["ledger_append"] == 1, faults.attempts
        assert (await handle.describe()).status == WorkflowExecutionStatus.FAILED
        assert await stack.pool.fetchval("SELECT count(*) FROM ledger_entries") == 0
