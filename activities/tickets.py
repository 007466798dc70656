"""Row mapping and SQL shared by the issuance, redemption and reconciler activities."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

import asyncpg
from temporalio import activity

from golden_press.models import CapScope, Ticket, TicketState

#: States that count against the cap, per scope (interface sheet).
COUNTED_STATES: dict[CapScope, tuple[str, ...]] = {
    CapScope.LIVE: (TicketState.RESERVED, TicketState.ISSUED),
    CapScope.LIFETIME: (
        TicketState.RESERVED,
        TicketState.ISSUED,
        TicketState.REDEEMED,
        TicketState.REVOKED,
    ),
}

#: Admission LISTENs here to refresh its sold-out flag when a slot frees or the cap changes.
SLOTS_CHANNEL = "golden_slots"


def row_to_ticket(row: Mapping[str, Any]) -> Ticket:
    """The public view of a stored ticket row."""
    return Ticket(
        ticket_id=row["ticket_id"],
        serial=row["serial"],
        user_id=row["user_id"],
        issued_at=row["issued_at"],
        key_id=row["key_id"],
        signature=row["signature"],
        state=TicketState(row["state"]),
        request_id=row["request_id"],
        leaf_index=row["issued_leaf"],
    )


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
