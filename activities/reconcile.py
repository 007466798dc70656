"""Reconciler activity: void reservations whose lease expired and whose saga is closed.

A saga terminated from the UI or timed out never runs its compensation; this pass is what gives
its slot back. A saga that is still running keeps its slot, whatever its lease says.
"""

from __future__ import annotations

import asyncpg
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.issue_ticket import void_ticket
from activities.metrics import count_parked
from golden_press.models import PublishInput, ReconcileResult, VoidInput
from service.store.ledger import LedgerStore
from service.store.outbox import OutboxPublisher
from service.store.tickets import expired_reservations


class ReconcilerActivities:
    """Needs the Temporal client to ask whether a reservation's saga is still alive."""

    def __init__(
        self, pool: asyncpg.Pool, ledger: LedgerStore, client: Client, publisher: OutboxPublisher
    ) -> None:
        self._pool = pool
        self._ledger = ledger
        self._client = client
        self._publisher = publisher

    async def _saga_closed(self, workflow_id: str) -> bool:
        try:
            desc = await self._client.get_workflow_handle(workflow_id).describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return True
            raise
        return desc.status != WorkflowExecutionStatus.RUNNING

    @activity.defn(name="void_expired_reservations")
    async def void_expired_reservations(self) -> ReconcileResult:
        """One pass: rows short of the ledger, past their lease, with a closed saga, are voided."""
        rows = await expired_reservations(self._pool)
        voided = []
        for row in rows:
            activity.heartbeat(str(row["ticket_id"]))
            if not await self._saga_closed(row["workflow_id"]):
                continue
            result = await void_ticket(
                self._pool,
                self._ledger,
                VoidInput(ticket_id=row["ticket_id"], reason="reservation lease expired"),
            )
            if result.voided:
                voided.append(row["ticket_id"])
        return ReconcileResult(voided=voided)

    @activity.defn(name="publish_pending_events")
    async def publish_pending_events(self, req: PublishInput) -> int:
        """Drain the whole outbox (up_to_leaf < 0 means everything)."""
        drained = await self._publisher.drain(None if req.up_to_leaf < 0 else req.up_to_leaf)
        count_parked(drained)
        return drained.sent
