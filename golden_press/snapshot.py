"""What one API process knows of the cap, the tickets and the deny-list, and what it may decide.

The snapshot is read by service/store/admission.py (read_snapshot) and replaced whole on every
refresh; it is never authoritative. The cap is decided only by the reserve activity under the
advisory lock. From memory an API process may only:

- give a request id back the ticket it minted, once that ticket has its ledger entry (the point
  of no return; a finalised row without it may still be voided, issue 13.4);
- say "join the saga" for a request id whose ticket is reserved or not yet in the ledger;
- refuse IdempotencyKeyReused (the request id minted a ticket for another request);
- when sold out, refuse everything else (UserDenied, OnePerUser, CapReached) without I/O.

Why a sold-out refusal from a snapshot is safe for winners: the snapshot's counts are computed
from the very rows it holds, so a snapshot that says "sold out" holds every counted ticket,
winners included, as of its read. A request that is not among them can only win if a slot frees
after that read, and every freeing (void, redeem, revoke, set-cap) NOTIFYs, which replaces the
snapshot within milliseconds (or within the periodic re-read if the NOTIFY is lost).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from uuid import UUID

from golden_press.errors import Reason
from golden_press.models import COUNTED_STATES, CapScope, Ticket, TicketState


@dataclass(frozen=True, slots=True)
class StoredTicket:
    """A ticket row as admission and VerifyTicket need it (never the user salt)."""

    ticket: Ticket
    request_hash: str
    void_reason: str | None = None

    @property
    def in_ledger(self) -> bool:
        """True once the `issued` entry exists: only then is the ticket anyone's (13.4)."""
        return self.ticket.leaf_index is not None

    @property
    def state(self) -> TicketState:
        """The row's state."""
        return self.ticket.state


class Verdict(StrEnum):
    """What admission does with a request, decided from the snapshot."""

    REPLAY = "replay"  # the request id's ticket, in the ledger: hand it back
    JOIN = "join"  # the request id's saga has not passed the ledger append: wait for it
    COMPENSATED = "compensated"  # the request id's saga was voided: a new request id is needed
    REFUSE = "refuse"  # a typed refusal, no I/O
    ASK_DATABASE = "ask-database"  # memory cannot decide: the authoritative path


@dataclass(frozen=True, slots=True)
class Decision:
    """A verdict, with the stored ticket (REPLAY, JOIN, COMPENSATED) or the refusal."""

    verdict: Verdict
    stored: StoredTicket | None = None
    reason: Reason | None = None
    message: str = ""


_ASK = Decision(Verdict.ASK_DATABASE)


