"""Issuance saga activities: reserve under the advisory lock, sign, finalise, ledger, void.

Every activity is idempotent: the deterministic ticket id is the key, so a retry after a lost
result finds the row it already wrote instead of writing another.
"""

from __future__ import annotations

import os
from datetime import timedelta
from functools import partial
from uuid import UUID

import asyncpg
from nacl.signing import SigningKey
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.faults import NO_FAULTS, Faults
from activities.metrics import count
from golden_press.errors import Reason
from golden_press.ledger_entry import EntryKind
from golden_press.models import (
    FinaliseInput,
    LedgerAppendResult,
    ReserveInput,
    ReserveResult,
    SignResult,
    Ticket,
    TicketRef,
    TicketState,
    VoidInput,
    VoidResult,
)
from golden_press.settings import Settings
from golden_press.signing import canonical_payload, key_id_for, sign_payload
from service.store import tickets
from service.store.db import SlotNotice, cap_transaction, read_committed
from service.store.ledger import LedgerStore, record_entry
from service.store.outbox import events_pb2, timestamp


def _reject(reason: Reason, message: str) -> ReserveResult:
    count("issuance_rejected_total", reason=reason.value)
    activity.logger.info("reserve rejected: %s", reason.value)
    return ReserveResult(reason=reason.value, message=message)


