"""Public ledger entries: a canonical, versioned byte encoding (pure: no I/O).

Encoding, version 1. UTF-8, every line ends with a single LF (0x0A), no other whitespace, no
blank lines, the nine lines always present and always in this order:

    golden-press/ledger-entry/v1
    kind=<issued | voided | redeemed | revoked>
    ticket_id=<UUID, lowercase hex with hyphens (36 chars)>
    serial=<decimal integer >= 0, no leading zeros>
    key_id=<issuer key id: lowercase hex, 0-64 digits (empty when the ticket was never signed)>
    signature_digest=<SHA-256 of the raw 64-byte ticket signature, 64 lowercase hex digits, for
                      kind=issued; empty for every other kind>
    user_commitment=<SHA-256(user_salt || user_id as UTF-8), 64 lowercase hex digits>
    at=<UTC, YYYY-MM-DDTHH:MM:SS.ffffffZ (always 6 fraction digits)>
    reason=<free text, 0-256 characters, no control characters; empty for kind=issued>

Example (kind=issued):

    golden-press/ledger-entry/v1\\n
    kind=issued\\n
    ticket_id=0f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a\\n
    serial=3\\n
    key_id=9c1e2d3f4a5b6c7d\\n
    signature_digest=<64 hex>\\n
    user_commitment=<64 hex>\\n
    at=2024-05-01T12:00:00.000000Z\\n
    reason=\\n

The leaf hash of an entry is merkle.leaf_hash(these bytes). The raw user id never appears: only
the salted commitment, so the public log does not reveal who holds a ticket, while the holder
(who knows the salt from their proof bundle) can show the entry is theirs. A future version
changes the header line; decoders reject every header they do not know.

Encoding, version 2: only for kind=cap (a cap/scope change), so every v1 entry ever written keeps
its bytes and its leaf hash. Same line rules as v1, the five lines always in this order:

    golden-press/ledger-entry/v2
    kind=cap
    cap=<decimal integer >= 0, no leading zeros>
    scope=<live | lifetime>
    serial=<last ticket serial assigned before the change; 0 when none>
    at=<UTC, YYYY-MM-DDTHH:MM:SS.ffffffZ>

`decode_entry` keeps accepting v1 only (a proof bundle's entry is always a ticket's);
`decode_any_entry` reads both, for monitors and mirrors of the whole log.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import unicodedata
from datetime import UTC, datetime
from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from golden_press.errors import GoldenError, Reason
from golden_press.models import CapScope, Ticket
from golden_press.signing import format_timestamp

ENTRY_HEADER = "golden-press/ledger-entry/v1"
FIELDS = (
    "kind",
    "ticket_id",
    "serial",
    "key_id",
    "signature_digest",
    "user_commitment",
    "at",
    "reason",
)
#: Encoding v2 (cap entries only; ticket entries stay v1, byte for byte).
CAP_HEADER = "golden-press/ledger-entry/v2"
CAP_FIELDS = ("kind", "cap", "scope", "serial", "at")
MIN_SALT_BYTES = 16
MAX_REASON_CHARS = 256
MAX_ENTRY_BYTES = 4096
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_KEY_ID = re.compile(r"^[0-9a-f]{0,64}$")
_SERIAL = re.compile(r"^(0|[1-9][0-9]{0,18})$")
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


class EntryKind(StrEnum):
    """What happened to a ticket; each kind appears at most once per ticket in the log."""

    ISSUED = "issued"
    VOIDED = "voided"
    REDEEMED = "redeemed"
    REVOKED = "revoked"


#: The kind of a cap/scope change (encoding v2, `CapEntry`); not an EntryKind: it names no ticket.
CAP_KIND = "cap"


class LedgerEntry(BaseModel):
    """One public ledger record: binds a ticket event to the log without naming the user."""

    model_config = ConfigDict(frozen=True)

    kind: EntryKind
    ticket_id: UUID
    serial: int = Field(ge=0, lt=1 << 63)
    key_id: str = ""
    signature_digest: str = ""
    user_commitment: str
    at: datetime
    reason: str = ""

    @field_validator("key_id")
    @classmethod
    def _key_id(cls, value: str) -> str:
        if not _KEY_ID.fullmatch(value):
            raise ValueError("key_id must be 0-64 lowercase hex digits")
        return value

    @field_validator("user_commitment")
    @classmethod
    def _commitment(cls, value: str) -> str:
        if not _HEX64.fullmatch(value):
            raise ValueError("user_commitment must be 64 lowercase hex digits")
        return value

    @field_validator("at")
    @classmethod
    def _at(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("at must be timezone-aware")
        return value.astimezone(UTC)

    @field_validator("reason")
    @classmethod
    def _reason(cls, value: str) -> str:
        if len(value) > MAX_REASON_CHARS:
            raise ValueError(f"reason must be at most {MAX_REASON_CHARS} characters")
        if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
            raise ValueError("reason must not contain control characters")
        return value

    @model_validator(mode="after")
    def _per_kind(self) -> LedgerEntry:
        if self.kind is EntryKind.ISSUED:
            if not _HEX64.fullmatch(self.signature_digest):
                raise ValueError("an issued entry needs signature_digest (64 lowercase hex)")
            if not self.key_id:
                raise ValueError("an issued entry needs key_id")
            if self.reason:
                raise ValueError("an issued entry has no reason")
        elif self.signature_digest:
            raise ValueError(f"a {self.kind.value} entry has an empty signature_digest")
        return self


def user_commitment(salt: bytes, user_id: str) -> str:
    """SHA-256(salt || user_id) hex: publishable, yet only the salt holder can link it to a user."""
    if len(salt) < MIN_SALT_BYTES:
        raise ValueError(f"user salt must be at least {MIN_SALT_BYTES} bytes, got {len(salt)}")
    return hashlib.sha256(bytes(salt) + user_id.encode("utf-8")).hexdigest()


def signature_digest(signature_b64: str) -> str:
    """SHA-256 hex of a ticket's raw Ed25519 signature (decoded from its base64)."""
    try:
        raw = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise GoldenError(Reason.BAD_SIGNATURE, "ticket signature is not valid base64") from exc
    return hashlib.sha256(raw).hexdigest()


