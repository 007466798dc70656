"""NATS JetStream: the event stream and the outbox publisher (events leave in ledger leaf order).

The stream owns only `<prefix>.golden_ticket.>`: other services publish under the same
`choco.events.monetization` prefix into streams of their own. Every message carries the
CloudEvents binary-mode headers and `Nats-Msg-Id` (golden_press.cloudevents).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp
from nats.errors import MaxPayloadError
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    PersistMode,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, NotFoundError
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from golden_press.cloudevents import MESSAGE_FOR_KIND, event_headers
from golden_press.settings import Settings
from proto.events.monetization.v1 import golden_pb2 as events_pb2
from service.store.statements import Write

log = logging.getLogger("golden_press.outbox")

#: Deterministic event ids: a retried activity re-creates the same id, so JetStream dedups it.
EVENT_NAMESPACE = UUID("5b1f7e1c-3a57-4d1e-9f5c-601de0000001")
#: JetStream dedup window: far longer than any retry backoff of the publisher.
DUPLICATE_WINDOW_S = 86400.0

EVENT_TYPES = MESSAGE_FOR_KIND


class StreamSubjectsConflict(RuntimeError):
    """The stream also holds other producers' messages: narrowing it would orphan them."""


def stream_subject(settings: Settings) -> str:
    """The one subject space the stream owns: `<prefix>.golden_ticket.>`."""
    return f"{settings.subject_prefix}.golden_ticket.>"


def legacy_subject(settings: Settings) -> str:
    """What v0.1.0 claimed: the whole `<prefix>.>` space, other services' events included."""
    return f"{settings.subject_prefix}.>"


#: The outbox publish spans (a no-op tracer unless service.observability.tracing turned tracing on).
_tracer = trace.get_tracer("golden_press.outbox")


