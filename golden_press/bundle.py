"""Offline verification of a proof bundle against pinned trust roots (pure: no I/O).

A holder's bundle (golden_press.models.ProofBundle) proves, with no server: the issuer signed the
ticket, the ledger's `issued` entry for exactly that ticket and holder is leaf `leaf_index` of a
tree of `tree_size` leaves, the ledger key signed a checkpoint of that tree and enough witnesses
cosigned it (the roots' witness policy). The caller keeps the returned checkpoint to check
consistency with a later head (merkle.verify_consistency).

A public bundle (redact_bundle) carries neither the user id, nor the salt, nor the ticket
signature; verify_public_bundle checks everything else: that ticket id, serial and key id are an
`issued` entry in a trusted checkpoint. See docs/privacy.md.
"""

from __future__ import annotations

import base64
import binascii

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from golden_press.checkpoint import Checkpoint, NoteVerifier
from golden_press.cosignature import WitnessPolicy
from golden_press.errors import GoldenError, InvalidRequest, Reason, one_line
from golden_press.ledger_entry import (
    EntryKind,
    decode_entry,
    signature_digest,
    user_commitment,
)
from golden_press.merkle import leaf_hash, verify_inclusion
from golden_press.models import ProofBundle, Ticket
from golden_press.signing import canonical_payload, key_id_for, verify_payload


class LedgerTrust(BaseModel):
    """One ledger checkpoint key; its note key name is `name`, defaulting to the ledger origin."""

    model_config = ConfigDict(frozen=True)

    public_key: str  # base64 of the 32-byte Ed25519 public key
    name: str = ""
    origin: str = ""  # may be given here or once on TrustRoots


