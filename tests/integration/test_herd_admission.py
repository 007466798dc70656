"""Admission under a herd (issues 13.3, 13.4, 13.8 and 15), against real PostgreSQL and Temporal.

Black box where it can be: through a served gRPC API or Admission.issue, as the API calls it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.service import RPCError

from activities.faults import Faults
from golden_press.bundle import TrustRoots
from golden_press.errors import GoldenError, Reason
from golden_press.models import TicketState
from golden_press.settings import Settings
from service.api.convert import error_reason
from service.api.pb import golden_pb2, golden_pb2_grpc
from service.api.server import admission_of, bound_port, serve, shutdown
from service.api.verify import TicketVerifier, max_age_for
from service.sagas.admission import Admission
from service.sagas.runs import revoke_ticket
from service.store import keys as key_store
from service.store.config import set_cap
from tests.helpers.api import write_tokens
from tests.helpers.servers import Servers
from tests.helpers.stack import Stack, golden_stack
from tests.helpers.statements import (
    GatedRereadPool,
    NoRereadPool,
    Statements,
    counted_pool,
    settled,
)
from worker import golden_worker

pytestmark = pytest.mark.asyncio(loop_scope="session")

TOKEN = "test-token-" + uuid.uuid4().hex
AUTH = [("authorization", f"Bearer {TOKEN}")]


def uid(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def eventually(predicate: Callable[[], Any], within_s: float) -> float:
    """Seconds until predicate() (sync or async) is true; fails after within_s."""
    start = time.monotonic()
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.monotonic() - start
        if time.monotonic() - start > within_s:
            raise AssertionError(f"not true within {within_s} s")
        await asyncio.sleep(0.01)


@pytest_asyncio.fixture(loop_scope="session")
async def idle_stack(servers: Servers, session_dir: Path, client: Client) -> AsyncIterator[Stack]:
    """A stack whose worker is NOT running: sagas start and wait before their first step."""
    async with golden_stack(servers, session_dir, client, run_worker=False) as s:
        yield s


@pytest_asyncio.fixture(loop_scope="session")
async def admissions(stack: Stack) -> AsyncIterator[Callable[..., Any]]:
    made: list[Admission] = []

    async def make(
        on: Stack | None = None, settings: Settings | None = None, **kwargs: Any
    ) -> Admission:
        s = on or stack
        admission = Admission.from_settings(settings or s.settings, s.pool, s.client, **kwargs)
        await admission.start()
        made.append(admission)
        return admission

    yield make
    for admission in made:
        await admission.close()


async def served(stack: Stack) -> tuple[grpc.aio.Server, str]:
    write_tokens(stack.settings, TOKEN)
    server = await serve(
        stack.settings, pool=stack.pool, client=stack.client, address="127.0.0.1:0"
    )
    return server, f"127.0.0.1:{bound_port(server)}"


async def test_winners_retries_during_the_herd_get_their_tickets(stack: Stack) -> None:
    """Issue 15 / 13.3: every retry of a winning request id, sent while the herd runs, gets the
    winner's ticket (never CapReached); exactly five tickets."""
    server, address = await served(stack)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = golden_pb2_grpc.GoldenPressStub(channel)
            requests = [(uid("herd"), uid("r")) for _ in range(120)]

            async def attempt(user: str, rid: str) -> tuple[str, str]:
                try:
                    resp = await stub.IssueTicket(
                        golden_pb2.IssueTicketRequest(user_id=user, request_id=rid),
                        metadata=AUTH,
                        timeout=60,
                    )
                except grpc.aio.AioRpcError as err:
                    return rid, error_reason(err)
                return rid, resp.ticket.ticket_id

            async def with_retries(user: str, rid: str) -> list[tuple[str, str]]:
                first = asyncio.create_task(attempt(user, rid))
                retries = []
                for delay in (0.005, 0.03, 0.1):  # retries while the first is still in flight
                    await asyncio.sleep(delay)
                    retries.append(await attempt(user, rid))
                return [await first, *retries]

            results = await asyncio.gather(*(with_retries(u, r) for u, r in requests))
    finally:
        await shutdown(server, grace=None)
    rows = await stack.pool.fetch(
        "SELECT request_id, ticket_id FROM tickets WHERE state = 'issued'"
    )
    winners = {r["request_id"]: str(r["ticket_id"]) for r in rows}
    assert len(winners) == 5, results
    for attempts in results:
        rid = attempts[0][0]
        if rid in winners:  # the first call and every retry got the winner's ticket
            assert [answer for _, answer in attempts] == [winners[rid]] * 4, attempts
    issued = await stack.pool.fetchval("SELECT count(*) FROM tickets WHERE state = 'issued'")
    assert issued == 5


