"""Reading a stack's tickets and ledger, and forging bundles the sagas must refuse."""

from __future__ import annotations

import base64
import uuid

from nacl.signing import SigningKey

from golden_press.checkpoint import Checkpoint, sign_checkpoint
from golden_press.ledger_entry import EntryKind, LedgerEntry, encode_entry, user_commitment
from golden_press.merkle import inclusion_proof, leaf_hash, root_hash
from golden_press.models import Outcome, ProofBundle
from tests.helpers.stack import Stack


async def ticket_rows(stack: Stack) -> list[dict[str, object]]:
    """Every ticket row, by serial."""
    rows = await stack.pool.fetch("SELECT * FROM tickets ORDER BY serial")
    return [dict(r) for r in rows]


async def ledger_kinds(stack: Stack) -> list[str]:
    """The kind of every ledger entry, in leaf order."""
    rows = await stack.pool.fetch("SELECT kind FROM ledger_entries ORDER BY leaf_index")
    return [r["kind"] for r in rows]


def tamper_signature(bundle: ProofBundle) -> ProofBundle:
    raw = bytearray(base64.b64decode(bundle.ticket.signature))
    raw[0] ^= 1
    ticket = bundle.ticket.model_copy(update={"signature": base64.b64encode(raw).decode()})
    return bundle.model_copy(update={"ticket": ticket})


def forged_checkpoint(bundle: ProofBundle) -> ProofBundle:
    cp = Checkpoint(origin="golden-press.local/ledger", size=bundle.tree_size, root=b"\x11" * 32)
    note = sign_checkpoint(cp, SigningKey.generate(), "golden-press.local/ledger")
    return bundle.model_copy(update={"checkpoint": note})


def fork(stack: Stack, bundle: ProofBundle) -> ProofBundle:
    """A checkpoint really signed by the ledger key over a tree the ledger never had."""
    entry = base64.b64decode(bundle.entry)
    fake = LedgerEntry(
        kind=EntryKind.VOIDED,
        ticket_id=uuid.uuid4(),
        serial=99,
        user_commitment=user_commitment(b"s" * 16, "x"),
        at=bundle.ticket.issued_at,
        reason="forged",
    )
    leaves = [leaf_hash(encode_entry(fake))] * bundle.leaf_index + [leaf_hash(entry)]
    leaves += [leaf_hash(encode_entry(fake))]
    size = len(leaves)
    cp = Checkpoint(origin=stack.settings.ledger_origin, size=size, root=root_hash(leaves))
    note = sign_checkpoint(cp, stack.keys.ledger, stack.settings.ledger_origin)
    proof = inclusion_proof(leaves, bundle.leaf_index, size)
    return bundle.model_copy(
        update={
            "checkpoint": note,
            "tree_size": size,
            "inclusion_proof": [base64.b64encode(h).decode() for h in proof],
        }
    )


async def populated(stack: Stack) -> list[uuid.UUID]:
    """Three issued tickets (ann, ben, cyd), ann's redeemed."""
    ids = []
    for user in ("ann", "ben", "cyd"):
        result = await stack.issue(user)
        assert result.outcome == Outcome.ISSUED and result.ticket_id
        ids.append(result.ticket_id)
    bundle = await stack.bundle_for(ids[0])
    assert (await stack.redeem(ids[0], "ann", bundle)).outcome == Outcome.REDEEMED
    return ids


async def insert_expired_reservation(stack: Stack) -> None:
    """A reservation whose saga died: serial 99, its lease ended a second ago."""
    await stack.pool.execute(
        "INSERT INTO tickets (ticket_id, serial, user_id, request_id, request_hash, workflow_id,"
        " state, issued_at, reserved_until, user_salt) VALUES ($1, 99, 'ghost', 'ghost-req', 'h',"
        " 'issue-ghost', 'reserved', now(), now() - interval '1 second', $2)",
        uuid.uuid4(),
        b"s" * 16,
    )