class TrustRoots(BaseModel):
    """Keys an offline verifier pins: issuer keys by key id (retired ones too) and ledger keys.

    Canonical JSON: {"version": 1, "origin": ..., "issuer_keys": {key_id: b64}, "ledger": [...]}.
    Also accepted on input: "issuer" for "issuer_keys" and a single ledger object for the list.
    """

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    version: int = 1
    origin: str = ""
    issuer_keys: dict[str, str] = Field(
        default_factory=dict, validation_alias=AliasChoices("issuer_keys", "issuer")
    )
    ledger: list[LedgerTrust]
    #: Witness vkeys (c2sp.org/tlog-cosignature, type 0x04) and how many must cosign a
    #: checkpoint before it is trusted (None: all of them; 0 or no witnesses: the ledger alone).
    witnesses: list[str] = Field(default_factory=list)
    witness_quorum: int | None = None

    @field_validator("ledger", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return value if isinstance(value, list | tuple) else [value]

    @model_validator(mode="after")
    def _origin_known(self) -> TrustRoots:
        origins = {k.origin for k in self.ledger if k.origin} | ({self.origin} - {""})
        if len(origins) != 1:
            raise ValueError(f"trust roots need exactly one ledger origin, got {sorted(origins)}")
        if not self.ledger:
            raise ValueError("trust roots need at least one ledger key")
        self.witness_policy()  # the vkeys parse and the quorum fits them
        return self

    def witness_policy(self) -> WitnessPolicy:
        """Which checkpoints these roots trust: the ledger key plus the witness quorum."""
        return WitnessPolicy.from_vkeys(self.witnesses, self.witness_quorum)

    @property
    def ledger_origin(self) -> str:
        """The origin line every checkpoint of this ledger carries."""
        return self.origin or next(k.origin for k in self.ledger if k.origin)

    def ledger_verifiers(self) -> list[NoteVerifier]:
        """Note verifiers of every pinned ledger key (key name defaults to the origin)."""
        origin = self.ledger_origin
        return [
            NoteVerifier(
                k.name or origin,
                _b64(k.public_key, "ledger public key", 32, Reason.BAD_CHECKPOINT),
            )
            for k in self.ledger
        ]


def load_trust_roots(text: str) -> TrustRoots:
    """Parse trust roots JSON."""
    return TrustRoots.model_validate_json(text)


def dump_trust_roots(roots: TrustRoots) -> str:
    """Trust roots as indented JSON (what `golden-press` writes for offline verifiers)."""
    return roots.model_dump_json(indent=2)


#: A proof bundle's JSON at its bounds (golden_press.models) is far smaller; anything bigger is
#: refused before it is parsed.
MAX_BUNDLE_JSON_BYTES = 64 * 1024


def check_bundle_size(text: str | bytes) -> None:
    """InvalidRequest when a bundle's JSON is over MAX_BUNDLE_JSON_BYTES (checked unparsed)."""
    if len(text) > MAX_BUNDLE_JSON_BYTES:
        raise InvalidRequest(
            f"a proof bundle is at most {MAX_BUNDLE_JSON_BYTES} bytes, this one is {len(text)}"
        )


def load_bundle(text: str) -> ProofBundle:
    """Parse a proof bundle JSON (raises BadProof when it is not one, InvalidRequest when huge)."""
    check_bundle_size(text)
    try:
        return ProofBundle.model_validate_json(text)
    except ValidationError as exc:
        raise GoldenError(Reason.BAD_PROOF, f"not a proof bundle: {one_line(exc)}") from exc


def dump_bundle(bundle: ProofBundle) -> str:
    """A proof bundle as indented JSON."""
    return bundle.model_dump_json(indent=2)


def _b64(
    value: str, what: str, size: int | None = None, reason: Reason = Reason.BAD_PROOF
) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise GoldenError(reason, f"{what} is not valid base64") from exc
    if size is not None and len(raw) != size:
        raise GoldenError(reason, f"{what} must be {size} bytes, got {len(raw)}")
    return raw


def verify_ticket_signature(bundle: ProofBundle, roots: TrustRoots) -> None:
    """BadSignature unless a pinned issuer key signed the bundle ticket's canonical payload."""
    verify_ticket(bundle.ticket, roots)


def is_redacted(ticket: Ticket) -> bool:
    """True for a public view of a ticket: no holder and no signature (docs/privacy.md)."""
    return ticket.user_id == "" or ticket.signature == ""


def redact_ticket(ticket: Ticket) -> Ticket:
    """The public view of a ticket: no user id, and no signature either.

    The signature covers the user id, so publishing it would let anyone test guessed user ids
    against the issuer key (a dictionary attack); the public sees the ticket's id, serial, time,
    key id and state, and the ledger entry's signature digest.
    """
    return ticket.model_copy(update={"user_id": "", "signature": ""})


def redact_bundle(bundle: ProofBundle, *, keep_user_id: bool = False) -> ProofBundle:
    """A bundle without the salt, and (unless keep_user_id, for internal events) the holder.

    The public bundle still proves that the ticket's `issued` entry (id, serial, key id) is a
    leaf of a ledger-signed, witness-cosigned checkpoint; only the holder's bundle proves whose
    ticket it is and carries the issuer signature.
    """
    ticket = bundle.ticket if keep_user_id else redact_ticket(bundle.ticket)
    return bundle.model_copy(update={"ticket": ticket, "user_salt": ""})


def verify_ticket(ticket: Ticket, roots: TrustRoots) -> None:
    """BadSignature unless a pinned issuer key signed the ticket's canonical payload."""
    if is_redacted(ticket):
        raise GoldenError(
            Reason.BAD_SIGNATURE,
            "ticket is a redacted public view (no user id or signature): its issuer signature "
            "can only be checked on the holder's copy",
        )
    key_b64 = roots.issuer_keys.get(ticket.key_id)
    if key_b64 is None:
        raise GoldenError(Reason.BAD_SIGNATURE, f"unknown issuer key id {ticket.key_id!r}")
    public_key = _b64(key_b64, "issuer public key", 32, Reason.BAD_SIGNATURE)
    if key_id_for(public_key) != ticket.key_id:
        raise GoldenError(
            Reason.BAD_SIGNATURE,
            f"trust root for key id {ticket.key_id} holds key {key_id_for(public_key)}",
        )
    try:
        payload = canonical_payload(
            ticket.ticket_id, ticket.serial, ticket.user_id, ticket.issued_at, ticket.key_id
        )
    except ValueError as exc:  # the model validates these fields; never trust that alone
        raise GoldenError(Reason.BAD_SIGNATURE, f"ticket fields are not signable: {exc}") from exc
    verify_payload(public_key, payload, ticket.signature)


def verify_bundle(
    bundle: ProofBundle, roots: TrustRoots, policy: WitnessPolicy | None = None
) -> Checkpoint:
    """The holder's bundle: signature, holder commitment, entry, inclusion, trusted checkpoint.

    `policy` (default: the roots' witnesses and quorum) decides which checkpoints are trusted.
    Returns the checkpoint verified against.
    """
    if is_redacted(bundle.ticket) or not bundle.user_salt:
        raise GoldenError(
            Reason.BAD_PROOF,
            "bundle is a public (redacted) bundle: proving the holder needs the holder's bundle "
            "(authenticated GetInclusionProof), which carries the user id and salt",
        )
    verify_ticket_signature(bundle, roots)
    return _verify_entry_and_proof(bundle, roots, policy)


def verify_public_bundle(
    bundle: ProofBundle, roots: TrustRoots, policy: WitnessPolicy | None = None
) -> Checkpoint:
    """Verify what a bundle carries: the holder's bundle fully, a public one without the holder.

    A public bundle proves the ticket's `issued` entry is in a trusted checkpoint; when it still
    carries the user id and signature (an event's bundle), those are checked too.
    """
    if not is_redacted(bundle.ticket):
        verify_ticket_signature(bundle, roots)
    return _verify_entry_and_proof(bundle, roots, policy)


def _verify_entry_and_proof(
    bundle: ProofBundle, roots: TrustRoots, policy: WitnessPolicy | None
) -> Checkpoint:
    ticket = bundle.ticket
    policy = roots.witness_policy() if policy is None else policy
    checkpoint = policy.open(
        bundle.checkpoint, roots.ledger_verifiers(), roots.ledger_origin
    ).checkpoint
    if bundle.tree_size != checkpoint.size:
        raise GoldenError(
            Reason.BAD_PROOF,
            f"bundle tree_size is {bundle.tree_size}, checkpoint size is {checkpoint.size}",
        )

    entry_bytes = _b64(bundle.entry, "ledger entry")
    entry = decode_entry(entry_bytes)
    expected: dict[str, tuple[object, object]] = {
        "kind": (entry.kind, EntryKind.ISSUED),
        "ticket_id": (entry.ticket_id, ticket.ticket_id),
        "serial": (entry.serial, ticket.serial),
        "key_id": (entry.key_id, ticket.key_id),
    }
    if ticket.signature:
        expected["signature_digest"] = (
            entry.signature_digest,
            signature_digest(ticket.signature),
        )
    if bundle.user_salt:
        if not ticket.user_id:
            raise GoldenError(Reason.BAD_PROOF, "bundle carries a salt but no user id")
        salt = _b64(bundle.user_salt, "user salt")
        try:
            commitment = user_commitment(salt, ticket.user_id)
        except ValueError as exc:
            raise GoldenError(Reason.BAD_PROOF, str(exc)) from exc
        expected["user_commitment"] = (entry.user_commitment, commitment)
    for name, (actual, wanted) in expected.items():
        if actual != wanted:
            raise GoldenError(
                Reason.BAD_PROOF, f"ledger entry {name} is {actual}, ticket gives {wanted}"
            )

    proof = [_b64(h, f"inclusion proof[{i}]", 32) for i, h in enumerate(bundle.inclusion_proof)]
    verify_inclusion(
        leaf_hash(entry_bytes), bundle.leaf_index, bundle.tree_size, proof, checkpoint.root
    )
    return checkpoint


__all__ = [
    "LedgerTrust",
    "TrustRoots",
    "dump_bundle",
    "dump_trust_roots",
    "is_redacted",
    "load_bundle",
    "load_trust_roots",
    "redact_bundle",
    "redact_ticket",
    "verify_bundle",
    "verify_public_bundle",
    "verify_ticket",
    "verify_ticket_signature",
]
