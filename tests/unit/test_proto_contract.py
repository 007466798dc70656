"""The protobuf contract as consumers see it: presence of leaf 0, comments on every element."""

from __future__ import annotations

from google.protobuf.json_format import MessageToDict

from proto.events.monetization.v1 import golden_pb2 as events_pb2

EVENT_TYPES = (
    events_pb2.GoldenTicketIssued,
    events_pb2.GoldenTicketRedeemed,
    events_pb2.GoldenTicketVoided,
    events_pb2.GoldenTicketRevoked,
)


def test_leaf_zero_is_present_in_every_event_json() -> None:
    """The first ledger entry is leaf 0: a JSON rendering must still show it (explicit presence)."""
    for cls in EVENT_TYPES:
        event = cls(event_id="e", leaf_index=0)
        rendered = MessageToDict(event)
        assert rendered.get("leafIndex") == "0", (cls.__name__, rendered)
        assert event.HasField("leaf_index")
        decoded = cls.FromString(event.SerializeToString())
        assert decoded.HasField("leaf_index") and decoded.leaf_index == 0
