"""Row mapping and SQL shared by the issuance, redemption and reconciler activities."""

from __future__ import annotations

from uuid import UUID

import asyncpg
from temporalio import activity

from service.db import SLOTS_CHANNEL
from service.queries import row_to_ticket

__all__ = ["count", "lock_ticket", "notify_slots", "row_to_ticket"]


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
