"""Witness cosignatures (c2sp.org/tlog-cosignature, Ed25519 `cosignature/v1`) and the quorum policy.

A cosignature is a signed-note signature line on a checkpoint,

    — <witness name> base64(key id || u64 big-endian timestamp || Ed25519 signature)

where key id = SHA-256(name || 0x0A || 0x04 || 32-byte public key)[:4] and the signature covers

    cosignature/v1\\n
    time <timestamp, ASCII decimal, no leading zeros>\\n
    <the whole checkpoint body, final newline included, no signature lines>

It states: as of `timestamp`, the largest consistent tree this witness saw for the origin has this
root. A checkpoint is *trusted* when the ledger key signed it and at least `quorum` distinct
configured witnesses cosigned it (`GOLDEN_WITNESS_QUORUM`, default: every configured witness).
Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from golden_press.checkpoint import (
    Checkpoint,
    CheckpointError,
    NoteSignature,
    NoteVerifier,
    format_vkey,
    open_checkpoint,
    parse_checkpoint_body,
    parse_note,
    parse_vkey,
)

COSIGNATURE_TYPE = b"\x04"
COSIGNATURE_HEADER = "cosignature/v1"
MAX_TIMESTAMP = (1 << 63) - 1
_URL = re.compile(r"^https?://[^\s]+$")


def cosigner_key_id(name: str, public_key: bytes) -> bytes:
    """SHA-256(name || 0x0A || 0x04 || public key)[:4] (c2sp.org/tlog-cosignature, Ed25519)."""
    if len(public_key) != 32:
        raise ValueError(f"Ed25519 public key must be 32 bytes, got {len(public_key)}")
    return hashlib.sha256(name.encode("utf-8") + b"\n" + COSIGNATURE_TYPE + public_key).digest()[:4]


def cosigned_message(body: str, timestamp: int) -> bytes:
    """The bytes an Ed25519 cosigner signs: header line, time line, checkpoint body."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise ValueError(f"cosignature timestamp {timestamp} is outside 0..2^63-1")
    if not body.endswith("\n"):
        raise ValueError("checkpoint body must end with a newline")
    return f"{COSIGNATURE_HEADER}\ntime {timestamp}\n{body}".encode()


def cosign(body: str, signing_key: SigningKey, name: str, timestamp: int) -> NoteSignature:
    """A witness's cosignature line on checkpoint `body` at POSIX time `timestamp`."""
    public_key = bytes(signing_key.verify_key)
    signature = signing_key.sign(cosigned_message(body, timestamp)).signature
    return NoteSignature(
        name, cosigner_key_id(name, public_key), struct.pack(">Q", timestamp) + signature
    )


@dataclass(frozen=True)
class CosignatureVerifier:
    """A trusted witness key: (name, key id) select its lines, the Ed25519 key checks them."""

    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        # Same name rules as any note key; the vkey formatter checks them.
        format_vkey(self.name, COSIGNATURE_TYPE, self.public_key)
        if len(self.public_key) != 32:
            raise ValueError(f"Ed25519 public key must be 32 bytes, got {len(self.public_key)}")

    @property
    def key_id(self) -> bytes:
        """The 4-byte key id carried in this witness's cosignature lines."""
        return cosigner_key_id(self.name, self.public_key)

    @property
    def vkey(self) -> str:
        """`<name>+<hex key id>+<base64(0x04 || public key)>` (c2sp.org/signed-note vkey)."""
        return format_vkey(self.name, COSIGNATURE_TYPE, self.public_key)

    @classmethod
    def from_vkey(cls, vkey: str) -> CosignatureVerifier:
        """Parse a witness vkey; its type byte must be 0x04 (timestamped Ed25519 cosignature)."""
        parsed = parse_vkey(vkey)
        if parsed.key_type != COSIGNATURE_TYPE:
            raise ValueError(
                f"witness vkey type is 0x{parsed.key_type.hex()}, expected 0x04 (cosignature/v1)"
            )
        return cls(parsed.name, parsed.public_key)

    def matches(self, sig: NoteSignature) -> bool:
        """True when a signature line claims to be this witness's (name and key id)."""
        return sig.name == self.name and sig.key_id == self.key_id

    def verify(self, body: str, sig: NoteSignature) -> int:
        """Return the cosignature's timestamp; raise CheckpointError when it does not verify."""
        if not self.matches(sig):
            raise CheckpointError(f"signature line is not from witness {self.name}")
        if len(sig.signature) != 8 + 64:
            raise CheckpointError(
                f"cosignature by {self.name} is {len(sig.signature)} bytes, expected 72"
            )
        (timestamp,) = struct.unpack(">Q", sig.signature[:8])
        if timestamp > MAX_TIMESTAMP:
            raise CheckpointError(f"cosignature by {self.name} has timestamp {timestamp} > 2^63-1")
        try:
            VerifyKey(self.public_key).verify(cosigned_message(body, timestamp), sig.signature[8:])
        except (BadSignatureError, ValueError) as exc:
            raise CheckpointError(f"cosignature by {self.name} does not verify") from exc
        return int(timestamp)


