"""Consumer example: follow golden-press events with a durable JetStream pull consumer. Copy it.

    python -m starter.consume_events --durable my-service [--sink events.jsonl]

What a downstream service needs, and nothing else:
- a **durable** pull consumer on `<prefix>.golden_ticket.>`: the server remembers how far it got,
  so a restarted consumer continues where it stopped (deliver policy ALL: the first run starts at
  the first event ever published; the stream keeps every event forever);
- **explicit acks**, sent only after the event is recorded: an event whose handling did not finish
  (crash, exception) is delivered again after `ack_wait`;
- **leaf order**: events are published in ledger leaf order and `max_ack_pending=1` keeps them in
  that order even across redeliveries;
- **once**: a redelivered event whose leaf the sink already holds is acked and skipped. The sink
  records the leaf index with the event in one write, so "handled" and "remembered" cannot
  disagree. With a database, write the leaf index in the same transaction as your side effect.
- **one trace**: with tracing configured (the OTEL_* variables, service/observability/tracing.py;
  off and free without them) each event is handled in a CONSUMER span whose parent is the
  event's W3C `traceparent` header, so the consumer's work shows in the saga that wrote the event.

Routing needs no decoding: `ce-type` (the protobuf message name), `ce-id` (= `Nats-Msg-Id`, the
event id), `ce-subject` (the ticket), `ce-time`, `ce-source`; `Content-Type` names the message
the body decodes as. Connection: GOLDEN_NATS_URL, GOLDEN_STREAM, GOLDEN_SUBJECT_PREFIX.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry import propagate, trace

from golden_press.settings import Settings
from proto.events.monetization.v1 import golden_pb2 as events_pb2
from service.observability import tracing as telemetry
from service.store.nats_client import connect_nats
from starter.environment import EXIT_USAGE, run_starter, settings_from_environment

#: ce-type -> the protobuf class its body decodes as.
MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.DESCRIPTOR.full_name: cls
    for cls in (
        events_pb2.GoldenTicketIssued,
        events_pb2.GoldenTicketRedeemed,
        events_pb2.GoldenTicketVoided,
        events_pb2.GoldenTicketRevoked,
    )
}


@dataclass(frozen=True)
class Event:
    """One received event: routing headers plus the decoded body."""

    event_id: str
    event_type: str
    leaf_index: int
    ticket_id: str
    time: str
    message: Message

    def to_json(self) -> dict[str, Any]:
        """A JSON line (leaf 0 included: the body's leaf_index has explicit presence)."""
        return {
            "leaf_index": self.leaf_index,
            "event_id": self.event_id,
            "type": self.event_type,
            "ticket_id": self.ticket_id,
            "time": self.time,
            "body": MessageToDict(self.message, preserving_proto_field_name=True),
        }


def decode(headers: dict[str, str], data: bytes) -> Event:
    """Decode one message by its `ce-type` header; refuse a type this consumer does not know."""
    event_type = headers["ce-type"]
    cls = MESSAGE_TYPES.get(event_type)
    if cls is None:
        raise ValueError(f"unknown event type {event_type!r}")
    message = cls.FromString(data)
    return Event(
        event_id=headers["ce-id"],
        event_type=event_type,
        leaf_index=int(message.leaf_index),  # type: ignore[attr-defined]
        ticket_id=headers.get("ce-subject", ""),
        time=headers.get("ce-time", ""),
        message=message,
    )


class JsonlSink:
    """Events appended to a JSON-lines file; its last line says how far we got (the dedup key)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last_leaf = -1
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    self.last_leaf = max(self.last_leaf, int(json.loads(line)["leaf_index"]))

    def record(self, event: Event) -> None:
        """Append one event (one write: the event and its leaf index together), flushed to disk."""
        with self.path.open("a") as out:
            out.write(json.dumps(event.to_json()) + "\n")
            out.flush()
        self.last_leaf = event.leaf_index


def consumer_config(durable: str, subject: str, ack_wait_s: float) -> ConsumerConfig:
    """Durable, explicit acks, from the first event, one in flight (strict leaf order)."""
    return ConsumerConfig(
        durable_name=durable,
        filter_subject=subject,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait_s,
        max_ack_pending=1,
    )


def process_span(
    tracing: telemetry.Tracing | None, headers: dict[str, str], subject: str, durable: str
) -> AbstractContextManager[object]:
    """The span of handling one event, a child of the span its `traceparent` header names.

    Why: without it the consumer's work starts a trace of its own, cut off from the saga that
    wrote the event. Named and attributed per the OpenTelemetry messaging conventions (CONSUMER,
    `process <subject>`, linked to the message's creation context as they ask). Tracing off:
    nothing is extracted or created.
    """
    if tracing is None:
        return nullcontext()
    parent = propagate.extract(headers)
    creation = trace.get_current_span(parent).get_span_context()
    return tracing.tracer().start_as_current_span(
        f"process {subject}",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        links=[trace.Link(creation)] if creation.is_valid else None,
        attributes={
            "messaging.system": "nats",
            "messaging.operation.name": "process",
            "messaging.operation.type": "process",
            "messaging.destination.name": subject,
            "messaging.consumer.group.name": durable,
            "messaging.message.id": headers.get("ce-id", ""),
        },
    )


async def consume(
    js: JetStreamContext,
    settings: Settings,
    *,
    durable: str,
    sink: JsonlSink,
    max_events: int | None = None,
    idle_timeout_s: float | None = None,
    ack_wait_s: float = 30.0,
    on_event: Callable[[Event], None] | None = None,
) -> int:
    """Record events into the sink until max_events new ones, or until idle; returns how many.

    The order per message is: skip (ack) if the sink has its leaf, else record, then ack. A crash
    between record and ack redelivers an event the sink already has: it is acked and skipped.
    """
    subject = f"{settings.subject_prefix}.golden_ticket.>"
    sub = await js.pull_subscribe(
        subject,
        durable=durable,
        stream=settings.stream_name,
        config=consumer_config(durable, subject, ack_wait_s),
    )
    tracing = telemetry.active()
    handled = 0
    idle_since = asyncio.get_running_loop().time()
    try:
        while max_events is None or handled < max_events:
            try:
                batch = await sub.fetch(1, timeout=1.0)
            except nats.errors.TimeoutError:
                now = asyncio.get_running_loop().time()
                if idle_timeout_s is not None and now - idle_since >= idle_timeout_s:
                    break
                continue
            idle_since = asyncio.get_running_loop().time()
            for msg in batch:
                headers = dict(msg.headers or {})
                with process_span(tracing, headers, msg.subject, durable):
                    event = decode(headers, msg.data)
                    if event.leaf_index > sink.last_leaf:
                        sink.record(event)
                        if on_event is not None:
                            on_event(event)
                        handled += 1
                    await msg.ack_sync()
    finally:
        await sub.unsubscribe()
    return handled


async def main_async(args: argparse.Namespace) -> int:
    """Connect, consume, print each new event as a JSON line."""
    settings = settings_from_environment()
    if settings is None:
        return EXIT_USAGE
    telemetry.setup_tracing("golden-press-consumer-example")
    nc = await connect_nats(settings)
    try:
        sink = JsonlSink(Path(args.sink))
        count = await consume(
            nc.jetstream(),
            settings,
            durable=args.durable,
            sink=sink,
            max_events=args.max_events,
            idle_timeout_s=args.idle_timeout,
            on_event=lambda e: print(json.dumps(e.to_json()), flush=True),
        )
    finally:
        await nc.drain()
        telemetry.shutdown_tracing()  # flush the last spans: run_starter ends with os._exit
    print(f"{count} new event(s); last leaf {sink.last_leaf}", file=sys.stderr)
    return 0


def main() -> None:
    """`python -m starter.consume_events`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--durable", default="golden-press-example", help="consumer name")
    parser.add_argument("--sink", default="events.jsonl", help="JSON-lines file of events")
    parser.add_argument("--max-events", type=int, help="stop after this many new events")
    parser.add_argument("--idle-timeout", type=float, help="stop after this many idle seconds")
    run_starter(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
