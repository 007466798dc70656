"""Admission: the checks in front of the sagas, shared by the gRPC API and the starter.

Order of an issuance request (each refusal is a typed GoldenError and costs no workflow):

1. validate the user id and request id                                    -> InvalidRequest
2. join first (issue 13.3): a saga this process runs for the same request id is awaited, not
   started again; with another request hash                             -> IdempotencyKeyReused
3. the snapshot (golden_press.snapshot), from memory: a request id whose ticket is in the
   ledger gets it back; one whose ticket is reserved or not yet in the ledger joins its saga;
   when sold out, everyone else is refused from memory, no statement of its own (no
   rate-limit write: there is nothing left to protect); only after a NOTIFY that may have freed
   a slot does a refusal wait, at most the re-read interval, for the one re-read it triggered
   (below)                                           -> UserDenied / OnePerUser / CapReached
4. only a request that can still win reaches PostgreSQL, in ONE statement: its request id's
   row, its rate-limit attempt (a request id already sent in the window is a retry, not a new
   attempt), deny-list, one per user               -> UserDenied / RateLimited / OnePerUser
5. in-flight gate: at most ceil((cap - settled tickets) / GOLDEN_API_PROCESSES) + margin
   issuance sagas of this process at once. A request beyond it is refused at once (CapReached,
   not queued), except a retry of a request already admitted somewhere: if its saga runs it is
   joined, with the hash checked. When this process is the only one admitting
   (GOLDEN_API_PROCESSES=1) the gate is checked from memory BEFORE step 4: every request it could
   join is then known here (its saga is in `_running`, kept until a snapshot read after its end;
   its row, once reserved, in the snapshot), so a full gate refuses the launch herd without a
   statement (issue 15: the herd's first second otherwise queued on PostgreSQL). With several
   processes a retry may reach another process than its saga's, so step 4 runs first
   (GOLDEN_ADMISSION_MEMORY_GATE=false makes a sole process do the same).
6. start `issue-<request_id>` (conflict policy FAIL: a run that already exists is joined only
   after its request hash, kept in its memo, matches) and wait for its result.

Why the gate refuses instead of waiting: every slot not yet settled is already contested by a saga
in flight, so a waiting caller would hold its connection for a saga's latency only to learn,
almost surely, that the slot went to someone else. None of this decides the cap: only the reserve
activity does, under the advisory lock.

The snapshot is replaced whole by a refresher task: on every NOTIFY on `golden_slots` (reserve,
ledger append, void, redeem, revoke, set-cap, deny), after every saga this process ran, and every
`refresh_interval_s` whatever the scope (a half-open LISTEN connection misses NOTIFYs silently;
the timer also checks that connection and reconnects it). The refresher survives any exception
(logged, retried on the next tick), so the sold-out flag can never freeze (issue 13.8).

A NOTIFY that may have freed a slot (void, redeem, revoke, set-cap) holds this process's
sold-out refusals until the re-read it triggered: meanwhile another process may already have
admitted a request into the freed slot, and that request's retry, reaching this process, must
find its row rather than a stale "sold out" (issue 13.3 with GOLDEN_API_PROCESSES > 1). The
held callers share one read and wait at most `refresh_interval_s`; if the read fails or takes
longer, the snapshot in hand answers as before. A launch only takes slots, so the herd waits
only if a saga is voided during it, and then for one read.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from uuid import UUID

import asyncpg
from pydantic import ValidationError
from temporalio.api.enums.v1 import WorkflowExecutionStatus
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from golden_press import sagas as sa
from golden_press.errors import GoldenError, InvalidRequest, Reason, one_line
from golden_press.models import (
    IssueTicketInput,
    IssueTicketResult,
    Outcome,
    ProofBundle,
    RedeemTicketInput,
    RedeemTicketResult,
    Ticket,
    TicketState,
    request_hash,
    validate_request_id,
    validate_user_id,
)
from golden_press.sagas import (
    ISSUE_WORKFLOW,
    REDEEM_WORKFLOW,
    issue_workflow_id,
    redeem_workflow_id,
)
from golden_press.settings import Settings
from golden_press.snapshot import Decision, Snapshot, Verdict, decide_known, denied, holds
from golden_press.waits import wait_event
from service.sagas.runs import SagaFailed, parse_ticket_id, rejection
from service.store.admission import admit, ping, read_snapshot, request_row
from service.store.db import NEVER_FREES_A_SLOT, SLOTS_CHANNEL

log = logging.getLogger("golden_press.admission")

#: Memo key of an issuance run: the request hash a joiner must match (issue 13.3).
REQUEST_HASH_MEMO = "request_hash"


@dataclass(frozen=True)
class IssueOutcome:
    """A caller's ticket, and whether it was already there (a retry) rather than minted now."""

    ticket: Ticket
    workflow_id: str
    request_id: str
    replayed: bool