async def test_retry_of_a_running_saga_joins_it_before_the_gate(
    idle_stack: Stack, admissions: Callable[..., Any], client: Client
) -> None:
    """13.3: a retry of a request whose saga is in flight is joined, never refused CapReached
    (gate full), and is not a new rate-limit attempt (the saga would refuse itself)."""
    stack = idle_stack
    await stack.pool.execute("UPDATE golden_config SET cap = 1")
    admission = await admissions(stack, gate_margin=0, refresh_interval_s=0.2)
    admission._rate_attempts = 2
    strict = stack.settings.model_copy(update={"rate_limit_attempts": 2})
    user, rid = uid(), uid("r")
    first = asyncio.create_task(admission.issue(user, rid))
    await eventually(lambda: _started(stack, rid), 30)
    retries = [asyncio.create_task(admission.issue(user, rid)) for _ in range(3)]
    await asyncio.sleep(0.3)
    for task in retries:
        assert not task.done(), task  # still waiting for the saga, not refused
    async with golden_worker(strict, client, stack.pool, stack.nc, stack.keys):
        outcomes = await asyncio.wait_for(asyncio.gather(first, *retries), 60)
    assert len({o.ticket.ticket_id for o in outcomes}) == 1
    attempts = await stack.pool.fetchval("SELECT attempts FROM rate_limit WHERE user_id = $1", user)
    assert attempts == 1


async def test_a_retry_reaching_another_process_joins_its_saga(
    idle_stack: Stack, admissions: Callable[..., Any], client: Client
) -> None:
    """13.3 with GOLDEN_API_PROCESSES=2: a retry that reaches another API process than its saga's
    cannot join from memory; the database's answer must make it a join (`seen`) when that
    process's gate is full, and not a new rate-limit attempt (`recent_requests`). With one
    attempt allowed, a retry counted as an attempt is RateLimited, and one not seen is
    CapReached ("every free slot is being claimed")."""
    stack = dataclasses.replace(
        idle_stack, settings=idle_stack.settings.model_copy(update={"rate_limit_attempts": 1})
    )
    await stack.pool.execute("UPDATE golden_config SET cap = 2")
    # Two processes' worth: each admits ceil(2 free / 2) = 1 saga at once.
    first_process = await admissions(stack, gate_margin=0, gate_share=2, refresh_interval_s=0.2)
    other_process = await admissions(stack, gate_margin=0, gate_share=2, refresh_interval_s=0.2)
    user, rid = uid(), uid("r")
    first = asyncio.create_task(first_process.issue(user, rid))
    await eventually(partial(_started, stack, rid), 30)
    own_rid = uid("r")  # the other process's own saga: its gate is full too
    own = asyncio.create_task(other_process.issue(uid(), own_rid))
    await eventually(partial(_started, stack, own_rid), 30)
    assert other_process.in_flight == 1 and rid not in other_process._running
    retry = asyncio.create_task(other_process.issue(user, rid))
    await asyncio.sleep(0.5)
    if retry.done():  # refused: show why
        await retry
    sql = "SELECT attempts FROM rate_limit WHERE user_id = $1"
    assert await stack.pool.fetchval(sql, user) == 1
    async with golden_worker(stack.settings, client, stack.pool, stack.nc, stack.keys):
        won, again, _ = await asyncio.wait_for(asyncio.gather(first, retry, own), 60)
    assert again.ticket.ticket_id == won.ticket.ticket_id
    assert await stack.pool.fetchval(sql, user) == 1


