"""Ledger checkpoints: C2SP tlog-checkpoint bodies in C2SP signed notes, Ed25519 (pure: no I/O).

Checkpoint body (c2sp.org/tlog-checkpoint), every line ends with LF:

    <origin>
    <tree size, ASCII decimal, no leading zeros>
    <root hash, standard base64 of 32 bytes>
    [extension lines: non-empty, opaque; accepted and ignored]

Signed note (c2sp.org/signed-note): the body, a blank line, then signature lines

    — <key name> <base64(4-byte key id || 64-byte Ed25519 signature over the body)>

where the dash is U+2014 and key id = SHA-256(key name || 0x0A || 0x01 || 32-byte public key)[:4].
The ledger signs with key name = origin. Verifiers ignore signatures from unknown keys (name and id
must both match), reject the note if a known key's signature fails, and require at least one
verified known signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey
from pydantic import BaseModel, ConfigDict, Field, field_validator

from golden_press.errors import GoldenError, Reason
from golden_press.merkle import HASH_SIZE

ED25519_TYPE = b"\x01"
SIG_PREFIX = "\u2014 "
MAX_SIGNATURES = 100
MAX_NOTE_BYTES = 1 << 20
_SIZE_LINE = re.compile(r"^(0|[1-9][0-9]{0,19})$")
_B64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")


class CheckpointError(GoldenError):
    """A checkpoint or signed note that is malformed or not signed by a trusted key."""

    def __init__(self, message: str) -> None:
        super().__init__(Reason.BAD_CHECKPOINT, message)


def _b64decode(value: str, what: str) -> bytes:
    """Strict standard base64 (RFC 4648 section 4, padded): one encoding per value."""
    if not _B64.fullmatch(value) or len(value) % 4:
        raise CheckpointError(f"{what} is not standard padded base64: {value[:64]!r}")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CheckpointError(f"{what} is not valid base64: {value[:64]!r}") from exc
    if base64.b64encode(raw).decode("ascii") != value:
        raise CheckpointError(f"{what} is not canonical base64: {value[:64]!r}")
    return raw


def _check_key_name(name: str) -> None:
    """Key names are non-empty and free of spaces and '+' (c2sp.org/signed-note)."""
    if not name or "+" in name or any(ch.isspace() for ch in name):
        raise ValueError(f"bad note key name {name!r}: must be non-empty, no spaces, no '+'")


class Checkpoint(BaseModel):
    """A signed tree head: the log `origin` had `size` leaves with root hash `root`."""

    model_config = ConfigDict(frozen=True)

    origin: str
    size: int = Field(ge=0, lt=1 << 64)
    root: bytes

    @field_validator("origin")
    @classmethod
    def _origin(cls, value: str) -> str:
        if not value or "\n" in value or any(ord(ch) < 0x20 for ch in value):
            raise ValueError("origin must be one non-empty line without control characters")
        return value

    @field_validator("root")
    @classmethod
    def _root(cls, value: bytes) -> bytes:
        if len(value) != HASH_SIZE:
            raise ValueError(f"root must be {HASH_SIZE} bytes, got {len(value)}")
        return value

    def body(self) -> str:
        """The C2SP tlog-checkpoint note text (what gets signed)."""
        root = base64.b64encode(self.root).decode("ascii")
        return f"{self.origin}\n{self.size}\n{root}\n"


def parse_checkpoint_body(text: str) -> Checkpoint:
    """Parse a tlog-checkpoint note text; extension lines are accepted and ignored."""
    if not text.endswith("\n"):
        raise CheckpointError("checkpoint body must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError(f"checkpoint body needs 3 lines, got {len(lines)}")
    if any(not line for line in lines):
        raise CheckpointError("checkpoint body has an empty line")
    origin, size_line, root_line = lines[0], lines[1], lines[2]
    if not _SIZE_LINE.fullmatch(size_line) or int(size_line) >= 1 << 64:
        raise CheckpointError(f"bad tree size line {size_line!r}: expected a decimal uint64")
    root = _b64decode(root_line, "root hash")
    if len(root) != HASH_SIZE:
        raise CheckpointError(f"root hash must be {HASH_SIZE} bytes, got {len(root)}")
    return Checkpoint(origin=origin, size=int(size_line), root=root)


def ledger_key_id(name: str, public_key: bytes) -> str:
    """Hex of the 4-byte C2SP key id, as published by GetPublicKeys."""
    return note_key_id(name, public_key).hex()


def note_key_id(name: str, public_key: bytes) -> bytes:
    """SHA-256(name || 0x0A || 0x01 || public key)[:4] (c2sp.org/signed-note, Ed25519)."""
    if len(public_key) != 32:
        raise ValueError(f"Ed25519 public key must be 32 bytes, got {len(public_key)}")
    return hashlib.sha256(name.encode("utf-8") + b"\n" + ED25519_TYPE + public_key).digest()[:4]


@dataclass(frozen=True)
class NoteVerifier:
    """A trusted note key: (name, key id) select it, the Ed25519 public key checks it."""

    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        _check_key_name(self.name)
        if len(self.public_key) != 32:
            raise ValueError(f"Ed25519 public key must be 32 bytes, got {len(self.public_key)}")

    @property
    def key_id(self) -> bytes:
        """The 4-byte key id carried in signature lines."""
        return note_key_id(self.name, self.public_key)

    @property
    def vkey(self) -> str:
        """Verifier key string `<name>+<hex key id>+<base64(0x01 || public key)>` (Go's note)."""
        encoded = base64.b64encode(ED25519_TYPE + self.public_key).decode("ascii")
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        """Parse a verifier key string, checking its key id against its name and key."""
        name, sep1, rest = vkey.partition("+")
        key_hex, sep2, key_b64 = rest.partition("+")
        if not (sep1 and sep2):
            raise ValueError("verifier key must look like name+keyid+base64key")
        raw = base64.b64decode(key_b64, validate=True)
        if len(raw) != 33 or raw[:1] != ED25519_TYPE:
            raise ValueError("verifier key is not an Ed25519 (type 0x01) key")
        verifier = cls(name, raw[1:])
        if verifier.key_id.hex() != key_hex.lower():
            raise ValueError(f"verifier key id {key_hex} does not match {verifier.key_id.hex()}")
        return verifier

    def verify(self, text: bytes, signature: bytes) -> bool:
        """True when `signature` is this key's Ed25519 signature of the note text."""
        try:
            VerifyKey(self.public_key).verify(text, signature)
        except BadSignatureError:
            return False
        return True


def sign_note(text: str, signing_key: SigningKey, name: str) -> str:
    """Append one Ed25519 signature line to note text (which must end with a newline)."""
    _check_key_name(name)
    if not text.endswith("\n"):
        raise ValueError("note text must end with a newline")
    public_key = bytes(signing_key.verify_key)
    sig = signing_key.sign(text.encode("utf-8")).signature
    blob = base64.b64encode(note_key_id(name, public_key) + sig).decode("ascii")
    return f"{text}\n{SIG_PREFIX}{name} {blob}\n"


def sign_checkpoint(cp: Checkpoint, signing_key: SigningKey, name: str) -> str:
    """The signed note text of a checkpoint; the ledger uses name = origin."""
    return sign_note(cp.body(), signing_key, name)


def open_note(note_text: str, verifiers: Sequence[NoteVerifier]) -> str:
    """Return the note text once a known key's signature verifies; raise CheckpointError else."""
    try:
        encoded = note_text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CheckpointError("note is not valid UTF-8") from exc
    if len(encoded) > MAX_NOTE_BYTES:
        raise CheckpointError(f"note is larger than {MAX_NOTE_BYTES} bytes")
    if any(ord(ch) < 0x20 and ch != "\n" for ch in note_text):
        raise CheckpointError("note contains a control character other than newline")
    split = note_text.rfind("\n\n")
    if split < 0:
        raise CheckpointError("note has no blank line between text and signatures")
    text, sig_block = note_text[: split + 1], note_text[split + 2 :]
    if not sig_block.endswith("\n"):
        raise CheckpointError("signature block must end with a newline")
    lines = sig_block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise CheckpointError(f"note has {len(lines)} signatures, at most {MAX_SIGNATURES}")
    known = {(v.name, v.key_id): v for v in verifiers}
    text_bytes = text.encode("utf-8")
    verified = 0
    for line in lines:
        if not line.startswith(SIG_PREFIX):
            raise CheckpointError(f"malformed signature line {line[:80]!r}")
        name, sep, blob_b64 = line[len(SIG_PREFIX) :].partition(" ")
        if not sep or not name or " " in blob_b64:
            raise CheckpointError(f"malformed signature line {line[:80]!r}")
        blob = _b64decode(blob_b64, f"signature of {name!r}")
        if len(blob) < 5:
            raise CheckpointError(f"signature of {name!r} is {len(blob)} bytes, too short")
        verifier = known.get((name, blob[:4]))
        if verifier is None:
            continue  # unknown keys are ignored (witnesses, rotated keys)
        if len(blob) != 4 + 64 or not verifier.verify(text_bytes, blob[4:]):
            raise CheckpointError(f"signature by {name} (key id {blob[:4].hex()}) does not verify")
        verified += 1
    if not verified:
        wanted = ", ".join(f"{v.name}/{v.key_id.hex()}" for v in verifiers) or "none"
        raise CheckpointError(f"note has no signature from a known key (known: {wanted})")
    return text


def open_checkpoint(
    note_text: str, verifiers: Sequence[NoteVerifier], origin: str | None = None
) -> Checkpoint:
    """Verify a signed checkpoint note and parse it; `origin`, when given, must match."""
    cp = parse_checkpoint_body(open_note(note_text, verifiers))
    if origin is not None and cp.origin != origin:
        raise CheckpointError(f"checkpoint origin is {cp.origin!r}, expected {origin!r}")
    return cp


__all__ = [
    "Checkpoint",
    "CheckpointError",
    "NoteVerifier",
    "ledger_key_id",
    "note_key_id",
    "open_checkpoint",
    "open_note",
    "parse_checkpoint_body",
    "sign_checkpoint",
    "sign_note",
]
