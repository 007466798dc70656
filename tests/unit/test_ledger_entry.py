"""Ledger entry encoding: byte-exact, versioned, strict, and free of raw user ids."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

import pytest

from golden_press.errors import GoldenError, Reason
from golden_press.ledger_entry import (
    EntryKind,
    LedgerEntry,
    decode_entry,
    encode_entry,
    user_commitment,
)

SALT = bytes(range(16))
TID = UUID("0f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a")
AT = datetime(2024, 5, 1, 12, 0, 0, 123, tzinfo=UTC)


def _issued(**over: object) -> LedgerEntry:
    fields: dict[str, object] = {
        "kind": EntryKind.ISSUED,
        "ticket_id": TID,
        "serial": 3,
        "key_id": "9c1e2d3f4a5b6c7d",
        "signature_digest": "ab" * 32,
        "user_commitment": user_commitment(SALT, "charlie@example"),
        "at": AT,
    }
    fields.update(over)
    return LedgerEntry.model_validate(fields)


def test_exact_bytes() -> None:
    commitment = hashlib.sha256(SALT + b"charlie@example").hexdigest()
    assert (
        encode_entry(_issued())
        == (
            "golden-press/ledger-entry/v1\n"
            "kind=issued\n"
            "ticket_id=0f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a\n"
            "serial=3\n"
            "key_id=9c1e2d3f4a5b6c7d\n"
            f"signature_digest={'ab' * 32}\n"
            f"user_commitment={commitment}\n"
            "at=2024-05-01T12:00:00.000123Z\n"
            "reason=\n"
        ).encode()
    )


@pytest.mark.parametrize("kind", list(EntryKind))
def test_round_trip_every_kind(kind: EntryKind) -> None:
    if kind is EntryKind.ISSUED:
        entry = _issued()
    else:
        entry = _issued(kind=kind, signature_digest="", reason="admin: fraud ✓", key_id="")
    assert decode_entry(encode_entry(entry)) == entry


def test_timestamps_are_normalised_to_utc() -> None:
    local = AT.astimezone(timezone(timedelta(hours=5)))
    assert encode_entry(_issued(at=local)) == encode_entry(_issued())


def test_raw_user_id_never_appears() -> None:
    data = encode_entry(_issued())
    assert b"charlie" not in data
    assert "user_id" not in LedgerEntry.model_fields


def test_commitment_needs_a_real_salt() -> None:
    with pytest.raises(ValueError, match="salt"):
        user_commitment(b"short", "u")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.replace(b"/v1\n", b"/v2\n"),
        lambda b: b.replace(b"serial=3", b"serial=03"),
        lambda b: b.replace(b"serial=3", b"serial=-3"),
        lambda b: b.replace(b"kind=issued", b"kind=minted"),
        lambda b: b.replace(b"0f8e7d6c", b"0F8E7D6C"),
        lambda b: b.replace(b".000123Z", b".000123+00:00"),
        lambda b: b.replace(b".000123Z", b"Z"),
        lambda b: b.replace(b"\n", b"\r\n"),
        lambda b: b[:-1],
        lambda b: b + b"extra=1\n",
        lambda b: b.replace(b"reason=\n", b""),
        lambda b: b.replace(b"key_id=", b"key_id =", 1),
        lambda b: b.replace(
            b"serial=3\nkey_id=9c1e2d3f4a5b6c7d", b"key_id=9c1e2d3f4a5b6c7d\nserial=3"
        ),
        lambda b: b.replace(b"signature_digest=" + b"ab" * 32, b"signature_digest="),
        lambda b: b.replace(b"reason=", b"reason=not for issued"),
        lambda b: b.replace(b"user_commitment=", b"user_commitment=00"),
        lambda b: b"\xff" + b,
        lambda b: b"",
    ],
)
def test_malformed_entries_are_bad_proof(mutate) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(GoldenError) as info:
        decode_entry(mutate(encode_entry(_issued())))
    assert info.value.reason is Reason.BAD_PROOF


@pytest.mark.parametrize(
    "over",
    [
        {"signature_digest": ""},
        {"key_id": ""},
        {"kind": EntryKind.VOIDED},  # non-issued with a signature digest
        {"reason": "line\nbreak", "kind": EntryKind.VOIDED, "signature_digest": ""},
        {"at": datetime(2024, 5, 1)},
        {"user_commitment": "XY" * 32},
    ],
)
def test_invalid_entries_are_refused(over: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        _issued(**over)
