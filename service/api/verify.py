"""VerifyTicket without I/O: ticket states from the admission snapshot, verified signatures and
opened checkpoints memoised per process.

Staleness bound (docs/operations.md): a state change (revoke, void, redeem) reaches this cache
when its NOTIFY arrives (milliseconds after the commit) or, if the NOTIFY is lost, at the next
periodic re-read (`refresh_interval_s`, 1 s). A snapshot older than `max_age_s` (3 s: PostgreSQL
unreachable, the refresher behind) is not used: VerifyTicket then reads PostgreSQL, and fails
UNAVAILABLE rather than answer from stale memory. Redemption never relies on this cache: it
decides under the advisory lock, so a stale "valid" can never let a revoked ticket be redeemed.

A fresh snapshot holds every ticket row as of its read. A ticket id it lacks is answered "not
found" only from a snapshot read that started after the question arrived (Admission.
snapshot_since): a ticket written meanwhile, by any process, is found, and every miss shares
that read (VerifyTicket needs no token: random ids cost one snapshot read at a time between
them, never a statement each). A public bundle takes its stored ticket from the snapshot
likewise; an unsigned row there (finalise's NOTIFY still on the way) is re-read rather than
answered "not found".

What is memoised and why it is safe:
- the response for a stored ticket, per snapshot (replaced with the snapshot);
- a presented ticket whose signature verified, by its exact protobuf bytes, per trust roots
  (signature verification is a pure function of the bytes and the keys; failures are not kept);
- an opened checkpoint note (ledger signature, witness cosignatures, quorum), by its exact text,
  per trust roots (same reason): most bundles carry one of the few latest checkpoints;
- a proof bundle that verified, by the SHA-256 of its exact JSON text, per trust roots: its
  ticket (as presented) and checkpoint size. Verifying a bundle is a pure function of its bytes,
  the keys and, for a public bundle, the stored ticket's signature, which never changes once
  written; the ticket's state is still read from the snapshot on every call. Failures are not
  kept;
- a presented checkpoint short of the witness quorum, completed with the cosignatures this log
  stored for it, once that completion meets the quorum (per trust roots): checkpoints and
  cosignature lines are append-only, so a later read could only add lines to a note that
  already verifies. A completion still short of the quorum is not kept (a witness may yet
  cosign), so such a bundle reads PostgreSQL on every call, as before.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar
from uuid import UUID

import asyncpg

from golden_press.bundle import (
    TrustRoots,
    is_redacted,
    load_bundle,
    redact_ticket,
    verify_bundle,
    verify_public_bundle,
    verify_ticket,
)
from golden_press.checkpoint import CheckpointError, NoteVerifier
from golden_press.cosignature import CosignedCheckpoint, WitnessPolicy, verify_cosignatures
from golden_press.errors import GoldenError, InvalidRequest, Reason
from golden_press.models import ProofBundle, Ticket
from golden_press.snapshot import Snapshot, StoredTicket, standing
from service.api.convert import _STATE_TO_PB, ticket_from_pb, ticket_to_pb
from service.api.pb import golden_pb2
from service.sagas.admission import Admission
from service.sagas.runs import parse_ticket_id
from service.store import tickets as queries
from service.store.cosignatures import with_stored_cosignatures

K = TypeVar("K")
V = TypeVar("V")


class _Lru(Generic[K, V]):
    """A small bounded map, least recently used out first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        if len(self._data) > self._size:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()


@dataclass(frozen=True)
class _RememberingPolicy(WitnessPolicy):
    """The roots' witness policy, remembering the notes it opened (one instance per roots)."""

    opened: dict[tuple[str, str | None], CosignedCheckpoint] = field(
        default_factory=dict, compare=False, repr=False
    )

    def open(
        self,
        note_text: str,
        ledger_verifiers: Sequence[NoteVerifier],
        origin: str | None = None,
    ) -> CosignedCheckpoint:
        """WitnessPolicy.open, once per distinct note (failures are not remembered)."""
        key = (note_text, origin)
        hit = self.opened.get(key)
        if hit is None:
            hit = super().open(note_text, ledger_verifiers, origin)
            if len(self.opened) >= 256:
                self.opened.clear()
            self.opened[key] = hit
        return hit


def max_age_for(refresh_interval_s: float) -> float:
    """The oldest snapshot VerifyTicket answers from: two missed re-reads plus one second."""
    return 2 * refresh_interval_s + 1.0


def _response_for(stored: Ticket) -> golden_pb2.VerifyTicketResponse:
    resp = golden_pb2.VerifyTicketResponse(signature_valid=True)
    # VerifyTicket is public: the ticket is echoed without its holder (docs/privacy.md).
    resp.ticket.CopyFrom(ticket_to_pb(redact_ticket(stored)))
    resp.state = _STATE_TO_PB[stored.state]
    verdict = standing(stored)
    resp.valid = verdict.valid
    resp.redeemable = verdict.redeemable
    if verdict.reason is not None:
        resp.reason = verdict.reason.value
        resp.message = verdict.message
    return resp


