"""Pydantic models: one in and one out for every workflow and activity, plus the public views."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

#: User ids are ASCII on purpose: no control characters, no unicode confusables, bounded length.
USER_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:+-]{0,127}$")
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def validate_user_id(value: str) -> str:
    """Return the user id unchanged or raise ValueError naming what is wrong."""
    if not isinstance(value, str) or not USER_ID_PATTERN.fullmatch(value):
        raise ValueError(
            "user_id must be 1-128 ASCII letters, digits or ._@:+- and start with a letter or digit"
        )
    return value


def validate_user_id_or_redacted(value: str) -> str:
    """A user id, or "" where a public view redacts it (docs/privacy.md)."""
    return value if value == "" else validate_user_id(value)


def validate_request_id(value: str) -> str:
    """Return the request id unchanged or raise ValueError naming what is wrong."""
    if not isinstance(value, str) or not REQUEST_ID_PATTERN.fullmatch(value):
        raise ValueError(
            "request_id must be 1-128 ASCII letters, digits or ._:-"
            " and start with a letter or digit"
        )
    return value


def request_hash(user_id: str) -> str:
    """SHA-256 over the canonical issuance request, stored beside its idempotency key."""
    return hashlib.sha256(
        f"golden-press/issue-request/v1\nuser_id={user_id}\n".encode()
    ).hexdigest()


class TicketState(StrEnum):
    """Lifecycle of a ticket row; see the interface sheet's scope table."""

    RESERVED = "reserved"
    ISSUED = "issued"
    REDEEMED = "redeemed"
    VOIDED = "voided"
    REVOKED = "revoked"


class CapScope(StrEnum):
    """Which ticket states count against the cap."""

    LIVE = "live"
    LIFETIME = "lifetime"


#: Ticket states that count against the cap, per scope (the interface sheet's table).
COUNTED_STATES: dict[CapScope, frozenset[TicketState]] = {
    CapScope.LIVE: frozenset({TicketState.RESERVED, TicketState.ISSUED}),
    CapScope.LIFETIME: frozenset(
        {TicketState.RESERVED, TicketState.ISSUED, TicketState.REDEEMED, TicketState.REVOKED}
    ),
}


class Outcome(StrEnum):
    """How a saga ended; `rejected` and `compensated` are completions, not failures."""

    ISSUED = "issued"
    REDEEMED = "redeemed"
    REJECTED = "rejected"
    COMPENSATED = "compensated"


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Ticket(Frozen):
    """A ticket as stored and as shown to callers; the signed fields are the canonical payload's."""

    ticket_id: UUID
    serial: int = Field(ge=1, lt=1 << 63)
    user_id: str
    issued_at: AwareDatetime  # the canonical payload needs an unambiguous instant
    key_id: str = Field("", max_length=64)
    signature: str = Field("", max_length=128)  # base64 Ed25519 signature; empty while reserved
    state: TicketState = TicketState.RESERVED
    request_id: str = Field("", max_length=128)
    leaf_index: int | None = None  # leaf of the `issued` ledger entry

    # Tickets also arrive inside caller-supplied bundles: same rules as at issuance. Public views
    # (VerifyTicket, public proof bundles) carry "" here: the holder is never public.
    _check_user = field_validator("user_id")(validate_user_id_or_redacted)


def as_shown(ticket: Ticket) -> Ticket:
    """The ticket as every caller sees it: a finalised row whose `issued` ledger entry is not
    written yet is still RESERVED, without its signature, since the saga may void it; only a
    ticket in the ledger is issued to anyone (issue 13.4)."""
    if ticket.state is TicketState.ISSUED and ticket.leaf_index is None:
        return ticket.model_copy(update={"state": TicketState.RESERVED, "signature": ""})
    return ticket


#: Bounds of a proof bundle's caller-supplied fields. A bundle travels into a workflow input and
#: into the `redeemed` event, so none may be unbounded: a checkpoint note padded with a megabyte
#: of signature lines from unknown keys still verified, and its event could never be published.
MAX_BUNDLE_NOTE_BYTES = 16 * 1024
MAX_BUNDLE_NOTE_LINES = 4 + 100  # origin, size, root, blank line, then signature lines
MAX_PROOF_HASHES = 64  # a tree of up to 2**63 leaves
MAX_HASH_B64 = 64  # base64 of a 32-byte hash is 44 characters
MAX_ENTRY_B64 = 8 * 1024  # base64 of a ledger entry (at most 4096 bytes)
MAX_SALT_B64 = 128
MAX_INDEX = (1 << 63) - 1

ProofHash = Annotated[str, Field(max_length=MAX_HASH_B64)]


def validate_note(value: str) -> str:
    """A checkpoint note within the bundle bounds (the full check is golden_press.checkpoint)."""
    if len(value.encode()) > MAX_BUNDLE_NOTE_BYTES:
        raise ValueError(f"checkpoint note is over {MAX_BUNDLE_NOTE_BYTES} bytes")
    if value.count("\n") > MAX_BUNDLE_NOTE_LINES:
        raise ValueError(f"checkpoint note has over {MAX_BUNDLE_NOTE_LINES} lines")
    return value


