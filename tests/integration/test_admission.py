"""Admission rules against real PostgreSQL and Temporal: what is refused before any workflow."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from temporalio.service import RPCError

from golden_press.errors import GoldenError, Reason
from golden_press.sagas import issue_workflow_id
from service.sagas.admission import Admission
from service.store.db import SLOTS_CHANNEL, SlotNotice
from tests.helpers.stack import Stack
from tests.helpers.statements import GatedRereadPool, Statements, counted_pool, settled

pytestmark = pytest.mark.asyncio(loop_scope="session")


def uid(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest_asyncio.fixture(loop_scope="session")
async def make_admission(stack: Stack) -> AsyncIterator[Callable[..., Any]]:
    """Build started Admission instances over the stack; closed at the end of the test."""
    made: list[Admission] = []

    async def make(**kwargs: Any) -> Admission:
        admission = Admission.from_settings(stack.settings, stack.pool, stack.client, **kwargs)
        await admission.start()
        made.append(admission)
        return admission

    yield make
    for admission in made:
        await admission.close()


async def reason_of(call: Any) -> Reason:
    with pytest.raises(GoldenError) as info:
        await call
    return info.value.reason


async def workflow_exists(stack: Stack, workflow_id: str) -> bool:
    try:
        await stack.client.get_workflow_handle(workflow_id).describe()
    except RPCError:
        return False
    return True


async def wait_for(predicate: Callable[[], bool], within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


async def test_request_id_lookup(stack: Stack, make_admission: Callable[..., Any]) -> None:
    """A winner's retry gets its ticket at once; the key with another request is refused."""
    admission = await make_admission()
    user = uid()
    first = await admission.issue(user, "req-one")
    assert not first.replayed and first.ticket.signature
    again = await admission.issue(user, "req-one")
    assert again.replayed and again.ticket == first.ticket
    assert await reason_of(admission.issue(uid(), "req-one")) is Reason.IDEMPOTENCY_KEY_REUSED
    assert await reason_of(admission.issue("bad user", "r")) is Reason.INVALID_REQUEST
    assert await reason_of(admission.issue(user, "bad id!")) is Reason.INVALID_REQUEST


async def test_deny_list_costs_no_workflow(
    stack: Stack, make_admission: Callable[..., Any]
) -> None:
    """A denied user is refused before Temporal sees anything."""
    admission = await make_admission()
    user = uid("denied")
    await stack.pool.execute("INSERT INTO deny_list (user_id, reason) VALUES ($1, 'x')", user)
    assert await reason_of(admission.issue(user, f"r-{user}")) is Reason.USER_DENIED
    assert not await workflow_exists(stack, issue_workflow_id(f"r-{user}"))


async def test_rate_limit_and_one_per_user(
    stack: Stack, make_admission: Callable[..., Any]
) -> None:
    """Attempts beyond the window's limit are RateLimited; a winner's retry is not an attempt."""
    admission = await make_admission()
    admission._rate_attempts = 2  # the stack's worker keeps its own (higher) limit
    user = uid()
    won = await admission.issue(user, f"win-{user}")  # attempt 1
    assert await reason_of(admission.issue(user, f"b-{user}")) is Reason.ONE_PER_USER  # 2
    assert await reason_of(admission.issue(user, f"c-{user}")) is Reason.RATE_LIMITED  # 3
    assert not await workflow_exists(stack, issue_workflow_id(f"c-{user}"))
    assert (await admission.issue(user, f"win-{user}")).ticket.ticket_id == won.ticket.ticket_id
    # A new window starts the count again.
    await stack.pool.execute(
        "UPDATE rate_limit SET window_start = now() - interval '1 day' WHERE user_id = $1", user
    )
    assert await reason_of(admission.issue(user, f"d-{user}")) is Reason.ONE_PER_USER


async def test_sold_out_flag_and_notify(stack: Stack, make_admission: Callable[..., Any]) -> None:
    """Sold out costs no workflow and no write; a NOTIFY on golden_slots re-reads at once."""
    await stack.pool.execute("UPDATE golden_config SET cap = 1")
    admission = await make_admission(refresh_interval_s=3600)  # only NOTIFY can refresh
    await admission.issue(uid(), uid("r"))
    assert await wait_for(lambda: admission.snapshot.sold_out)

    loser, user = uid("r"), uid()
    assert await reason_of(admission.issue(user, loser)) is Reason.CAP_REACHED
    assert not await workflow_exists(stack, issue_workflow_id(loser))
    # Decided from memory: not even a rate-limit counter (issue 15).
    assert (
        await stack.pool.fetchval("SELECT count(*) FROM rate_limit WHERE user_id = $1", user) == 0
    )

    await asyncio.sleep(0.3)  # re-reads the finished saga asked for are done
    await stack.pool.execute("UPDATE golden_config SET cap = 2")
    await asyncio.sleep(0.2)
    assert admission.snapshot.sold_out  # no NOTIFY yet: the cached flag stands
    await stack.pool.execute("SELECT pg_notify($1, 'set-cap')", SLOTS_CHANNEL)
    assert await wait_for(lambda: not admission.snapshot.sold_out)
    assert admission.snapshot.cap == 2
    await admission.issue(uid(), uid("r"))


