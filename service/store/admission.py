"""Admission's SQL: the per-process snapshot read and the one round trip of a request that can win.

Both are reads of small tables (tickets are cap-sized; the deny-list is short) plus, for a request
that can still win, its rate-limit counter. Nothing here decides the cap: only the reserve
activity does, under the advisory lock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC

import asyncpg

from golden_press.models import CapScope, Ticket, TicketState
from golden_press.snapshot import Snapshot, StoredTicket

_SNAPSHOT_TICKETS_SQL = """
SELECT ticket_id, serial, user_id, issued_at, key_id, signature, state, request_id,
       request_hash, issued_leaf, void_reason
FROM tickets
"""

_SNAPSHOT_CONFIG_SQL = """
SELECT c.cap, c.scope, ARRAY(SELECT user_id FROM deny_list) AS denied FROM golden_config AS c
"""

# One round trip: the request id's row; its rate-limit attempt, counted only for a request id
# this user has not sent in the window (a retry of the same request is not a new attempt,
# issue 13.3); the deny-list; one per user. `seen` is read before this statement's own write.
_ADMIT_SQL = """
WITH existing AS (
    SELECT ticket_id, serial, user_id, issued_at, key_id, signature, state, request_id,
           request_hash, issued_leaf, void_reason
    FROM tickets WHERE request_id = $1
), attempt AS (
    INSERT INTO rate_limit AS r (user_id, window_start, attempts, recent_requests)
    SELECT $2, now(), 1, ARRAY[$1] WHERE NOT EXISTS (SELECT 1 FROM existing)
    ON CONFLICT (user_id) DO UPDATE SET
        window_start = CASE WHEN r.window_start <= now() - make_interval(secs => $3)
                            THEN now() ELSE r.window_start END,
        attempts = CASE WHEN r.window_start <= now() - make_interval(secs => $3) THEN 1
                        WHEN $1 = ANY(r.recent_requests) THEN r.attempts
                        ELSE r.attempts + 1 END,
        recent_requests = CASE
            WHEN r.window_start <= now() - make_interval(secs => $3) THEN ARRAY[$1]
            WHEN $1 = ANY(r.recent_requests) THEN r.recent_requests
            ELSE (r.recent_requests || $1)[greatest(1, cardinality(r.recent_requests) + 2 - $4):]
        END
    RETURNING attempts
)
SELECT e.*,
       EXISTS (SELECT 1 FROM deny_list WHERE user_id = $2) AS denied,
       (SELECT attempts FROM attempt) AS attempts,
       EXISTS (SELECT 1 FROM rate_limit
               WHERE user_id = $2 AND $1 = ANY(recent_requests)
                 AND window_start > now() - make_interval(secs => $3)) AS seen,
       EXISTS (SELECT 1 FROM tickets WHERE user_id = $2 AND state <> 'voided') AS holds_ticket
FROM (SELECT 1) AS one LEFT JOIN existing AS e ON true
"""


def stored_from_row(row: asyncpg.Record) -> StoredTicket:
    """A ticket row (with request hash and void reason) as the snapshot keeps it."""
    return StoredTicket(
        Ticket(
            ticket_id=row["ticket_id"],
            serial=row["serial"],
            user_id=row["user_id"],
            issued_at=row["issued_at"].astimezone(UTC),
            key_id=row["key_id"],
            signature=row["signature"],
            state=TicketState(row["state"]),
            request_id=row["request_id"],
            leaf_index=row["issued_leaf"],
        ),
        row["request_hash"],
        row["void_reason"],
    )


async def read_snapshot(pool: asyncpg.Pool) -> Snapshot:
    """Cap, scope, deny-list and every ticket row, read in one REPEATABLE READ transaction.

    The counts are derived from the rows read in the same statement, so a snapshot that says
    "sold out" holds every counted ticket (winners included) as of that statement.
    """
    read_at = time.monotonic()
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        # One snapshot for both statements: the cap and the rows are of the same moment.
        config = await conn.fetchrow(_SNAPSHOT_CONFIG_SQL)
        rows = await conn.fetch(_SNAPSHOT_TICKETS_SQL)
    if config is None:
        raise RuntimeError("golden_config row missing: migrations not applied?")
    return Snapshot.of(
        cap=config["cap"],
        scope=CapScope(config["scope"]),
        tickets=[stored_from_row(r) for r in rows],
        denied=config["denied"],
        read_at=read_at,
    )


async def request_row(pool: asyncpg.Pool, request_id: str) -> StoredTicket | None:
    """The ticket a request id minted, as stored now (no write)."""
    row = await pool.fetchrow(
        "SELECT ticket_id, serial, user_id, issued_at, key_id, signature, state, request_id,"
        " request_hash, issued_leaf, void_reason FROM tickets WHERE request_id = $1",
        request_id,
    )
    return stored_from_row(row) if row is not None else None


@dataclass(frozen=True, slots=True)
class Admit:
    """The database's answer for one request that memory could not decide."""

    stored: StoredTicket | None
    denied: bool
    attempts: int | None
    seen: bool
    holds_ticket: bool


async def admit(
    pool: asyncpg.Pool, request_id: str, user_id: str, window_s: float, attempts_limit: int
) -> Admit:
    """The request id's row, else its rate-limit attempt, deny-list and one-per-user, at once."""
    row = await pool.fetchrow(_ADMIT_SQL, request_id, user_id, window_s, attempts_limit)
    assert row is not None
    return Admit(
        stored=stored_from_row(row) if row["ticket_id"] is not None else None,
        denied=row["denied"],
        attempts=row["attempts"],
        seen=row["seen"],
        holds_ticket=row["holds_ticket"],
    )


async def ping(conn: asyncpg.Connection, within_s: float) -> None:
    """One round trip on a connection that only LISTENs: a half-open one raises TimeoutError
    instead of missing NOTIFYs silently."""
    await conn.execute("SELECT 1", timeout=within_s)


__all__ = ["Admit", "admit", "ping", "read_snapshot", "request_row", "stored_from_row"]