class TicketVerifier:
    """VerifyTicket's three subjects, answered from memory whenever memory is fresh enough."""

    def __init__(
        self,
        admission: Admission,
        pool: asyncpg.Pool,
        trust_roots: Callable[[str], Awaitable[TrustRoots]],
        *,
        max_age_s: float | None = None,
        memo_size: int = 10_000,
        policy: WitnessPolicy | None = None,
    ) -> None:
        self._admission = admission
        #: Which checkpoints are trusted (GOLDEN_WITNESSES and GOLDEN_WITNESS_QUORUM); None: the
        #: roots' own policy.
        self._base_policy = policy
        self._pool = pool
        self._trust_roots = trust_roots
        self.max_age_s = (
            max_age_s if max_age_s is not None else max_age_for(admission.refresh_interval_s)
        )
        self._responses: dict[UUID, golden_pb2.VerifyTicketResponse] = {}
        self._responses_of: Snapshot | None = None
        self._roots_of: TrustRoots | None = None
        self._presented: _Lru[bytes, UUID] = _Lru(memo_size)
        #: SHA-256 of a bundle's JSON -> (its issuer key id, its ticket, its checkpoint's size).
        self._bundles: _Lru[bytes, tuple[str, Ticket, int]] = _Lru(memo_size)
        #: Presented checkpoint note -> that note with the stored cosignatures, meeting the quorum.
        self._completed: _Lru[str, str] = _Lru(256)
        self._policy: _RememberingPolicy | None = None

    def _fresh_snapshot(self) -> Snapshot | None:
        snap = self._admission.snapshot
        if not snap.loaded or time.monotonic() - snap.read_at > self.max_age_s:
            return None
        if snap is not self._responses_of:
            self._responses = {}
            self._responses_of = snap
        return snap

    async def _roots(self, key_id: str) -> TrustRoots:
        roots = await self._trust_roots(key_id)
        if roots is self._roots_of:  # the same cached object: nothing changed
            return roots
        if roots != self._roots_of or self._policy is None:
            # Keys changed: memoised verifications no longer hold.
            self._presented.clear()
            self._bundles.clear()
            self._completed.clear()
            policy = self._base_policy or roots.witness_policy()
            self._policy = _RememberingPolicy(policy.witnesses, policy.quorum)
        self._roots_of = roots
        return roots

    async def _known(self, snap: Snapshot, ticket_id: UUID) -> tuple[Snapshot, StoredTicket | None]:
        """The id's row in a fresh snapshot; for an id it lacks, in a snapshot read after now
        (shared with every other miss), since the row may have been written after `snap`."""
        known = snap.by_id.get(ticket_id)
        if known is None:
            snap = await self._admission.snapshot_since(time.monotonic())
            known = snap.by_id.get(ticket_id)
        return snap, known

    async def _stored(
        self, ticket_id: UUID, *, signed: bool = False
    ) -> tuple[Ticket | None, Snapshot | None]:
        """The stored ticket and the snapshot it came from (None: read from PostgreSQL, never
        memoised): from a fresh snapshot (or the next read, for an id it lacks), else from
        PostgreSQL. `signed`: an unsigned row in memory is re-read (it may be signed by now; a
        public bundle exists only for a signed ticket)."""
        snap = self._fresh_snapshot()
        if snap is not None:
            later, known = await self._known(snap, ticket_id)
            if known is None:
                return None, None  # a read that started after the question holds no such row
            if not (signed and is_redacted(known.ticket)):
                if later is not snap:
                    snap = self._fresh_snapshot()  # the memo follows the newer snapshot
                return known.ticket, snap
        return await queries.get_ticket(self._pool, ticket_id), None

    async def stored_response(self, ticket_id: UUID) -> golden_pb2.VerifyTicketResponse | None:
        """The answer for a stored ticket (its signature checked), or None if there is none."""
        if self._fresh_snapshot() is not None:
            cached = self._responses.get(ticket_id)
            if cached is not None:
                return cached
        stored, snap = await self._stored(ticket_id)
        return None if stored is None else await self._respond(stored, snap)

    async def _respond(
        self, stored: Ticket, snap: Snapshot | None
    ) -> golden_pb2.VerifyTicketResponse:
        """The answer for this stored ticket, memoised under `snap` while it is current."""
        if not stored.signature:
            resp = _response_for(stored)
            resp.signature_valid = False
            resp.message = f"ticket is {stored.state.value}, not signed yet"
            resp.reason = Reason.TICKET_NOT_REDEEMABLE.value
            return resp
        verify_ticket(stored, await self._roots(stored.key_id))
        resp = _response_for(stored)
        if snap is not None and snap is self._responses_of:
            self._responses[stored.ticket_id] = resp
        return resp

    async def verify(
        self, request: golden_pb2.VerifyTicketRequest
    ) -> golden_pb2.VerifyTicketResponse:
        """VerifyTicket: crypto (memoised), then the stored state (from memory when fresh)."""
        subject = request.WhichOneof("subject")
        if subject == "ticket_id":
            ticket_id = parse_ticket_id(request.ticket_id)
            resp = await self.stored_response(ticket_id)
            if resp is None:
                raise GoldenError(Reason.TICKET_NOT_FOUND, f"no ticket {request.ticket_id}")
            return resp
        if subject == "ticket":
            key = request.ticket.SerializeToString(deterministic=True)
            roots = await self._roots(request.ticket.key_id)
            verified = self._presented.get(key)
            if verified is None:
                ticket = ticket_from_pb(request.ticket)
                verify_ticket(ticket, roots)
                verified = ticket.ticket_id
                self._presented.put(key, verified)
            resp = await self.stored_response(verified)
            return resp if resp is not None else self._not_found(ticket_from_pb(request.ticket))
        if subject == "bundle_json":
            digest = hashlib.sha256(request.bundle_json.encode()).digest()
            memo = self._bundles.get(digest)
            if memo is not None:
                key_id, ticket, size = memo
                await self._roots(key_id)  # keys that changed clear the memo
                if self._bundles.get(digest) is not None:
                    return await self._bundle_response(ticket, size)
            bundle = load_bundle(request.bundle_json)
            roots = await self._roots(bundle.ticket.key_id)
            bundle = await self._with_stored_cosignatures(bundle)
            if is_redacted(bundle.ticket):
                # A public bundle: the proof is the bundle's; the issuer signature is the stored
                # ticket's, bound to the same ledger entry by its signature digest.
                checkpoint = verify_public_bundle(bundle, roots, self._policy)
                stored, snap = await self._stored(bundle.ticket.ticket_id, signed=True)
                if stored is None or is_redacted(stored):
                    raise GoldenError(
                        Reason.TICKET_NOT_FOUND, f"no signed ticket {bundle.ticket.ticket_id}"
                    )
                full = bundle.model_copy(update={"ticket": stored})
                verify_public_bundle(full, roots, self._policy)
                self._bundles.put(digest, (bundle.ticket.key_id, bundle.ticket, checkpoint.size))
                # The row just read answers: reading it again could find an older one in memory.
                return self._proof_checked(await self._respond(stored, snap), checkpoint.size)
            checkpoint = verify_bundle(bundle, roots, self._policy)
            self._bundles.put(digest, (bundle.ticket.key_id, bundle.ticket, checkpoint.size))
            return await self._bundle_response(bundle.ticket, checkpoint.size)
        raise InvalidRequest("give ticket_id, ticket or bundle_json")

    async def _bundle_response(
        self, ticket: Ticket, checkpoint_size: int
    ) -> golden_pb2.VerifyTicketResponse:
        """The answer for a bundle whose proof verified: the stored ticket's standing now."""
        found = await self.stored_response(ticket.ticket_id)
        return self._proof_checked(found or self._not_found(ticket), checkpoint_size)

    @staticmethod
    def _proof_checked(
        answer: golden_pb2.VerifyTicketResponse, checkpoint_size: int
    ) -> golden_pb2.VerifyTicketResponse:
        """A copy of `answer` (memoised answers are shared) saying the bundle's proof held."""
        out = golden_pb2.VerifyTicketResponse()
        out.CopyFrom(answer)
        out.proof_valid = True
        out.checkpoint_tree_size = checkpoint_size
        return out

    async def _with_stored_cosignatures(self, bundle: ProofBundle) -> ProofBundle:
        """The bundle, its checkpoint completed with the cosignatures this log stored for it when
        it does not meet the quorum as presented (fetched before its witnesses answered)."""
        policy = self._policy
        if policy is None or not policy.quorum:
            return bundle
        try:
            have = len(verify_cosignatures(bundle.checkpoint, policy.witnesses))
        except CheckpointError:
            return bundle  # verification says why
        if have >= policy.quorum:
            return bundle
        note = self._completed.get(bundle.checkpoint)
        if note is None:
            note = await with_stored_cosignatures(self._pool, bundle.checkpoint)
            try:
                if len(verify_cosignatures(note, policy.witnesses)) >= policy.quorum:
                    self._completed.put(bundle.checkpoint, note)
            except CheckpointError:
                pass  # not kept: verification says why
        return bundle.model_copy(update={"checkpoint": note})

    @staticmethod
    def _not_found(ticket: Ticket) -> golden_pb2.VerifyTicketResponse:
        resp = golden_pb2.VerifyTicketResponse(signature_valid=True)
        resp.ticket.CopyFrom(ticket_to_pb(redact_ticket(ticket)))
        resp.reason = Reason.TICKET_NOT_FOUND.value
        resp.message = "signature is authentic but this ledger has no such ticket"
        return resp
