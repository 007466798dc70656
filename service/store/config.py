"""Operator configuration in PostgreSQL: the cap with its scope, and the deny-list.

Revocation is a saga (service.sagas.runs), not SQL here: it appends to the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from golden_press.errors import InvalidRequest
from golden_press.models import (
    CapScope,
    validate_user_id,
)
from service.store.db import SLOTS_CHANNEL, lock_cap
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
        async with conn.transaction():
            await lock_cap(conn)
            await conn.execute(
                "UPDATE golden_config SET cap = $1, scope = $2, updated_at = now()",
                cap,
                parsed.value,
            )
            used = await count_counted(conn, parsed)
            # Delivered at commit: every admission re-reads its sold-out flag.
            await conn.execute("SELECT pg_notify($1, 'set-cap')", SLOTS_CHANNEL)
    finally:
        await conn.close()
    return CapConfig(cap=cap, scope=parsed.value, used=int(used))


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
        await notify_slots(conn, "denied")
    finally:
        await conn.close()


__all__ = ["CapConfig", "cap_status", "deny_user", "set_cap"]