@dataclass
class _Running:
    """A saga this process started or joined, awaited by every caller of its request id."""

    request_hash: str
    task: asyncio.Task[IssueOutcome]
    gated: bool
    #: Set once the workflow has started (or been joined): a no_wait caller answers then.
    started: asyncio.Event = field(default_factory=asyncio.Event)
    #: time.monotonic() when the saga's task ended: the entry stays until a snapshot read that
    #: started later holds the saga's row, so a retry meanwhile gets the saga's own answer.
    finished_at: float | None = None


#: The no_wait caller's callback for the issue() call running in this context (see issue()).
_ON_STARTED: ContextVar[Callable[[str], None] | None] = ContextVar("on_started", default=None)


def validate_issue(user_id: str, request_id: str) -> IssueTicketInput:
    """Step 1: the workflow input, or InvalidRequest naming the bad field."""
    try:
        validate_user_id(user_id)
        validate_request_id(request_id)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc
    return IssueTicketInput(
        user_id=user_id, request_id=request_id, request_hash=request_hash(user_id)
    )


def parse_bundle(bundle_json: str) -> ProofBundle:
    """A proof bundle from its JSON form, or InvalidRequest."""
    if not bundle_json:
        raise InvalidRequest("a proof bundle is required (see GetInclusionProof)")
    try:
        return ProofBundle.model_validate_json(bundle_json)
    except ValidationError as exc:
        raise InvalidRequest(f"malformed proof bundle: {one_line(exc)}") from exc


def new_request_id() -> str:
    """A fresh idempotency key for callers that did not bring one."""
    return f"req-{uuid.uuid4().hex}"


async def _ready(handle: WorkflowHandle[Any, IssueTicketResult]) -> WorkflowHandle[Any, Any]:
    return handle


def _consume_failure(task: asyncio.Task[Any]) -> None:
    """Mark a shared background read's failure as seen: its waiters may all have stopped
    waiting (and the refresher logs read failures itself)."""
    if not task.cancelled():
        task.exception()


def _slots_claimed() -> GoldenError:
    return GoldenError(
        Reason.CAP_REACHED,
        "every free slot is being claimed by an issuance in flight; try again shortly",
    )


def _key_reused(request_id: str) -> GoldenError:
    return GoldenError(
        Reason.IDEMPOTENCY_KEY_REUSED,
        f"request_id {request_id!r} was already used for a different request",
    )


