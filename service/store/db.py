"""PostgreSQL access: pool creation and versioned, idempotent migrations."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import StrEnum
from pathlib import Path

import asyncpg
from asyncpg.transaction import Transaction

from golden_press.errors import Unreachable
from golden_press.redact import redact_dsn

#: Advisory lock keys. Lock order, always: GOLDEN_KEY, then LEDGER_KEY, then PUBLISH_KEY.
GOLDEN_KEY = 0x601DE9  # the cap critical section: lock -> count -> insert
LEDGER_KEY = 0x601DEA  # ledger appends: dense leaf indices
PUBLISH_KEY = 0x601DEB  # no longer taken (the outbox drain holds no lock); never reuse it
MIGRATIONS_KEY = 0x601DEC

#: Channel NOTIFYed whenever what an API process keeps in memory changes (reserve, ledger append,
#: void, redeem, revoke, set-cap, deny): every API process LISTENs and re-reads its snapshot
#: (service/sagas/admission.py). The payload is a SlotNotice naming the change.
SLOTS_CHANNEL = "golden_slots"


class SlotNotice(StrEnum):
    """The payload of a NOTIFY on SLOTS_CHANNEL: what changed."""

    RESERVED = "reserved"
    ISSUED = "issued"  # the ledger entry: a reserved slot becomes a ticket
    VOIDED = "voided"
    REDEEMED = "redeemed"
    REVOKED = "revoked"
    SET_CAP = "set-cap"
    DENIED = "denied"


#: Notices that can never free a slot. Any other payload (a void; a redeem or revoke, which free
#: one in `live` scope; a cap change; one this list does not know) may have, so API processes hold
#: their sold-out refusals until the re-read it triggered (service/sagas/admission.py).
NEVER_FREES_A_SLOT = frozenset({SlotNotice.RESERVED, SlotNotice.ISSUED, SlotNotice.DENIED})
#: Channel NOTIFYed by a trigger on every ledger append (migrations/006): the tile publisher
#: LISTENs to sign a checkpoint for unsigned entries and publish new tiles at once.
LEDGER_CHANNEL = "golden_ledger"


def read_committed(conn: asyncpg.Connection) -> Transaction:
    """A READ COMMITTED transaction, whatever the database or role default says.

    The cap and the ledger rely on it: a statement after an advisory-lock wait must see what the
    previous holder committed. Under REPEATABLE READ the snapshot is taken by the first
    statement (the lock itself), so a reserve that queued behind others would count a stale
    number and overshoot the cap.
    """
    return conn.transaction(isolation="read_committed")


#: BEGIN, with the isolation stated, and the cap's lock: one round trip (two statements in one
#: simple query), since a herd's winners queue for the lock and wait out each other's trips.
_BEGIN_CAP = f"BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({GOLDEN_KEY})"


@asynccontextmanager
async def cap_transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A READ COMMITTED transaction holding the cap's advisory lock: the only place the cap is
    decided.

    Everything that decides or changes what counts against the cap (reserve, finalise's ledger
    append, void, redeem, revoke, set-cap) runs under this lock, so lock -> count -> write is
    serial. Timestamps written in here use clock_timestamp() (after the lock), not now() (the
    start of the transaction, before the lock wait), so their order is the lock order. Commits
    on leaving, rolls back on any exception (as asyncpg's own transaction block; the pool rolls
    back whatever a failed ROLLBACK leaves).
    """
    async with pool.acquire() as conn:
        try:
            await conn.execute(_BEGIN_CAP)  # a lock timeout here leaves a failed transaction
            yield conn
        except BaseException:
            if conn.is_in_transaction():
                with contextlib.suppress(Exception):
                    await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")


async def lock_cap(conn: asyncpg.Connection) -> None:
    """Take the cap's advisory lock for the rest of the caller's transaction."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", GOLDEN_KEY)


MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration, in order."""
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path.name, path.read_text()))
    return found


async def apply_migrations(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations in one transaction each; safe to run from many processes at once."""
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATIONS_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in migration_files():
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
            )
            applied.append(name)
    return applied


async def skip_pool_reset(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's per-release RESET round trip (~5% of an API request).

    Safe here: every lock is transaction-scoped (`pg_advisory_xact_lock`), every transaction is
    an `async with` block, no code changes session settings, and LISTEN uses its own connection.
    """


#: The array types the stores send and read (ledger heads and appends, proofs, reserve's lists).
_ARRAY_TYPES = "SELECT NULL::bigint[], NULL::smallint[], NULL::bytea[], NULL::uuid[], NULL::text[]"


async def learn_types(conn: asyncpg.Connection) -> None:
    """Have asyncpg look the array types up when a connection opens (its `init`).

    asyncpg learns a type it has no built-in codec for on the first statement that uses it, per
    connection: three more round trips and a catalog query. Without this a saga step on a fresh
    connection pays them inside its transaction, i.e. under the cap's lock while a herd's
    winners queue for it.
    """
    await conn.fetchrow(_ARRAY_TYPES)


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    durable_commits: bool = True,
    reset_on_release: bool = False,
) -> asyncpg.Pool:
    """A pool whose sessions fail fast on lock waits instead of hanging an activity.

    `durable_commits=False` is for the API's pool only: its sole writes are rate-limit counters,
    where losing the last few on a database crash is harmless, and skipping the WAL flush per
    request is what lets a herd's rejections stay cheap. Tickets, ledger and outbox are written
    by the worker's durable pool (GOLDEN_RATE_LIMIT_DURABLE makes the API's durable too).

    `reset_on_release=True` (GOLDEN_PG_POOL_RESET) keeps asyncpg's RESET round trip on every
    release; by default it is skipped (skip_pool_reset).
    """
    settings = {"lock_timeout": "4s", "statement_timeout": "8s"}
    if not durable_commits:
        settings["synchronous_commit"] = "off"
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            reset=None if reset_on_release else skip_pool_reset,
            init=learn_types,
            server_settings=settings,
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise Unreachable("PostgreSQL", redact_dsn(dsn), exc) from exc
    assert pool is not None
    return pool


async def ensure_database(dsn: str) -> None:
    """Create the database named in dsn if it does not exist (connects to `postgres` to do so)."""
    try:
        conn = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        base, _, name = dsn.rpartition("/")
        name = name.split("?")[0]
        admin = await asyncpg.connect(f"{base}/postgres")
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.DuplicateDatabaseError:
            pass
        finally:
            await admin.close()
    else:
        await conn.close()


__all__ = [
    "GOLDEN_KEY",
    "LEDGER_KEY",
    "PUBLISH_KEY",
    "apply_migrations",
    "cap_transaction",
    "create_pool",
    "ensure_database",
    "read_committed",
]
