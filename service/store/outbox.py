"""NATS JetStream: the event stream and the outbox publisher (events leave in ledger leaf order)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from golden_press.settings import Settings
from proto.events.monetization.v1 import golden_pb2 as events_pb2
from service.store.db import PUBLISH_KEY

#: Deterministic event ids: a retried activity re-creates the same id, so JetStream dedups it.
EVENT_NAMESPACE = UUID("5b1f7e1c-3a57-4d1e-9f5c-601de0000001")
#: JetStream dedup window: far longer than any retry backoff of the publisher.
DUPLICATE_WINDOW_S = 86400.0

EVENT_TYPES = {
    "issued": "GoldenTicketIssued",
    "redeemed": "GoldenTicketRedeemed",
    "voided": "GoldenTicketVoided",
    "revoked": "GoldenTicketRevoked",
}


def event_id_for(ticket_id: UUID, kind: str) -> UUID:
    """One event per (ticket, kind), the same on every retry."""
    return uuid.uuid5(EVENT_NAMESPACE, f"{ticket_id}:{kind}")


def timestamp(value: datetime) -> Timestamp:
    """A protobuf Timestamp (microseconds kept: the ticket signature covers them)."""
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def stream_config(settings: Settings) -> StreamConfig:
    """Infinite retention, file storage, a day of Nats-Msg-Id dedup, GOLDEN_STREAM_REPLICAS."""
    return StreamConfig(
        name=settings.stream_name,
        subjects=[f"{settings.subject_prefix}.>"],
        num_replicas=settings.stream_replicas or 1,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=0,
        max_msgs=-1,
        max_bytes=-1,
        discard=DiscardPolicy.OLD,
        duplicate_window=DUPLICATE_WINDOW_S,
    )


async def ensure_stream(js: JetStreamContext, settings: Settings) -> None:
    """Create the stream, or adjust only what we rely on in an existing one.

    Safe from every process at every start: an operator's other settings (placement, limits set
    for other producers) are kept; only our subjects, no max age, a long enough dedup window and,
    when GOLDEN_STREAM_REPLICAS is set, the replica count are enforced.
    """
    try:
        info = await js.stream_info(settings.stream_name)
    except NotFoundError:
        await js.add_stream(stream_config(settings))
        return
    current = info.config
    subject = f"{settings.subject_prefix}.>"
    changes: dict[str, Any] = {}
    if subject not in (current.subjects or []):
        changes["subjects"] = [*(current.subjects or []), subject]
    if (current.duplicate_window or 0) < DUPLICATE_WINDOW_S:
        changes["duplicate_window"] = DUPLICATE_WINDOW_S
    if current.max_age:
        changes["max_age"] = 0
    if settings.stream_replicas and current.num_replicas != settings.stream_replicas:
        changes["num_replicas"] = settings.stream_replicas
    if changes:
        await js.update_stream(dataclasses.replace(current, **changes))


async def write_outbox(
    conn: asyncpg.Connection, *, leaf_index: int, ticket_id: UUID, kind: str, event: Message
) -> None:
    """Record an event in the caller's transaction (the one that appended its ledger entry)."""
    event_id = event_id_for(ticket_id, kind)
    event.event_id = str(event_id)  # type: ignore[attr-defined]
    await conn.execute(
        "INSERT INTO event_outbox (leaf_index, event_id, kind, ticket_id, payload)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (leaf_index) DO NOTHING",
        leaf_index,
        event_id,
        kind,
        ticket_id,
        event.SerializeToString(),
    )


class OutboxPublisher:
    """Drains the outbox to JetStream in leaf order; one drainer at a time via an advisory lock."""

    def __init__(self, pool: asyncpg.Pool, js: JetStreamContext, settings: Settings) -> None:
        self._pool = pool
        self._js = js
        self._settings = settings

    def subject(self, kind: str) -> str:
        """Subject of an event kind under the configured prefix."""
        return f"{self._settings.subject_prefix}.golden_ticket.{kind}"

    async def drain(self, up_to_leaf: int | None = None) -> int:
        """Publish every pending event (up to a leaf); returns how many were sent."""
        sent = 0
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", PUBLISH_KEY)
            rows = await conn.fetch(
                "SELECT leaf_index, event_id, kind, payload FROM event_outbox"
                " WHERE published_at IS NULL AND ($1::bigint IS NULL OR leaf_index <= $1)"
                " ORDER BY leaf_index",
                up_to_leaf,
            )
            for row in rows:
                ack = await self._js.publish(
                    self.subject(row["kind"]),
                    bytes(row["payload"]),
                    stream=self._settings.stream_name,
                    headers={
                        "Nats-Msg-Id": str(row["event_id"]),
                        "Golden-Event-Type": EVENT_TYPES[row["kind"]],
                        "Golden-Leaf-Index": str(row["leaf_index"]),
                    },
                )
                await conn.execute(
                    "UPDATE event_outbox SET published_at = now(), stream_seq = $2"
                    " WHERE leaf_index = $1",
                    row["leaf_index"],
                    ack.seq,
                )
                sent += 1
        return sent


__all__ = ["EVENT_TYPES", "OutboxPublisher", "ensure_stream", "event_id_for", "events_pb2"]
