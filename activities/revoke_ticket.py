"""Revocation activity: an issued ticket becomes `revoked`, with its ledger entry and event."""

from __future__ import annotations

import asyncpg
from temporalio import activity

from golden_press.errors import Reason
from golden_press.ledger_entry import EntryKind
from golden_press.models import RevokeTicketInput, RevokeTicketResult, TicketState
from service.store import tickets
from service.store.db import SlotNotice, cap_transaction
from service.store.ledger import LedgerStore, record_entry
from service.store.outbox import events_pb2, timestamp


class RevocationActivities:
    """The revoke transaction; run by RevokeTicketWorkflow so its event is published as usual."""

    def __init__(self, pool: asyncpg.Pool, ledger: LedgerStore) -> None:
        self._pool = pool
        self._ledger = ledger

    @activity.defn(name="revoke_ticket")
    async def revoke_ticket(self, req: RevokeTicketInput) -> RevokeTicketResult:
        """ONE transaction under the advisory lock: state, `revoked` ledger entry, outbox event."""
        async with cap_transaction(self._pool) as conn:
            row = await tickets.lock_ticket(conn, req.ticket_id)
            if row is None:
                return RevokeTicketResult(
                    outcome="rejected",
                    ticket_id=req.ticket_id,
                    reason=Reason.TICKET_NOT_FOUND,
                    message="no such ticket",
                )
            if row["state"] == TicketState.REVOKED:
                leaf = await self._ledger.find_leaf(conn, req.ticket_id, EntryKind.REVOKED)
                return RevokeTicketResult(
                    outcome="revoked", ticket_id=req.ticket_id, leaf_index=leaf
                )
            if row["state"] != TicketState.ISSUED or row["issued_leaf"] is None:
                return RevokeTicketResult(
                    outcome="rejected",
                    ticket_id=req.ticket_id,
                    reason=Reason.TICKET_NOT_REDEEMABLE,
                    message=f"only issued tickets can be revoked; this one is {row['state']}",
                )
            revoked = await tickets.mark_revoked(conn, req.ticket_id, req.reason)
            appended = await record_entry(
                conn,
                self._ledger,
                EntryKind.REVOKED,
                revoked,
                events_pb2.GoldenTicketRevoked(
                    reason=req.reason,
                    revoked_at=timestamp(revoked["revoked_at"]),
                ),
                at=revoked["revoked_at"],
                reason=req.reason,
                notify=tickets.slots_notice(SlotNotice.REVOKED),
            )
        return RevokeTicketResult(
            outcome="revoked", ticket_id=req.ticket_id, leaf_index=appended.leaf_index
        )