async def test_a_winners_retry_reaching_another_process_while_sold_out_gets_its_ticket(
    idle_stack: Stack, admissions: Callable[..., Any], client: Client
) -> None:
    """Issue 15 / 13.3 with GOLDEN_API_PROCESSES=2: process A's sagas take every slot; process B
    learns it by NOTIFY (its snapshot is sold out and holds their reserved rows) but runs none of
    them. A retry of A's winning request reaching B is never CapReached: B's snapshot says JOIN,
    the request's row (one lookup) confirms it and B joins A's running saga; after the sagas
    ended, a retry reaching B while its snapshot still predates their ledger entries gets the
    ticket from that row. Anyone else is refused by B from memory (CapReached)."""
    stack = idle_stack
    await stack.pool.execute("UPDATE golden_config SET cap = 2")
    parked = Parked("sign")  # past the reservation: the slot is held, the saga still runs
    process_a = await admissions(stack, gate_share=2, refresh_interval_s=3600)
    process_b = await admissions(stack, gate_share=2, refresh_interval_s=3600)
    (user_1, rid_1), (user_2, rid_2) = winners = [(uid("w"), uid("r")) for _ in range(2)]

    async with golden_worker(stack.settings, client, stack.pool, stack.nc, stack.keys, parked):
        sagas = [asyncio.create_task(process_a.issue(user, rid)) for user, rid in winners]
        await eventually(lambda: parked.waiting == 2, 30)
        await eventually(lambda: process_b.snapshot.sold_out, 5)  # by NOTIFY
        held = process_b.snapshot.by_request
        assert [held[rid].state for _, rid in winners] == [TicketState.RESERVED] * 2
        with pytest.raises(GoldenError) as info:
            await process_b.issue(uid(), uid("r"))
        assert info.value.reason is Reason.CAP_REACHED
        # From here B's snapshot stays as it is: sold out, both rows reserved.
        process_b._pool = NoRereadPool(stack.pool)  # type: ignore[assignment]

        while_running = [asyncio.create_task(process_b.issue(user_1, rid_1)) for _ in range(3)]
        await eventually(
            lambda: rid_1 in process_b._running or any(r.done() for r in while_running), 30
        )
        for retry in while_running:
            if retry.done():  # refused: show why
                await retry
        assert rid_1 in process_b._running  # B joined A's saga
        parked.release.set()
        won = await asyncio.wait_for(asyncio.gather(*sagas), 60)
        joined = await asyncio.wait_for(asyncio.gather(*while_running), 60)
    assert {o.ticket.ticket_id for o in joined} == {won[0].ticket.ticket_id}

    assert process_b.snapshot.sold_out and held[rid_2].state is TicketState.RESERVED
    assert rid_2 not in process_b._running
    for _ in range(2):  # after the sagas ended, from the row B looks up
        after = await asyncio.wait_for(process_b.issue(user_2, rid_2), 10)
        assert after.replayed and after.ticket.ticket_id == won[1].ticket.ticket_id
    again = await asyncio.wait_for(process_b.issue(user_1, rid_1), 10)
    assert again.replayed and again.ticket.ticket_id == won[0].ticket.ticket_id
    issued = await stack.pool.fetchval("SELECT count(*) FROM tickets WHERE state = 'issued'")
    assert issued == 2


