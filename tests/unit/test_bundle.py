"""Offline proof bundles: the happy path, then one rejection per thing that can be wrong."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from uuid import UUID

import pytest
from nacl.signing import SigningKey

from golden_press.bundle import (
    TrustRoots,
    dump_bundle,
    dump_trust_roots,
    load_bundle,
    load_trust_roots,
    verify_bundle,
)
from golden_press.errors import GoldenError, Reason
from golden_press.ledger_entry import EntryKind, encode_entry, entry_for_ticket
from golden_press.models import ProofBundle, Ticket
from golden_press.signing import sign_payload
from tests.helpers.bundles import (
    AT,
    ISSUER,
    KEY_ID,
    LEDGER,
    ORIGIN,
    ROOTS,
    SALT,
    b64,
    offline_bundle,
    signed_ticket,
)


def _rejected(bundle: ProofBundle, reason: Reason, roots: TrustRoots = ROOTS) -> str:
    with pytest.raises(GoldenError) as info:
        verify_bundle(bundle, roots)
    assert info.value.reason is reason, info.value
    return info.value.message


def test_happy_path_returns_the_checkpoint() -> None:
    bundle = offline_bundle()
    cp = verify_bundle(bundle, ROOTS)
    assert (cp.origin, cp.size) == (ORIGIN, 11)


def test_json_round_trips() -> None:
    bundle = offline_bundle()
    assert load_bundle(dump_bundle(bundle)) == bundle
    assert load_trust_roots(dump_trust_roots(ROOTS)) == ROOTS
    verify_bundle(load_bundle(dump_bundle(bundle)), load_trust_roots(dump_trust_roots(ROOTS)))


def test_trust_roots_accept_the_short_forms() -> None:
    roots = TrustRoots.model_validate(
        {
            "issuer": {KEY_ID: b64(bytes(ISSUER.verify_key))},
            "ledger": {"origin": ORIGIN, "public_key": b64(bytes(LEDGER.verify_key))},
        }
    )
    verify_bundle(offline_bundle(), roots)


@pytest.mark.parametrize(("index", "size"), [(0, 1), (0, 2), (1, 2), (7, 8), (8, 9), (12, 13)])
def test_edges_of_the_tree(index: int, size: int) -> None:
    verify_bundle(offline_bundle(index=index, size=size), ROOTS)


# ---- BadSignature -----------------------------------------------------------------------------


def test_tampered_ticket_field() -> None:
    bundle = offline_bundle()
    forged = bundle.model_copy(update={"ticket": bundle.ticket.model_copy(update={"serial": 5})})
    _rejected(forged, Reason.BAD_SIGNATURE)


def test_ticket_signed_by_another_key() -> None:
    bundle = offline_bundle()
    other = sign_payload(SigningKey(b"\x99" * 32), b"whatever")
    _rejected(
        bundle.model_copy(update={"ticket": bundle.ticket.model_copy(update={"signature": other})}),
        Reason.BAD_SIGNATURE,
    )


def test_unknown_issuer_key_id() -> None:
    roots = ROOTS.model_copy(update={"issuer_keys": {}})
    assert "unknown issuer key" in _rejected(offline_bundle(), Reason.BAD_SIGNATURE, roots)


def test_trust_root_key_does_not_match_its_id() -> None:
    roots = ROOTS.model_copy(update={"issuer_keys": {KEY_ID: b64(bytes(LEDGER.verify_key))}})
    _rejected(offline_bundle(), Reason.BAD_SIGNATURE, roots)


def test_signature_not_base64() -> None:
    bundle = offline_bundle()
    bad = bundle.ticket.model_copy(update={"signature": "!!!"})
    _rejected(bundle.model_copy(update={"ticket": bad}), Reason.BAD_SIGNATURE)


# ---- BadCheckpoint ----------------------------------------------------------------------------


def test_checkpoint_signed_by_another_key() -> None:
    _rejected(offline_bundle(signer=SigningKey(b"\x98" * 32)), Reason.BAD_CHECKPOINT)


def test_checkpoint_of_another_origin() -> None:
    # Signed with the right key under another name/origin: neither name nor origin matches.
    _rejected(offline_bundle(origin="evil.example/log"), Reason.BAD_CHECKPOINT)


def test_checkpoint_tampered() -> None:
    bundle = offline_bundle()
    forged = bundle.checkpoint.replace("\n11\n", "\n12\n")
    _rejected(bundle.model_copy(update={"checkpoint": forged}), Reason.BAD_CHECKPOINT)


# ---- BadProof ---------------------------------------------------------------------------------


def test_tree_size_differs_from_checkpoint() -> None:
    bundle = offline_bundle()
    assert "checkpoint size" in _rejected(
        bundle.model_copy(update={"tree_size": 12}), Reason.BAD_PROOF
    )


def test_wrong_leaf_index() -> None:
    bundle = offline_bundle()
    _rejected(bundle.model_copy(update={"leaf_index": 4}), Reason.BAD_PROOF)


def test_leaf_index_outside_tree() -> None:
    bundle = offline_bundle()
    _rejected(bundle.model_copy(update={"leaf_index": 11}), Reason.BAD_PROOF)


def test_flipped_proof_bit() -> None:
    bundle = offline_bundle()
    for i, h in enumerate(bundle.inclusion_proof):
        raw = bytearray(base64.b64decode(h))
        raw[0] ^= 1
        proof = list(bundle.inclusion_proof)
        proof[i] = b64(bytes(raw))
        _rejected(bundle.model_copy(update={"inclusion_proof": proof}), Reason.BAD_PROOF)


def test_truncated_proof() -> None:
    bundle = offline_bundle()
    proof = bundle.inclusion_proof[:-1]
    _rejected(bundle.model_copy(update={"inclusion_proof": proof}), Reason.BAD_PROOF)


def test_proof_hash_not_32_bytes() -> None:
    bundle = offline_bundle()
    proof = [b64(b"x" * 31), *bundle.inclusion_proof[1:]]
    _rejected(bundle.model_copy(update={"inclusion_proof": proof}), Reason.BAD_PROOF)


def test_entry_not_decodable() -> None:
    _rejected(offline_bundle(entry=b"golden-press/ledger-entry/v9\n"), Reason.BAD_PROOF)


def test_entry_not_base64() -> None:
    _rejected(offline_bundle().model_copy(update={"entry": "%%%"}), Reason.BAD_PROOF)


def test_entry_is_not_issued() -> None:
    ticket = signed_ticket()
    voided = entry_for_ticket(EntryKind.VOIDED, ticket, SALT, AT, "compensated")
    assert "kind" in _rejected(offline_bundle(ticket, entry=encode_entry(voided)), Reason.BAD_PROOF)


_FieldChange = Callable[[Ticket], Ticket]


@pytest.mark.parametrize(
    ("field", "other_ticket"),
    [
        ("ticket_id", lambda t: signed_ticket(ticket_id=UUID(int=7))),
        ("serial", lambda t: signed_ticket(serial=99)),
        ("user_commitment", lambda t: t.model_copy(update={"user_id": "mallory"})),
    ],
)
def test_entry_for_another_ticket(field: str, other_ticket: _FieldChange) -> None:
    """A genuine entry of another ticket, correctly included, must not prove this one."""
    other = other_ticket(signed_ticket())
    entry = encode_entry(entry_for_ticket(EntryKind.ISSUED, other, SALT, AT))
    assert field in _rejected(offline_bundle(signed_ticket(), entry=entry), Reason.BAD_PROOF)


def test_entry_with_other_signature_digest() -> None:
    ticket = signed_ticket()
    entry = entry_for_ticket(EntryKind.ISSUED, ticket, SALT, AT).model_copy(
        update={"signature_digest": "00" * 32}
    )
    message = _rejected(offline_bundle(ticket, entry=encode_entry(entry)), Reason.BAD_PROOF)
    assert "signature_digest" in message


def test_wrong_salt() -> None:
    bundle = offline_bundle()
    _rejected(bundle.model_copy(update={"user_salt": b64(os.urandom(16))}), Reason.BAD_PROOF)


def test_not_a_bundle() -> None:
    with pytest.raises(GoldenError) as info:
        load_bundle('{"version": 2}')
    assert info.value.reason is Reason.BAD_PROOF


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("user_id", "\u0430lice"),  # Cyrillic a: a confusable
        ("user_id", "bob\n"),
        ("issued_at", "2026-11-25T06:36:28"),  # no timezone: not a canonical instant
        ("serial", 0),
    ],
)
def test_bundle_ticket_fields_are_validated_at_the_boundary(field: str, value: object) -> None:
    data = json.loads(dump_bundle(offline_bundle()))
    data["ticket"][field] = value
    with pytest.raises(GoldenError) as err:
        load_bundle(json.dumps(data))
    assert err.value.reason == Reason.BAD_PROOF
