"""Ticket rows: the row mapping, reads for the API and the CLI, and the locks the sagas take."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TypeAlias
from uuid import UUID

import asyncpg

from golden_press.errors import Reason
from golden_press.models import COUNTED_STATES, CapScope, Ticket, TicketState
from service.store.db import SLOTS_CHANNEL, SlotNotice
from service.store.statements import Write

#: Both a pool and a connection answer fetch/fetchrow; reads need no transaction.
Executor: TypeAlias = asyncpg.Pool | asyncpg.Connection

MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50

_TICKET_COLUMNS = (
    "ticket_id, serial, user_id, issued_at, key_id, signature, state, request_id, issued_leaf"
)


def row_to_ticket(row: asyncpg.Record) -> Ticket:
    """The public view of a stored ticket row (timestamps in UTC)."""
    issued_at: datetime = row["issued_at"]
    return Ticket(
        ticket_id=row["ticket_id"],
        serial=row["serial"],
        user_id=row["user_id"],
        issued_at=issued_at.astimezone(UTC),
        key_id=row["key_id"],
        signature=row["signature"],
        state=TicketState(row["state"]),
        request_id=row["request_id"],
        leaf_index=row["issued_leaf"],
    )


async def get_ticket(db: Executor, ticket_id: UUID) -> Ticket | None:
    """One ticket by id, or None."""
    row = await db.fetchrow(
        f"SELECT {_TICKET_COLUMNS} FROM tickets WHERE ticket_id = $1", ticket_id
    )
    return row_to_ticket(row) if row is not None else None


async def list_tickets(
    db: Executor,
    *,
    state: TicketState | None = None,
    user_id: str | None = None,
    after_serial: int = 0,
    limit: int = DEFAULT_PAGE_SIZE,
) -> list[Ticket]:
    """Tickets with serial > after_serial, oldest first (keyset pages stay stable on inserts)."""
    limit = max(1, min(limit, MAX_PAGE_SIZE))
    rows = await db.fetch(
        f"SELECT {_TICKET_COLUMNS} FROM tickets"
        " WHERE serial > $1 AND ($2::text IS NULL OR"
        # As callers see it (models.as_shown): issued only once its ledger entry exists.
        "  CASE WHEN state = 'issued' AND issued_leaf IS NULL THEN 'reserved' ELSE state END = $2)"
        " AND ($3::text IS NULL OR user_id = $3)"
        " ORDER BY serial LIMIT $4",
        after_serial,
        state.value if state is not None else None,
        user_id,
        limit,
    )
    return [row_to_ticket(r) for r in rows]


async def ticket_with_salt(db: Executor, ticket_id: UUID) -> tuple[Ticket, bytes] | None:
    """A ticket and the salt of its user commitment (needed to build a proof bundle)."""
    row = await db.fetchrow(
        f"SELECT {_TICKET_COLUMNS}, user_salt FROM tickets WHERE ticket_id = $1", ticket_id
    )
    if row is None:
        return None
    return row_to_ticket(row), bytes(row["user_salt"])


__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "Executor",
    "all_tickets",
    "count_counted",
    "expired_reservations",
    "finalise",
    "get_ticket",
    "insert_reservation",
    "issued_leaf",
    "list_tickets",
    "lock_ticket",
    "mark_redeemed",
    "mark_revoked",
    "mark_voided",
    "notify_slots",
    "redeemed_leaf",
    "reserve_state",
    "row_to_ticket",
    "slots_notice",
    "ticket_row",
    "ticket_with_salt",
]


async def lock_ticket(conn: asyncpg.Connection, ticket_id: UUID) -> asyncpg.Record | None:
    """The ticket row, locked for the rest of the caller's transaction."""
    return await conn.fetchrow("SELECT * FROM tickets WHERE ticket_id = $1 FOR UPDATE", ticket_id)


async def notify_slots(conn: asyncpg.Connection, why: SlotNotice) -> None:
    """Tell API processes their snapshot changed (delivered at commit; see SLOTS_CHANNEL)."""
    notice = slots_notice(why)
    await conn.execute(notice.sql, *notice.args)


async def count_counted(db: Executor, scope: CapScope) -> int:
    """Tickets that count against the cap under `scope` (the interface sheet's scope table).

    Decides the cap only when called inside the transaction that holds the cap's advisory lock.
    """
    used = await db.fetchval(
        "SELECT count(*) FROM tickets WHERE state = ANY($1::text[])",
        [s.value for s in COUNTED_STATES[scope]],
    )
    return int(used)


