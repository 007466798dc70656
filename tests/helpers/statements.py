"""Counting the statements a pool sends to PostgreSQL (asyncpg's query logger), for tests that
assert round trips or their absence rather than time them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from service.sagas.admission import Admission
from service.store.db import learn_types, skip_pool_reset


class Statements:
    """Every statement the pool's connections send (asyncpg's query logger), BEGIN and COMMIT
    included."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def __call__(self, record: asyncpg.connection.LoggedQuery) -> None:
        self.sent.append(record.query)

    async def init(self, conn: asyncpg.Connection) -> None:
        await learn_types(conn)  # as the service's pools do (service.store.db.create_pool)
        conn.add_query_logger(self)


@asynccontextmanager
async def counted_pool(
    dsn: str, statements: Statements, max_size: int = 1
) -> AsyncIterator[asyncpg.Pool]:
    """A pool whose every statement lands in `statements` (opening it sends none counted)."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=max_size,
        init=statements.init,
        reset=skip_pool_reset,  # as the service's pools (service.store.db.create_pool)
    )
    assert pool is not None
    try:
        statements.sent.clear()
        yield pool
    finally:
        await pool.close()


async def settled(admission: Admission, within_s: float = 10.0) -> None:
    """Once every row committed so far is in the admission's snapshot (a read started after
    now) and its refresher neither wants nor runs a re-read: none started earlier lands later,
    in a counted pool or after the test swapped its pool."""
    await admission.snapshot_since(time.monotonic())
    deadline = time.monotonic() + within_s
    while admission._refresh_wanted.is_set() or admission._refresh_lock.locked():
        assert time.monotonic() < deadline, f"the refresher was still busy after {within_s} s"
        await asyncio.sleep(0.01)


class NoRereadPool:
    """A pool whose connections cannot be acquired (so admission's snapshot is never re-read)
    while its one-statement calls (fetch, fetchrow, execute) still run."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def acquire(self) -> Any:
        raise RuntimeError("injected: the snapshot re-read is down")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


class GatedRereadPool:
    """A pool whose connections (admission's snapshot re-read) wait until `open` is set, while
    its one-statement calls (fetch, fetchrow, execute) run at once: a re-read held back, as
    when a NOTIFY has arrived and its re-read is still on the way."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self.open = asyncio.Event()
        self.waiting = 0

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        self.waiting += 1
        try:
            await self.open.wait()
        finally:
            self.waiting -= 1
        async with self._pool.acquire() as conn:
            yield conn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)
