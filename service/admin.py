"""Operator actions that go straight to PostgreSQL: the cap, the deny-list, revocation."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import asyncpg

from golden_press.errors import InvalidRequest
from golden_press.models import CapScope, Ticket, validate_user_id
from service.admission import COUNTED_STATES, SLOTS_CHANNEL
from service.db import GOLDEN_KEY


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
            await conn.execute("SELECT pg_advisory_xact_lock($1)", GOLDEN_KEY)
            await conn.execute(
                "UPDATE golden_config SET cap = $1, scope = $2, updated_at = now()",
                cap,
                parsed.value,
            )
            used = await conn.fetchval(
                "SELECT count(*) FROM tickets WHERE state = ANY($1::text[])",
                [s.value for s in COUNTED_STATES[parsed]],
            )
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
        assert row is not None, "golden_config row missing: run `python -m service.migrate`"
        scope = CapScope(row["scope"])
        used = await conn.fetchval(
            "SELECT count(*) FROM tickets WHERE state = ANY($1::text[])",
            [s.value for s in COUNTED_STATES[scope]],
        )
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
    finally:
        await conn.close()


async def revoke_ticket(dsn: str, ticket_id: str | UUID, reason: str) -> Ticket:
    """Revocation needs a `revoked` ledger entry and event, so it belongs in a saga: not yet."""
    raise NotImplementedError(
        "revocation is not available yet: it must append a `revoked` ledger entry and publish "
        "GoldenTicketRevoked, which only the worker can do"
    )


__all__ = ["CapConfig", "cap_status", "deny_user", "revoke_ticket", "set_cap"]
