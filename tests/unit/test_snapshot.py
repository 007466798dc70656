"""The admission snapshot's decisions: pure, no servers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from golden_press.errors import Reason
from golden_press.models import CapScope, Ticket, TicketState, request_hash
from golden_press.snapshot import Snapshot, StoredTicket, Verdict, standing


def stored(
    user: str, state: TicketState, *, leaf: int | None = None, request_id: str = ""
) -> StoredTicket:
    ticket = Ticket(
        ticket_id=uuid.uuid4(),
        serial=1,
        user_id=user,
        issued_at=datetime(2026, 12, 1, tzinfo=UTC),
        state=state,
        request_id=request_id or f"req-{user}",
        leaf_index=leaf,
    )
    return StoredTicket(ticket, request_hash(user))


def snap(*tickets: StoredTicket, cap: int = 2, scope: CapScope = CapScope.LIVE) -> Snapshot:
    return Snapshot.of(cap=cap, scope=scope, tickets=tickets, denied={"bad"}, read_at=0.0)


def decide(s: Snapshot, user: str, request_id: str) -> tuple[Verdict, Reason | None]:
    d = s.decide(user, request_id, request_hash(user))
    return d.verdict, d.reason


def test_sold_out_refuses_from_memory_in_the_database_paths_order() -> None:
    s = snap(stored("a", TicketState.ISSUED, leaf=0), stored("b", TicketState.RESERVED))
    assert s.sold_out and s.used == 2 and s.settled == 1
    assert decide(s, "bad", "r1") == (Verdict.REFUSE, Reason.USER_DENIED)
    assert decide(s, "a", "another") == (Verdict.REFUSE, Reason.ONE_PER_USER)
    assert decide(s, "c", "r2") == (Verdict.REFUSE, Reason.CAP_REACHED)


def test_a_winners_retry_is_never_refused_while_sold_out() -> None:
    s = snap(stored("a", TicketState.ISSUED, leaf=3), stored("b", TicketState.RESERVED))
    assert decide(s, "a", "req-a") == (Verdict.REPLAY, None)
    assert decide(s, "b", "req-b") == (Verdict.JOIN, None)


def test_a_finalised_ticket_without_its_ledger_entry_is_joined_not_replayed() -> None:
    """Issue 13.4: before the point of no return nobody is handed the ticket."""
    s = snap(stored("a", TicketState.ISSUED, leaf=None))
    assert decide(s, "a", "req-a") == (Verdict.JOIN, None)
    assert s.settled == 0


def test_request_id_of_another_request_is_refused_even_when_free() -> None:
    s = snap(stored("a", TicketState.RESERVED), cap=5)
    assert decide(s, "z", "req-a") == (Verdict.REFUSE, Reason.IDEMPOTENCY_KEY_REUSED)


def test_not_sold_out_asks_the_database() -> None:
    s = snap(stored("a", TicketState.ISSUED, leaf=0), cap=5)
    assert decide(s, "bad", "r") == (Verdict.ASK_DATABASE, None)
    assert decide(s, "c", "r") == (Verdict.ASK_DATABASE, None)
    assert decide(Snapshot(), "c", "r") == (Verdict.ASK_DATABASE, None)  # never loaded


def test_voided_rows_never_count_and_compensated_requests_are_told() -> None:
    s = snap(stored("a", TicketState.VOIDED), stored("b", TicketState.ISSUED, leaf=1), cap=2)
    assert not s.sold_out and "a" not in s.holders
    assert decide(s, "a", "req-a") == (Verdict.COMPENSATED, None)


def test_scopes() -> None:
    tickets = (
        stored("a", TicketState.REDEEMED, leaf=0),
        stored("b", TicketState.REVOKED, leaf=1),
    )
    assert not snap(*tickets).sold_out
    assert snap(*tickets, scope=CapScope.LIFETIME).sold_out


def test_standing() -> None:
    assert standing(stored("a", TicketState.ISSUED, leaf=0).ticket).redeemable
    redeemed = standing(stored("a", TicketState.REDEEMED, leaf=0).ticket)
    assert redeemed.valid and not redeemed.redeemable
    for state in (TicketState.REVOKED, TicketState.VOIDED, TicketState.RESERVED):
        s = standing(stored("a", state, leaf=0).ticket)
        assert not s.valid and s.reason is Reason.TICKET_NOT_REDEEMABLE
    unappended = standing(stored("a", TicketState.ISSUED).ticket)
    assert not unappended.valid and "ledger" in unappended.message
