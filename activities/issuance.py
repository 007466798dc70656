"""Issuance saga activities: reserve under the advisory lock, sign, finalise, ledger, void.

Every activity is idempotent: the deterministic ticket id is the key, so a retry after a lost
result finds the row it already wrote instead of writing another.
"""

from __future__ import annotations

import os
from datetime import timedelta

import asyncpg
from nacl.signing import SigningKey
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.faults import NO_FAULTS, Faults
from activities.tickets import count, lock_ticket, notify_slots, record_entry, row_to_ticket
from golden_press.errors import Reason
from golden_press.ledger_entry import EntryKind
from golden_press.models import (
    COUNTED_STATES,
    CapScope,
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
from service.db import GOLDEN_KEY
from service.events import events_pb2, timestamp
from service.ledger_store import LedgerStore


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
        """ONE transaction under the advisory lock: lock -> rules -> count -> insert `reserved`."""
        await self._faults.before("reserve")
        async with self._pool.acquire() as conn:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", GOLDEN_KEY)
                existing = await conn.fetchrow(
                    "SELECT * FROM tickets WHERE request_id = $1 OR ticket_id = $2",
                    req.request_id,
                    req.ticket_id,
                )
                if existing is not None:
                    # A retried or duplicated reserve returns its own row and never counts itself.
                    if existing["request_hash"] != req.request_hash:
                        return _reject(
                            Reason.IDEMPOTENCY_KEY_REUSED,
                            f"request_id {req.request_id} was used for another request",
                        )
                    return ReserveResult(ticket=row_to_ticket(existing))
                result = await self._check_rules(conn, req)
                if result is not None:
                    return result
                row = await conn.fetchrow(
                    "INSERT INTO tickets (ticket_id, serial, user_id, request_id, request_hash,"
                    " workflow_id, state, issued_at, reserved_until, user_salt)"
                    " VALUES ($1, nextval('ticket_serial_seq'), $2, $3, $4, $5, 'reserved',"
                    " now(), now() + $6::interval, $7) RETURNING *",
                    req.ticket_id,
                    req.user_id,
                    req.request_id,
                    req.request_hash,
                    req.workflow_id,
                    timedelta(seconds=self._settings.reservation_lease_s),
                    os.urandom(16),
                )
        self._faults.after_commit("reserve")
        assert row is not None
        return ReserveResult(ticket=row_to_ticket(row))

    async def _check_rules(
        self, conn: asyncpg.Connection, req: ReserveInput
    ) -> ReserveResult | None:
        """Anti-gaming rules and the cap, read under the lock; None means a slot is free."""
        if await conn.fetchval("SELECT 1 FROM deny_list WHERE user_id = $1", req.user_id):
            return _reject(Reason.USER_DENIED, f"user {req.user_id} is on the deny-list")
        attempts = await conn.fetchval(
            "SELECT attempts FROM rate_limit WHERE user_id = $1"
            " AND window_start > now() - $2::interval",
            req.user_id,
            timedelta(seconds=self._settings.rate_limit_window_s),
        )
        if attempts is not None and attempts > self._settings.rate_limit_attempts:
            return _reject(Reason.RATE_LIMITED, f"user {req.user_id} is over the attempt limit")
        if await conn.fetchval(
            "SELECT 1 FROM tickets WHERE user_id = $1 AND state <> 'voided'", req.user_id
        ):
            return _reject(Reason.ONE_PER_USER, f"user {req.user_id} already holds a ticket")
        config = await conn.fetchrow("SELECT cap, scope FROM golden_config")
        assert config is not None
        counted = await conn.fetchval(
            "SELECT count(*) FROM tickets WHERE state = ANY($1::text[])",
            list(COUNTED_STATES[CapScope(config["scope"])]),
        )
        if counted >= config["cap"]:
            return _reject(
                Reason.CAP_REACHED,
                f"all {config['cap']} golden tickets are taken ({config['scope']} scope)",
            )
        return None

    async def _load(self, conn: asyncpg.Connection, ticket_id: object) -> asyncpg.Record:
        row = await conn.fetchrow("SELECT * FROM tickets WHERE ticket_id = $1", ticket_id)
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
        async with self._pool.acquire() as conn, conn.transaction():
            row = await lock_ticket(conn, req.ticket_id)
            if row is None:
                raise ApplicationError(
                    f"ticket {req.ticket_id} not found",
                    type=Reason.TICKET_NOT_FOUND,
                    non_retryable=True,
                )
            if row["state"] == TicketState.RESERVED:
                row = await conn.fetchrow(
                    "UPDATE tickets SET state = 'issued', signature = $2, key_id = $3,"
                    " updated_at = now() WHERE ticket_id = $1 RETURNING *",
                    req.ticket_id,
                    req.signature,
                    req.key_id,
                )
            elif row["state"] == TicketState.VOIDED:
                raise ApplicationError(
                    f"ticket {req.ticket_id} was voided", type="TicketVoided", non_retryable=True
                )
        self._faults.after_commit("finalise")
        assert row is not None
        return row_to_ticket(row)

    @activity.defn(name="append_issued_to_ledger")
    async def append_issued_to_ledger(self, ref: TicketRef) -> LedgerAppendResult:
        """The point of no return: the `issued` entry and its event, in one transaction."""
        async with self._pool.acquire() as conn, conn.transaction():
            # The golden lock orders this against a concurrent void of the same ticket.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", GOLDEN_KEY)
            row = await lock_ticket(conn, ref.ticket_id)
            if row is None or row["state"] == TicketState.VOIDED:
                raise ApplicationError(
                    f"ticket {ref.ticket_id} is not issuable",
                    type="TicketVoided",
                    non_retryable=True,
                )
            if row["state"] == TicketState.RESERVED:
                raise ApplicationError(f"ticket {ref.ticket_id} is not finalised yet")
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
            )
            if row["issued_leaf"] is None:
                await conn.execute(
                    "UPDATE tickets SET issued_leaf = $2, reserved_until = NULL, updated_at = now()"
                    " WHERE ticket_id = $1",
                    ref.ticket_id,
                    appended.leaf_index,
                )
        if appended.created:
            count("tickets_issued_total")
            activity.logger.info("ticket %s issued at leaf %s", ref.ticket_id, appended.leaf_index)
        self._faults.after_commit("ledger_append")
        return LedgerAppendResult(
            leaf_index=appended.leaf_index,
            tree_size=appended.tree_size,
            ticket=row_to_ticket(row).model_copy(update={"leaf_index": appended.leaf_index}),
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
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", GOLDEN_KEY)
        row = await lock_ticket(conn, req.ticket_id)
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
        voided = await conn.fetchrow(
            "UPDATE tickets SET state = 'voided', voided_at = now(), void_reason = $2,"
            " reserved_until = NULL, updated_at = now() WHERE ticket_id = $1 RETURNING *",
            req.ticket_id,
            req.reason,
        )
        assert voided is not None
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
        )
        await notify_slots(conn, "voided")
    return VoidResult(voided=True, state=TicketState.VOIDED, leaf_index=appended.leaf_index)
