"""Public (redacted) bundles and witness quorums in offline verification (docs/privacy.md)."""

from __future__ import annotations

import base64

import pytest
from nacl.signing import SigningKey
from pydantic import ValidationError

from golden_press.bundle import (
    TrustRoots,
    dump_bundle,
    dump_trust_roots,
    is_redacted,
    load_bundle,
    load_trust_roots,
    redact_bundle,
    verify_bundle,
    verify_public_bundle,
    verify_ticket,
)
from golden_press.checkpoint import Checkpoint, parse_note
from golden_press.cosignature import CosignatureVerifier, WitnessPolicy, add_signature_lines, cosign
from golden_press.errors import GoldenError, Reason
from golden_press.models import ProofBundle
from tests.helpers.bundles import ORIGIN, ROOTS, SALT, offline_bundle

WITNESS = SigningKey(b"\x61" * 32)
WITNESS_V = CosignatureVerifier("witness.test/w1", bytes(WITNESS.verify_key))


def _bundle(index: int = 5, size: int = 11) -> ProofBundle:
    """The holder's bundle: a log of `size` leaves whose leaf `index` is the issued entry."""
    return offline_bundle(index=index, size=size)


def _cosigned(bundle: ProofBundle) -> ProofBundle:
    body = parse_note(bundle.checkpoint).text
    line = cosign(body, WITNESS, WITNESS_V.name, 1_700_000_000)
    return bundle.model_copy(update={"checkpoint": add_signature_lines(bundle.checkpoint, [line])})


def _roots(quorum: int | None = None) -> TrustRoots:
    return ROOTS.model_copy(update={"witnesses": [WITNESS_V.vkey], "witness_quorum": quorum})


def _rejected(fn: object, bundle: ProofBundle, reason: Reason, roots: TrustRoots = ROOTS) -> str:
    with pytest.raises(GoldenError) as info:
        fn(bundle, roots)  # type: ignore[operator]
    assert info.value.reason is reason, info.value
    return info.value.message


def test_public_bundle_carries_no_holder_no_salt_no_signature() -> None:
    full = _bundle()
    public = redact_bundle(full)
    text = dump_bundle(public)
    assert public.ticket.user_id == "" and public.user_salt == "" and public.ticket.signature == ""
    assert full.ticket.user_id not in text
    assert base64.b64encode(SALT).decode() not in text
    assert full.ticket.signature not in text
    assert is_redacted(public.ticket) and not is_redacted(full.ticket)
    assert load_bundle(text) == public


def test_public_bundle_verifies_without_the_holder() -> None:
    public = redact_bundle(_bundle())
    cp = verify_public_bundle(public, ROOTS)
    assert (cp.origin, cp.size) == (ORIGIN, 11)


def test_event_bundle_keeps_the_user_but_not_the_salt() -> None:
    event = redact_bundle(_bundle(), keep_user_id=True)
    assert event.user_salt == "" and event.ticket.user_id == "charlie"
    assert base64.b64encode(SALT).decode() not in dump_bundle(event)
    verify_public_bundle(event, ROOTS)  # signature and signature digest still checked


def test_holder_bundle_verifies_both_ways() -> None:
    full = _bundle()
    assert verify_bundle(full, ROOTS) == verify_public_bundle(full, ROOTS)


def test_public_bundle_cannot_prove_the_holder() -> None:
    message = _rejected(verify_bundle, redact_bundle(_bundle()), Reason.BAD_PROOF)
    assert "holder" in message


def test_salt_less_bundle_cannot_prove_the_holder() -> None:
    _rejected(verify_bundle, redact_bundle(_bundle(), keep_user_id=True), Reason.BAD_PROOF)


def test_redacted_ticket_signature_cannot_be_checked() -> None:
    public = redact_bundle(_bundle())
    with pytest.raises(GoldenError) as info:
        verify_ticket(public.ticket, ROOTS)
    assert info.value.reason is Reason.BAD_SIGNATURE


@pytest.mark.parametrize(
    "change",
    [
        {"serial": 5},
        {"ticket_id": "11111111-2222-4333-8444-555555555556"},
        {"key_id": "00" * 8},
    ],
)
def test_public_bundle_for_another_ticket_is_rejected(change: dict[str, object]) -> None:
    public = redact_bundle(_bundle())
    forged = public.model_copy(update={"ticket": public.ticket.model_copy(update=change)})
    _rejected(verify_public_bundle, forged, Reason.BAD_PROOF)


def test_public_bundle_with_a_flipped_proof_is_rejected() -> None:
    public = redact_bundle(_bundle())
    proof = list(public.inclusion_proof)
    raw = bytearray(base64.b64decode(proof[0]))
    raw[0] ^= 1
    proof[0] = base64.b64encode(bytes(raw)).decode()
    _rejected(
        verify_public_bundle, public.model_copy(update={"inclusion_proof": proof}), Reason.BAD_PROOF
    )


def test_public_bundle_with_salt_but_no_user_is_rejected() -> None:
    public = redact_bundle(_bundle()).model_copy(
        update={"user_salt": base64.b64encode(SALT).decode()}
    )
    _rejected(verify_public_bundle, public, Reason.BAD_PROOF)


# ---- witness quorum in the trust roots ----------------------------------------------------------


def test_quorum_needs_the_cosignature() -> None:
    bundle = _bundle()
    message = _rejected(verify_bundle, bundle, Reason.BAD_CHECKPOINT, _roots())
    assert "needs 1" in message
    assert verify_bundle(_cosigned(bundle), _roots()).size == 11
    assert verify_public_bundle(redact_bundle(_cosigned(bundle)), _roots()).size == 11


def test_quorum_zero_trusts_the_ledger_alone() -> None:
    assert verify_bundle(_bundle(), _roots(quorum=0)).size == 11


def test_explicit_policy_overrides_the_roots() -> None:
    policy = WitnessPolicy((WITNESS_V,), 1)
    with pytest.raises(GoldenError):
        verify_bundle(_bundle(), ROOTS, policy)
    assert verify_bundle(_cosigned(_bundle()), ROOTS, policy).size == 11


def test_trust_roots_with_witnesses_round_trip() -> None:
    roots = _roots(quorum=1)
    assert load_trust_roots(dump_trust_roots(roots)) == roots
    assert roots.witness_policy() == WitnessPolicy((WITNESS_V,), 1)


@pytest.mark.parametrize(
    ("witnesses", "quorum"),
    [(["not a vkey"], None), ([WITNESS_V.vkey], 2), ([WITNESS_V.vkey], -1)],
)
def test_trust_roots_reject_bad_witnesses(witnesses: list[str], quorum: int | None) -> None:
    data = ROOTS.model_dump() | {"witnesses": witnesses, "witness_quorum": quorum}
    with pytest.raises(ValidationError):
        TrustRoots.model_validate(data)


def test_checkpoint_of_cosigned_bundle_is_the_ledger_checkpoint() -> None:
    cp = verify_bundle(_cosigned(_bundle()), _roots())
    assert isinstance(cp, Checkpoint) and cp.size == 11