class ProofBundle(Frozen):
    """Everything needed to check a ticket offline: one schema for API, CLI, verifier and events."""

    version: Literal[1] = 1
    ticket: Ticket
    # base64; the ledger entry commits to SHA-256(salt || user_id), never the id. Only the
    # holder's bundle (authenticated GetInclusionProof) carries it; public bundles and events
    # carry "" (and public bundles also carry no user id nor ticket signature).
    user_salt: str = Field("", max_length=MAX_SALT_B64)
    entry: str = Field(max_length=MAX_ENTRY_B64)  # base64 of the canonical `issued` entry bytes
    leaf_index: int = Field(ge=0, le=MAX_INDEX)
    tree_size: int = Field(ge=0, le=MAX_INDEX)
    # base64 hashes, leaf to root
    inclusion_proof: list[ProofHash] = Field(max_length=MAX_PROOF_HASHES)
    # C2SP signed note text of the checkpoint the proof verifies against
    checkpoint: str = Field(max_length=MAX_BUNDLE_NOTE_BYTES)

    _check_note = field_validator("checkpoint")(validate_note)


# ---- workflow inputs and outputs -------------------------------------------------------------


class IssueTicketInput(Frozen):
    """What a caller asks for; request_hash binds the idempotency key to this exact request."""

    user_id: str
    request_id: str
    request_hash: str

    _check_user = field_validator("user_id")(validate_user_id)
    _check_request = field_validator("request_id")(validate_request_id)


class IssueTicketResult(Frozen):
    """Outcome of one issuance saga."""

    outcome: Outcome
    ticket_id: UUID | None = None
    serial: int | None = None
    signature: str = ""
    key_id: str = ""
    issued_at: datetime | None = None
    leaf_index: int | None = None
    reason: str = ""
    message: str = ""


class RedeemTicketInput(Frozen):
    """A holder's redemption: the ticket, who presents it, and the proof they carry."""

    ticket_id: UUID
    user_id: str
    bundle: ProofBundle

    _check_user = field_validator("user_id")(validate_user_id)


class RedeemTicketResult(Frozen):
    """Outcome of one redemption saga."""

    outcome: Outcome
    ticket_id: UUID
    leaf_index: int | None = None
    reason: str = ""
    message: str = ""


class Progress(Frozen):
    """Answer of every workflow's `progress` query."""

    steps_done: list[str] = Field(default_factory=list)
    current_step: str = ""
    last_error: str = ""
    #: Attempts of the current step that failed in earlier retry rounds (a step past the point
    #: of no return retries in rounds; its pending activity counts only the round in progress).
    failed_attempts: int = 0


# ---- activity inputs and outputs -------------------------------------------------------------


class ReserveInput(Frozen):
    """Reserve a slot under the advisory lock for this deterministic ticket id."""

    ticket_id: UUID
    user_id: str
    request_id: str
    request_hash: str
    workflow_id: str


class ReserveResult(Frozen):
    """Either the reserved (or earlier) ticket, or a rejection reason."""

    ticket: Ticket | None = None
    reason: str = ""
    message: str = ""


class TicketRef(Frozen):
    """Names one ticket for an activity that loads the stored row itself."""

    ticket_id: UUID


class SignResult(Frozen):
    """Ed25519 signature over the canonical payload of the stored row."""

    signature: str
    key_id: str


class FinaliseInput(Frozen):
    """Store the signature and move the ticket to `issued`."""

    ticket_id: UUID
    signature: str
    key_id: str


class LedgerAppendResult(Frozen):
    """Where a ticket's entry sits in the ledger, and the ticket as stored."""

    leaf_index: int
    tree_size: int
    ticket: Ticket | None = None


class VoidInput(Frozen):
    """Compensation: give the slot back and record the void in the ledger."""

    ticket_id: UUID
    reason: str


class VoidResult(Frozen):
    """Whether the void happened (False once the ticket is past the point of no return)."""

    voided: bool
    state: TicketState
    leaf_index: int | None = None  # the `voided` ledger entry, when this call wrote or found it


class PublishInput(Frozen):
    """Publish every pending event up to (and including) this ledger leaf."""

    up_to_leaf: int


class PublishResult(Frozen):
    """How many events this call put on the stream (0 when another drain already had)."""

    published: int


class VerifyBundleInput(Frozen):
    """Checks made before the redemption transaction: signature, inclusion, checkpoint."""

    ticket_id: UUID
    bundle: ProofBundle


class CheckResult(Frozen):
    """Empty reason means the check passed."""

    reason: str = ""
    message: str = ""


class RedeemInput(Frozen):
    """Redeem once, under the advisory lock, with the `redeemed` ledger entry in the same tx."""

    ticket_id: UUID
    user_id: str
    workflow_id: str  # "<workflow id>/<run id>": tells this run's own lost result from others'
    bundle_json: str  # carried by the GoldenTicketRedeemed event


class RedeemResult(Frozen):
    """Either the redeemed ledger leaf or a rejection."""

    leaf_index: int | None = None
    reason: str = ""
    message: str = ""


class ReconcileResult(Frozen):
    """What one reconciler pass voided."""

    voided: list[UUID] = Field(default_factory=list)


def validate_reason(value: str) -> str:
    """A free-text reason the ledger can record: no control characters (the entry is lines)."""
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        raise ValueError("reason must not contain control characters")
    return value


class RevokeTicketInput(Frozen):
    """An administrator's revocation (fraud): the ticket and why (it goes into the ledger)."""

    ticket_id: UUID
    reason: str = Field(min_length=1, max_length=200)

    _check_reason = field_validator("reason")(validate_reason)


class RevokeTicketResult(Frozen):
    """Outcome of a revocation saga; `rejected` when the ticket cannot be revoked."""

    outcome: Literal["revoked", "rejected"]
    ticket_id: UUID
    leaf_index: int | None = None
    reason: str = ""
    message: str = ""