async def test_a_retry_is_not_refused_from_a_snapshot_a_freed_slot_made_stale(
    idle_stack: Stack, admissions: Callable[..., Any], client: Client
) -> None:
    """Issue 13.3 / 15 with GOLDEN_API_PROCESSES=2: a slot frees (here: the cap raised), process
    A re-reads and admits request R into it; R's retry reaches process B, whose re-read for the
    same NOTIFY is still on the way. B's snapshot still says sold out and does not know R, yet it
    must not answer CapReached: a NOTIFY that frees a slot holds B's sold-out refusals until the
    re-read it triggered, which finds R's row; the retry joins R's saga and gets its ticket."""
    stack = idle_stack
    await stack.pool.execute("UPDATE golden_config SET cap = 1")
    parked = Parked("sign")  # past the reservation: the slot is held, the saga still runs
    async with golden_worker(stack.settings, client, stack.pool, stack.nc, stack.keys, parked):
        parked.release.set()
        await asyncio.wait_for(stack.issue(uid("holder")), 60)  # sold out: cap 1, one ticket
        parked.release.clear()

        process_a = await admissions(stack, gate_share=2, refresh_interval_s=3600)
        process_b = await admissions(stack, gate_share=2, refresh_interval_s=3600)
        assert process_a.snapshot.sold_out and process_b.snapshot.sold_out
        gated = GatedRereadPool(stack.pool)
        process_b._pool = gated  # type: ignore[assignment]  # B's next re-read waits

        await set_cap(stack.settings.pg_dsn, 2, "live")  # NOTIFY set-cap: a slot is free
        await eventually(lambda: not process_a.snapshot.sold_out, 5)
        await eventually(lambda: gated.waiting > 0, 5)  # B's re-read is on the way, held
        user, rid = uid("w"), uid("r")
        won = asyncio.create_task(process_a.issue(user, rid))
        await eventually(lambda: parked.waiting == 1, 30)  # R holds the freed slot

        assert process_b.snapshot.sold_out  # still the stale read
        retry = asyncio.create_task(process_b.issue(user, rid))
        newcomer = asyncio.create_task(process_b.issue(uid("late"), uid("r")))
        await asyncio.sleep(0.3)
        if retry.done():  # refused from the stale snapshot: show why
            await retry
        assert not newcomer.done()  # waits for the re-read too, then is refused truly
        gated.open.set()
        with pytest.raises(GoldenError) as info:
            await asyncio.wait_for(newcomer, 10)
        assert info.value.reason is Reason.CAP_REACHED
        parked.release.set()
        first = await asyncio.wait_for(won, 60)
        again = await asyncio.wait_for(retry, 60)
    assert again.ticket.ticket_id == first.ticket.ticket_id
    issued = await stack.pool.fetchval("SELECT count(*) FROM tickets WHERE state = 'issued'")
    assert issued == 2


async def test_a_full_gate_refuses_the_herd_from_memory(idle_stack: Stack, client: Client) -> None:
    """Issue 15: with every free slot claimed by the sagas of the sole API process, a new request
    is refused from memory, CapReached, OnePerUser or UserDenied in the database path's order,
    without one statement (counted on the admission's own pool; no workflow either), while a
    retry of a running saga still joins it; with GOLDEN_API_PROCESSES=2 a retry may reach
    another process than its saga's, so the database path (which finds it) stays, as it does for
    a sole process with GOLDEN_ADMISSION_MEMORY_GATE=false: the same answers, after the one
    statement each."""
    stack = idle_stack
    await stack.pool.execute("UPDATE golden_config SET cap = 2")
    holder = uid("holder")  # one settled ticket: a single free slot
    async with golden_worker(stack.settings, client, stack.pool, stack.nc, stack.keys):
        await asyncio.wait_for(stack.issue(holder), 60)

    async def refused(admission: Admission, user: str) -> Reason:
        with pytest.raises(GoldenError) as info:
            await asyncio.wait_for(admission.issue(user, uid("r")), 10)
        return info.value.reason

    async def attempts_of(user: str) -> int:
        sql = "SELECT count(*) FROM rate_limit WHERE user_id = $1"
        return int(await stack.pool.fetchval(sql, user))

    statements = Statements()
    for share, memory_gate, per_refusal in ((1, True, 0), (2, True, 1), (1, False, 1)):
        settings = stack.settings.model_copy(
            update={"api_processes": share, "admission_memory_gate": memory_gate}
        )
        async with counted_pool(stack.settings.pg_dsn, statements, max_size=2) as pool:
            admission = Admission.from_settings(
                settings, pool, stack.client, gate_margin=0, refresh_interval_s=3600
            )
            async with admission:
                user, rid = uid(), uid("r")
                first = asyncio.create_task(admission.issue(user, rid))
                await eventually(partial(_started, stack, rid), 30)  # 1 saga, 1 free slot
                loser, denied = uid("loser"), uid("denied")
                await stack.pool.execute("INSERT INTO deny_list (user_id) VALUES ($1)", denied)
                await admission.refresh()
                config = (share, memory_gate)

                statements.sent.clear()
                assert await refused(admission, loser) is Reason.CAP_REACHED
                assert await refused(admission, holder) is Reason.ONE_PER_USER
                assert await refused(admission, denied) is Reason.USER_DENIED
                assert len(statements.sent) == 3 * per_refusal, (config, statements.sent)
                assert await attempts_of(loser) == per_refusal, config

                statements.sent.clear()
                retry = asyncio.create_task(admission.issue(user, rid))
                await asyncio.sleep(0.2)
                assert not retry.done(), retry  # joined the saga, waiting with it
                assert statements.sent == [], config  # its own process knew it
                for task in (first, retry):
                    task.cancel()


