"""Monitor checks on in-memory logs: clean logs pass; each kind of tampering is named."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from nacl.signing import SigningKey

from golden_press.checkpoint import Checkpoint, NoteVerifier, sign_checkpoint, sign_note
from golden_press.ledger_entry import (
    CapEntry,
    EntryKind,
    LedgerEntry,
    encode_cap_entry,
    encode_entry,
)
from golden_press.models import CapScope
from golden_press.monitor import Monitor, MonitorState, SupplyState, Violation, ViolationKind
from golden_press.tiles import Tile, TreeBuilder, encode_bundle, encode_tile

ORIGIN = "test.example/ledger"
AT = datetime(2026, 1, 1, tzinfo=UTC)
KEY = SigningKey(b"\x07" * 32)
VERIFIER = NoteVerifier(ORIGIN, bytes(KEY.verify_key))


def ticket_entry(kind: EntryKind, tid: uuid.UUID, serial: int) -> bytes:
    """The v1 bytes of a ticket event."""
    return encode_entry(
        LedgerEntry(
            kind=kind,
            ticket_id=tid,
            serial=serial,
            key_id="ab" if kind is EntryKind.ISSUED else "",
            signature_digest="0" * 64 if kind is EntryKind.ISSUED else "",
            user_commitment="1" * 64,
            at=AT,
            reason="" if kind is EntryKind.ISSUED else "why",
        )
    )


def cap_entry(cap: int, scope: CapScope, serial: int) -> bytes:
    """The v2 bytes of a cap change."""
    return encode_cap_entry(CapEntry(cap=cap, scope=scope, serial=serial, at=AT))


class MemLog:
    """A log in memory, published the tlog-tiles way (paths -> bytes) with a signed checkpoint."""

    def __init__(self, entries: list[bytes], key: SigningKey = KEY) -> None:
        self.entries = entries
        self.files: dict[str, bytes] = {}
        builder = TreeBuilder()
        for e in entries:
            for tile, hashes in builder.add_entry(e):
                self._put(tile, hashes)
        for tile, hashes in builder.partial_tiles():
            self._put(tile, hashes)
        self.root = builder.root()
        self.note = sign_checkpoint(
            Checkpoint(origin=ORIGIN, size=len(entries), root=self.root), key, ORIGIN
        )

    def _put(self, tile: Tile, hashes: list[bytes]) -> None:
        self.files[tile.path] = encode_tile(hashes)
        if tile.level == 0:
            start = tile.index << 8
            self.files[tile.bundle().path] = encode_bundle(self.entries[start : start + tile.width])

    def checkpoint(self) -> str:
        return self.note

    def read(self, tile: Tile) -> bytes | None:
        return self.files.get(tile.path)

    def flip(self, path: str, offset: int = 40) -> None:
        data = bytearray(self.files[path])
        data[offset] ^= 0x01
        self.files[path] = bytes(data)


def issued(n: int) -> list[tuple[uuid.UUID, bytes]]:
    """n freshly issued tickets with serials 1..n."""
    out = []
    for serial in range(1, n + 1):
        tid = uuid.uuid4()
        out.append((tid, ticket_entry(EntryKind.ISSUED, tid, serial)))
    return out


def run(log: MemLog, state: MonitorState | None = None) -> MonitorState:
    return Monitor(log, [VERIFIER], ORIGIN, state).check()


def violation(log: MemLog, state: MonitorState | None = None) -> Violation:
    with pytest.raises(Violation) as info:
        run(log, state)
    return info.value


def full_lifecycle() -> list[bytes]:
    """issue 5, redeem one, revoke one, void a reservation, raise the cap, issue 2 more."""
    five = issued(5)
    entries = [e for _, e in five]
    entries.append(ticket_entry(EntryKind.REDEEMED, five[0][0], 1))
    entries.append(ticket_entry(EntryKind.REVOKED, five[1][0], 2))
    entries.append(ticket_entry(EntryKind.VOIDED, uuid.uuid4(), 6))
    entries.append(cap_entry(6, CapScope.LIVE, 6))
    entries += [ticket_entry(EntryKind.ISSUED, uuid.uuid4(), s) for s in (7, 8, 9)]
    return entries


# ---- a clean log ---------------------------------------------------------------------------------


def test_clean_log_passes_and_state_remembers_the_checkpoint() -> None:
    log = MemLog(full_lifecycle())
    state = run(log)
    assert (state.size, state.root, state.note) == (len(log.entries), log.root, log.note)


def test_empty_log_passes() -> None:
    assert run(MemLog([])).size == 0


def test_log_over_two_tile_levels_passes_with_two_fetches_per_tile() -> None:
    entries = [ticket_entry(EntryKind.VOIDED, uuid.uuid4(), s) for s in range(1, 601)]
    monitor = Monitor(MemLog(entries), [VERIFIER], ORIGIN)
    assert monitor.check().size == 600
    # Bundle and level-0 tile for 000, 001 and 002.p/88, then the level-1 tile 000.p/2.
    assert monitor.progress.fetches == 2 * 3 + 1


def test_unknown_cosignatures_are_ignored() -> None:
    log = MemLog(full_lifecycle())
    witness = SigningKey(b"\x09" * 32)
    text = log.note[: log.note.index("\n\n") + 1]
    cosigned = sign_note(text, witness, "witness.example")
    log.note = log.note + cosigned[len(text) + 1 :]
    assert log.note.count("\u2014") == 2
    assert run(log).size == len(log.entries)


def test_follow_verifies_only_new_entries_and_catches_a_rewrite() -> None:
    entries = [ticket_entry(EntryKind.VOIDED, uuid.uuid4(), s) for s in range(1, 301)]
    monitor = Monitor(MemLog(entries[:290]), [VERIFIER], ORIGIN)
    monitor.check()
    monitor.source = MemLog(entries)
    assert monitor.check().size == 300
    assert monitor.progress.entries == 300
    rewritten = [*entries, ticket_entry(EntryKind.VOIDED, uuid.uuid4(), 999)]
    rewritten[295] = ticket_entry(EntryKind.VOIDED, uuid.uuid4(), 998)
    monitor.source = MemLog(rewritten)
    with pytest.raises(Violation) as info:
        monitor.check()
    assert (info.value.kind, info.value.leaf) == (ViolationKind.FORK, 295)


# ---- tampered copies -----------------------------------------------------------------------------


def test_flipped_byte_in_a_level0_tile() -> None:
    log = MemLog(full_lifecycle())
    log.flip("tile/0/000.p/12", offset=70)  # inside hash 2
    found = violation(log)
    assert (found.kind, found.leaf) == (ViolationKind.TAMPERED_TILE, 2)


def test_flipped_byte_in_an_entry() -> None:
    log = MemLog(full_lifecycle())
    log.flip("tile/entries/000.p/12", offset=50)
    found = violation(log)
    assert found.kind is ViolationKind.TAMPERED_BUNDLE  # the tiles still give the signed root
    assert "tile/entries/000.p/12" in found.message


def test_flipped_byte_in_a_full_tile_and_in_a_full_bundle() -> None:
    entries = [ticket_entry(EntryKind.VOIDED, uuid.uuid4(), s) for s in range(1, 300)]
    log = MemLog(entries)
    log.flip("tile/0/000", offset=32 * 7)
    assert violation(log).kind is ViolationKind.TAMPERED_TILE
    log = MemLog(entries)
    log.flip("tile/entries/000", offset=100)
    assert violation(log).kind is ViolationKind.TAMPERED_BUNDLE


def test_flipped_length_in_an_entry_bundle() -> None:
    log = MemLog(full_lifecycle())
    log.flip("tile/entries/000.p/12", offset=0)
    assert violation(log).kind is ViolationKind.TAMPERED_BUNDLE


def test_flipped_byte_in_a_level1_tile() -> None:
    log = MemLog([ticket_entry(EntryKind.VOIDED, uuid.uuid4(), s) for s in range(1, 600)])
    log.flip("tile/1/000.p/2", offset=33)
    found = violation(log)
    assert (found.kind, found.leaf) == (ViolationKind.TAMPERED_TILE, 256)


def test_missing_tile_is_unreadable() -> None:
    log = MemLog(full_lifecycle())
    del log.files["tile/entries/000.p/12"]
    assert violation(log).kind is ViolationKind.UNREADABLE


def test_forged_checkpoint_other_key() -> None:
    log = MemLog(full_lifecycle(), key=SigningKey(b"\x08" * 32))
    assert violation(log).kind is ViolationKind.BAD_CHECKPOINT


def test_forged_checkpoint_root_changed_after_signing() -> None:
    log = MemLog(full_lifecycle())
    lines = log.note.split("\n")
    lines[2] = "A" * 43 + "="
    log.note = "\n".join(lines)
    assert violation(log).kind is ViolationKind.BAD_CHECKPOINT


def test_signed_checkpoint_whose_root_the_tiles_do_not_give() -> None:
    log = MemLog(full_lifecycle())
    other = MemLog(full_lifecycle())
    log.note = other.note  # validly signed, same size, another tree
    assert violation(log).kind is ViolationKind.ROOT_MISMATCH


# ---- forks against the state file ----------------------------------------------------------------


def test_fork_same_size_other_root() -> None:
    old = run(MemLog(full_lifecycle()))
    assert violation(MemLog(full_lifecycle()), old).kind is ViolationKind.FORK


def test_fork_older_prefix_rewritten() -> None:
    entries = full_lifecycle()
    old = run(MemLog(entries[:6]))
    entries[3] = ticket_entry(EntryKind.ISSUED, uuid.uuid4(), 4)
    found = violation(MemLog(entries), old)
    assert (found.kind, found.leaf) == (ViolationKind.FORK, 5)


def test_rollback_to_a_smaller_tree() -> None:
    entries = full_lifecycle()
    old = run(MemLog(entries))
    assert violation(MemLog(entries[:-1]), old).kind is ViolationKind.ROLLBACK


def test_growth_consistent_with_the_state_passes() -> None:
    entries = full_lifecycle()
    old = run(MemLog(entries[:6]))
    assert run(MemLog(entries), old).size == len(entries)


# ---- entries, lifecycle, supply ------------------------------------------------------------------


def test_undecodable_entry_with_matching_hashes() -> None:
    found = violation(MemLog([b"not an entry\n"]))
    assert (found.kind, found.leaf) == (ViolationKind.BAD_ENTRY, 0)


def test_sixth_live_ticket_is_over_cap() -> None:
    found = violation(MemLog([e for _, e in issued(6)]))
    assert (found.kind, found.leaf) == (ViolationKind.OVER_CAP, 5)
    assert "6 tickets count under scope live" in found.message


def _apply_all(entries: list[bytes]) -> SupplyState:
    supply = SupplyState()
    for i, e in enumerate(entries):
        supply.apply(i, e)
    return supply


def _illegal(entries: list[bytes]) -> Violation:
    with pytest.raises(Violation) as info:
        _apply_all(entries)
    assert info.value.kind in (ViolationKind.ILLEGAL_LIFECYCLE, ViolationKind.OVER_CAP)
    return info.value


def test_redeemed_ticket_frees_a_live_slot() -> None:
    five = issued(5)
    entries = [e for _, e in five]
    entries.append(ticket_entry(EntryKind.REDEEMED, five[2][0], 3))
    entries.append(ticket_entry(EntryKind.ISSUED, uuid.uuid4(), 6))
    assert _apply_all(entries).live == 5


def test_lifetime_scope_never_frees_a_slot() -> None:
    five = issued(5)
    entries = [cap_entry(5, CapScope.LIFETIME, 0), *(e for _, e in five)]
    entries.append(ticket_entry(EntryKind.REDEEMED, five[2][0], 3))
    entries.append(ticket_entry(EntryKind.ISSUED, uuid.uuid4(), 6))
    assert _illegal(entries).kind is ViolationKind.OVER_CAP


def test_lowering_the_cap_below_the_count_is_not_a_violation() -> None:
    five = issued(5)
    entries = [e for _, e in five[:4]]
    entries.append(cap_entry(3, CapScope.LIVE, 5))  # ticket 5 was reserved before the change
    entries.append(five[4][1])
    supply = _apply_all(entries)
    assert supply.live == 5
    entries.append(ticket_entry(EntryKind.ISSUED, uuid.uuid4(), 6))  # reserved after: over
    found = _illegal(entries)
    assert (found.kind, found.leaf) == (ViolationKind.OVER_CAP, 6)


def test_raised_cap_allows_more() -> None:
    entries = [cap_entry(7, CapScope.LIVE, 0), *(e for _, e in issued(7))]
    assert _apply_all(entries).live == 7


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([("issued", 0), ("issued", 0)], "issued after issued"),
        ([("redeemed", 0)], "redeemed before its issue"),
        ([("issued", 0), ("redeemed", 0), ("redeemed", 0)], "redeemed after redeemed"),
        ([("issued", 0), ("redeemed", 0), ("revoked", 0)], "revoked after redeemed"),
        ([("issued", 0), ("voided", 0)], "voided after issued"),
        ([("voided", 0), ("voided", 0)], "voided after voided"),
        ([("voided", 0), ("issued", 0)], "issued after voided"),
        ([("revoked", 0)], "revoked before its issue"),
    ],
)
def test_illegal_lifecycles(events: list[tuple[str, int]], message: str) -> None:
    tid = uuid.uuid4()
    entries = [ticket_entry(EntryKind(kind), tid, 1) for kind, _ in events]
    found = _illegal(entries)
    assert message in found.message
    assert found.leaf == len(entries) - 1


def test_serial_reused_by_another_ticket() -> None:
    entries = [ticket_entry(EntryKind.ISSUED, uuid.uuid4(), 1) for _ in range(2)]
    assert "serial 1 already issued" in _illegal(entries).message


def test_serial_changed_between_events() -> None:
    tid = uuid.uuid4()
    entries = [ticket_entry(EntryKind.ISSUED, tid, 1), ticket_entry(EntryKind.REDEEMED, tid, 2)]
    assert "issued as 1" in _illegal(entries).message


def test_cap_watermark_below_an_issued_serial() -> None:
    entries = [e for _, e in issued(3)]
    entries.append(cap_entry(5, CapScope.LIVE, 2))
    assert "below serial 3" in _illegal(entries).message


def test_cap_watermark_going_backwards() -> None:
    entries = [cap_entry(5, CapScope.LIVE, 4), cap_entry(5, CapScope.LIVE, 3)]
    assert "below the previous one" in _illegal(entries).message