# ---- the reserve rules (inside cap_transaction: these decide) --------------------------------


async def reserve_state(
    conn: asyncpg.Connection,
    *,
    request_id: str,
    ticket_id: UUID,
    user_id: str,
    rate_window: timedelta,
    rate_attempts: int,
) -> tuple[asyncpg.Record | None, tuple[Reason, str] | None]:
    """What reserve decides on, read under the cap lock in ONE statement (one round trip while
    the cap's lock is held, which every winner of a herd waits for in turn): the row this
    request (or its deterministic ticket id) already wrote, if any, and the anti-gaming rules
    and the cap (None: a slot is free). It runs after the lock was taken, so it sees every
    committed reserve.
    """
    # The request's row comes as plain columns (all NULL when there is none): a row-typed
    # column would make asyncpg look its type up on each new connection, under the lock.
    row = await conn.fetchrow(
        "SELECT e.*,"
        " EXISTS (SELECT 1 FROM deny_list WHERE user_id = $1) AS denied,"
        " (SELECT attempts FROM rate_limit WHERE user_id = $1"
        "   AND window_start > now() - $2::interval) AS attempts,"
        " EXISTS (SELECT 1 FROM tickets WHERE user_id = $1 AND state <> 'voided') AS holds,"
        " c.cap, c.scope,"
        " (SELECT count(*) FROM tickets WHERE state = ANY("
        "   CASE WHEN c.scope = 'lifetime' THEN $4::text[] ELSE $3::text[] END)) AS counted"
        " FROM golden_config AS c LEFT JOIN LATERAL (SELECT * FROM tickets AS t"
        "   WHERE t.request_id = $5 OR t.ticket_id = $6 LIMIT 1) AS e ON true",
        user_id,
        rate_window,
        [st.value for st in COUNTED_STATES[CapScope.LIVE]],
        [st.value for st in COUNTED_STATES[CapScope.LIFETIME]],
        request_id,
        ticket_id,
    )
    assert row is not None
    existing = row if row["ticket_id"] is not None else None
    return existing, _refusal(row, user_id, rate_attempts)


def _refusal(row: asyncpg.Record, user_id: str, rate_attempts: int) -> tuple[Reason, str] | None:
    """The first rule a reserve breaks, in the order the rules apply; None: a slot is free."""
    if row["denied"]:
        return Reason.USER_DENIED, f"user {user_id} is on the deny-list"
    if row["attempts"] is not None and row["attempts"] > rate_attempts:
        return Reason.RATE_LIMITED, f"user {user_id} is over the attempt limit"
    if row["holds"]:
        return Reason.ONE_PER_USER, f"user {user_id} already holds a ticket"
    if row["counted"] >= row["cap"]:
        return (
            Reason.CAP_REACHED,
            f"all {row['cap']} golden tickets are taken ({row['scope']} scope)",
        )
    return None


async def insert_reservation(
    conn: asyncpg.Connection,
    *,
    ticket_id: UUID,
    user_id: str,
    request_id: str,
    request_hash: str,
    workflow_id: str,
    lease: timedelta,
    user_salt: bytes,
) -> asyncpg.Record:
    """Insert the `reserved` row with the next serial (never reused: gaps after voids).

    The same statement NOTIFYs SLOTS_CHANNEL (API snapshots: a slot was taken): one round trip
    less while the caller holds the cap's lock.
    """
    row = await conn.fetchrow(
        "WITH ins AS (INSERT INTO tickets (ticket_id, serial, user_id, request_id, request_hash,"
        " workflow_id, state, issued_at, reserved_until, user_salt)"
        " VALUES ($1, nextval('ticket_serial_seq'), $2, $3, $4, $5, 'reserved',"
        " clock_timestamp(), clock_timestamp() + $6::interval, $7) RETURNING *),"
        " n AS (SELECT pg_notify($8, $9))"
        " SELECT ins.* FROM ins, n",
        ticket_id,
        user_id,
        request_id,
        request_hash,
        workflow_id,
        lease,
        user_salt,
        SLOTS_CHANNEL,
        SlotNotice.RESERVED.value,
    )
    assert row is not None
    return row