def entry_for_ticket(
    kind: EntryKind,
    ticket: Ticket,
    user_salt: bytes,
    at: datetime,
    reason: str = "",
) -> LedgerEntry:
    """The entry recording `kind` for a stored ticket (the signature digest only for issued)."""
    return LedgerEntry(
        kind=kind,
        ticket_id=ticket.ticket_id,
        serial=ticket.serial,
        key_id=ticket.key_id,
        signature_digest=signature_digest(ticket.signature) if kind is EntryKind.ISSUED else "",
        user_commitment=user_commitment(user_salt, ticket.user_id),
        at=at,
        reason=reason,
    )


def encode_entry(e: LedgerEntry) -> bytes:
    """The canonical v1 bytes of an entry (see the module docstring)."""
    values = {
        "kind": e.kind.value,
        "ticket_id": str(e.ticket_id),
        "serial": str(int(e.serial)),
        "key_id": e.key_id,
        "signature_digest": e.signature_digest,
        "user_commitment": e.user_commitment,
        "at": format_timestamp(e.at),
        "reason": e.reason,
    }
    lines = [ENTRY_HEADER, *(f"{name}={values[name]}" for name in FIELDS)]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _bad(message: str) -> GoldenError:
    return GoldenError(Reason.BAD_PROOF, f"ledger entry: {message}")


def _text(b: bytes) -> str:
    """The UTF-8 text of an entry of bounded size that ends with a newline."""
    if not isinstance(b, bytes | bytearray):
        raise _bad(f"expected bytes, got {type(b).__name__}")
    if len(b) > MAX_ENTRY_BYTES:
        raise _bad(f"{len(b)} bytes, at most {MAX_ENTRY_BYTES}")
    try:
        text = bytes(b).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad("not UTF-8") from exc
    if not text.endswith("\n"):
        raise _bad("must end with a newline")
    return text


def _fields(lines: list[str], fields: tuple[str, ...]) -> dict[str, str]:
    """`name=value` lines after the header, exactly `fields` in order."""
    if len(lines) != 1 + len(fields):
        raise _bad(f"{len(lines)} lines, expected {1 + len(fields)}")
    values: dict[str, str] = {}
    for expected, line in zip(fields, lines[1:], strict=True):
        name, sep, value = line.partition("=")
        if not sep or name != expected:
            raise _bad(f"line {line[:64]!r}, expected field {expected!r}")
        values[name] = value
    return values


def decode_entry(b: bytes) -> LedgerEntry:
    """Parse canonical v1 bytes; anything else (even a harmless variant) raises BadProof."""
    text = _text(b)
    lines = text[:-1].split("\n")
    if lines[0] != ENTRY_HEADER:
        raise _bad(f"header is {lines[0][:64]!r}, expected {ENTRY_HEADER!r}")
    values = _fields(lines, FIELDS)
    if not _SERIAL.fullmatch(values["serial"]):
        raise _bad(f"serial {values['serial']!r} is not a canonical decimal")
    if not _TIMESTAMP.fullmatch(values["at"]):
        raise _bad(f"at {values['at']!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ")
    try:
        entry = LedgerEntry(
            kind=EntryKind(values["kind"]),
            ticket_id=UUID(values["ticket_id"]),
            serial=int(values["serial"]),
            key_id=values["key_id"],
            signature_digest=values["signature_digest"],
            user_commitment=values["user_commitment"],
            at=datetime.fromisoformat(values["at"]),
            reason=values["reason"],
        )
    except (ValueError, ValidationError) as exc:
        raise _bad(str(exc).splitlines()[0]) from exc
    if encode_entry(entry) != bytes(b):
        raise _bad("not in canonical form")
    return entry


# ---- encoding v2: cap entries ----------------------------------------------------------------


