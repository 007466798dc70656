"""The witness's add-checkpoint decision (c2sp.org/tlog-witness), pure: every status it can give."""

from __future__ import annotations

import base64

import pytest
from nacl.signing import SigningKey

from golden_press.checkpoint import Checkpoint, NoteVerifier, parse_signature_lines, sign_checkpoint
from golden_press.cosignature import CosignatureVerifier, add_signature_lines, verify_cosignatures
from golden_press.merkle import EMPTY_ROOT, consistency_proof, leaf_hash, root_hash
from golden_press.witness import (
    SIZE_CONTENT_TYPE,
    WitnessAnswer,
    WitnessRecord,
    WitnessRequestError,
    add_checkpoint,
    add_checkpoint_body,
    parse_add_checkpoint,
)

ORIGIN = "golden-press.test/ledger"
LEDGER = SigningKey(b"\x51" * 32)
WITNESS = SigningKey(b"\x52" * 32)
NAME = "witness.test/w1"
LOGS = {ORIGIN: [NoteVerifier(ORIGIN, bytes(LEDGER.verify_key))]}
NOW = 1_700_000_000
LEAVES = [leaf_hash(f"entry {i}".encode()) for i in range(40)]


def _note(size: int, leaves: list[bytes] = LEAVES, key: SigningKey = LEDGER) -> str:
    root = root_hash(leaves[:size]) if size else EMPTY_ROOT
    return sign_checkpoint(Checkpoint(origin=ORIGIN, size=size, root=root), key, ORIGIN)


def _record(size: int, leaves: list[bytes] = LEAVES) -> WitnessRecord:
    root = root_hash(leaves[:size]) if size else EMPTY_ROOT
    return WitnessRecord(
        origin=ORIGIN, size=size, root=base64.b64encode(root).decode(), note=_note(size, leaves)
    )


def _submit(
    old: int,
    new: int,
    latest: WitnessRecord | None,
    *,
    leaves: list[bytes] = LEAVES,
    proof: list[bytes] | None = None,
    note: str | None = None,
) -> WitnessAnswer:
    if proof is None:
        proof = consistency_proof(leaves, old, new) if 0 < old < new else []
    body = add_checkpoint_body(old, proof, note if note is not None else _note(new, leaves))
    return add_checkpoint(parse_add_checkpoint(body), LOGS, latest, WITNESS, NAME, NOW)


def test_first_checkpoint_is_cosigned() -> None:
    answer = _submit(0, 7, None)
    assert answer.status == 200, answer.body
    assert answer.record == _record(7)
    lines = parse_signature_lines(answer.body)
    witness = CosignatureVerifier(NAME, bytes(WITNESS.verify_key))
    assert verify_cosignatures(add_signature_lines(_note(7), lines), [witness]) == {NAME: NOW}


def test_extension_is_cosigned() -> None:
    answer = _submit(7, 19, _record(7))
    assert answer.status == 200, answer.body
    assert answer.record is not None and answer.record.size == 19


def test_same_checkpoint_again_is_cosigned() -> None:
    assert _submit(7, 7, _record(7)).status == 200


def test_from_the_empty_tree() -> None:
    assert _submit(0, 0, None).status == 200
    assert _submit(0, 5, _record(0)).status == 200


def test_rollback_is_refused_with_the_stored_size() -> None:
    answer = _submit(7, 7, _record(19))
    assert (answer.status, answer.body, answer.content_type) == (409, "19\n", SIZE_CONTENT_TYPE)
    assert answer.record is None


def test_smaller_tree_than_old_size_is_a_bad_request() -> None:
    answer = _submit(19, 7, _record(19), proof=[])
    assert answer.status == 400 and answer.record is None


def test_stale_old_size_gets_409_and_the_latest_size() -> None:
    answer = _submit(0, 25, _record(19))
    assert (answer.status, answer.body) == (409, "19\n")


def test_fork_at_the_same_size_is_refused() -> None:
    forked = [*LEAVES[:3], leaf_hash(b"evil"), *LEAVES[4:]]
    answer = _submit(19, 19, _record(19), leaves=forked)
    assert answer.status == 409 and "fork" in answer.body and answer.record is None


def test_fork_at_a_larger_size_is_refused() -> None:
    forked = [*LEAVES[:3], leaf_hash(b"evil"), *LEAVES[4:]]
    # A proof honestly computed on the forked log cannot lead from the stored root.
    answer = _submit(19, 25, _record(19), leaves=forked)
    assert answer.status == 422 and answer.record is None


def test_bad_proof_is_422() -> None:
    proof = consistency_proof(LEAVES, 7, 19)
    proof[0] = leaf_hash(b"flipped")
    assert _submit(7, 19, _record(7), proof=proof).status == 422


def test_proof_with_old_size_zero_is_422() -> None:
    assert _submit(0, 5, None, proof=[LEAVES[0]]).status == 422


def test_proof_with_equal_sizes_is_422() -> None:
    assert _submit(7, 7, _record(7), proof=[LEAVES[0]]).status == 422


def test_unknown_origin_is_404() -> None:
    cp = Checkpoint(origin="other.test/log", size=1, root=LEAVES[0])
    other = sign_checkpoint(cp, LEDGER, "x")
    assert _submit(0, 1, None, note=other).status == 404


def test_checkpoint_signed_by_another_key_is_403() -> None:
    assert _submit(0, 5, None, note=_note(5, key=WITNESS)).status == 403


def test_tampered_checkpoint_is_403() -> None:
    note = _note(5).replace("\n5\n", "\n6\n", 1)
    assert _submit(0, 6, None, note=note).status == 403


def test_record_of_another_origin_is_a_bug() -> None:
    other = _record(3).model_copy(update={"origin": "other.test/log"})
    with pytest.raises(ValueError):
        _submit(3, 5, other)


# ---- request parsing: one test per malformed body ---------------------------------------------


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"old 0\n", "empty line"),
        (b"old 0\n" + b"x" * 10, "empty line"),
        (b"\xff\n\nnote", "UTF-8"),
        (b"new 0\n\nnote", "old <size>"),
        (b"old -1\n\nnote", "old <size>"),
        (b"old 01\n\nnote", "old <size>"),
        (b"old  1\n\nnote", "old <size>"),
        (b"old 18446744073709551616\n\nnote", "64 bits"),
        (b"old 1\nnot base64!\n\nnote", "not base64"),
        (b"old 1\n" + base64.b64encode(b"short") + b"\n\nnote", "SHA-256"),
        (b"old 1\n" + b"\n".join([base64.b64encode(b"h" * 32)] * 64) + b"\n\nnote", "at most 63"),
        (b"x" * ((1 << 20) + 1), "larger than"),
    ],
)
def test_malformed_request(body: bytes, match: str) -> None:
    with pytest.raises(WitnessRequestError, match=match) as info:
        parse_add_checkpoint(body)
    assert info.value.status == 400


def test_note_that_is_not_a_signed_note_is_400() -> None:
    request = parse_add_checkpoint(b"old 0\n\nno signatures here\n")
    with pytest.raises(WitnessRequestError) as info:
        add_checkpoint(request, LOGS, None, WITNESS, NAME, NOW)
    assert info.value.status == 400


def test_request_body_round_trip() -> None:
    proof = consistency_proof(LEAVES, 7, 19)
    request = parse_add_checkpoint(add_checkpoint_body(7, proof, _note(19)))
    assert (request.old_size, list(request.proof), request.note) == (7, proof, _note(19))
