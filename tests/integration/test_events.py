"""Events as a downstream team sees them: headers, the stream's subjects, the consumer example."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest

from golden_press.settings import Settings
from proto.events.monetization.v1 import golden_pb2 as events_pb2
from service.store.outbox import StreamSubjectsConflict, ensure_stream
from starter.consume_events import Event, JsonlSink, consume
from tests.helpers.servers import Servers
from tests.helpers.stack import Stack


async def test_every_event_carries_cloudevents_headers(stack: Stack) -> None:
    result = await stack.issue("alice")
    [msg] = await stack.stream_messages("issued")
    headers = msg.headers or {}
    body = events_pb2.GoldenTicketIssued.FromString(msg.data)
    name = "events.monetization.v1.GoldenTicketIssued"
    assert headers["Nats-Msg-Id"] == headers["ce-id"] == body.event_id
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-type"] == body.DESCRIPTOR.full_name == name
    assert headers["Content-Type"] == f"application/protobuf; messageType={name}"
    assert headers["ce-source"] == stack.settings.ledger_origin
    sent_at = datetime.fromisoformat(headers["ce-time"].replace("Z", "+00:00"))
    assert sent_at == body.issued_at.ToDatetime(tzinfo=UTC)
    assert headers["ce-subject"] == body.ticket_id == str(result.ticket_id)
    assert body.HasField("leaf_index")
    assert headers["Golden-Leaf-Index"] == str(body.leaf_index)


async def test_the_stream_owns_only_the_golden_ticket_subjects(stack: Stack) -> None:
    prefix = stack.settings.subject_prefix
    info = await stack.js.stream_info(stack.settings.stream_name)
    assert info.config.subjects == [f"{prefix}.golden_ticket.>"]
    # Another service's event under the same prefix is not captured by our stream.
    with pytest.raises((nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError)):
        await stack.js.publish(f"{prefix}.loyalty.points_added", b"x", timeout=2)


async def test_a_legacy_stream_is_narrowed_or_refused(servers: Servers) -> None:
    """v0.1.0 streams claim `<prefix>.>`: narrowed when all theirs, refused when shared."""
    nc = await nats.connect(servers.nats_url)
    js = nc.jetstream()
    run = uuid.uuid4().hex[:8]
    names = []
    try:
        for case in ("ours", "shared"):
            settings = Settings(  # type: ignore[call-arg]
                GOLDEN_STREAM=f"LEGACY_{case.upper()}_{run}",
                GOLDEN_SUBJECT_PREFIX=f"legacy{case}{run}.choco.events.monetization",
            )
            prefix = settings.subject_prefix
            names.append(settings.stream_name)
            await js.add_stream(name=settings.stream_name, subjects=[f"{prefix}.>"])
            await js.publish(f"{prefix}.golden_ticket.issued", b"ours")
            if case == "ours":
                await ensure_stream(js, settings)
                info = await js.stream_info(settings.stream_name)
                assert info.config.subjects == [f"{prefix}.golden_ticket.>"]
                assert info.state.messages == 1, "narrowing keeps the events"
            else:
                await js.publish(f"{prefix}.loyalty.points_added", b"theirs")
                with pytest.raises(StreamSubjectsConflict, match=r"loyalty\.points_added"):
                    await ensure_stream(js, settings)
                info = await js.stream_info(settings.stream_name)
                assert info.config.subjects == [f"{prefix}.>"], "a refused stream is untouched"
    finally:
        for name in names:
            await js.delete_stream(name)
        await nc.close()


class CrashAfterRecording(JsonlSink):
    """A sink whose process 'dies' right after recording one event, before the ack."""

    def __init__(self, path: Path, crash_at_leaf: int) -> None:
        super().__init__(path)
        self.crash_at_leaf = crash_at_leaf

    def record(self, event: Event) -> None:
        super().record(event)
        if event.leaf_index == self.crash_at_leaf:
            raise RuntimeError("simulated crash between record and ack")


async def test_consumer_example_receives_every_event_once_in_leaf_order_across_a_restart(
    stack: Stack, tmp_path: Path
) -> None:
    for user in ("u1", "u2", "u3"):
        await stack.issue(user)
    sink_file = tmp_path / "events.jsonl"
    durable = f"example-{uuid.uuid4().hex[:8]}"
    first = await stack.stream_messages()
    crash_leaf = events_pb2.GoldenTicketIssued.FromString(first[2].data).leaf_index

    # Run 1: two events, then a crash after recording the third but before acking it. The
    # consumer is created with a short ack_wait so the unacked event comes back quickly.
    handled = await consume(
        stack.js,
        stack.settings,
        durable=durable,
        sink=JsonlSink(sink_file),
        max_events=2,
        ack_wait_s=1.0,
    )
    assert handled == 2
    with pytest.raises(RuntimeError, match="simulated crash"):
        await consume(
            stack.js,
            stack.settings,
            durable=durable,
            sink=CrashAfterRecording(sink_file, crash_leaf),
        )
    # While the consumer is down, more happens.
    for user in ("u4", "u5"):
        await stack.issue(user)

    # Run 2, a new process: the unacked third event comes again and is skipped, then the rest.
    restarted = JsonlSink(sink_file)
    assert restarted.last_leaf == crash_leaf
    handled = await consume(
        stack.js, stack.settings, durable=durable, sink=restarted, idle_timeout_s=3.0
    )
    assert handled == 2

    recorded = [json.loads(line) for line in sink_file.read_text().splitlines()]
    published = await stack.stream_messages()
    expected = [
        (int(m.headers["Golden-Leaf-Index"]), m.headers["Nats-Msg-Id"])  # type: ignore[index]
        for m in published
    ]
    assert [(r["leaf_index"], r["event_id"]) for r in recorded] == expected
    leaves = [r["leaf_index"] for r in recorded]
    assert leaves == sorted(set(leaves)) and len(leaves) == 5
