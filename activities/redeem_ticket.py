"""Redemption saga activities: verify signature, verify ledger proof, redeem once, in order."""

from __future__ import annotations

from functools import partial

import asyncpg
from temporalio import activity

from activities.faults import NO_FAULTS, Faults
from activities.metrics import count
from golden_press.bundle import redact_bundle, verify_bundle
from golden_press.checkpoint import Checkpoint
from golden_press.cosignature import WitnessPolicy
from golden_press.errors import GoldenError, Reason
from golden_press.ledger_entry import EntryKind
from golden_press.merkle import verify_consistency
from golden_press.models import (
    CheckResult,
    ProofBundle,
    RedeemInput,
    RedeemResult,
    TicketState,
    VerifyBundleInput,
)
from golden_press.signing import canonical_payload, verify_payload
from service.store import tickets
from service.store.cosignatures import with_stored_cosignatures
from service.store.db import SlotNotice, cap_transaction
from service.store.keys import issuer_public_key, trust_roots
from service.store.ledger import LedgerStore, record_entry
from service.store.outbox import events_pb2, timestamp

#: Reasons a ticket's stored state gives before any proof is looked at.
STATE_REJECTIONS = {
    TicketState.REDEEMED: (Reason.ALREADY_REDEEMED, "ticket was already redeemed"),
    TicketState.VOIDED: (Reason.TICKET_NOT_REDEEMABLE, "ticket was voided"),
    TicketState.REVOKED: (Reason.TICKET_NOT_REDEEMABLE, "ticket was revoked"),
    TicketState.RESERVED: (Reason.TICKET_NOT_REDEEMABLE, "ticket is not issued yet"),
}


def _fail(reason: Reason, message: str) -> CheckResult:
    return CheckResult(reason=reason.value, message=message)


