"""Event headers: CloudEvents binary mode plus Nats-Msg-Id, routable without decoding the body."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from golden_press.cloudevents import MESSAGE_FOR_KIND, event_headers, event_type
from proto.events.monetization.v1 import golden_pb2 as events_pb2


def test_headers_of_an_issued_event() -> None:
    event_id, ticket_id = uuid.uuid4(), uuid.uuid4()
    at = datetime(2026, 12, 3, 7, 1, 2, 345678, tzinfo=timezone(timedelta(hours=2)))
    headers = event_headers(
        event_id=event_id,
        kind="issued",
        leaf_index=0,
        source="golden-press.local/ledger",
        time=at,
        ticket_id=ticket_id,
    )
    assert headers["Nats-Msg-Id"] == headers["ce-id"] == str(event_id)
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-type"] == "events.monetization.v1.GoldenTicketIssued"
    assert headers["Content-Type"] == (
        "application/protobuf; messageType=events.monetization.v1.GoldenTicketIssued"
    )
    assert headers["ce-source"] == "golden-press.local/ledger"
    assert headers["ce-time"] == "2026-12-03T05:01:02.345678Z"
    assert headers["ce-subject"] == str(ticket_id)
    assert headers["Golden-Leaf-Index"] == "0"
    assert all(isinstance(v, str) and v for v in headers.values())


def test_every_kind_names_a_message_of_the_events_proto() -> None:
    names = {m.full_name for m in events_pb2.DESCRIPTOR.message_types_by_name.values()}
    assert {event_type(kind) for kind in MESSAGE_FOR_KIND} == names
