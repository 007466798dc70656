"""Offline proof bundles built in memory: one signed ticket in a log of made-up leaves.

Pure (no server): the unit tests of the offline verifier and of public (redacted) bundles share
these keys and builders, so both judge the very same bundle.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from uuid import UUID

from nacl.signing import SigningKey

from golden_press.bundle import LedgerTrust, TrustRoots
from golden_press.checkpoint import Checkpoint, sign_checkpoint
from golden_press.ledger_entry import EntryKind, encode_entry, entry_for_ticket
from golden_press.merkle import inclusion_proof, leaf_hash, root_hash
from golden_press.models import ProofBundle, Ticket, TicketState
from golden_press.signing import canonical_payload, key_id_for, sign_payload

ORIGIN = "golden-press.test/ledger"
ISSUER = SigningKey(b"\x31" * 32)
LEDGER = SigningKey(b"\x32" * 32)
KEY_ID = key_id_for(bytes(ISSUER.verify_key))
SALT = b"s" * 16
AT = datetime(2024, 6, 1, 9, 30, 0, 5, tzinfo=UTC)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


ROOTS = TrustRoots(
    origin=ORIGIN,
    issuer_keys={KEY_ID: b64(bytes(ISSUER.verify_key))},
    ledger=[LedgerTrust(public_key=b64(bytes(LEDGER.verify_key)))],
)


def signed_ticket(**over: object) -> Ticket:
    """Charlie's ticket #4, signed by ISSUER after `over` replaced any of its fields."""
    fields: dict[str, object] = {
        "ticket_id": UUID("11111111-2222-4333-8444-555555555555"),
        "serial": 4,
        "user_id": "charlie",
        "issued_at": AT,
        "key_id": KEY_ID,
        "state": TicketState.ISSUED,
    }
    fields.update(over)
    unsigned = Ticket.model_validate(fields)
    payload = canonical_payload(
        unsigned.ticket_id, unsigned.serial, unsigned.user_id, unsigned.issued_at, unsigned.key_id
    )
    return unsigned.model_copy(update={"signature": sign_payload(ISSUER, payload)})


def offline_bundle(
    ticket: Ticket | None = None,
    *,
    entry: bytes | None = None,
    index: int = 5,
    size: int = 11,
    signer: SigningKey = LEDGER,
    origin: str = ORIGIN,
) -> ProofBundle:
    """A log of `size` leaves whose leaf `index` is the ticket's issued entry (or `entry`)."""
    ticket = ticket or signed_ticket()
    data = (
        entry
        if entry is not None
        else encode_entry(entry_for_ticket(EntryKind.ISSUED, ticket, SALT, AT))
    )
    hashes = [leaf_hash(f"other {i}".encode()) for i in range(size)]
    hashes[index] = leaf_hash(data)
    cp = Checkpoint(origin=origin, size=size, root=root_hash(hashes))
    return ProofBundle(
        ticket=ticket,
        user_salt=b64(SALT),
        entry=b64(data),
        leaf_index=index,
        tree_size=size,
        inclusion_proof=[b64(h) for h in inclusion_proof(hashes, index, size)],
        checkpoint=sign_checkpoint(cp, signer, origin),
    )
