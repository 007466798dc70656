"""The cap under a hostile database default, and timestamps taken in lock order (issue 13: 2, 7).

Every transaction that decides or changes the cap states READ COMMITTED itself: with the
database default at REPEATABLE READ, a reserve that waited for the advisory lock would count
from a snapshot taken before the lock and overshoot the cap. `issued_at` and
`cap_history.changed_at` are taken after the lock, so the audit judges each issuance by the cap
in force when it actually reserved, also when a reserve and a cap change began in one order and
took the lock in the other.
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
from service.store import config, db
from service.store.config import set_cap
from service.store.db import GOLDEN_KEY
from tests.helpers.stack import Stack, assert_audit_clean
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="session")


#: An advisory lock only these tests take: it holds a reserve inside its transaction, before
#: the reserve queues for the cap's lock.
HOLD_BACK_KEY = 0x7E5701


@asynccontextmanager
async def holding_the_cap_lock(
    stack: Stack, key: int = GOLDEN_KEY
) -> AsyncIterator[asyncpg.Connection]:
    """The golden advisory lock (or `key`) held by a connection of the test, released on exit."""
    conn = await asyncpg.connect(stack.settings.pg_dsn)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", key)
            yield conn
    finally:
        await conn.close()


async def queued_on(stack: Stack, key: int) -> int:
    """Sessions of this stack's database queued on the advisory lock `key`."""
    return int(
        await stack.pool.fetchval(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
            " WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = current_database()"
            " AND (l.classid::int8 << 32) + l.objid::int8 = $1",
            key,
        )
    )


async def until_queued(stack: Stack, key: int, sessions: int) -> None:
    """Wait until `sessions` sessions are queued on `key`."""

    async def queued() -> bool:
        return await queued_on(stack, key) >= sessions

    await wait_until(queued, 10)


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


async def test_a_reserve_that_began_before_a_cap_raise_is_judged_by_the_raise(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reserve's transaction begins, then a cap raise begins and queues for the cap's lock
    first; the reserve queues behind it and takes the slot the raise made. It was decided under
    the raised cap, and the audit must judge it so: an issued_at taken with now() (the reserve
    transaction's start, before the raise began) would judge it by the old cap, a false alarm."""
    await set_cap(stack.settings.pg_dsn, 1, "live")
    assert (await stack.issue("first")).outcome == Outcome.ISSUED
    # The worker's reserve (in this process) begins its transaction, then waits for a lock the
    # test holds before it asks for the cap's lock.
    monkeypatch.setattr(
        db,
        "_BEGIN_CAP",
        "BEGIN ISOLATION LEVEL READ COMMITTED;"
        f" SELECT pg_advisory_xact_lock({HOLD_BACK_KEY});"
        f" SELECT pg_advisory_xact_lock({GOLDEN_KEY})",
    )
    async with holding_the_cap_lock(stack):
        async with holding_the_cap_lock(stack, HOLD_BACK_KEY):
            handle = await stack.start_issue("second")
            await until_queued(stack, HOLD_BACK_KEY, 1)  # its transaction has begun
            raise_cap = asyncio.ensure_future(set_cap(stack.settings.pg_dsn, 2, "live"))
            await until_queued(stack, GOLDEN_KEY, 1)  # the raise is first in the cap's queue
        await until_queued(stack, GOLDEN_KEY, 2)  # the reserve queues behind the raise
    await asyncio.wait_for(raise_cap, 30)
    second = await asyncio.wait_for(handle.result(), 60)
    assert second.outcome == Outcome.ISSUED, second
    await assert_audit_clean(stack)


async def test_a_cap_change_that_began_before_a_reserve_does_not_judge_it(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mirror image: a cap raise's transaction begins, then a reserve queues for the cap's
    lock before the raise asks for it. The reserve is decided under the old cap and must be
    judged by it: a changed_at taken with now() (the raise transaction's start) would put the
    raise before the reserve and judge it by the new cap, against the ledger's cap entry."""
    await set_cap(stack.settings.pg_dsn, 2, "live")
    assert (await stack.issue("first")).outcome == Outcome.ISSUED
    began, go = asyncio.Event(), asyncio.Event()
    take_the_lock = config.lock_cap

    async def lock_when_told(conn: asyncpg.Connection) -> None:
        began.set()  # set_cap calls this inside its transaction
        await go.wait()
        await take_the_lock(conn)

    monkeypatch.setattr(config, "lock_cap", lock_when_told)
    async with holding_the_cap_lock(stack):
        raise_cap = asyncio.ensure_future(set_cap(stack.settings.pg_dsn, 3, "live"))
        await asyncio.wait_for(began.wait(), 10)  # the raise's transaction has begun
        handle = await stack.start_issue("second")
        await until_queued(stack, GOLDEN_KEY, 1)  # the reserve is first in the cap's queue
        go.set()
        await until_queued(stack, GOLDEN_KEY, 2)  # the raise queues behind it
    await asyncio.wait_for(raise_cap, 30)
    second = await asyncio.wait_for(handle.result(), 60)
    assert second.outcome == Outcome.ISSUED, second
    assert second.serial == 2
    await assert_audit_clean(stack)