async def test_a_retry_after_its_saga_ended_gets_the_ticket_before_any_reread(
    stack: Stack, admissions: Callable[..., Any]
) -> None:
    """Issue 15 / 13.3: a full gate refuses from memory, so a saga this process ran is kept until a
    snapshot read after its end holds its row: a retry in between gets the ticket, never the
    gate's CapReached (the snapshot here predates the saga and is never re-read)."""
    await stack.pool.execute("UPDATE golden_config SET cap = 2")
    admission = await admissions(gate_margin=0, refresh_interval_s=3600)
    admission._pool = NoRereadPool(stack.pool)  # type: ignore[assignment]
    user, rid = uid(), uid("r")
    won = await asyncio.wait_for(admission.issue(user, rid), 60)
    assert not admission.snapshot.sold_out and rid not in admission.snapshot.by_request
    admission._gate_margin = -2  # every free slot claimed: the gate refuses from memory
    with pytest.raises(GoldenError) as info:
        await admission.issue(uid(), uid("r"))
    assert info.value.reason is Reason.CAP_REACHED
    again = await asyncio.wait_for(admission.issue(user, rid), 10)
    assert again.ticket.ticket_id == won.ticket.ticket_id and again.replayed


async def test_joining_a_running_saga_needs_the_same_request(
    idle_stack: Stack, admissions: Callable[..., Any], client: Client
) -> None:
    """13.3: the same request_id from another user while the first run is in flight is
    IdempotencyKeyReused, not the first user's ticket."""
    stack = idle_stack
    admission = await admissions(stack)
    other = await admissions(stack)  # another API process
    rid = uid("r")
    first = asyncio.create_task(admission.issue(uid("owner"), rid))
    await eventually(lambda: _started(stack, rid), 30)  # the owner's run exists
    for via in (admission, other):
        with pytest.raises(GoldenError) as info:
            await asyncio.wait_for(via.issue(uid("thief"), rid), 10)
        assert info.value.reason is Reason.IDEMPOTENCY_KEY_REUSED
    async with golden_worker(stack.settings, client, stack.pool, stack.nc, stack.keys):
        await asyncio.wait_for(first, 60)


