"""Row mapping and SQL shared by the issuance, redemption and reconciler activities."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg
from google.protobuf.message import Message
from temporalio import activity

from golden_press.ledger_entry import EntryKind, entry_for_ticket
from service.db import SLOTS_CHANNEL
from service.events import write_outbox
from service.ledger_store import AppendResult, LedgerStore
from service.queries import row_to_ticket

__all__ = ["count", "lock_ticket", "notify_slots", "record_entry", "row_to_ticket"]


async def lock_ticket(conn: asyncpg.Connection, ticket_id: UUID) -> asyncpg.Record | None:
    """The ticket row, locked for the rest of the caller's transaction."""
    return await conn.fetchrow("SELECT * FROM tickets WHERE ticket_id = $1 FOR UPDATE", ticket_id)


async def notify_slots(conn: asyncpg.Connection, why: str) -> None:
    """Tell admission processes a slot may have freed (delivered at commit)."""
    await conn.execute("SELECT pg_notify($1, $2)", SLOTS_CHANNEL, why)


def count(name: str, **attributes: str) -> None:
    """Add one to a domain counter on the worker's metrics endpoint (e.g. issued, rejected)."""
    activity.metric_meter().create_counter(f"golden_{name}", f"golden-press {name}").add(
        1, attributes
    )


async def record_entry(
    conn: asyncpg.Connection,
    ledger: LedgerStore,
    kind: EntryKind,
    row: asyncpg.Record,
    event: Message,
    *,
    at: datetime,
    reason: str = "",
) -> AppendResult:
    """Append a ticket's ledger entry and its outbox event in the caller's transaction.

    Fills the fields every event shares (ticket id, serial, leaf index; write_outbox adds the
    event id); the caller sets only what is particular to its event.
    """
    entry = entry_for_ticket(kind, row_to_ticket(row), bytes(row["user_salt"]), at, reason)
    appended = await ledger.append(conn, entry)
    event.ticket_id = str(row["ticket_id"])  # type: ignore[attr-defined]
    event.serial = row["serial"]  # type: ignore[attr-defined]
    event.leaf_index = appended.leaf_index  # type: ignore[attr-defined]
    await write_outbox(
        conn,
        leaf_index=appended.leaf_index,
        ticket_id=row["ticket_id"],
        kind=kind.value,
        event=event,
    )
    return appended