@dataclass(frozen=True)
class Snapshot:
    """Cap, scope, deny-list and every ticket row, as of one read; replaced whole, never edited."""

    cap: int = 0
    scope: CapScope = CapScope.LIVE
    tickets: tuple[StoredTicket, ...] = ()
    denied: frozenset[str] = frozenset()
    #: time.monotonic() when the read started (the age VerifyTicket's staleness bound uses).
    read_at: float = 0.0
    loaded: bool = False
    by_request: Mapping[str, StoredTicket] = field(init=False, repr=False)
    by_id: Mapping[UUID, StoredTicket] = field(init=False, repr=False)
    holders: frozenset[str] = field(init=False, repr=False)
    counts: Mapping[TicketState, int] = field(init=False, repr=False)
    #: Tickets that count against the cap under the scope (computed once: every request asks).
    used: int = field(init=False, repr=False)
    #: Counted tickets that can no longer be voided (in the ledger).
    settled: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        by_request = {t.ticket.request_id: t for t in self.tickets}
        by_id = {t.ticket.ticket_id: t for t in self.tickets}
        holders = frozenset(
            t.ticket.user_id for t in self.tickets if t.state is not TicketState.VOIDED
        )
        counts: dict[TicketState, int] = {}
        for t in self.tickets:
            counts[t.state] = counts.get(t.state, 0) + 1
        object.__setattr__(self, "by_request", by_request)
        object.__setattr__(self, "by_id", by_id)
        object.__setattr__(self, "holders", holders)
        object.__setattr__(self, "counts", counts)
        counted = COUNTED_STATES[self.scope]
        object.__setattr__(self, "used", sum(counts.get(st, 0) for st in counted))
        settled = sum(1 for t in self.tickets if t.state in counted and t.in_ledger)
        object.__setattr__(self, "settled", settled)

    @classmethod
    def of(
        cls,
        *,
        cap: int,
        scope: CapScope,
        tickets: Iterable[StoredTicket],
        denied: Iterable[str],
        read_at: float,
    ) -> Snapshot:
        """A loaded snapshot."""
        return cls(
            cap=cap,
            scope=scope,
            tickets=tuple(tickets),
            denied=frozenset(denied),
            read_at=read_at,
            loaded=True,
        )

    @property
    def sold_out(self) -> bool:
        """True when no slot is free by this read."""
        return self.loaded and self.used >= self.cap

    def lookup(self, request_id: str, request_hash: str) -> Decision:
        """What the request id alone decides: replay, join, key reused, compensated, or nothing."""
        stored = self.by_request.get(request_id)
        if stored is None:
            return _ASK
        return decide_known(stored, request_id, request_hash)

    def user_refusal(self, user_id: str) -> Decision | None:
        """What refuses this user whatever the slots: the deny-list, then one per user (the
        database path's order)."""
        if user_id in self.denied:
            return Decision(Verdict.REFUSE, reason=Reason.USER_DENIED, message=denied(user_id))
        if user_id in self.holders:
            return Decision(Verdict.REFUSE, reason=Reason.ONE_PER_USER, message=holds(user_id))
        return None

    def decide(self, user_id: str, request_id: str, request_hash: str) -> Decision:
        """The request id first (a winner's retry is never refused), then sold-out refusals."""
        known = self.lookup(request_id, request_hash)
        if known.verdict is not Verdict.ASK_DATABASE or not self.sold_out:
            return known
        # Sold out: nothing this request could win. No rate-limit write (nothing to protect);
        # the reasons keep the order of the database path so callers see the same answers.
        refused = self.user_refusal(user_id)
        if refused is not None:
            return refused
        return Decision(
            Verdict.REFUSE,
            reason=Reason.CAP_REACHED,
            message=f"all {self.cap} golden tickets are taken ({self.scope})",
        )


def denied(user_id: str) -> str:
    """The UserDenied message, the same from memory and from the database."""
    return f"user {user_id!r} may not receive a ticket"


def holds(user_id: str) -> str:
    """The OnePerUser message, the same from memory and from the database."""
    return f"user {user_id!r} already holds a ticket"


def decide_known(stored: StoredTicket, request_id: str, request_hash: str) -> Decision:
    """The decision for a request id that has a ticket row (from memory or the database)."""
    if stored.request_hash != request_hash:
        return Decision(
            Verdict.REFUSE,
            stored,
            Reason.IDEMPOTENCY_KEY_REUSED,
            f"request_id {request_id!r} was already used for a different request",
        )
    if stored.state is TicketState.VOIDED:
        return Decision(Verdict.COMPENSATED, stored)
    if stored.in_ledger:
        return Decision(Verdict.REPLAY, stored)
    # Reserved, or finalised before its ledger entry: the saga may still void it, so its
    # caller waits for the saga's own answer instead of holding a ticket that may vanish.
    return Decision(Verdict.JOIN, stored)


@dataclass(frozen=True, slots=True)
class Standing:
    """What VerifyTicket says of a stored ticket's state."""

    valid: bool
    redeemable: bool
    reason: Reason | None = None
    message: str = ""


def standing(ticket: Ticket) -> Standing:
    """Valid only for an issued or redeemed ticket WITH its ledger entry (issue 13.4)."""
    if ticket.state in (TicketState.ISSUED, TicketState.REDEEMED):
        if ticket.leaf_index is None:
            return Standing(
                False,
                False,
                Reason.TICKET_NOT_REDEEMABLE,
                f"ticket is {ticket.state.value} but not in the ledger yet",
            )
        return Standing(True, ticket.state is TicketState.ISSUED)
    return Standing(False, False, Reason.TICKET_NOT_REDEEMABLE, f"ticket is {ticket.state.value}")


__all__ = [
    "Decision",
    "Snapshot",
    "Standing",
    "StoredTicket",
    "Verdict",
    "decide_known",
    "standing",
]
