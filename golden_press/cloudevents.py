"""NATS headers of a published event: CloudEvents 1.0 binary content mode plus Nats-Msg-Id (pure).

A consumer can route and deduplicate on headers alone, without decoding the protobuf body:
`ce-type` and `Content-Type` name the protobuf message, `ce-id` is the event id (also the
`Nats-Msg-Id` JetStream deduplicates on), `ce-source` the ledger origin, `ce-time` when it happened
and `ce-subject` the ticket. The CloudEvents NATS binding puts the `datacontenttype` attribute in
`Content-Type` and every other attribute in a `ce-` header.
"""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

#: Protobuf package of the events (proto/events/monetization/v1/golden.proto).
EVENTS_PACKAGE = "events.monetization.v1"
#: Event kind (ledger entry kind, subject suffix) -> protobuf message name.
MESSAGE_FOR_KIND = {
    "issued": "GoldenTicketIssued",
    "redeemed": "GoldenTicketRedeemed",
    "voided": "GoldenTicketVoided",
    "revoked": "GoldenTicketRevoked",
}
SPEC_VERSION = "1.0"


def event_type(kind: str) -> str:
    """The fully qualified protobuf message name of an event kind: the `ce-type`."""
    return f"{EVENTS_PACKAGE}.{MESSAGE_FOR_KIND[kind]}"


def content_type(kind: str) -> str:
    """Media type of the body: protobuf, with the message it decodes as."""
    return f"application/protobuf; messageType={event_type(kind)}"


def rfc3339(moment: datetime) -> str:
    """UTC RFC 3339 with microseconds and `Z` (what `ce-time` carries)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def event_headers(
    *,
    event_id: UUID,
    kind: str,
    leaf_index: int,
    source: str,
    time: datetime,
    ticket_id: UUID,
) -> dict[str, str]:
    """Every header of one event message (the same on every retry of its publish)."""
    return {
        "Nats-Msg-Id": str(event_id),
        "Content-Type": content_type(kind),
        "ce-specversion": SPEC_VERSION,
        "ce-id": str(event_id),
        "ce-type": event_type(kind),
        "ce-source": source,
        "ce-time": rfc3339(time),
        "ce-subject": str(ticket_id),
        # Kept from the first release for consumers that already route on them.
        "Golden-Event-Type": MESSAGE_FOR_KIND[kind],
        "Golden-Leaf-Index": str(leaf_index),
    }


__all__ = ["MESSAGE_FOR_KIND", "content_type", "event_headers", "event_type", "rfc3339"]