def current_traceparent() -> str | None:
    """The W3C traceparent of the active span (the saga step writing an event), if tracing."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None  # tracing off or no span: nothing to carry, nothing computed
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def event_id_for(ticket_id: UUID, kind: str) -> UUID:
    """One event per (ticket, kind), the same on every retry."""
    return uuid.uuid5(EVENT_NAMESPACE, f"{ticket_id}:{kind}")


def timestamp(value: datetime) -> Timestamp:
    """A protobuf Timestamp (microseconds kept: the ticket signature covers them)."""
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def stream_config(settings: Settings) -> StreamConfig:
    """Infinite retention, file storage, a day of Nats-Msg-Id dedup, GOLDEN_STREAM_REPLICAS;
    no event can be removed (deny delete and purge)."""
    return StreamConfig(
        name=settings.stream_name,
        subjects=[stream_subject(settings)],
        num_replicas=settings.stream_replicas or 1,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=0,
        max_msgs=-1,
        max_bytes=-1,
        discard=DiscardPolicy.OLD,
        duplicate_window=DUPLICATE_WINDOW_S,
        # The stream is the events' record forever: no message deletes, no purges.
        deny_delete=True,
        deny_purge=True,
    )


class StreamRefused(Exception):
    """An existing stream is configured to lose events; an operator must decide, not us."""


def dropping_limits(config: StreamConfig) -> list[str]:
    """The settings of a stream that would drop, lose or refuse our events, as `name=value`.

    Each setting a stream can have is refused here, updated by ensure_stream, or ignored:

    Refused (an operator must decide; most cannot be changed on a stream anyway):
    - retention other than limits: work-queue and interest streams remove acked messages.
    - max_msgs, max_bytes, max_age, max_msgs_per_subject: any positive limit removes old events.
    - max_msg_size, any positive value: a message over it is rejected for good (JetStream err
      10054, so the event is parked as a dead letter: dropped), and no fixed number bounds every
      event we may ever publish (caller-supplied fields are bounded at admission, but headers
      such as traceparent and future event fields add to them). NATS's own max_payload already
      bounds a message; a stream limit adds only a way to lose one.
    - sealed: refuses every publish (err 10109), for good.
    - storage=memory: every event is lost when the server restarts (storage is immutable).
    - persist_mode other than default (async, nats-server 2.12+): a publish is acked before it
      is written, so a server crash loses events the outbox has marked published (immutable).
    - mirror: a mirror has no subjects and refuses publishes.
    - subject_transform: our events would be stored under other subjects, outside what the
      audit and consumers read (`<prefix>.golden_ticket.>`).
    - allow_rollup_hdrs: any publisher's Nats-Rollup header purges a subject or the whole
      stream; it also needs the purge permission that we deny (err 10052).
    - allow_msg_schedules and subject_delete_marker_ttl: nats-server switches roll-ups on with
      them (same refusal), and neither can be switched off again.
    - allow_msg_counter: a counter stream refuses every message that is not an increment.

    Updated by ensure_stream (losing nobody's messages): no_ack (publishes are never acked, so
    the outbox could never mark an event published; a publisher without a reply subject gets no
    ack either way), a dedup window shorter than DUPLICATE_WINDOW_S (exactly-once rests on it),
    deny_delete and deny_purge (switched on, never off), the subjects, the replica count.

    Ignored, since none removes or refuses our events: discard (there are no limits to apply it
    to; discard_new_per_subject needs max_msgs_per_subject), allow_msg_ttl without delete
    markers (only a message published with a Nats-TTL header expires, and we never set one),
    sources (they add other streams' messages; ours are kept and publishes accepted),
    republish (copies), allow_atomic and allow_batched (only for publishers using batch
    headers), allow_direct, mirror_direct, compression, placement, first_seq, max_consumers,
    consumer_limits, metadata, description.
    """
    found = []
    if config.retention is not None and config.retention != RetentionPolicy.LIMITS:
        found.append(f"retention={_text(config.retention)}")
    for name in ("max_msgs", "max_bytes", "max_age", "max_msgs_per_subject", "max_msg_size"):
        value = getattr(config, name)
        if value is not None and value > 0:
            found.append(f"{name}={value:g}")
    if config.sealed:
        found.append("sealed=true")
    if config.storage == StorageType.MEMORY:
        found.append("storage=memory")
    if config.persist_mode is not None and config.persist_mode != PersistMode.DEFAULT:
        found.append(f"persist_mode={_text(config.persist_mode)}")
    if config.mirror is not None:
        found.append(f"mirror={config.mirror.name}")
    if config.subject_transform is not None:
        transform = config.subject_transform
        found.append(f"subject_transform={transform.src}->{transform.dest}")
    for flag in ("allow_rollup_hdrs", "allow_msg_schedules", "allow_msg_counter"):
        if getattr(config, flag):
            found.append(f"{flag}=true")
    if config.subject_delete_marker_ttl:
        found.append(f"subject_delete_marker_ttl={config.subject_delete_marker_ttl:g}")
    return found


def _text(value: object) -> str:
    """An enum setting as NATS spells it: stream_info returns plain strings, not our enums."""
    return str(getattr(value, "value", value))


async def ensure_stream(js: JetStreamContext, settings: Settings) -> None:
    """Create the stream, or adjust only what we rely on in an existing one.

    Safe from every process at every start. An existing stream whose settings would drop,
    lose or refuse events (a max age, message, byte or message-size limit, a non-limits
    retention, a seal, memory storage, async persistence, a mirror, a subject transform,
    roll-ups, a counter: dropping_limits) is refused with StreamRefused, not rewritten:
    changing another team's limits silently is as wrong as losing our events.
    Otherwise an operator's other settings (placement) are kept; only our subject, acks (no_ack
    off), a long enough dedup window, deny delete/purge (which can be switched on, never off)
    and, when GOLDEN_STREAM_REPLICAS is set, the replica count are enforced.

    A stream made by v0.1.0 claims the whole `<prefix>.>` space. It is narrowed in place to
    `<prefix>.golden_ticket.>` when every message it holds is ours (events stay where they are);
    when it also holds other subjects' messages, start-up stops with StreamSubjectsConflict
    rather than orphan another producer's events: an operator moves them, or points
    GOLDEN_STREAM at a new stream.
    """
    try:
        info = await js.stream_info(settings.stream_name)
    except NotFoundError:
        await js.add_stream(stream_config(settings))
        return
    current = info.config
    dropping = dropping_limits(current)
    if dropping:
        raise StreamRefused(
            f"stream {settings.stream_name} has {', '.join(dropping)}, which would drop or"
            " refuse events; golden-press needs infinite, durable retention of every publish"
            " (remove those settings or name another stream with GOLDEN_STREAM)"
        )
    ours, legacy = stream_subject(settings), legacy_subject(settings)
    subjects = list(current.subjects or [])
    changes: dict[str, Any] = {}
    if legacy in subjects:
        await _refuse_foreign_messages(js, settings)
        subjects = [s for s in subjects if s != legacy]
    if ours not in subjects:
        subjects.append(ours)
    if subjects != list(current.subjects or []):
        changes["subjects"] = subjects
    if current.no_ack:
        changes["no_ack"] = False  # else no publish is ever acked and the outbox waits for ever
    if (current.duplicate_window or 0) < DUPLICATE_WINDOW_S:
        changes["duplicate_window"] = DUPLICATE_WINDOW_S
    if not current.deny_delete:
        changes["deny_delete"] = True
    if not current.deny_purge:
        changes["deny_purge"] = True
    if settings.stream_replicas and current.num_replicas != settings.stream_replicas:
        changes["num_replicas"] = settings.stream_replicas
    if changes:
        await js.update_stream(dataclasses.replace(current, **changes))


async def _refuse_foreign_messages(js: JetStreamContext, settings: Settings) -> None:
    """Raise StreamSubjectsConflict when the legacy stream holds messages outside our subjects."""
    info = await js.stream_info(settings.stream_name, subjects_filter=legacy_subject(settings))
    prefix = f"{settings.subject_prefix}.golden_ticket."
    foreign = {s: n for s, n in (info.state.subjects or {}).items() if not s.startswith(prefix)}
    if foreign:
        examples = ", ".join(sorted(foreign)[:3])
        raise StreamSubjectsConflict(
            f"stream {settings.stream_name} claims {legacy_subject(settings)} and holds "
            f"{sum(foreign.values())} message(s) of other producers ({examples}); golden-press "
            f"now owns only {stream_subject(settings)}: move those subjects to their own stream "
            "(nats stream edit) or set GOLDEN_STREAM to a new stream"
        )


def outbox_write(*, leaf_index: int, ticket_id: UUID, kind: str, event: Message) -> Write:
    """The outbox row of an event, to be written in the transaction of its ledger entry; sets
    the event's id."""
    event_id = event_id_for(ticket_id, kind)
    event.event_id = str(event_id)  # type: ignore[attr-defined]
    # The saga's trace context travels with the event: whoever publishes it later (this saga's
    # publish step or the reconciler's drain) continues the saga's trace.
    return Write(
        "INSERT INTO event_outbox (leaf_index, event_id, kind, ticket_id, payload, traceparent)"
        " VALUES ($1::bigint, $2::uuid, $3::text, $4::uuid, $5::bytea, $6::text)"
        " ON CONFLICT (leaf_index) DO NOTHING",
        (leaf_index, event_id, kind, ticket_id, event.SerializeToString(), current_traceparent()),
    )