@dataclass(frozen=True)
class Witness:
    """One configured witness: where the log submits checkpoints and the key it cosigns with."""

    verifier: CosignatureVerifier
    url: str  # submission prefix; the log POSTs to <url>/add-checkpoint

    @property
    def name(self) -> str:
        """The witness's key name (its vkey's name)."""
        return self.verifier.name


def parse_witnesses(value: str | None) -> list[Witness]:
    """Parse `GOLDEN_WITNESSES`: entries separated by commas or newlines, each `<vkey> <url>`.

    The name is the vkey's; names must be distinct. Empty or unset: no witnesses.
    Example: `w1.example/witness+1a2b3c4d+BAf...= http://127.0.0.1:7380`.
    """
    witnesses: list[Witness] = []
    if not value or not value.strip():
        return witnesses
    for raw in re.split(r"[,\n]", value):
        entry = raw.strip()
        if not entry:
            continue
        parts = entry.split()
        if len(parts) != 2:
            raise ValueError(
                f"GOLDEN_WITNESSES entry {entry[:80]!r} must be '<vkey> <url>' (one space)"
            )
        vkey, url = parts
        if not _URL.fullmatch(url):
            raise ValueError(f"GOLDEN_WITNESSES url {url[:80]!r} must start with http(s)://")
        try:
            verifier = CosignatureVerifier.from_vkey(vkey)
        except ValueError as exc:
            raise ValueError(f"GOLDEN_WITNESSES vkey {vkey[:80]!r}: {exc}") from exc
        if any(w.name == verifier.name for w in witnesses):
            raise ValueError(f"GOLDEN_WITNESSES names witness {verifier.name!r} twice")
        witnesses.append(Witness(verifier, url.rstrip("/")))
    return witnesses


def format_witnesses(witnesses: Iterable[Witness]) -> str:
    """The `GOLDEN_WITNESSES` value for these witnesses (what the dev stack sets)."""
    return ",".join(f"{w.verifier.vkey} {w.url}" for w in witnesses)


