"""The cap under a hostile database default, and timestamps taken in lock order (issue 13: 2, 7).

Every transaction that decides or changes the cap states READ COMMITTED itself: with the
database default at REPEATABLE READ, a reserve that waited for the advisory lock would count
from a snapshot taken before the lock and overshoot the cap. `issued_at` and
`cap_history.changed_at` are taken after the lock, so the audit judges each issuance by the cap
in force when it actually reserved.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import asyncpg
import pytest

from golden_press.errors import Reason
from golden_press.models import Outcome
from service.store.config import set_cap
from service.store.db import GOLDEN_KEY
from tests.helpers.stack import Stack, assert_audit_clean
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="session")


@asynccontextmanager
async def holding_the_cap_lock(stack: Stack) -> AsyncIterator[asyncpg.Connection]:
    """The golden advisory lock held by a connection of the test, released on exit (commit)."""
    conn = await asyncpg.connect(stack.settings.pg_dsn)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", GOLDEN_KEY)
            yield conn
    finally:
        await conn.close()


async def waiters(stack: Stack) -> int:
    """Sessions of this stack's database queued on an advisory lock."""
    return int(
        await stack.pool.fetchval(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
            " WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = current_database()"
        )
    )


async def test_cap_holds_when_the_database_default_is_repeatable_read(stack: Stack) -> None:
    db = stack.settings.pg_dsn.rsplit("/", 1)[1]
    await stack.pool.execute(
        f"ALTER DATABASE \"{db}\" SET default_transaction_isolation = 'repeatable read'"
    )
    await stack.pool.expire_connections()  # every new session starts with the hostile default
    assert await stack.pool.fetchval("SHOW default_transaction_isolation") == "repeatable read"
    run = uuid.uuid4().hex[:6]
    async with holding_the_cap_lock(stack):
        handles = [await stack.start_issue(f"rr-{run}-{i}") for i in range(8)]

        async def all_queued() -> bool:
            return await waiters(stack) >= 8

        # Eight reserves on eight connections, all queued behind the lock before any counts.
        await wait_until(all_queued, 60)
    results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 120)
    outcomes = sorted((r.outcome, r.reason) for r in results)
    assert outcomes == [(Outcome.ISSUED, "")] * 5 + [(Outcome.REJECTED, Reason.CAP_REACHED)] * 3
    counted = await stack.pool.fetchval("SELECT count(*) FROM tickets WHERE state <> 'voided'")
    assert counted == 5
    await assert_audit_clean(stack)


async def test_issued_at_is_taken_after_the_lock_wait(stack: Stack) -> None:
    async with holding_the_cap_lock(stack) as holder:
        handle = await stack.start_issue(f"late-{uuid.uuid4().hex[:6]}")

        async def queued() -> bool:
            return await waiters(stack) >= 1

        await wait_until(queued, 30)
        await asyncio.sleep(0.3)
        released: datetime = await holder.fetchval("SELECT clock_timestamp()")
    result = await asyncio.wait_for(handle.result(), 60)
    assert result.outcome == Outcome.ISSUED and result.issued_at is not None
    # now() would be the start of the reserve's transaction, before it queued for the lock.
    assert result.issued_at >= released
    await assert_audit_clean(stack)


async def test_cap_change_is_stamped_after_the_lock_wait(stack: Stack) -> None:
    """A reserve that waited behind a cap raise is judged by the raised cap, not the old one."""
    await set_cap(stack.settings.pg_dsn, 1, "live")
    assert (await stack.issue("first")).outcome == Outcome.ISSUED
    async with holding_the_cap_lock(stack) as holder:
        raise_cap = asyncio.ensure_future(set_cap(stack.settings.pg_dsn, 2, "live"))

        async def queued() -> bool:
            return await waiters(stack) >= 1

        await wait_until(queued, 30)
        await asyncio.sleep(0.3)
        released: datetime = await holder.fetchval("SELECT clock_timestamp()")
    await asyncio.wait_for(raise_cap, 30)
    changed_at = await stack.pool.fetchval(
        "SELECT changed_at FROM cap_history ORDER BY id DESC LIMIT 1"
    )
    assert changed_at >= released
    second = await stack.issue("second")
    assert second.outcome == Outcome.ISSUED and second.issued_at is not None
    assert second.issued_at >= changed_at
    await assert_audit_clean(stack)