def event_time(kind: str, payload: bytes, recorded_at: datetime) -> datetime:
    """When the event happened: the body's own `<kind>_at` (ce-time matches the body)."""
    message = getattr(events_pb2, MESSAGE_FOR_KIND[kind]).FromString(payload)
    field = f"{kind}_at"
    if message.HasField(field):
        return getattr(message, field).ToDatetime(tzinfo=UTC)
    return recorded_at


def permanent(err: Exception) -> bool:
    """Whether this event can never be published (retrying it would stall every later event):
    NATS refuses it for good, or its stored body does not even parse."""
    if isinstance(err, MaxPayloadError | DecodeError):
        return True
    # JetStream: 10054 message size exceeds the stream's maximum.
    return isinstance(err, APIError) and err.err_code in PERMANENT_API_ERRORS


PERMANENT_API_ERRORS = frozenset({10054})
#: Well inside a step's start_to_close timeout, so an outage fails as NATS's own "nats: timeout".
PUBLISH_TIMEOUT_S = 2.0
#: At most this much of an error is stored with a dead letter.
MAX_ERROR_CHARS = 500


@dataclasses.dataclass
class Drained:
    """What one drain did: events put on the stream, and leaves parked as dead letters."""

    sent: int = 0
    parked: list[int] = dataclasses.field(default_factory=list)


