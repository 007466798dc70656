"""The API's PostgreSQL tuning knobs change its pool's sessions as docs/operations.md says.

GOLDEN_RATE_LIMIT_DURABLE: synchronous_commit of the API's sessions (off by default).
GOLDEN_PG_POOL_RESET: asyncpg's RESET on every release (skipped by default), seen as session
state that survives a release, or does not.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from service.api.server import pool_of, serve, shutdown
from tests.helpers.api import write_tokens
from tests.helpers.stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _same_session_again(pool: asyncpg.Pool, pid: int) -> str:
    """application_name of backend `pid` once the pool hands that connection out again."""
    held: list[Any] = []
    try:
        while True:  # at most the pool's size: then acquire times out
            conn = await pool.acquire(timeout=10)
            held.append(conn)
            if await conn.fetchval("SELECT pg_backend_pid()") == pid:
                return str(await conn.fetchval("SHOW application_name"))
    finally:
        for conn in held:
            await pool.release(conn)


@pytest.mark.parametrize(
    ("knobs", "synchronous_commit", "reset"),
    [
        ({}, "off", False),
        ({"rate_limit_durable": True, "pg_pool_reset": True}, "on", True),
    ],
    ids=["defaults", "durable-and-reset"],
)
async def test_the_api_pool_follows_its_settings(
    stack: Stack, knobs: dict[str, bool], synchronous_commit: str, reset: bool
) -> None:
    settings = stack.settings.model_copy(update=knobs)
    write_tokens(settings, f"token-{uuid.uuid4().hex}")
    server = await serve(settings, client=stack.client, address="127.0.0.1:0")  # its own pool
    try:
        pool = pool_of(server)
        assert pool is not stack.pool
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW synchronous_commit") == synchronous_commit
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            await conn.execute("SET application_name = 'left-behind'")
        left = await _same_session_again(pool, pid)
        assert (left != "left-behind") is reset, left
    finally:
        await shutdown(server)