class CapEntry(BaseModel):
    """A cap/scope change, public so anyone can judge every issuance by the cap then in force.

    `serial` is a watermark: the last ticket serial assigned before the change (0 when none).
    Serials are taken under the same advisory lock as the change, so the new cap governs exactly
    the tickets with serial > `serial`, whatever order their `issued` entries reach the log in.
    """

    model_config = ConfigDict(frozen=True)

    cap: int = Field(ge=0, lt=1 << 31)
    scope: CapScope
    serial: int = Field(ge=0, lt=1 << 63)
    at: datetime

    @property
    def kind(self) -> str:
        """Always CAP_KIND, like the `kind=` line."""
        return CAP_KIND

    @field_validator("at")
    @classmethod
    def _at(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("at must be timezone-aware")
        return value.astimezone(UTC)


def encode_cap_entry(e: CapEntry) -> bytes:
    """The canonical v2 bytes of a cap entry (see CAP_FIELDS)."""
    values = {
        "kind": CAP_KIND,
        "cap": str(int(e.cap)),
        "scope": e.scope.value,
        "serial": str(int(e.serial)),
        "at": format_timestamp(e.at),
    }
    lines = [CAP_HEADER, *(f"{name}={values[name]}" for name in CAP_FIELDS)]
    return ("\n".join(lines) + "\n").encode("utf-8")


def decode_cap_entry(b: bytes) -> CapEntry:
    """Parse canonical v2 cap-entry bytes; anything else raises BadProof."""
    text = _text(b)
    lines = text[:-1].split("\n")
    if lines[0] != CAP_HEADER:
        raise _bad(f"header is {lines[0][:64]!r}, expected {CAP_HEADER!r}")
    values = _fields(lines, CAP_FIELDS)
    if values["kind"] != CAP_KIND:
        raise _bad(f"a v2 entry has kind={values['kind'][:16]!r}, only cap is defined")
    for name in ("cap", "serial"):
        if not _SERIAL.fullmatch(values[name]):
            raise _bad(f"{name} {values[name]!r} is not a canonical decimal")
    if not _TIMESTAMP.fullmatch(values["at"]):
        raise _bad(f"at {values['at']!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ")
    try:
        entry = CapEntry(
            cap=int(values["cap"]),
            scope=CapScope(values["scope"]),
            serial=int(values["serial"]),
            at=datetime.fromisoformat(values["at"]),
        )
    except (ValueError, ValidationError) as exc:
        raise _bad(str(exc).splitlines()[0]) from exc
    if encode_cap_entry(entry) != bytes(b):
        raise _bad("not in canonical form")
    return entry


AnyEntry = LedgerEntry | CapEntry

#: The canonical v1 form as one pattern, stricter than decode_entry (printable-ASCII reasons,
#: years 1000-9999): what `scan_entry` accepts without building a model.
_V1_FAST = re.compile(
    rb"golden-press/ledger-entry/v1\n"
    rb"kind=(issued|voided|redeemed|revoked)\n"
    rb"ticket_id=([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\n"
    rb"serial=(0|[1-9][0-9]{0,18})\n"
    rb"key_id=([0-9a-f]{0,64})\n"
    rb"signature_digest=((?:[0-9a-f]{64})?)\n"
    rb"user_commitment=[0-9a-f]{64}\n"
    rb"at=([1-9][0-9]{3}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6})Z\n"
    rb"reason=([ -~]{0,256})\n"
)


def scan_entry(b: bytes) -> tuple[str, str, int] | CapEntry:
    """(kind, ticket id, serial) of a ticket entry, or the CapEntry: what a monitor replays.

    Accepts exactly what decode_any_entry accepts (and raises the same errors): the common
    canonical form is matched by one pattern without building a model (a monitor reads millions
    of entries); anything else goes through the full decoder.
    """
    m = _V1_FAST.fullmatch(b)
    if m is not None:
        kind, tid, serial, key_id, digest, at, reason = m.groups()
        issued = kind == b"issued"
        if (
            issued == bool(digest)
            and (not issued or (key_id and not reason))
            and int(serial) < 1 << 63
            and _valid_time(at)
        ):
            return kind.decode(), tid.decode(), int(serial)
    entry = decode_any_entry(b)
    if isinstance(entry, CapEntry):
        return entry
    return entry.kind.value, str(entry.ticket_id), entry.serial


def _valid_time(at: bytes) -> bool:
    try:
        datetime.fromisoformat(at.decode())
    except ValueError:
        return False
    return True


def decode_any_entry(b: bytes) -> AnyEntry:
    """Decode any entry the log may hold: v1 ticket entries and v2 cap entries, by header."""
    if bytes(b[: len(CAP_HEADER) + 1]) == (CAP_HEADER + "\n").encode("ascii"):
        return decode_cap_entry(b)
    return decode_entry(b)


__all__ = [
    "CAP_HEADER",
    "CAP_KIND",
    "ENTRY_HEADER",
    "AnyEntry",
    "CapEntry",
    "EntryKind",
    "LedgerEntry",
    "decode_any_entry",
    "decode_cap_entry",
    "decode_entry",
    "encode_cap_entry",
    "encode_entry",
    "entry_for_ticket",
    "scan_entry",
    "signature_digest",
    "user_commitment",
]