class OutboxPublisher:
    """Drains the outbox to JetStream in leaf order, holding no lock or transaction meanwhile.

    Order without a lock: a drain reads the pending rows, then publishes them in leaf order and
    marks each after its ack. Every row it did not read was acked before it looked, so whatever
    it publishes follows everything earlier; concurrent drains repeat each other's messages
    under the same Nats-Msg-Id, which JetStream drops (DUPLICATE_WINDOW_S). So a NATS outage
    holds nothing in PostgreSQL, and the step's error is NATS's own ("nats: timeout").

    A row NATS refuses for good (permanent()) is parked as a dead letter (dead_lettered_at,
    last_error), skipped by every later drain and reported by the audit, so one poison event
    cannot stall the events behind it.
    """

    def __init__(self, pool: asyncpg.Pool, js: JetStreamContext, settings: Settings) -> None:
        self._pool = pool
        self._js = js
        self._settings = settings

    def subject(self, kind: str) -> str:
        """Subject of an event kind under the configured prefix."""
        return f"{self._settings.subject_prefix}.golden_ticket.{kind}"

    async def _publish(self, row: asyncpg.Record, subject: str, headers: dict[str, str]) -> Any:
        """One JetStream publish; inside the event's saga trace when it was written in one.

        The producer span is a child of the context stored with the event and its own context
        goes out in the `traceparent` header, so a consumer's span joins the same trace.
        """
        payload = bytes(row["payload"])
        stream = self._settings.stream_name
        stored = row["traceparent"]
        if not stored:
            return await self._js.publish(
                subject, payload, stream=stream, headers=headers, timeout=PUBLISH_TIMEOUT_S
            )
        parent = propagate.extract({"traceparent": stored})
        with _tracer.start_as_current_span(
            f"publish {subject}",  # OTel messaging spans: "{operation} {destination}"
            context=parent,
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.name": "publish",
                "messaging.operation.type": "publish",
                "messaging.destination.name": subject,
                "messaging.message.id": str(row["event_id"]),
            },
        ):
            propagate.inject(headers)
            return await self._js.publish(
                subject, payload, stream=stream, headers=headers, timeout=PUBLISH_TIMEOUT_S
            )

    async def drain(self, up_to_leaf: int | None = None) -> Drained:
        """Publish every pending event (up to a leaf) in leaf order; park permanent failures."""
        done = Drained()
        rows = await self._pool.fetch(
            "SELECT leaf_index, event_id, kind, ticket_id, payload, created_at, traceparent"
            " FROM event_outbox"
            " WHERE published_at IS NULL AND dead_lettered_at IS NULL"
            " AND ($1::bigint IS NULL OR leaf_index <= $1) ORDER BY leaf_index",
            up_to_leaf,
        )
        for row in rows:
            payload = bytes(row["payload"])
            try:
                ack = await self._publish(
                    row,
                    self.subject(row["kind"]),
                    event_headers(
                        event_id=row["event_id"],
                        kind=row["kind"],
                        leaf_index=row["leaf_index"],
                        source=self._settings.ledger_origin,
                        time=event_time(row["kind"], payload, row["created_at"]),
                        ticket_id=row["ticket_id"],
                    ),
                )
            except Exception as err:
                if not permanent(err):
                    raise
                await self._park(row["leaf_index"], err)
                done.parked.append(row["leaf_index"])
                continue
            await self._pool.execute(
                "UPDATE event_outbox SET published_at = now(), stream_seq = $2"
                " WHERE leaf_index = $1 AND published_at IS NULL",
                row["leaf_index"],
                ack.seq,
            )
            done.sent += 1
        return done

    async def _park(self, leaf_index: int, err: Exception) -> None:
        """Set a poison row aside: it stays in the outbox, visible, but blocks nothing."""
        why = f"{type(err).__name__}: {err}"[:MAX_ERROR_CHARS]
        await self._pool.execute(
            "UPDATE event_outbox SET dead_lettered_at = now(), last_error = $2"
            " WHERE leaf_index = $1 AND published_at IS NULL",
            leaf_index,
            why,
        )
        log.error("event of leaf %s parked as a dead letter: %s", leaf_index, why)


async def outbox_states(db: asyncpg.Pool | asyncpg.Connection) -> list[asyncpg.Record]:
    """Where every outbox event stands, by leaf (leaf_index, event_id, kind, ticket_id,
    published_at, dead_lettered_at, last_error; not the payload)."""
    return list(
        await db.fetch(
            "SELECT leaf_index, event_id, kind, ticket_id, published_at, dead_lettered_at,"
            " last_error FROM event_outbox ORDER BY leaf_index"
        )
    )


__all__ = [
    "EVENT_TYPES",
    "Drained",
    "OutboxPublisher",
    "StreamRefused",
    "StreamSubjectsConflict",
    "ensure_stream",
    "event_id_for",
    "events_pb2",
    "outbox_states",
    "stream_subject",
]
