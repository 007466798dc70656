"""Ledger entry encoding v2 (`cap` entries): round trip, and one test per malformed input."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime

import pytest

from golden_press.errors import GoldenError
from golden_press.ledger_entry import (
    CAP_HEADER,
    CAP_KIND,
    CapEntry,
    EntryKind,
    LedgerEntry,
    decode_any_entry,
    decode_cap_entry,
    decode_entry,
    encode_cap_entry,
    scan_entry,
)
from golden_press.models import CapScope

AT = datetime(2026, 12, 3, 5, 0, 0, 123456, tzinfo=UTC)
GOOD = (
    b"golden-press/ledger-entry/v2\n"
    b"kind=cap\n"
    b"cap=7\n"
    b"scope=lifetime\n"
    b"serial=12\n"
    b"at=2026-12-03T05:00:00.123456Z\n"
)


def test_cap_entry_encoding_is_exactly_the_documented_bytes() -> None:
    entry = CapEntry(cap=7, scope=CapScope.LIFETIME, serial=12, at=AT)
    assert encode_cap_entry(entry) == GOOD
    assert decode_cap_entry(GOOD) == entry
    assert decode_any_entry(GOOD) == entry
    assert entry.kind == CAP_KIND == "cap"


def test_v1_decoder_keeps_refusing_anything_but_v1() -> None:
    with pytest.raises(GoldenError, match="expected 'golden-press/ledger-entry/v1'"):
        decode_entry(GOOD)


def test_a_ticket_entry_cannot_claim_kind_cap() -> None:
    with pytest.raises(ValueError, match="kind"):
        LedgerEntry.model_validate(
            {
                "kind": "cap",
                "ticket_id": uuid.uuid4(),
                "serial": 1,
                "user_commitment": "0" * 64,
                "at": AT,
            }
        )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (GOOD.replace(b"kind=cap", b"kind=issued"), "only cap is defined"),
        (GOOD.replace(b"cap=7", b"cap=07"), "not a canonical decimal"),
        (GOOD.replace(b"cap=7", b"cap=-1"), "not a canonical decimal"),
        (GOOD.replace(b"serial=12", b"serial=x"), "not a canonical decimal"),
        (GOOD.replace(b"scope=lifetime", b"scope=forever"), "forever"),
        (GOOD.replace(b".123456Z", b"Z"), "is not YYYY"),
        (GOOD.replace(b"cap=7\n", b""), "5 lines, expected 6"),
        (
            GOOD.replace(b"scope=lifetime\nserial=12", b"serial=12\nscope=lifetime"),
            "expected field",
        ),
        (GOOD[:-1], "must end with a newline"),
        (GOOD + b"extra=1\n", "7 lines, expected 6"),
        (GOOD.replace(b"\n", b"\r\n", 1), "header is"),
        (b"\xff" + GOOD, "not UTF-8"),
        (GOOD.replace(CAP_HEADER.encode(), b"golden-press/ledger-entry/v3"), "header is"),
        (GOOD.replace(b"cap=7", b"cap=99999999999"), "validation error"),
        (GOOD + b"x" * 5000, "at most 4096"),
    ],
)
def test_decode_cap_entry_rejects_malformed(data: bytes, message: str) -> None:
    with pytest.raises(GoldenError, match=message):
        decode_cap_entry(data)


# ---- scan_entry: the monitor's fast path accepts exactly what the decoders accept ----------------


def _samples() -> list[bytes]:
    from golden_press.ledger_entry import LedgerEntry, encode_entry

    out = [GOOD]
    for kind in EntryKind:
        issued = kind is EntryKind.ISSUED
        out.append(
            encode_entry(
                LedgerEntry(
                    kind=kind,
                    ticket_id=uuid.uuid4(),
                    serial=12,
                    key_id="ab12" if issued else "",
                    signature_digest="cd" * 32 if issued else "",
                    user_commitment="ef" * 32,
                    at=AT,
                    reason="" if issued else "r\u00e9ason",  # non-ASCII: the full decoder's path
                )
            )
        )
    return out


def test_scan_entry_reads_what_decode_reads() -> None:
    for data in _samples():
        scanned = scan_entry(data)
        decoded = decode_any_entry(data)
        if isinstance(decoded, CapEntry):
            assert scanned == decoded
        else:
            assert scanned == (decoded.kind.value, str(decoded.ticket_id), decoded.serial)


def test_scan_entry_accepts_exactly_what_decode_accepts_under_mutation() -> None:
    rng = random.Random(14)
    samples = _samples()
    for _ in range(4000):
        data = bytearray(rng.choice(samples))
        for _ in range(rng.randint(1, 2)):
            pos, op = rng.randrange(len(data)), rng.random()
            if op < 0.5:
                data[pos] = rng.randrange(256)
            elif op < 0.75:
                del data[pos]
            else:
                data.insert(pos, rng.choice(b"0aZ\n= -9f"))
        mutated = bytes(data)
        try:
            decode_any_entry(mutated)
            decodes = True
        except GoldenError:
            decodes = False
        try:
            scan_entry(mutated)
            scans = True
        except GoldenError:
            scans = False
        assert scans == decodes, mutated