async def test_a_ticket_without_its_ledger_entry_is_nobodys_yet(
    stack: Stack, admissions: Callable[..., Any]
) -> None:
    """13.4: a finalised row without its ledger entry is neither replayed nor verified valid,
    and GetTicket/ListTickets show it RESERVED without its signature, even to its holder."""
    admission = await admissions()
    user, rid = uid(), uid("r")
    minted = await admission.issue(user, rid)
    tid = minted.ticket.ticket_id
    # As if the saga stopped between finalise and the ledger append.
    await stack.pool.execute("UPDATE tickets SET issued_leaf = NULL WHERE ticket_id = $1", tid)
    server, address = await served(stack)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = golden_pb2_grpc.GoldenPressStub(channel)
            resp = await stub.VerifyTicket(golden_pb2.VerifyTicketRequest(ticket_id=str(tid)))
            assert not resp.valid and resp.reason == Reason.TICKET_NOT_REDEEMABLE.value
            got = await stub.GetTicket(
                golden_pb2.GetTicketRequest(ticket_id=str(tid)), metadata=AUTH
            )
            assert got.ticket.state == golden_pb2.TICKET_STATE_RESERVED
            assert got.ticket.signature == "" and got.ticket.user_id == user

            async def listed(state: golden_pb2.TicketState) -> list[str]:
                page = await stub.ListTickets(golden_pb2.ListTicketsRequest(state=state))
                return [t.ticket_id for t in page.tickets]

            assert str(tid) not in await listed(golden_pb2.TICKET_STATE_ISSUED)
            assert str(tid) in await listed(golden_pb2.TICKET_STATE_RESERVED)
    finally:
        await shutdown(server, grace=None)
    await admission.refresh()
    again = await asyncio.wait_for(admission.issue(user, rid), 60)
    # The retry waited for a saga that reached the ledger, rather than replaying the bare row.
    assert again.ticket.ticket_id == tid and again.ticket.leaf_index is not None
    assert (
        await stack.pool.fetchval("SELECT issued_leaf FROM tickets WHERE ticket_id = $1", tid)
        is not None
    )