# ---- state changes of one ticket (each in the caller's transaction) --------------------------


async def ticket_row(conn: asyncpg.Connection, ticket_id: UUID) -> asyncpg.Record | None:
    """The whole stored row of a ticket (salt and saga columns included), unlocked."""
    return await conn.fetchrow("SELECT * FROM tickets WHERE ticket_id = $1", ticket_id)


async def finalise(
    conn: asyncpg.Connection, ticket_id: UUID, signature: str, key_id: str
) -> asyncpg.Record | None:
    """Lock the row and move `reserved` -> `issued` with its signature, in one call
    (migrations/042); the row as it now is (any other state unchanged), None if there is none."""
    return await conn.fetchrow(
        "SELECT * FROM finalise_ticket($1, $2, $3)", ticket_id, signature, key_id
    )


def issued_leaf(ticket_id: UUID, leaf_index: int) -> Write:
    """Record the `issued` entry's leaf: from here on the ticket is past the point of no return
    (a write for the ledger append's one statement, service.store.ledger.record_entry)."""
    return Write(
        "UPDATE tickets SET issued_leaf = $2::bigint, reserved_until = NULL, updated_at = now()"
        " WHERE ticket_id = $1::uuid",
        (ticket_id, leaf_index),
    )


def slots_notice(why: SlotNotice) -> Write:
    """NOTIFY SLOTS_CHANNEL as the last part of a step's statement (delivered at commit): from
    then on API processes replay an issued ticket to its request id, VerifyTicket calls it
    valid, a freed slot is admitted again."""
    return Write("SELECT pg_notify($1::text, $2::text)", (SLOTS_CHANNEL, why.value))


async def mark_voided(conn: asyncpg.Connection, ticket_id: UUID, reason: str) -> asyncpg.Record:
    """Release the slot: `voided`, with its reason."""
    row = await conn.fetchrow(
        "UPDATE tickets SET state = 'voided', voided_at = clock_timestamp(), void_reason = $2,"
        " reserved_until = NULL, updated_at = now() WHERE ticket_id = $1 RETURNING *",
        ticket_id,
        reason,
    )
    assert row is not None
    return row


async def mark_redeemed(
    conn: asyncpg.Connection, ticket_id: UUID, workflow_id: str
) -> asyncpg.Record:
    """`issued` -> `redeemed`, remembering which saga run did it (its lost result is its own)."""
    row = await conn.fetchrow(
        "UPDATE tickets SET state = 'redeemed', redeemed_at = clock_timestamp(),"
        " redeemed_by_workflow = $2, updated_at = now() WHERE ticket_id = $1 RETURNING *",
        ticket_id,
        workflow_id,
    )
    assert row is not None
    return row


def redeemed_leaf(ticket_id: UUID, leaf_index: int) -> Write:
    """Record the `redeemed` entry's leaf (a write for the ledger append's one statement)."""
    return Write(
        "UPDATE tickets SET redeemed_leaf = $2::bigint WHERE ticket_id = $1::uuid",
        (ticket_id, leaf_index),
    )


async def mark_revoked(conn: asyncpg.Connection, ticket_id: UUID, reason: str) -> asyncpg.Record:
    """`issued` -> `revoked` (fraud), with its reason."""
    row = await conn.fetchrow(
        "UPDATE tickets SET state = 'revoked', revoked_at = clock_timestamp(), revoke_reason = $2,"
        " updated_at = now() WHERE ticket_id = $1 RETURNING *",
        ticket_id,
        reason,
    )
    assert row is not None
    return row


async def all_tickets(db: Executor) -> list[asyncpg.Record]:
    """Every ticket row, every column, by serial (the audit reconciles them with the ledger)."""
    return list(await db.fetch("SELECT * FROM tickets ORDER BY serial"))


async def expired_reservations(db: Executor) -> list[asyncpg.Record]:
    """Rows short of the ledger whose lease ran out, by serial: the reconciler's candidates and
    the audit's stale reservations (ticket_id, workflow_id, serial, state, reserved_until)."""
    return list(
        await db.fetch(
            "SELECT ticket_id, workflow_id, serial, state, reserved_until FROM tickets"
            " WHERE state IN ('reserved', 'issued') AND issued_leaf IS NULL"
            " AND reserved_until < now() ORDER BY serial"
        )
    )
