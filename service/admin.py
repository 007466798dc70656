"""Operator actions: the cap and the deny-list in PostgreSQL, revocation as a saga."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import asyncpg
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from golden_press.errors import GoldenError, InvalidRequest, Reason
from golden_press.models import (
    COUNTED_STATES,
    CapScope,
    RevokeTicketInput,
    RevokeTicketResult,
    validate_user_id,
)
from golden_press.settings import Settings
from service.db import GOLDEN_KEY, SLOTS_CHANNEL

REVOKE_WORKFLOW = "RevokeTicketWorkflow"


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


async def revoke_ticket(
    settings: Settings, ticket_id: str | UUID, reason: str
) -> RevokeTicketResult:
    """Run RevokeTicketWorkflow (`revoke-<ticket_id>`): state, `revoked` ledger entry, event.

    Revocation is a saga on the worker, not SQL here, because it appends to the ledger and
    publishes GoldenTicketRevoked; a rejection raises GoldenError with the workflow's reason.
    """
    from service.admission import connect_client, parse_ticket_id

    tid = parse_ticket_id(ticket_id)
    if not reason or len(reason) > 200:
        raise InvalidRequest("a revocation needs a reason of 1-200 characters")
    client = await connect_client(settings)
    result: RevokeTicketResult = await client.execute_workflow(
        REVOKE_WORKFLOW,
        RevokeTicketInput(ticket_id=tid, reason=reason),
        id=f"revoke-{tid}",
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        result_type=RevokeTicketResult,
    )
    if result.outcome != "revoked":
        try:
            why = Reason(result.reason)
        except ValueError:
            why = Reason.TICKET_NOT_REDEEMABLE
        raise GoldenError(why, result.message or f"ticket {tid} cannot be revoked")
    return result


__all__ = ["CapConfig", "cap_status", "deny_user", "revoke_ticket", "set_cap"]