class _FlakyPool:
    """The stack's pool, except that the next admission read raises an unexpected error."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self.armed = False

    def _maybe_fail(self) -> None:
        if self.armed:
            self.armed = False
            raise RuntimeError("injected: not an OSError or PostgresError")

    async def fetchrow(self, *args: Any, **kwargs: Any) -> Any:
        self._maybe_fail()
        return await self._pool.fetchrow(*args, **kwargs)

    def acquire(self) -> Any:
        self._maybe_fail()
        return self._pool.acquire()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


async def test_refresher_survives_any_error(stack: Stack, admissions: Callable[..., Any]) -> None:
    """13.8: an unexpected exception (not OSError/PostgresError) does not end the refresher."""
    admission = await admissions(refresh_interval_s=0.1)
    flaky = _FlakyPool(stack.pool)
    admission._pool = flaky  # type: ignore[assignment]
    flaky.armed = True
    await eventually(lambda: not flaky.armed, 5)  # the refresher hit the error
    await stack.pool.execute("UPDATE golden_config SET cap = 7")  # no NOTIFY: the timer sees it
    await eventually(lambda: _cap_of(admission) == 7, 5)


async def test_lifetime_scope_is_reread_on_the_timer(
    stack: Stack, admissions: Callable[..., Any]
) -> None:
    """13.8: a sold-out lifetime cap is re-read on the timer too (a half-open LISTEN connection
    misses the set-cap NOTIFY)."""
    await stack.pool.execute("UPDATE golden_config SET cap = 1, scope = 'lifetime'")
    admission = await admissions(refresh_interval_s=0.1)
    await admission.issue(uid(), uid("r"))
    await asyncio.sleep(0.3)
    await stack.pool.execute("UPDATE golden_config SET cap = 3")  # no NOTIFY
    await eventually(lambda: _cap_of(admission) == 3, 5)


async def _started(stack: Stack, request_id: str) -> bool:
    """Whether `issue-<request_id>` exists in Temporal."""
    try:
        await stack.client.get_workflow_handle(f"issue-{request_id}").describe()
    except RPCError:
        return False
    return True


def _cap_of(admission: Admission) -> int:
    return admission.snapshot.cap


async def _issue(stub: Any, user: str) -> tuple[str, str]:
    """(outcome, ticket_id): 'ok' or the ErrorInfo reason."""
    try:
        resp = await stub.IssueTicket(
            golden_pb2.IssueTicketRequest(user_id=user, request_id=uid("r")),
            metadata=AUTH,
            timeout=60,
        )
    except grpc.aio.AioRpcError as err:
        return error_reason(err), ""
    return "ok", resp.ticket.ticket_id


async def _admitted_after(stub: Any, freed_at: float) -> float:
    """Seconds from freed_at to the start of the first IssueTicket that is not refused."""
    while True:
        started = time.monotonic()
        outcome, _ = await _issue(stub, uid("next"))
        if outcome == "ok":
            return started - freed_at
        assert outcome == Reason.CAP_REACHED.value, outcome
        if started - freed_at > 5:
            raise AssertionError("never admitted again")
        await asyncio.sleep(0.02)


async def test_a_freed_slot_is_admitted_again_within_a_second(stack: Stack) -> None:
    """Issue 15: redeeming in `live` scope frees a slot, raising the cap adds one; either way a
    new request is admitted (not refused from a stale snapshot) within a second."""
    await stack.pool.execute("UPDATE golden_config SET cap = 1, scope = 'live'")
    server, address = await served(stack)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = golden_pb2_grpc.GoldenPressStub(channel)
            user = uid("holder")
            outcome, ticket_id = await _issue(stub, user)
            assert outcome == "ok"
            assert (await _issue(stub, uid("late")))[0] == Reason.CAP_REACHED.value

            tid = uuid.UUID(ticket_id)
            await stack.redeem(tid, user, await stack.bundle_for(tid))
            assert await _admitted_after(stub, time.monotonic()) < 1.0  # the redeem freed it
            assert (await _issue(stub, uid("late")))[0] == Reason.CAP_REACHED.value

            await set_cap(stack.settings.pg_dsn, 2, "live")
            assert await _admitted_after(stub, time.monotonic()) < 1.0  # the raise made room
    finally:
        await shutdown(server, grace=None)


async def test_a_revocation_stops_verifying_within_the_bound(stack: Stack) -> None:
    """Issue 15: VerifyTicket answers from memory, yet a revocation stops verifying within the
    stated bound: at once by NOTIFY, within the periodic re-read (hard cap: the snapshot's
    max age, TicketVerifier.max_age_s) when the NOTIFY is lost."""
    server, address = await served(stack)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = golden_pb2_grpc.GoldenPressStub(channel)
            tickets = [await _issue(stub, uid("v")) for _ in range(2)]
            by_notify, by_timer = (uuid.UUID(t) for _, t in tickets)

            async def valid(tid: uuid.UUID) -> bool:
                resp = await stub.VerifyTicket(golden_pb2.VerifyTicketRequest(ticket_id=str(tid)))
                return bool(resp.valid)

            assert await valid(by_notify) and await valid(by_timer)
            # The guarantee is the snapshot's max age (past it VerifyTicket reads PostgreSQL);
            # the NOTIFY normally makes it milliseconds, the timer at most one interval.
            bound = server_verifier_max_age(server)
            await revoke_ticket(stack.settings, by_notify, "fraud")
            assert await eventually(lambda: _not(valid(by_notify)), bound) <= bound

            # A NOTIFY that never arrives (a half-open LISTEN): only the timer re-read sees it.
            await stack.pool.execute(
                "UPDATE tickets SET state = 'revoked', revoked_at = now(),"
                " revoke_reason = 'test' WHERE ticket_id = $1",
                by_timer,
            )
            assert await eventually(lambda: _not(valid(by_timer)), bound) <= bound
    finally:
        await shutdown(server, grace=None)


class Parked(Faults):
    """In-process worker faults: a saga reaching `step` waits there until `release` is set."""

    def __init__(self, step: str) -> None:
        super().__init__()
        self.step = step
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self.waiting = 0

    async def before(self, step: str) -> None:
        if step == self.step and not self.release.is_set():
            self.waiting += 1
            self.arrived.set()
            try:
                await self.release.wait()
            finally:
                self.waiting -= 1


async def test_a_stale_verification_cache_cannot_redeem_a_revoked_ticket(
    idle_stack: Stack, admissions: Callable[..., Any], client: Client
) -> None:
    """Issue 15: within its staleness bound VerifyTicket may still call a revoked ticket valid
    (its snapshot predates the revocation and no NOTIFY came), yet redemption refuses it: the
    saga reads the stored state, and decides under the advisory lock, never from the cache; also
    when the revocation lands after the redemption's proof checks, just before its locked step.
    The servicer's own pieces: an admission re-reading hourly whose snapshot is not re-read after
    the revocation (LISTEN and timer both blocked), the TicketVerifier the servicer builds over
    it (bound: max_age_for(3600)), and the redemption RedeemTicket runs."""
    stack = idle_stack
    parked = Parked("redeem")  # the locked step of the redemption saga
    admission = await admissions(stack, refresh_interval_s=3600)

    async def trust_roots(_key_id: str) -> TrustRoots:
        return await key_store.trust_roots(stack.pool, stack.settings.ledger_origin)

    async def revoke(tid: uuid.UUID) -> None:  # in the store's terms, without a NOTIFY
        await stack.pool.execute(
            "UPDATE tickets SET state = 'revoked', revoked_at = now(), revoke_reason = 'test'"
            " WHERE ticket_id = $1",
            tid,
        )

    async with golden_worker(stack.settings, client, stack.pool, stack.nc, stack.keys, parked):
        holders = [uid("holder") for _ in range(2)]
        tickets = [
            (await asyncio.wait_for(admission.issue(user, uid("r")), 60)).ticket.ticket_id
            for user in holders
        ]
        bundles = [await stack.bundle_for(tid) for tid in tickets]
        await settled(admission)  # holds both tickets; no re-read lands after the swap
        admission._pool = NoRereadPool(stack.pool)  # type: ignore[assignment]
        cached = TicketVerifier(admission, stack.pool, trust_roots)
        assert cached.max_age_s == max_age_for(3600)

        async def cached_valid(tid: uuid.UUID) -> bool:
            resp = await cached.verify(golden_pb2.VerifyTicketRequest(ticket_id=str(tid)))
            return bool(resp.valid)

        assert all([await cached_valid(tid) for tid in tickets])
        before, during = zip(tickets, holders, bundles, strict=True)

        # Revoked before the redemption starts.
        parked.release.set()
        await revoke(before[0])
        assert await cached_valid(before[0])  # stale, within the bound: allowed
        with pytest.raises(GoldenError) as info:
            await asyncio.wait_for(admission.redeem(*before), 60)
        assert info.value.reason is Reason.TICKET_NOT_REDEEMABLE

        # Revoked once the redemption passed its proof checks, before its locked step.
        parked.release.clear()
        redeeming = asyncio.create_task(admission.redeem(*during))
        await asyncio.wait_for(parked.arrived.wait(), 30)
        await revoke(during[0])
        assert await cached_valid(during[0])
        parked.release.set()
        with pytest.raises(GoldenError) as info:
            await asyncio.wait_for(redeeming, 60)
        assert info.value.reason is Reason.TICKET_NOT_REDEEMABLE

    for tid in tickets:
        assert await cached_valid(tid)  # the cache is still stale: it decided nothing
        row = await stack.pool.fetchrow(
            "SELECT state, redeemed_at FROM tickets WHERE ticket_id = $1", tid
        )
        assert row["state"] == "revoked" and row["redeemed_at"] is None
    database = TicketVerifier(admission, stack.pool, trust_roots, max_age_s=0)
    for tid in tickets:  # PostgreSQL's answer, as past the bound
        resp = await database.verify(golden_pb2.VerifyTicketRequest(ticket_id=str(tid)))
        assert not resp.valid


def server_verifier_max_age(server: grpc.aio.Server) -> float:
    """The served API's VerifyTicket staleness bound (3 s with the default 1 s re-read)."""
    return max_age_for(admission_of(server).refresh_interval_s)


async def _not(value: Any) -> bool:
    return not await value