async def test_a_freeing_notice_holds_refusals_for_one_shared_bounded_read(
    stack: Stack, make_admission: Callable[..., Any]
) -> None:
    """After a NOTIFY that may free a slot, sold-out refusals wait for a re-read, but for one
    read shared by all of them and at most the re-read interval: with that read hanging
    (PostgreSQL unreachable) every caller still gets its answer from memory within the bound,
    not one after another, and none sends a statement of its own."""
    await stack.pool.execute("UPDATE golden_config SET cap = 1")
    admission = await make_admission(refresh_interval_s=0.5)
    await admission.issue(uid(), uid("r"))
    assert await wait_for(lambda: admission.snapshot.sold_out)
    await admission.snapshot_since(time.monotonic())

    gated = GatedRereadPool(stack.pool)  # every re-read from here on hangs
    admission._pool = gated  # type: ignore[assignment]
    await stack.pool.execute("SELECT pg_notify($1, $2)", SLOTS_CHANNEL, SlotNotice.VOIDED.value)
    assert await wait_for(lambda: admission._freed_at > admission.snapshot.read_at)

    # 20 callers: one after another behind their own reads they would need 20 x 0.5 s.
    refusals = [reason_of(admission.issue(uid(), uid("r"))) for _ in range(20)]
    reasons = await asyncio.wait_for(asyncio.gather(*refusals), 8)
    assert set(reasons) == {Reason.CAP_REACHED}
    assert gated.waiting <= 2  # the shared read and, at most, the refresher's own
    gated.open.set()


async def test_sold_out_refusals_and_replays_send_no_statement(stack: Stack) -> None:
    """Issue 15: while sold out, UserDenied, OnePerUser and CapReached refusals and a winner's
    replay are decided from memory, in the process that ran the winner's saga and in another:
    not one statement reaches PostgreSQL (no request-id lookup, no rate-limit write). Counted on
    the admissions' own pool; the re-read interval is an hour, so only the explicit reads below
    touch it."""
    await stack.pool.execute("UPDATE golden_config SET cap = 1")
    statements = Statements()
    async with counted_pool(stack.settings.pg_dsn, statements, max_size=2) as pool:
        ran, other = (
            Admission.from_settings(stack.settings, pool, stack.client, refresh_interval_s=3600)
            for _ in range(2)
        )
        async with ran, other:
            winner, rid = uid(), uid("r")
            won = await ran.issue(winner, rid)
            assert statements.sent, "a request that can win asks PostgreSQL: the pool is counted"
            denied = uid("denied")
            await stack.pool.execute(
                "INSERT INTO deny_list (user_id, reason) VALUES ($1, 'x')", denied
            )
            for admission in (ran, other):
                await settled(admission)  # holds the deny-list row and the winner's ticket
                assert admission.snapshot.sold_out
            assert rid not in ran._running  # its replay comes from the snapshot too

            statements.sent.clear()
            for admission in (ran, other):
                assert await reason_of(admission.issue(uid(), uid("r"))) is Reason.CAP_REACHED
                assert await reason_of(admission.issue(winner, uid("r"))) is Reason.ONE_PER_USER
                assert await reason_of(admission.issue(denied, uid("r"))) is Reason.USER_DENIED
                again = await admission.issue(winner, rid)
                assert again.replayed and again.ticket.ticket_id == won.ticket.ticket_id
            assert statements.sent == []


async def test_in_flight_gate(stack: Stack, make_admission: Callable[..., Any]) -> None:
    """With one free slot and no margin, a concurrent second request gets no workflow."""
    await stack.pool.execute("UPDATE golden_config SET cap = 1")
    admission = await make_admission(gate_margin=0, refresh_interval_s=3600)
    ids = [uid("r"), uid("r")]
    results = await asyncio.gather(
        *(admission.issue(uid(), rid) for rid in ids), return_exceptions=True
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, GoldenError)]
    assert len(winners) == 1 and len(losers) == 1, results
    assert losers[0].reason is Reason.CAP_REACHED
    started = [await workflow_exists(stack, issue_workflow_id(rid)) for rid in ids]
    assert started.count(True) == 1
    assert admission.in_flight == 0


async def test_another_process_reservation_reaches_the_snapshot(
    stack: Stack, make_admission: Callable[..., Any]
) -> None:
    """A reservation by another API process NOTIFYs: this one refuses from memory at once."""
    await stack.pool.execute("UPDATE golden_config SET cap = 1")
    admission = await make_admission(refresh_interval_s=3600)  # only NOTIFY can refresh
    other = await make_admission(refresh_interval_s=3600)  # another API process
    await other.issue(uid(), uid("r"))
    assert await wait_for(lambda: admission.snapshot.sold_out)
    loser = uid("r")
    assert await reason_of(admission.issue(uid(), loser)) is Reason.CAP_REACHED
    assert not await workflow_exists(stack, issue_workflow_id(loser))
