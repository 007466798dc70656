"""Operator configuration in PostgreSQL: the cap with its scope, and the deny-list.

Revocation is a saga (service.sagas.runs), not SQL here: it appends to the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from golden_press.errors import InvalidRequest
from golden_press.ledger_entry import CapEntry
from golden_press.models import (
    CapScope,
    validate_user_id,
)
from service.store.db import SlotNotice, lock_cap, read_committed
from service.store.ledger import LedgerStore
from service.store.tickets import count_counted, notify_slots


@dataclass(frozen=True)
class CapConfig:
    """The cap row after a change, with how many tickets count against it now."""

    cap: int
    scope: str
    used: int


async def set_cap(dsn: str, cap: int, scope: str) -> CapConfig:
    """Change cap and scope under the cap's advisory lock, so no reserve sees half a change.

    Lowering the cap below the tickets already counted is allowed: nothing is voided, new
    issuance simply waits until the count drops below the new cap.
    """
    if cap < 0:
        raise InvalidRequest(f"cap must be >= 0, got {cap}")
    try:
        parsed = CapScope(scope)
    except ValueError as exc:
        raise InvalidRequest(f"scope must be live or lifetime, got {scope!r}") from exc
    conn = await asyncpg.connect(dsn)
    try:
        async with read_committed(conn):
            await lock_cap(conn)
            before = await conn.fetchrow("SELECT cap, scope FROM golden_config")
            await conn.execute(
                "UPDATE golden_config SET cap = $1, scope = $2, updated_at = now()",
                cap,
                parsed.value,
            )
            if before is None or (before["cap"], before["scope"]) != (cap, parsed.value):
                await append_cap_entry(conn, cap, parsed)
            used = await count_counted(conn, parsed)
            # Delivered at commit: every admission re-reads its sold-out flag.
            await notify_slots(conn, SlotNotice.SET_CAP)
    finally:
        await conn.close()
    return CapConfig(cap=cap, scope=parsed.value, used=int(used))


async def append_cap_entry(conn: asyncpg.Connection, cap: int, scope: CapScope) -> None:
    """The public record of a change, in the change's own transaction under the cap lock.

    Its serial watermark is the last serial reserved before the change (serials are taken under
    the same lock), so the monitor judges every ticket by the cap in force when it was reserved.
    No ledger key is needed here: the worker signs the checkpoint that covers the entry (the
    append's trigger NOTIFYs it).
    """
    row = await conn.fetchrow("SELECT last_value, is_called FROM ticket_serial_seq")
    watermark = int(row["last_value"]) if row is not None and row["is_called"] else 0
    entry = CapEntry(cap=cap, scope=scope, serial=watermark, at=datetime.now(UTC))
    await LedgerStore.read_only("").append_cap(conn, entry)


async def cap_status(dsn: str) -> CapConfig:
    """The cap row and how many tickets count against it now (no lock: a snapshot)."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT cap, scope FROM golden_config")
        assert row is not None, "golden_config row missing: run `python -m service.store.migrate`"
        scope = CapScope(row["scope"])
        used = await count_counted(conn, scope)
    finally:
        await conn.close()
    return CapConfig(cap=row["cap"], scope=scope.value, used=int(used))


async def deny_user(dsn: str, user_id: str, reason: str = "") -> None:
    """Put a user on the deny-list (idempotent); admission and reserve both check it."""
    try:
        validate_user_id(user_id)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO deny_list (user_id, reason) VALUES ($1, $2)"
            " ON CONFLICT (user_id) DO UPDATE SET reason = EXCLUDED.reason",
            user_id,
            reason,
        )
        # API processes refuse deny-listed users from their snapshot while sold out.
        await notify_slots(conn, SlotNotice.DENIED)
    finally:
        await conn.close()


async def cap_history(db: asyncpg.Pool | asyncpg.Connection) -> list[asyncpg.Record]:
    """Every change of the cap (changed_at, cap, scope), oldest first."""
    return list(
        await db.fetch("SELECT changed_at, cap, scope FROM cap_history ORDER BY changed_at, id")
    )


__all__ = ["CapConfig", "cap_history", "cap_status", "deny_user", "set_cap"]