def parse_quorum(
    value: str | int | None, witness_count: int, name: str = "GOLDEN_WITNESS_QUORUM"
) -> int:
    """`GOLDEN_WITNESS_QUORUM` (or the setting `name`, in messages): how many distinct
    configured witnesses must cosign.

    Unset, empty or `all`: every configured witness. Otherwise an integer 0..witness_count;
    0 trusts the ledger's own signature alone (what a log without witnesses does).
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "all")):
        return witness_count
    try:
        quorum = int(value)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer or 'all', got {value!r}") from exc
    if not 0 <= quorum <= witness_count:
        raise ValueError(
            f"{name} is {quorum}, must be 0..{witness_count} (the number of configured witnesses)"
        )
    return quorum


@dataclass(frozen=True)
class CosignedCheckpoint:
    """A ledger-signed checkpoint and the configured witnesses whose cosignatures verified."""

    checkpoint: Checkpoint
    body: str
    cosigned_by: dict[str, int]  # witness name -> cosignature timestamp


@dataclass(frozen=True)
class WitnessPolicy:
    """Which checkpoints verification and redemption trust: ledger key plus a witness quorum."""

    witnesses: tuple[CosignatureVerifier, ...] = ()
    quorum: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.quorum <= len(self.witnesses):
            raise ValueError(f"quorum {self.quorum} needs 0..{len(self.witnesses)} witnesses")
        names = [w.name for w in self.witnesses]
        if len(set(names)) != len(names):
            raise ValueError("witness names must be distinct")

    @classmethod
    def from_settings(cls, witnesses: str | None, quorum: str | int | None) -> WitnessPolicy:
        """The policy `GOLDEN_WITNESSES` and `GOLDEN_WITNESS_QUORUM` describe."""
        parsed = parse_witnesses(witnesses)
        return cls(tuple(w.verifier for w in parsed), parse_quorum(quorum, len(parsed)))

    @classmethod
    def from_vkeys(cls, vkeys: Sequence[str], quorum: int | None = None) -> WitnessPolicy:
        """A policy from witness vkeys (trust roots); quorum None means all of them."""
        verifiers = tuple(CosignatureVerifier.from_vkey(v) for v in vkeys)
        return cls(verifiers, len(verifiers) if quorum is None else quorum)

    def open(
        self,
        note_text: str,
        ledger_verifiers: Sequence[NoteVerifier],
        origin: str | None = None,
    ) -> CosignedCheckpoint:
        """Verify the ledger signature and every known cosignature; enforce the quorum.

        Unknown signature lines are ignored (c2sp.org/signed-note); a known witness's line that
        fails to verify rejects the whole note, as a ledger signature that fails does.
        """
        checkpoint = open_checkpoint(note_text, ledger_verifiers, origin)
        cosigned = verify_cosignatures(note_text, self.witnesses)
        if len(cosigned) < self.quorum:
            have = ", ".join(sorted(cosigned)) or "none"
            raise CheckpointError(
                f"checkpoint of size {checkpoint.size} has {len(cosigned)} witness "
                f"cosignature(s) ({have}), the policy needs {self.quorum} of "
                f"{', '.join(w.name for w in self.witnesses)}"
            )
        return CosignedCheckpoint(checkpoint, parse_note(note_text).text, cosigned)


def verify_cosignatures(note_text: str, witnesses: Sequence[CosignatureVerifier]) -> dict[str, int]:
    """Witness name -> timestamp of every known witness's cosignature that verifies.

    Raises CheckpointError when a known witness's line does not verify, or when the body is not
    a checkpoint. Does not check the ledger's signature (open_checkpoint does).
    """
    note = parse_note(note_text)
    parse_checkpoint_body(note.text)
    found: dict[str, int] = {}
    for sig in note.signatures:
        for witness in witnesses:
            if witness.matches(sig):
                found[witness.name] = witness.verify(note.text, sig)
    return found


def add_signature_lines(note_text: str, lines: Iterable[NoteSignature]) -> str:
    """The note with extra signature lines, one per (name, key id): a newer line replaces."""
    note = parse_note(note_text)
    merged: dict[tuple[str, bytes], NoteSignature] = {
        (s.name, s.key_id): s for s in note.signatures
    }
    for line in lines:
        merged[(line.name, line.key_id)] = line
    return type(note)(note.text, tuple(merged.values())).render()


__all__ = [
    "COSIGNATURE_TYPE",
    "CosignatureVerifier",
    "CosignedCheckpoint",
    "Witness",
    "WitnessPolicy",
    "add_signature_lines",
    "cosign",
    "cosigned_message",
    "cosigner_key_id",
    "format_witnesses",
    "parse_quorum",
    "parse_witnesses",
    "verify_cosignatures",
]
