"""Events never stall the sagas (issue 13: 1, 12, 14).

1. A permanently failing outbox row is parked as a dead letter (visible in the audit) while
   later events flow and the sagas behind it complete.
12. While NATS is down the publish step holds no advisory lock or transaction, and the saga's
   `progress.last_error` and current details name the NATS error while it retries.
14. The stream is created with deny_delete and deny_purge; an existing stream whose limits
   would drop events is refused at start-up instead of being kept.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from pathlib import Path
from typing import Any

import pytest
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client

from golden_press.models import Outcome
from service.devstack.servers import NatsServer
from service.store.db import PUBLISH_KEY
from service.store.outbox import stream_subject
from tests.helpers.poison import poison_events
from tests.helpers.servers import Servers
from tests.helpers.stack import Stack, audit, golden_stack
from tests.helpers.waiting import wait_until
from worker import golden_worker
from workflows.issue_ticket import IssueTicketWorkflow

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_poison_event_is_parked_and_later_events_flow(stack: Stack) -> None:
    first = await stack.issue("holder")
    assert first.ticket_id is not None
    bundle = await stack.bundle_for(first.ticket_id)
    await poison_events(stack, "redeemed")
    redeemed = await asyncio.wait_for(stack.redeem(first.ticket_id, "holder", bundle), 60)
    assert redeemed.outcome == Outcome.REDEEMED
    later = await asyncio.wait_for(stack.issue("later"), 60)
    assert later.outcome == Outcome.ISSUED
    kinds = [m.subject.rsplit(".", 1)[1] for m in await stack.stream_messages()]
    assert kinds == ["issued", "issued"]  # leaf 1 (the poison) parked, leaf 2 published
    parked = await stack.pool.fetchrow(
        "SELECT leaf_index, published_at, dead_lettered_at, last_error FROM event_outbox"
        " WHERE kind = 'redeemed'"
    )
    assert parked["published_at"] is None and parked["dead_lettered_at"] is not None
    assert parked["last_error"]
    findings = [(f.check, f.detail) for f in (await audit(stack)).findings]
    assert [c for c, _ in findings] == ["dead_letter"], findings
    assert "leaf 1" in findings[0][1]


async def publish_lock_holders(stack: Stack) -> int:
    """Sessions holding the outbox drain's advisory lock."""
    return int(
        await stack.pool.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND objid = $1 AND database = (SELECT oid FROM pg_database"
            " WHERE datname = current_database())",
            PUBLISH_KEY & 0xFFFFFFFF,
        )
    )


async def test_publish_holds_no_lock_while_nats_is_down_and_says_why(
    servers: Servers, session_dir: Path, client: Client
) -> None:
    own = await asyncio.to_thread(NatsServer.start, session_dir / f"nats-{uuid.uuid4().hex}")
    try:
        mine = dataclasses.replace(servers, nats_url=own.url)
        async with golden_stack(mine, session_dir, client) as stack:
            assert (await stack.issue("before")).outcome == Outcome.ISSUED
            await asyncio.to_thread(own.stop)
            handle = await stack.start_issue("during")

            async def publishing() -> bool:
                return (await handle.query(IssueTicketWorkflow.progress)).current_step == "publish"

            await wait_until(publishing, 30)
            seen_locked = 0
            for _ in range(40):  # 4 s of the step retrying against a dead NATS
                seen_locked += await publish_lock_holders(stack)
                idle_in_tx = await stack.pool.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND state LIKE 'idle in transaction%'"
                )
                seen_locked += idle_in_tx
                await asyncio.sleep(0.1)
            assert seen_locked == 0

            async def explained() -> bool:
                progress = await handle.query(IssueTicketWorkflow.progress)
                return "nats" in progress.last_error.lower()

            await wait_until(explained, 30)
            meta = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
            assert "publish" in meta.current_details and "nats" in meta.current_details.lower()
            await asyncio.to_thread(own.start_again)
            result = await asyncio.wait_for(handle.result(), 60)
            assert result.outcome == Outcome.ISSUED
            assert (await handle.query(IssueTicketWorkflow.progress)).current_step == "done"
    finally:
        await asyncio.to_thread(own.stop)


async def test_stream_is_created_undeletable_and_unpurgeable(stack: Stack) -> None:
    info = await stack.js.stream_info(stack.settings.stream_name)
    assert info.config.deny_delete is True
    assert info.config.deny_purge is True


@pytest.mark.parametrize(
    "limits",
    [
        {"max_msgs": 1000},
        {"max_bytes": 1 << 20},
        {"max_age": 3600.0},
        {"max_msgs_per_subject": 5},
        # Any positive size limit (every event would fit today; see dropping_limits).
        {"max_msg_size": 1 << 20},
        {"max_msg_size": 64},
        # Refuses every publish (JetStream err 10109); a stream is sealed by an update only.
        {"sealed": True},
    ],
)
async def test_a_stream_whose_limits_would_drop_events_is_refused(
    servers: Servers, session_dir: Path, client: Client, limits: dict[str, Any]
) -> None:
    async with golden_stack(servers, session_dir, client, run_worker=False) as stack:
        settings = stack.settings
        created = {k: v for k, v in limits.items() if k != "sealed"}
        await stack.js.add_stream(
            StreamConfig(
                name=settings.stream_name,
                subjects=[f"{settings.subject_prefix}.>"],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                **created,
            )
        )
        if limits.get("sealed"):
            config = (await stack.js.stream_info(settings.stream_name)).config
            await stack.js.update_stream(dataclasses.replace(config, sealed=True))
        with pytest.raises(Exception, match="would drop events"):
            async with golden_worker(settings, client, stack.pool, stack.nc, stack.keys):
                pass
        kept = (await stack.js.stream_info(settings.stream_name)).config
        for name, value in limits.items():
            assert getattr(kept, name) == value  # refused, not silently rewritten


async def test_an_existing_stream_gets_deny_delete_and_deny_purge_at_start_up(
    servers: Servers, session_dir: Path, client: Client
) -> None:
    """A stream made before deny_delete/deny_purge (or by an operator without them) has both
    switched on when the worker starts: NATS allows switching them on, never off again."""
    async with golden_stack(servers, session_dir, client, run_worker=False) as stack:
        settings = stack.settings
        await stack.js.add_stream(
            StreamConfig(
                name=settings.stream_name,
                subjects=[stream_subject(settings)],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
            )
        )
        before = (await stack.js.stream_info(settings.stream_name)).config
        assert (before.deny_delete, before.deny_purge) == (False, False)
        async with golden_worker(settings, client, stack.pool, stack.nc, stack.keys):
            pass
        after = (await stack.js.stream_info(settings.stream_name)).config
        assert (after.deny_delete, after.deny_purge) == (True, True)
        await stack.js.publish(f"{settings.subject_prefix}.golden_ticket.issued", b"kept")
        with pytest.raises(APIError, match=r"(?i)purge"):
            await stack.js.purge_stream(settings.stream_name)
        with pytest.raises(APIError):
            await stack.js.delete_msg(settings.stream_name, 1)
        assert (await stack.js.stream_info(settings.stream_name)).state.messages == 1
