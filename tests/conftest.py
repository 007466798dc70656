"""Shared fixtures: one Temporal dev server per session, one isolated golden-press stack per test.

The machine's PostgreSQL (127.0.0.1:5432) and NATS (127.0.0.1:4222) are used when they answer;
otherwise the session starts its own (service.devstack.servers). Tests never stop the shared
servers.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from tests.helpers.servers import (
    Servers,
    migrated_template,
    shared_or_private_nats,
    shared_or_private_postgres,
    start_local_temporal,
)
from tests.helpers.stack import Stack, golden_stack


@pytest.fixture(scope="session")
def run_id() -> str:
    """Distinguishes this test run's databases and streams from any other run's."""
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Scratch space for keys, private servers and markers."""
    return tmp_path_factory.mktemp("golden")


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """The machine's PostgreSQL if it answers, else a private cluster owned by this session."""
    with shared_or_private_postgres() as dsn:
        yield dsn


@pytest.fixture(scope="session")
def nats_url(session_dir: Path) -> Iterator[str]:
    """The machine's NATS if it answers, else a private nats-server owned by this session."""
    with shared_or_private_nats(session_dir) as url:
        yield url


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """A local Temporal dev server with our search attributes, shared by the session."""
    env = await start_local_temporal()
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
    async with migrated_template(pg_admin_dsn, f"golden_tpl_{run_id}") as template:
        yield Servers(
            pg_admin_dsn=pg_admin_dsn,
            nats_url=nats_url,
            temporal_address=temporal_env.client.service_client.config.target_host,
            template_db=template,
        )


@pytest_asyncio.fixture(loop_scope="session")
async def stack(servers: Servers, session_dir: Path, client: Client) -> AsyncIterator[Stack]:
    """An isolated golden-press with a running in-process worker."""
    async with golden_stack(servers, session_dir, client) as s:
        yield s
