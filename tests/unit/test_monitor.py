"""Monitor checks on in-memory logs: clean logs pass; each kind of tampering is named."""

from __future__ import annotations

import base64
import uuid

import pytest
from nacl.signing import SigningKey

from golden_press.checkpoint import sign_note
from golden_press.cosignature import (
    CosignatureVerifier,
    WitnessPolicy,
    add_signature_lines,
    cosign,
)
from golden_press.ledger_entry import EntryKind
from golden_press.models import CapScope
from golden_press.monitor import Monitor, MonitorState, SupplyState, Violation, ViolationKind
from tests.helpers.memlog import ORIGIN, VERIFIER, MemLog, cap_entry, ticket_entry


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


# ---- witness cosignatures (c2sp.org/tlog-cosignature) ----------------------------------------

W1 = SigningKey(b"\x0a" * 32)
W2 = SigningKey(b"\x0b" * 32)
W1_V = CosignatureVerifier("w1.example/witness", bytes(W1.verify_key))
W2_V = CosignatureVerifier("w2.example/witness", bytes(W2.verify_key))


def cosigned(log: MemLog, *witnesses: tuple[SigningKey, str], at: int = 1_700_000_000) -> str:
    """The log's note with a cosignature/v1 line from each (key, name)."""
    body = log.note[: log.note.index("\n\n") + 1]
    lines = [cosign(body, key, name, at) for key, name in witnesses]
    return add_signature_lines(log.note, lines)


def watched(log: MemLog, quorum: int, *known: CosignatureVerifier) -> Monitor:
    return Monitor(log, [VERIFIER], ORIGIN, witnesses=WitnessPolicy(tuple(known), quorum))


def test_quorum_of_known_cosignatures_passes_and_is_remembered() -> None:
    log = MemLog(full_lifecycle())
    log.note = cosigned(log, (W1, W1_V.name), (W2, W2_V.name))
    state = watched(log, 2, W1_V, W2_V).check()
    assert state.size == len(log.entries)
    assert state.cosigned_by == {W1_V.name: 1_700_000_000, W2_V.name: 1_700_000_000}


def test_checkpoint_short_of_the_quorum_is_a_violation_naming_the_missing_witness() -> None:
    log = MemLog(full_lifecycle())
    log.note = cosigned(log, (W1, W1_V.name))
    monitor = watched(log, 2, W1_V, W2_V)
    with pytest.raises(Violation) as info:
        monitor.check()
    assert info.value.kind is ViolationKind.NO_QUORUM
    assert W2_V.name in info.value.message and "quorum is 2" in info.value.message
    assert monitor.state is None and monitor.size == 0  # nothing read: a follower looks again
    assert watched(log, 1, W1_V, W2_V).check().cosigned_by == {W1_V.name: 1_700_000_000}


def test_uncosigned_checkpoint_fails_a_quorum_of_one() -> None:
    log = MemLog(full_lifecycle())
    with pytest.raises(Violation) as info:
        watched(log, 1, W1_V).check()
    assert info.value.kind is ViolationKind.NO_QUORUM and "none" in info.value.message


def test_bad_cosignature_by_a_known_witness_is_a_violation() -> None:
    log = MemLog(full_lifecycle())
    good = cosigned(log, (W1, W1_V.name))
    # The last byte of W1's line flipped: same name and key id, signature no longer verifies.
    line = good.splitlines()[-1]
    blob = bytearray(base64.b64decode(line.split()[-1]))
    blob[-1] ^= 0x01
    log.note = good.replace(line.split()[-1], base64.b64encode(bytes(blob)).decode())
    with pytest.raises(Violation) as info:
        watched(log, 1, W1_V).check()
    assert info.value.kind is ViolationKind.BAD_COSIGNATURE
    assert W1_V.name in info.value.message


def test_cosignature_of_another_checkpoint_is_bad() -> None:
    older = MemLog(full_lifecycle()[:5])
    log = MemLog(full_lifecycle())
    stolen = cosigned(older, (W1, W1_V.name)).splitlines()[-1] + "\n"
    log.note = log.note + stolen
    with pytest.raises(Violation) as info:
        watched(log, 1, W1_V).check()
    assert info.value.kind is ViolationKind.BAD_COSIGNATURE


def test_unknown_signature_lines_are_ignored_under_a_witness_policy() -> None:
    log = MemLog(full_lifecycle())
    stranger = SigningKey(b"\x0c" * 32)
    log.note = cosigned(log, (stranger, "stranger.example/witness"), (W1, W1_V.name))
    # An unknown line with garbage bytes too (signed-note: lines from unknown keys are skipped).
    log.note += "\u2014 junk.example/w " + base64.b64encode(b"\x00" * 20).decode() + "\n"
    assert watched(log, 1, W1_V, W2_V).check().cosigned_by == {W1_V.name: 1_700_000_000}
