"""Issuance under failure: compensation, lost results, terminations and cancellation.

SIGKILLed workers and multi-process races are in tests/system/test_reliability.py (R1, R2).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle

from activities.faults import Faults
from golden_press.errors import Reason
from golden_press.models import Outcome, TicketState
from tests.helpers.ledger import ledger_kinds, ticket_rows
from tests.helpers.servers import Servers, temporal_binary
from tests.helpers.stack import Stack, golden_stack
from tests.helpers.waiting import terminate_from_cli, wait_until

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_signing_failure_compensates(
    servers: Servers, session_dir: Path, client: Client
) -> None:
    faults = Faults(plan={"sign": "fail"})
    async with golden_stack(servers, session_dir, client, faults=faults) as stack:
        result = await stack.issue("unlucky")
        assert result.outcome == Outcome.COMPENSATED
        assert result.reason == "InjectedFault"
        rows = await ticket_rows(stack)
        assert [r["state"] for r in rows] == [TicketState.VOIDED]
        assert await ledger_kinds(stack) == ["voided"]
        assert await stack.stream_messages("issued") == []
        assert len(await stack.stream_messages("voided")) == 1
        # The slot is free again: five more can still be minted once signing works.
        faults.plan.clear()
        results = [await stack.issue(f"next-{i}") for i in range(5)]
        assert {r.outcome for r in results} == {Outcome.ISSUED}
        assert (await stack.issue("sixth")).reason == Reason.CAP_REACHED
        serials = [r["serial"] for r in await ticket_rows(stack)]
        assert serials == [1, 2, 3, 4, 5, 6]  # the voided serial is never reused


async def test_reserve_lost_result_still_one_ticket(
    servers: Servers, session_dir: Path, client: Client
) -> None:
    faults = Faults(plan={"reserve": "fail_once", "finalise": "fail_once"})
    async with golden_stack(servers, session_dir, client, faults=faults) as stack:
        result = await stack.issue("retry-me")
        assert result.outcome == Outcome.ISSUED
        rows = await ticket_rows(stack)
        assert len(rows) == 1 and rows[0]["state"] == TicketState.ISSUED
        assert await ledger_kinds(stack) == ["issued"]
        assert len(await stack.stream_messages()) == 1


async def start_parked_at_sign(stack: Stack, user_id: str) -> WorkflowHandle[Any, Any]:
    """Start an issuance and return once its reservation is committed (sign hangs by fault)."""
    handle = await stack.start_issue(user_id)

    async def reserved() -> bool:
        return bool(await stack.pool.fetchval("SELECT count(*) FROM tickets"))

    await wait_until(reserved)
    return handle


async def test_terminated_saga_is_reclaimed_by_reconciler(
    servers: Servers, session_dir: Path, client: Client
) -> None:
    faults = Faults(plan={"sign": "hang"})
    async with golden_stack(
        servers, session_dir, client, faults=faults, reservation_lease_s=0.5
    ) as stack:
        handle = await start_parked_at_sign(stack, "parked")
        terminate_from_cli(stack.settings.temporal_address, handle.id, temporal_binary())
        await asyncio.sleep(0.6)  # let the lease expire
        result = await stack.reconcile()
        assert len(result.voided) == 1
        assert [r["state"] for r in await ticket_rows(stack)] == [TicketState.VOIDED]
        assert await ledger_kinds(stack) == ["voided"]
        assert len(await stack.stream_messages("voided")) == 1
        # A second pass finds nothing: the reconciler is idempotent.
        again = await stack.reconcile()
        assert again.voided == []


async def test_running_saga_keeps_its_slot(
    servers: Servers, session_dir: Path, client: Client
) -> None:
    faults = Faults(plan={"sign": "hang"})
    async with golden_stack(
        servers, session_dir, client, faults=faults, reservation_lease_s=0.2
    ) as stack:
        handle = await start_parked_at_sign(stack, "slow")
        await asyncio.sleep(0.3)
        result = await stack.reconcile()
        assert result.voided == []
        await handle.cancel()

        # Cancellation compensates in the workflow itself.
        async def voided() -> bool:
            return await stack.pool.fetchval("SELECT state FROM tickets") == TicketState.VOIDED

        await wait_until(voided)
        assert await ledger_kinds(stack) == ["voided"]
