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
from golden_press.merkle import HASH_SIZE, hash_b64

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
        return f"{self.origin}\n{self.size}\n{hash_b64(self.root)}\n"


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


_VKEY_ID = re.compile(r"^[0-9a-f]{8}$")


@dataclass(frozen=True)
class ParsedVkey:
    """A C2SP verifier key `<name>+<hex key id>+<base64(type byte || public key)>`, checked."""

    name: str
    key_id: bytes
    key_type: bytes
    public_key: bytes


def parse_vkey(vkey: str) -> ParsedVkey:
    """Parse a vkey (c2sp.org/signed-note, Go's note.NewVerifier) and check its key id.

    Raises ValueError naming the first problem: the parts, the name rules, the 8 lowercase hex
    digits of the key id, canonical base64, a 32-byte Ed25519 key, and the key id recomputed as
    SHA-256(name || 0x0A || type || key)[:4].
    """
    if not isinstance(vkey, str) or vkey != vkey.strip():
        raise ValueError("vkey must be a string without surrounding whitespace")
    parts = vkey.split("+", 2)  # base64 may contain '+'; name and key id may not
    if len(parts) != 3:
        raise ValueError(f"vkey must be name+keyid+base64key (3 parts), got {len(parts)} parts")
    name, key_hex, key_b64 = parts
    _check_key_name(name)
    if not _VKEY_ID.fullmatch(key_hex):
        raise ValueError(f"vkey key id {key_hex[:16]!r} is not 8 lowercase hex digits")
    try:
        raw = _b64decode(key_b64, "vkey key")
    except CheckpointError as exc:
        raise ValueError(exc.message) from exc
    if len(raw) != 33:
        raise ValueError(f"vkey key must be a type byte and a 32-byte key, got {len(raw)} bytes")
    key_type, public_key = raw[:1], raw[1:]
    expected = hashlib.sha256(name.encode("utf-8") + b"\n" + raw).digest()[:4]
    if expected.hex() != key_hex:
        raise ValueError(f"vkey key id {key_hex} does not match its key ({expected.hex()})")
    return ParsedVkey(name, bytes.fromhex(key_hex), key_type, public_key)


def format_vkey(name: str, key_type: bytes, public_key: bytes) -> str:
    """The vkey string of a key: `<name>+<hex key id>+<base64(type || key)>`."""
    _check_key_name(name)
    raw = key_type + public_key
    key_id = hashlib.sha256(name.encode("utf-8") + b"\n" + raw).digest()[:4]
    return f"{name}+{key_id.hex()}+{base64.b64encode(raw).decode('ascii')}"


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
        return format_vkey(self.name, ED25519_TYPE, self.public_key)

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        """Parse a verifier key string, checking its key id against its name and key."""
        parsed = parse_vkey(vkey)
        if parsed.key_type != ED25519_TYPE:
            raise ValueError(
                f"verifier key type is 0x{parsed.key_type.hex()}, expected 0x01 (Ed25519 note key)"
            )
        return cls(parsed.name, parsed.public_key)

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


@dataclass(frozen=True)
class NoteSignature:
    """One signature line of a note: key name, 4-byte key id and the signature bytes after it."""

    name: str
    key_id: bytes
    signature: bytes

    @property
    def line(self) -> str:
        """The signature line as it appears in the note, newline included."""
        blob = base64.b64encode(self.key_id + self.signature).decode("ascii")
        return f"{SIG_PREFIX}{self.name} {blob}\n"


@dataclass(frozen=True)
class SignedNote:
    """A note split into its text (final newline included) and every signature line, unverified."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def render(self) -> str:
        """The note text again: text, blank line, signature lines in order."""
        return self.text + "\n" + "".join(sig.line for sig in self.signatures)


def parse_signature_lines(sig_block: str) -> tuple[NoteSignature, ...]:
    """Parse newline-terminated `— <name> <base64(key id || signature)>` lines (no checks)."""
    if not sig_block.endswith("\n"):
        raise CheckpointError("signature block must end with a newline")
    lines = sig_block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise CheckpointError(f"note has {len(lines)} signatures, at most {MAX_SIGNATURES}")
    signatures = []
    for line in lines:
        if not line.startswith(SIG_PREFIX):
            raise CheckpointError(f"malformed signature line {line[:80]!r}")
        name, sep, blob_b64 = line[len(SIG_PREFIX) :].partition(" ")
        if not sep or not name or " " in blob_b64 or "+" in name:
            raise CheckpointError(f"malformed signature line {line[:80]!r}")
        blob = _b64decode(blob_b64, f"signature of {name!r}")
        if len(blob) < 5:
            raise CheckpointError(f"signature of {name!r} is {len(blob)} bytes, too short")
        signatures.append(NoteSignature(name, blob[:4], blob[4:]))
    return tuple(signatures)


def parse_note(note_text: str) -> SignedNote:
    """Split a signed note (c2sp.org/signed-note) into text and signatures; verifies nothing."""
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
    return SignedNote(note_text[: split + 1], parse_signature_lines(note_text[split + 2 :]))


def open_note(note_text: str, verifiers: Sequence[NoteVerifier]) -> str:
    """Return the note text once a known key's signature verifies; raise CheckpointError else.

    Signatures of unknown keys (witness cosignatures among them) are ignored here; the
    cosignature module verifies those it knows.
    """
    note = parse_note(note_text)
    known = {(v.name, v.key_id): v for v in verifiers}
    text_bytes = note.text.encode("utf-8")
    verified = 0
    for sig in note.signatures:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            continue  # unknown keys are ignored (witnesses, rotated keys)
        if len(sig.signature) != 64 or not verifier.verify(text_bytes, sig.signature):
            raise CheckpointError(
                f"signature by {sig.name} (key id {sig.key_id.hex()}) does not verify"
            )
        verified += 1
    if not verified:
        wanted = ", ".join(f"{v.name}/{v.key_id.hex()}" for v in verifiers) or "none"
        raise CheckpointError(f"note has no signature from a known key (known: {wanted})")
    return note.text


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
    "NoteSignature",
    "NoteVerifier",
    "ParsedVkey",
    "SignedNote",
    "format_vkey",
    "ledger_key_id",
    "note_key_id",
    "open_checkpoint",
    "open_note",
    "parse_checkpoint_body",
    "parse_note",
    "parse_signature_lines",
    "parse_vkey",
    "sign_checkpoint",
    "sign_note",
]