class IssuanceActivities:
    """Database, key and ledger work of IssueTicketWorkflow; dependencies come from the worker."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        issuer_key: SigningKey,
        ledger: LedgerStore,
        settings: Settings,
        faults: Faults = NO_FAULTS,
    ) -> None:
        self._pool = pool
        self._issuer_key = issuer_key
        self._key_id = key_id_for(bytes(issuer_key.verify_key))
        self._ledger = ledger
        self._settings = settings
        self._faults = faults

    @activity.defn(name="reserve_slot")
    async def reserve_slot(self, req: ReserveInput) -> ReserveResult:
        """ONE transaction under the advisory lock: lock -> rules -> count -> insert `reserved`.

        Four round trips: BEGIN with the lock, the request's row with the rules and the count,
        the insert, COMMIT.
        """
        await self._faults.before("reserve")
        async with cap_transaction(self._pool) as conn:
            existing, refusal = await tickets.reserve_state(
                conn,
                request_id=req.request_id,
                ticket_id=req.ticket_id,
                user_id=req.user_id,
                rate_window=timedelta(seconds=self._settings.rate_limit_window_s),
                rate_attempts=self._settings.rate_limit_attempts,
            )
            if existing is not None:
                # A retried or duplicated reserve returns its own row and never counts itself.
                if existing["request_hash"] != req.request_hash:
                    return _reject(
                        Reason.IDEMPOTENCY_KEY_REUSED,
                        f"request_id {req.request_id} was used for another request",
                    )
                return ReserveResult(ticket=tickets.row_to_ticket(existing))
            if refusal is not None:
                return _reject(*refusal)
            row = await tickets.insert_reservation(  # NOTIFYs the API processes' snapshots
                conn,
                ticket_id=req.ticket_id,
                user_id=req.user_id,
                request_id=req.request_id,
                request_hash=req.request_hash,
                workflow_id=req.workflow_id,
                lease=timedelta(seconds=self._settings.reservation_lease_s),
                user_salt=os.urandom(16),
            )
        self._faults.after_commit("reserve")
        return ReserveResult(ticket=tickets.row_to_ticket(row))

    async def _load(self, conn: asyncpg.Connection, ticket_id: UUID) -> asyncpg.Record:
        row = await tickets.ticket_row(conn, ticket_id)
        if row is None:
            raise ApplicationError(
                f"ticket {ticket_id} not found", type=Reason.TICKET_NOT_FOUND, non_retryable=True
            )
        return row

    @activity.defn(name="sign_ticket")
    async def sign_ticket(self, ref: TicketRef) -> SignResult:
        """Ed25519 over the canonical payload of the STORED row; retries sign the same bytes."""
        await self._faults.before("sign")
        async with self._pool.acquire() as conn:
            row = await self._load(conn, ref.ticket_id)
        if row["state"] == TicketState.VOIDED:
            raise ApplicationError(
                f"ticket {ref.ticket_id} was voided", type="TicketVoided", non_retryable=True
            )
        if row["signature"]:
            return SignResult(signature=row["signature"], key_id=row["key_id"])
        payload = canonical_payload(
            row["ticket_id"], row["serial"], row["user_id"], row["issued_at"], self._key_id
        )
        result = SignResult(signature=sign_payload(self._issuer_key, payload), key_id=self._key_id)
        self._faults.after_commit("sign")
        return result

    @activity.defn(name="finalise_ticket")
    async def finalise_ticket(self, req: FinaliseInput) -> Ticket:
        """Store the signature and move `reserved` -> `issued` (a no-op when already done)."""
        await self._faults.before("finalise")
        async with self._pool.acquire() as conn, read_committed(conn):
            row = await tickets.finalise(conn, req.ticket_id, req.signature, req.key_id)
            if row is None:
                raise ApplicationError(
                    f"ticket {req.ticket_id} not found",
                    type=Reason.TICKET_NOT_FOUND,
                    non_retryable=True,
                )
            if row["state"] == TicketState.VOIDED:
                raise ApplicationError(
                    f"ticket {req.ticket_id} was voided", type="TicketVoided", non_retryable=True
                )
        self._faults.after_commit("finalise")
        return tickets.row_to_ticket(row)

    @activity.defn(name="append_issued_to_ledger")
    async def append_issued_to_ledger(self, ref: TicketRef) -> LedgerAppendResult:
        """The point of no return: the `issued` entry and its event, in one transaction.

        Four round trips, since a herd's winners queue for the cap's lock: BEGIN, the locks
        with the ticket row and the ledger's head (one call), one statement of writes, COMMIT.
        """
        await self._faults.before("ledger_append")
        # The cap lock (taken first by lock_ticket_for_ledger) orders this against a concurrent
        # void of the same ticket.
        async with self._pool.acquire() as conn, read_committed(conn):
            row, head = await self._ledger.lock_ticket_for_ledger(
                conn, ref.ticket_id, EntryKind.ISSUED
            )
            if row is None or row["state"] == TicketState.VOIDED:
                raise ApplicationError(
                    f"ticket {ref.ticket_id} is not issuable",
                    type="TicketVoided",
                    non_retryable=True,
                )
            if row["state"] == TicketState.RESERVED:
                raise ApplicationError(f"ticket {ref.ticket_id} is not finalised yet")
            first = row["issued_leaf"] is None
            appended = await record_entry(
                conn,
                self._ledger,
                EntryKind.ISSUED,
                row,
                events_pb2.GoldenTicketIssued(
                    user_id=row["user_id"],
                    issued_at=timestamp(row["issued_at"]),
                    key_id=row["key_id"],
                    signature=row["signature"],
                ),
                at=row["issued_at"],
                head=head,
                leaf_write=partial(tickets.issued_leaf, ref.ticket_id) if first else None,
                notify=tickets.slots_notice(SlotNotice.ISSUED) if first else None,
            )
        if appended.created:
            count("tickets_issued_total")
            activity.logger.info("ticket %s issued at leaf %s", ref.ticket_id, appended.leaf_index)
        self._faults.after_commit("ledger_append")
        return LedgerAppendResult(
            leaf_index=appended.leaf_index,
            tree_size=appended.tree_size,
            ticket=tickets.row_to_ticket(row).model_copy(
                update={"leaf_index": appended.leaf_index}
            ),
        )

    @activity.defn(name="void_reservation")
    async def void_reservation(self, req: VoidInput) -> VoidResult:
        """Compensation: release the slot and record the void, unless the ledger holds it."""
        result = await void_ticket(self._pool, self._ledger, req)
        count("tickets_voided_total", why="compensation")
        activity.logger.info("ticket %s compensated: %s", req.ticket_id, req.reason)
        return result


async def void_ticket(pool: asyncpg.Pool, ledger: LedgerStore, req: VoidInput) -> VoidResult:
    """Void a ticket that never reached the ledger; shared by the saga and the reconciler."""
    async with cap_transaction(pool) as conn:
        row = await tickets.lock_ticket(conn, req.ticket_id)
        if row is None:
            # The reserve never committed: nothing holds a slot.
            return VoidResult(voided=False, state=TicketState.VOIDED)
        state = TicketState(row["state"])
        if state == TicketState.VOIDED:
            leaf = await ledger.find_leaf(conn, req.ticket_id, EntryKind.VOIDED)
            return VoidResult(voided=True, state=state, leaf_index=leaf)
        if (
            state not in (TicketState.RESERVED, TicketState.ISSUED)
            or row["issued_leaf"] is not None
        ):
            # Past the point of no return: the saga only retries forward from here.
            return VoidResult(voided=False, state=state)
        voided = await tickets.mark_voided(conn, req.ticket_id, req.reason)
        appended = await record_entry(
            conn,
            ledger,
            EntryKind.VOIDED,
            voided,
            events_pb2.GoldenTicketVoided(
                reason=req.reason,
                voided_at=timestamp(voided["voided_at"]),
            ),
            at=voided["voided_at"],
            reason=req.reason,
            notify=tickets.slots_notice(SlotNotice.VOIDED),
        )
    return VoidResult(voided=True, state=TicketState.VOIDED, leaf_index=appended.leaf_index)