class Admission:
    """Admits issuance and redemption requests and runs their sagas; one per process."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        client: Client,
        *,
        dsn: str,
        task_queue: str,
        rate_limit_attempts: int = 5,
        rate_limit_window_s: float = 60.0,
        gate_margin: int = 2,
        gate_share: int = 1,
        memory_gate: bool = True,
        refresh_interval_s: float = 1.0,
    ) -> None:
        self._pool = pool
        self._client = client
        self._dsn = dsn
        self._task_queue = task_queue
        self._rate_attempts = rate_limit_attempts
        self._rate_window_s = rate_limit_window_s
        self._gate_margin = gate_margin
        #: API processes sharing the slots (GOLDEN_API_PROCESSES): each admits its share of the
        #: free slots at once, so N processes do not start N times the sagas a herd can use.
        self._gate_share = max(gate_share, 1)
        #: GOLDEN_ADMISSION_MEMORY_GATE: a sole process's full gate refuses before step 4.
        self._memory_gate = memory_gate
        self.refresh_interval_s = refresh_interval_s
        self.snapshot = Snapshot()
        self._running: dict[str, _Running] = {}
        self._refresh_wanted = asyncio.Event()
        #: When the latest NOTIFY that may have freed a slot arrived (time.monotonic()): a
        #: snapshot read before then may call sold out what is not.
        self._freed_at = 0.0
        self._freeing_read: asyncio.Task[Snapshot] | None = None
        self._refresh_lock = asyncio.Lock()
        self._listen_conn: asyncpg.Connection | None = None
        self._refresher_task: asyncio.Task[None] | None = None
        self._closed = False
        #: Refresher failures so far (tests and metrics read it; each one is logged).
        self.refresh_failures = 0

    @classmethod
    def from_settings(
        cls, settings: Settings, pool: asyncpg.Pool, client: Client, **kwargs: Any
    ) -> Admission:
        """Admission configured from Settings (rate limits, task queue, DSN for LISTEN)."""
        return cls(
            pool,
            client,
            dsn=settings.pg_dsn,
            task_queue=settings.task_queue,
            rate_limit_attempts=settings.rate_limit_attempts,
            rate_limit_window_s=settings.rate_limit_window_s,
            **{
                "gate_share": settings.api_processes,
                "memory_gate": settings.admission_memory_gate,
                **kwargs,
            },
        )

    @property
    def in_flight(self) -> int:
        """Gated issuance sagas of this process now running."""
        return sum(1 for r in self._running.values() if r.gated and r.finished_at is None)

    def _gate_full(self, snap: Snapshot) -> bool:
        """True when this process runs its share of the free slots' sagas (and the margin)."""
        free = max(snap.cap - snap.settled, 0)
        limit = -(-free // self._gate_share) + self._gate_margin  # ceil: one process fills all
        return self.in_flight >= limit

    def _gate_refusal(self, user_id: str) -> GoldenError | None:
        """Step 5 from memory, for a sole admitting process: the refusal a full gate gives.

        Only for GOLDEN_API_PROCESSES=1: every saga a request could join is then in `_running`
        or, once reserved, in the snapshot; the request itself is not (the caller looked). The
        deny-list and one-per-user come first, as on the database path. No rate-limit write:
        the attempt could not win, so there is nothing to protect. Off
        (GOLDEN_ADMISSION_MEMORY_GATE=false): step 4 runs first and the gate refuses after it.
        """
        snap = self.snapshot
        if not self._memory_gate or self._gate_share != 1 or not self._gate_full(snap):
            return None
        refused = snap.user_refusal(user_id)
        if refused is not None:
            assert refused.reason is not None
            return GoldenError(refused.reason, refused.message)
        return _slots_claimed()

    # ---- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """LISTEN on SLOTS_CHANNEL, load the snapshot and start the refresher."""
        await self._listen()
        await self.refresh()
        self._start_refresher()

    def _start_refresher(self) -> None:
        task = asyncio.create_task(self._refresher(), name="admission-refresh")
        task.add_done_callback(self._refresher_done)
        self._refresher_task = task

    def _refresher_done(self, task: asyncio.Task[None]) -> None:
        # The loop catches every Exception; this is the last line should anything still end it.
        if self._closed or task.cancelled():
            return
        log.error("admission refresher ended (%r); restarting it", task.exception())
        self._start_refresher()

    async def close(self) -> None:
        """Stop the refresher and the LISTEN connection (the pool and client are the caller's)."""
        self._closed = True
        tasks = (self._refresher_task, self._freeing_read)
        self._refresher_task = self._freeing_read = None
        for task in tasks:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for running in list(self._running.values()):
            running.task.cancel()
        if self._listen_conn is not None:
            with contextlib.suppress(Exception):
                await self._listen_conn.close()
            self._listen_conn = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _listen(self) -> None:
        conn = await asyncpg.connect(self._dsn)
        await conn.add_listener(SLOTS_CHANNEL, self._on_notify)
        conn.add_termination_listener(self._on_listen_lost)
        self._listen_conn = conn

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        if payload not in NEVER_FREES_A_SLOT:
            self._freed_at = time.monotonic()
        self._refresh_wanted.set()

    def _on_listen_lost(self, _conn: object) -> None:
        if self._closed:
            return
        log.warning("LISTEN connection lost; reconnecting, re-reading every tick meanwhile")
        self._listen_conn = None
        self._freed_at = time.monotonic()  # a NOTIFY that freed a slot may be the one missed
        self._refresh_wanted.set()

    async def _listen_alive(self) -> bool:
        """Reconnect a closed LISTEN connection; ping an open one (a half-open one hangs)."""
        conn = self._listen_conn
        if conn is not None and not conn.is_closed():
            try:
                await ping(conn, within_s=self.refresh_interval_s + 1)
                return True
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("LISTEN connection unresponsive (%s); reconnecting", exc)
                self._freed_at = time.monotonic()  # it may have missed a freeing NOTIFY
                conn.terminate()
        self._listen_conn = None
        await self._listen()
        return False

    async def _refresher(self) -> None:
        """Re-read on NOTIFY and on every tick, whatever the scope; never dies of an error."""
        while not self._closed:
            try:
                notified = await wait_event(self._refresh_wanted, self.refresh_interval_s)
                # Cleared BEFORE the read: a NOTIFY arriving during the read triggers another.
                self._refresh_wanted.clear()
                if not notified:
                    await self._listen_alive()
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.refresh_failures += 1
                log.exception("admission refresh failed; retrying on the next tick")
                await wait_event(self._refresh_wanted, self.refresh_interval_s)

    async def refresh(self) -> Snapshot:
        """A snapshot read from now on (one connection, two statements). Concurrent callers
        share reads, but a read already under way when this is called does not do: it may
        predate the change the caller (say, the refresher after a NOTIFY) wants to see."""
        return await self.snapshot_since(time.monotonic())

    async def snapshot_since(self, moment: float) -> Snapshot:
        """A snapshot whose read started at or after `moment` (time.monotonic()), so it holds
        every row committed before then: what VerifyTicket reads before saying "no such ticket".
        Callers share reads: one runs at a time, and a caller waits for at most the next one, so
        a flood of unknown ids costs back-to-back snapshot reads, never a statement per call."""
        while self.snapshot.read_at < moment:
            async with self._refresh_lock:
                if self.snapshot.read_at >= moment:
                    break
                self.snapshot = await read_snapshot(self._pool)
                self._forget_finished(self.snapshot.read_at)
        return self.snapshot

    async def _snapshot_after_freeing(self) -> Snapshot:
        """A snapshot read after the latest NOTIFY that may have freed a slot: one read shared by
        every caller held meanwhile, waited for at most `refresh_interval_s`. When it fails or
        takes longer (PostgreSQL unreachable), the snapshot in hand answers, as it did before the
        freeing: the refresher logs and retries the read, and a held caller never queues behind
        other callers' reads."""
        read = self._freeing_read
        if read is None or read.done():
            read = asyncio.create_task(self.snapshot_since(self._freed_at))
            read.add_done_callback(_consume_failure)
            self._freeing_read = read
        try:
            return await asyncio.wait_for(asyncio.shield(read), self.refresh_interval_s)
        except Exception:  # whatever stopped the read, the answer falls back to memory
            return self.snapshot

    def _forget_finished(self, read_at: float) -> None:
        """Drop sagas that ended before `read_at`: the snapshot read then holds their rows."""
        for request_id, running in list(self._running.items()):
            if running.finished_at is not None and running.finished_at < read_at:
                del self._running[request_id]

    def request_refresh(self) -> None:
        """Ask the refresher for a re-read soon (after a saga changed the tickets)."""
        self._refresh_wanted.set()

    # ---- issuance -----------------------------------------------------------------------------

    async def issue(
        self,
        user_id: str,
        request_id: str | None = None,
        *,
        on_started: Callable[[str], None] | None = None,
    ) -> IssueOutcome:
        """Admit and run one issuance; returns the ticket or raises GoldenError/SagaFailed.

        on_started(workflow_id) runs once the saga has started or been joined (the API's no_wait
        answers then); the call itself goes on to the saga's result.
        """
        token = _ON_STARTED.set(on_started)
        try:
            return await self._issue(user_id, request_id)
        finally:
            _ON_STARTED.reset(token)

    async def _issue(self, user_id: str, request_id: str | None) -> IssueOutcome:
        if not self.snapshot.loaded:
            await self.refresh()
        request = validate_issue(user_id, request_id or new_request_id())
        request_id = request.request_id
        workflow_id = issue_workflow_id(request_id)

        running = self._running.get(request_id)
        if running is not None:
            return await self._await_running(running, request)

        decision = self.snapshot.decide(user_id, request_id, request.request_hash)
        if decision.verdict is Verdict.REFUSE and self._freed_at > self.snapshot.read_at:
            # A slot may have freed since this snapshot's read; its re-read is on the way.
            fresh_snapshot = await self._snapshot_after_freeing()
            decision = fresh_snapshot.decide(user_id, request_id, request.request_hash)
        if decision.verdict is Verdict.JOIN:
            # Memory may predate the saga's end (its NOTIFY still on the way): ask the row before
            # starting anything. Only a retry of an unfinished winner ever pays this round trip.
            fresh = await request_row(self._pool, request_id)
            if fresh is not None:
                decision = decide_known(fresh, request_id, request.request_hash)
        if decision.verdict is not Verdict.ASK_DATABASE:
            return await self._act(decision, request, workflow_id)
        refusal = self._gate_refusal(user_id)
        if refusal is not None:
            raise refusal

        found = await admit(
            self._pool, request_id, user_id, self._rate_window_s, self._rate_attempts + 1
        )
        if found.stored is not None:
            known = decide_known(found.stored, request_id, request.request_hash)
            return await self._act(known, request, workflow_id)
        if found.denied:
            raise GoldenError(Reason.USER_DENIED, denied(user_id))
        if found.attempts is not None and found.attempts > self._rate_attempts:
            raise GoldenError(
                Reason.RATE_LIMITED,
                f"more than {self._rate_attempts} attempts in {self._rate_window_s:g} s; "
                "try again later",
            )
        if found.holds_ticket:
            raise GoldenError(Reason.ONE_PER_USER, holds(user_id))

        running = self._running.get(request_id)  # started by a concurrent call meanwhile
        if running is not None:
            return await self._await_running(running, request)
        snap = self.snapshot
        if snap.sold_out or self._gate_full(snap):
            # A retry of a request admitted before (here or in another process) whose saga still
            # runs is joined, never refused: that saga may be a winner (issue 13.3).
            if found.seen:
                joined = await self._join_existing(request, workflow_id)
                if joined is not None:
                    running = self._track(request, _ready(joined), False)
                    return await self._await_running(running, request)
            if snap.sold_out:
                raise GoldenError(
                    Reason.CAP_REACHED, f"all {snap.cap} golden tickets are taken ({snap.scope})"
                )
            raise _slots_claimed()
        return await self._await_running(
            self._track(request, self._start_or_join(request, workflow_id), True), request
        )

    async def _act(
        self, decision: Decision, request: IssueTicketInput, workflow_id: str
    ) -> IssueOutcome:
        stored = decision.stored
        if decision.verdict is Verdict.REFUSE:
            assert decision.reason is not None
            raise GoldenError(decision.reason, decision.message)
        assert stored is not None
        if decision.verdict is Verdict.REPLAY:
            return IssueOutcome(stored.ticket, workflow_id, request.request_id, replayed=True)
        if decision.verdict is Verdict.COMPENSATED:
            raise SagaFailed(
                workflow_id,
                f"the issuance for request_id {request.request_id!r} was compensated "
                f"({stored.void_reason or 'voided'}); retry with a new request_id",
            )
        # JOIN: its saga has not passed the ledger append. Not gated: the slot is already held.
        running = self._running.get(request.request_id)
        if running is None:
            running = self._track(request, self._start_or_join(request, workflow_id), False)
        return await self._await_running(running, request)

    def _track(
        self,
        request: IssueTicketInput,
        handle: Awaitable[WorkflowHandle[Any, IssueTicketResult]],
        gated: bool,
    ) -> _Running:
        """Run the saga in its own task so every caller of the request id awaits one result."""
        started = asyncio.Event()

        async def mark_started() -> WorkflowHandle[Any, IssueTicketResult]:
            started_handle = await handle
            started.set()
            return started_handle

        task = asyncio.create_task(self._run_issue(request, mark_started()))
        running = _Running(request.request_hash, task, gated, started)
        self._running[request.request_id] = running

        def done(finished: asyncio.Task[IssueOutcome]) -> None:
            running.finished_at = time.monotonic()
            error = None if finished.cancelled() else finished.exception()  # always retrieved
            if finished.cancelled() or not isinstance(error, GoldenError | SagaFailed | None):
                # Not the saga's answer (shut down, Temporal unreachable): a retry tries again.
                if self._running.get(request.request_id) is running:
                    del self._running[request.request_id]
            self.request_refresh()

        task.add_done_callback(done)
        return running

    async def _await_running(self, running: _Running, request: IssueTicketInput) -> IssueOutcome:
        if running.request_hash != request.request_hash:
            raise _key_reused(request.request_id)
        if running.finished_at is not None and running.task.exception() is None:
            # A retry after the saga's end, before the snapshot holds its row: its ticket.
            return dataclasses.replace(running.task.result(), replayed=True)
        on_started = _ON_STARTED.get()
        watcher = None
        if on_started is not None:
            callback = on_started

            async def notify() -> None:
                await running.started.wait()
                callback(issue_workflow_id(request.request_id))

            watcher = asyncio.ensure_future(notify())
        try:
            # Shielded: a caller that goes away must not cancel the saga other callers wait for.
            return await asyncio.shield(running.task)
        finally:
            if watcher is not None:
                watcher.cancel()

    async def _start_or_join(
        self, request: IssueTicketInput, workflow_id: str
    ) -> WorkflowHandle[Any, IssueTicketResult]:
        """Start `issue-<request_id>`; a run that exists already is joined if its hash matches."""
        try:
            return await self._client.start_workflow(
                ISSUE_WORKFLOW,
                request,
                id=workflow_id,
                task_queue=self._task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                result_type=IssueTicketResult,
                memo={REQUEST_HASH_MEMO: request.request_hash},
                # Findable in the Web UI from the first moment, before any workflow task ran.
                search_attributes=TypedSearchAttributes(
                    [SearchAttributePair(sa.USER_ID, request.user_id)]
                ),
                static_summary=f"Issue a golden ticket to {request.user_id}",
            )
        except WorkflowAlreadyStartedError:
            handle = await self._join_existing(request, workflow_id)
            if handle is None:  # it ended between our start and our look: start again
                return await self._start_or_join(request, workflow_id)
            return handle

    async def _join_existing(
        self, request: IssueTicketInput, workflow_id: str
    ) -> WorkflowHandle[Any, IssueTicketResult] | None:
        """The running `issue-<request_id>` if there is one; IdempotencyKeyReused if not ours."""
        handle = self._client.get_workflow_handle(workflow_id, result_type=IssueTicketResult)
        try:
            desc = await handle.describe()
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND:
                return None
            raise
        if desc.status != WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING:
            return None
        theirs = await desc.memo_value(REQUEST_HASH_MEMO, None)
        if theirs is None:  # a run started before the memo existed: its user id says the same
            user = desc.typed_search_attributes.get(sa.USER_ID)
            theirs = request_hash(user) if user else None
        if theirs != request.request_hash:
            raise _key_reused(request.request_id)
        return self._client.get_workflow_handle(
            workflow_id, run_id=desc.run_id, result_type=IssueTicketResult
        )

    async def _run_issue(
        self,
        request: IssueTicketInput,
        starting: Awaitable[WorkflowHandle[Any, IssueTicketResult]],
    ) -> IssueOutcome:
        """Await the saga (started or joined) and turn its result into the caller's outcome."""
        handle = await starting
        workflow_id = handle.id
        try:
            result: IssueTicketResult = await handle.result()
        except WorkflowFailureError as exc:
            raise SagaFailed(workflow_id, f"workflow failed: {exc.cause or exc}") from exc
        if result.outcome is Outcome.ISSUED:
            assert result.ticket_id is not None and result.serial is not None
            assert result.issued_at is not None
            ticket = Ticket(
                ticket_id=result.ticket_id,
                serial=result.serial,
                user_id=request.user_id,
                issued_at=result.issued_at,
                key_id=result.key_id,
                signature=result.signature,
                state=TicketState.ISSUED,
                request_id=request.request_id,
                leaf_index=result.leaf_index,
            )
            log.info(
                "ticket issued",
                extra={"ticket_id": str(ticket.ticket_id), "workflow_id": workflow_id},
            )
            return IssueOutcome(ticket, workflow_id, request.request_id, replayed=False)
        if result.outcome is Outcome.REJECTED:
            raise rejection(workflow_id, result.reason, result.message)
        raise SagaFailed(workflow_id, result.message or f"saga ended {result.outcome}")

    # ---- redemption ---------------------------------------------------------------------------

    async def redeem(
        self,
        ticket_id: str | UUID,
        user_id: str,
        bundle: ProofBundle | str,
        *,
        on_started: Callable[[str], None] | None = None,
    ) -> RedeemTicketResult:
        """Run one redemption; a second concurrent one for the ticket is RedemptionInProgress.

        on_started(workflow_id) runs once the saga has started (the API's no_wait answers then).
        """
        tid = parse_ticket_id(ticket_id)
        try:
            validate_user_id(user_id)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc
        proof = parse_bundle(bundle) if isinstance(bundle, str) else bundle
        workflow_id = redeem_workflow_id(tid)
        try:
            handle = await self._client.start_workflow(
                REDEEM_WORKFLOW,
                RedeemTicketInput(ticket_id=tid, user_id=user_id, bundle=proof),
                id=workflow_id,
                task_queue=self._task_queue,
                # Never join another caller's redemption: they may hold another user or proof.
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                result_type=RedeemTicketResult,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(sa.TICKET_ID, str(tid)),
                        SearchAttributePair(sa.USER_ID, user_id),
                    ]
                ),
                static_summary=f"Redeem golden ticket {tid} for {user_id}",
            )
        except WorkflowAlreadyStartedError as exc:
            raise GoldenError(
                Reason.REDEMPTION_IN_PROGRESS, f"ticket {tid} is being redeemed right now"
            ) from exc
        if on_started is not None:
            on_started(workflow_id)
        try:
            result: RedeemTicketResult = await handle.result()
        except WorkflowFailureError as exc:
            raise SagaFailed(workflow_id, f"workflow failed: {exc.cause or exc}") from exc
        if result.outcome is Outcome.REDEEMED:
            self.request_refresh()
            log.info("ticket redeemed", extra={"ticket_id": str(tid), "workflow_id": workflow_id})
            return result
        if result.outcome is Outcome.REJECTED:
            raise rejection(workflow_id, result.reason, result.message)
        raise SagaFailed(workflow_id, result.message or f"saga ended {result.outcome}")


__all__ = [
    "Admission",
    "IssueOutcome",
    "new_request_id",
    "parse_bundle",
    "parse_ticket_id",
    "validate_issue",
]