class RedemptionActivities:
    """Checks and the once-only redemption transaction of RedeemTicketWorkflow."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        ledger: LedgerStore,
        origin: str,
        faults: Faults = NO_FAULTS,
        policy: WitnessPolicy | None = None,
    ) -> None:
        self._pool = pool
        self._ledger = ledger
        self._origin = origin
        self._faults = faults
        #: Which checkpoints a redemption trusts (GOLDEN_WITNESSES, GOLDEN_WITNESS_QUORUM).
        self._policy = policy if policy is not None else WitnessPolicy()

    @activity.defn(name="verify_ticket_signature")
    async def verify_ticket_signature(self, req: VerifyBundleInput) -> CheckResult:
        """Step 1: the ticket exists and the bundle's ticket carries a valid issuer signature."""
        ticket = req.bundle.ticket
        async with self._pool.acquire() as conn:
            row = await tickets.ticket_row(conn, req.ticket_id)
            key = await issuer_public_key(conn, ticket.key_id)
        if row is None:
            return _fail(Reason.TICKET_NOT_FOUND, f"no ticket {req.ticket_id}")
        if ticket.ticket_id != req.ticket_id:
            return _fail(Reason.BAD_PROOF, "the bundle is for another ticket")
        if key is None:
            return _fail(Reason.BAD_SIGNATURE, f"unknown issuer key id {ticket.key_id!r}")
        try:
            payload = canonical_payload(
                ticket.ticket_id, ticket.serial, ticket.user_id, ticket.issued_at, ticket.key_id
            )
            verify_payload(bytes(key), payload, ticket.signature)
        except GoldenError as err:
            return _fail(err.reason, err.message)
        except ValueError as err:  # defence in depth: the model already validates these fields
            return _fail(Reason.BAD_SIGNATURE, f"ticket fields are not signable: {err}")
        if ticket.signature != row["signature"] or ticket.serial != row["serial"]:
            return _fail(Reason.BAD_SIGNATURE, "the signed ticket differs from the stored one")
        state = TicketState(row["state"])
        if state in STATE_REJECTIONS:
            reason, message = STATE_REJECTIONS[state]
            return _fail(reason, message)
        return CheckResult()

    @activity.defn(name="verify_ledger_proof")
    async def verify_ledger_proof(self, req: VerifyBundleInput) -> CheckResult:
        """Step 2: inclusion against a trusted checkpoint (ledger-signed and cosigned by the witness
        quorum) that is consistent with the head."""
        async with self._pool.acquire() as conn:
            try:
                roots = await trust_roots(conn, self._origin)
                # Cosignatures the log stored for that very checkpoint count too: a bundle taken
                # a moment before its witnesses answered still redeems once they have.
                note = await with_stored_cosignatures(conn, req.bundle.checkpoint)
                bundle = req.bundle.model_copy(update={"checkpoint": note})
                checkpoint = verify_bundle(bundle, roots, self._policy)
            except GoldenError as err:
                return _fail(err.reason, err.message)
            head = await self._ledger.latest_checkpoint(conn)
            try:
                await self._check_consistent(conn, checkpoint, head.size, head.root)
            except GoldenError as err:
                return _fail(Reason.INCONSISTENT_CHECKPOINT, err.message)
        return CheckResult()

    async def _check_consistent(
        self, conn: asyncpg.Connection, checkpoint: Checkpoint, head_size: int, head_root: bytes
    ) -> None:
        if checkpoint.size > head_size:
            raise GoldenError(
                Reason.INCONSISTENT_CHECKPOINT,
                f"checkpoint size {checkpoint.size} is beyond the ledger head {head_size}",
            )
        if checkpoint.size == head_size:
            proof: list[bytes] = []
        else:
            proof = await self._ledger.consistency_proof(conn, checkpoint.size, head_size)
        verify_consistency(checkpoint.size, head_size, checkpoint.root, head_root, proof)

    @activity.defn(name="redeem_ticket")
    async def redeem_ticket(self, req: RedeemInput) -> RedeemResult:
        """Step 3, ONE transaction under the advisory lock: checks, state, ledger entry, event."""
        await self._faults.before("redeem")
        async with cap_transaction(self._pool) as conn:
            row = await tickets.lock_ticket(conn, req.ticket_id)
            if row is None:
                return RedeemResult(reason=Reason.TICKET_NOT_FOUND, message="no such ticket")
            if row["user_id"] != req.user_id:
                return RedeemResult(
                    reason=Reason.NOT_ISSUEE, message="tickets are non-transferable"
                )
            state = TicketState(row["state"])
            if state == TicketState.REDEEMED and row["redeemed_by_workflow"] == req.workflow_id:
                # This very run's earlier attempt committed and its result was lost.
                return RedeemResult(leaf_index=row["redeemed_leaf"])
            if state in STATE_REJECTIONS:
                reason, message = STATE_REJECTIONS[state]
                return RedeemResult(reason=reason, message=message)
            redeemed = await tickets.mark_redeemed(conn, req.ticket_id, req.workflow_id)
            appended = await record_entry(
                conn,
                self._ledger,
                EntryKind.REDEEMED,
                redeemed,
                events_pb2.GoldenTicketRedeemed(
                    user_id=redeemed["user_id"],
                    redeemed_at=timestamp(redeemed["redeemed_at"]),
                    # The event may name the user, never carry the salt (docs/privacy.md).
                    proof_bundle_json=redact_bundle(
                        ProofBundle.model_validate_json(req.bundle_json), keep_user_id=True
                    ).model_dump_json(),
                ),
                at=redeemed["redeemed_at"],
                leaf_write=partial(tickets.redeemed_leaf, req.ticket_id),
                notify=tickets.slots_notice(SlotNotice.REDEEMED),
            )
        count("tickets_redeemed_total")
        activity.logger.info("ticket %s redeemed at leaf %s", req.ticket_id, appended.leaf_index)
        self._faults.after_commit("redeem")
        return RedeemResult(leaf_index=appended.leaf_index)
