"""Poison events: outbox rows NATS refuses for good, so the publish step parks them."""

from __future__ import annotations

from tests.helpers.stack import Stack


async def poison_events(stack: Stack, kind: str) -> None:
    """From now on every `kind` event written to the outbox is bigger than NATS ever accepts.

    Simulates an event written before bundles were bounded: a valid protobuf (an unknown
    length-delimited field 1000 carries the padding), so only its size is wrong.
    """
    size = stack.nc.max_payload + 1024
    varint = bytearray()
    rest = size
    while rest >= 0x80:
        varint.append(rest & 0x7F | 0x80)
        rest >>= 7
    varint.append(rest)
    padding = bytes([0xC2, 0x3E]) + bytes(varint) + b"\x00" * size
    await stack.pool.execute("CREATE TABLE poison_padding (b bytea)")
    await stack.pool.execute("INSERT INTO poison_padding VALUES ($1)", padding)
    await stack.pool.execute(
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " NEW.payload := NEW.payload || (SELECT b FROM poison_padding); RETURN NEW;"
        " END $$;"
        " CREATE TRIGGER poison BEFORE INSERT ON event_outbox FOR EACH ROW"
        f" WHEN (NEW.kind = '{kind}') EXECUTE FUNCTION poison()"
    )
