"""Ed25519 ticket signatures over a canonical, versioned payload (no I/O: keys are passed in).

Canonical payload, version 1 (UTF-8, every line ends with a single LF, nothing else):

    golden-press/ticket/v1
    ticket_id=<UUID, lowercase hex with hyphens>
    serial=<decimal integer, no leading zeros>
    user_id=<user id, ASCII, see models.USER_ID_PATTERN>
    issued_at=<UTC, YYYY-MM-DDTHH:MM:SS.ffffffZ (always 6 fraction digits)>
    key_id=<issuer key id, 16 lowercase hex digits>

key_id = the first 8 bytes of SHA-256(raw 32-byte Ed25519 public key), hex. The signature is the
64-byte Ed25519 signature of those bytes, carried as standard base64.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import UTC, datetime
from uuid import UUID

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from golden_press.errors import GoldenError, Reason

PAYLOAD_HEADER = "golden-press/ticket/v1"


def key_id_for(public_key: bytes) -> str:
    """Stable short id of an issuer public key, carried in every ticket so keys can rotate."""
    return hashlib.sha256(public_key).digest()[:8].hex()


def format_timestamp(value: datetime) -> str:
    """The canonical UTC timestamp: always microseconds and a Z suffix."""
    if value.tzinfo is None:
        raise ValueError("issued_at must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_payload(
    ticket_id: UUID, serial: int, user_id: str, issued_at: datetime, key_id: str
) -> bytes:
    """The exact bytes an issuer signs and an outside verifier rebuilds."""
    lines = [
        PAYLOAD_HEADER,
        f"ticket_id={ticket_id}",
        f"serial={int(serial)}",
        f"user_id={user_id}",
        f"issued_at={format_timestamp(issued_at)}",
        f"key_id={key_id}",
    ]
    return ("\n".join(lines) + "\n").encode("ascii")


def sign_payload(signing_key: SigningKey, payload: bytes) -> str:
    """Detached Ed25519 signature, base64."""
    return base64.b64encode(signing_key.sign(payload).signature).decode("ascii")


def verify_payload(public_key: bytes, payload: bytes, signature_b64: str) -> None:
    """Raise GoldenError(BadSignature) unless the signature is a valid Ed25519 one for payload."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise GoldenError(Reason.BAD_SIGNATURE, "signature is not valid base64") from exc
    if len(signature) != 64:
        raise GoldenError(Reason.BAD_SIGNATURE, f"signature must be 64 bytes, got {len(signature)}")
    try:
        VerifyKey(public_key).verify(payload, signature)
    except BadSignatureError as exc:
        raise GoldenError(Reason.BAD_SIGNATURE, "signature does not verify") from exc
