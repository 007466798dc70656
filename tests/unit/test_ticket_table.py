"""The monitor's ticket table: compact, exact under hash collisions, safe with hostile serials."""

from __future__ import annotations

import uuid

import pytest

from golden_press import ticket_table
from golden_press.ledger_entry import EntryKind
from golden_press.monitor import SupplyState, Violation
from golden_press.ticket_table import (
    ISSUED,
    REDEEMED,
    VOIDED,
    HashSet,
    SerialMismatch,
    TicketTable,
    ticket_key,
)
from tests.helpers.memlog import ticket_entry


def key() -> bytes:
    return uuid.uuid4().bytes


def claim(table: TicketTable, serial: int, k: bytes, state: int) -> None:
    """As the monitor does: state_of says the ticket is new, then claim records it."""
    assert table.state_of(serial, k) == 0
    table.claim(serial, k, state)


def test_ticket_key_is_the_uuid_bytes() -> None:
    tid = uuid.uuid4()
    assert ticket_key(str(tid)) == tid.bytes


def test_serials_and_ids_round_trip_and_the_top_issued_follows_redemptions() -> None:
    table = TicketTable()
    keys = [key() for _ in range(6)]
    for serial, k in enumerate(keys, start=1):
        claim(table, serial, k, ISSUED)
    assert [table.at(s) for s in (1, 6, 7)] == [(keys[0], ISSUED), (keys[5], ISSUED), (b"", 0)]
    assert [table.serial_of(k) for k in keys] == [1, 2, 3, 4, 5, 6]
    assert table.serial_of(key()) is None
    assert table.top_issued() == 6
    table.set_state(6, REDEEMED)
    table.set_state(5, REDEEMED)
    assert table.top_issued() == 4
    claim(table, 9, key(), VOIDED)
    assert table.top_issued() == 4 and len(table) == 7


def test_a_hostile_serial_does_not_grow_the_arrays() -> None:
    table = TicketTable()
    far, near = key(), key()
    claim(table, 10**15, far, ISSUED)  # an array this long would need petabytes
    claim(table, 1, near, ISSUED)
    assert table.at(10**15) == (far, ISSUED) and table.serial_of(far) == 10**15
    assert table.top_issued() == 10**15
    table.set_state(10**15, REDEEMED)
    assert table.top_issued() == 1


def test_far_tickets_move_into_the_arrays_when_they_grow() -> None:
    table = TicketTable()
    far = key()
    claim(table, 9000, far, ISSUED)  # beyond 2 * 1 + 4096: kept aside
    for serial in range(1, 5000):
        claim(table, serial, key(), VOIDED)
    assert table.at(9000) == (far, ISSUED) and table.serial_of(far) == 9000
    assert table.top_issued() == 9000
    table.set_state(9000, REDEEMED)
    assert table.top_issued() == 0


def test_hash_collisions_cost_a_search_never_a_wrong_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ticket_table, "_HASH_MASK", 0)  # every id hashes to 1: all collide
    table = TicketTable()
    keys = [key() for _ in range(50)]
    for serial, k in enumerate(keys, start=1):
        assert table.serial_of(k) is None
        claim(table, serial, k, ISSUED)
    assert [table.serial_of(k) for k in keys] == list(range(1, 51))
    with pytest.raises(SerialMismatch, match="issued as 7"):
        table.state_of(99, keys[6])
    assert table.state_of(7, keys[6]) == ISSUED and table.state_of(8, key()) == -ISSUED


def test_hash_set_grows_and_keeps_everything() -> None:
    hashes = HashSet(capacity=8)
    values = [(uuid.uuid4().int & ((1 << 64) - 1)) | 1 for _ in range(5000)]
    for v in values:
        hashes.add(v)
        hashes.add(v)
    assert len(hashes) == 5000 and all(v in hashes for v in values)
    assert 12345678 * 2 not in hashes


def test_a_voided_serial_is_never_issued_to_another_ticket() -> None:
    """Serials are never reused, a void's included (interfaces: gaps after voids)."""
    supply = SupplyState()
    supply.apply(0, ticket_entry(EntryKind.VOIDED, uuid.uuid4(), 1))
    with pytest.raises(Violation, match="serial 1 already used by voided ticket"):
        supply.apply(1, ticket_entry(EntryKind.ISSUED, uuid.uuid4(), 1))


def test_supply_replay_with_a_hostile_serial_stays_exact() -> None:
    supply = SupplyState()
    tids = [uuid.uuid4() for _ in range(6)]
    for leaf, (tid, serial) in enumerate(zip(tids[:5], (1, 2, 3, 4, 10**15), strict=True)):
        supply.apply(leaf, ticket_entry(EntryKind.ISSUED, tid, serial))
    with pytest.raises(Violation, match="6 tickets count under scope live"):
        supply.apply(5, ticket_entry(EntryKind.ISSUED, tids[5], 5))
