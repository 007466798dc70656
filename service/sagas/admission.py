"""Admission: the cheap checks in front of the sagas, shared by the gRPC API and the starter.

Order of an issuance request (each step refuses with a typed GoldenError and costs no workflow):

1. validate the user id and request id                                    -> InvalidRequest
2. look up request_id: a ticket with the same request hash is returned at once (a winner's retry
   gets its ticket, never CapReached); another hash                     -> IdempotencyKeyReused
3. deny-list                                                              -> UserDenied
   rate limit: fixed window per user in `rate_limit`                      -> RateLimited
   one per user: the user already holds a non-voided ticket              -> OnePerUser
   (steps 2-3 are ONE SQL statement: one round trip per request)
4. sold-out flag, in memory                                               -> CapReached
5. in-flight gate: at most (cap - settled tickets) + margin issuance workflows of this process
   at once; a request beyond it is refused at once               -> CapReached (not queued)
6. start `issue-<request_id>` (joins a running one) and wait for its result.

Why the gate refuses instead of waiting: every slot not yet settled is already being contested by a
workflow in flight, so a waiting caller would hold its connection for a workflow's latency only to
learn, almost surely, that the slot went to someone else; a herd's p99 would pay for it. The margin
covers in-flight attempts that fail (compensation), and the flag is refreshed when a slot frees,
so a retry soon after a freed slot is admitted. None of this decides the cap: only the reserve
activity does, under the advisory lock. The flag and gate only keep a herd's losers off Temporal.

The sold-out flag: under `live`, `used >= cap` with `used` counted per the scope table; refreshed
when the lead's activities `NOTIFY golden_slots` (void, redeem, revoke, set-cap), after every
workflow this process ran, and every `refresh_interval_s` as a safety net (a missed NOTIFY, a lost
LISTEN connection). Under `lifetime` the flag is permanent once the *settled* tickets (everything
but `reserved`, which may still be voided) reach the cap: only a NOTIFY (set-cap) re-reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from uuid import UUID

import asyncpg
from pydantic import ValidationError
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from golden_press import sagas as sa
from golden_press.errors import GoldenError, InvalidRequest, Reason, one_line
from golden_press.models import (
    COUNTED_STATES,
    CapScope,
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
from service.sagas.runs import SagaFailed, parse_ticket_id, rejection
from service.store import tickets
from service.store.db import SLOTS_CHANNEL

log = logging.getLogger("golden_press.admission")


@dataclass(frozen=True)
class IssueOutcome:
    """A caller's ticket, and whether it was already there (a retry) rather than minted now."""

    ticket: Ticket
    workflow_id: str
    request_id: str
    replayed: bool


@dataclass
class SlotState:
    """This process's view of the cap: refreshed often, authoritative never."""

    cap: int = 0
    scope: CapScope = CapScope.LIVE
    counts: dict[TicketState, int] = field(default_factory=dict)
    loaded: bool = False
    #: Set from a workflow's CapReached until the next refresh (a faster flip than a round trip).
    forced_sold_out: bool = False
    refreshed_at: float = 0.0

    @property
    def used(self) -> int:
        """Tickets that count against the cap under the scope."""
        return sum(self.counts.get(s, 0) for s in COUNTED_STATES[self.scope])

    @property
    def settled(self) -> int:
        """Counted tickets that can no longer be voided (everything counted but `reserved`)."""
        return self.used - self.counts.get(TicketState.RESERVED, 0)

    @property
    def sold_out(self) -> bool:
        """True when no slot is free by the last count."""
        return self.forced_sold_out or self.used >= self.cap

    @property
    def permanent(self) -> bool:
        """Under `lifetime`, settled tickets never stop counting: only set-cap can reopen."""
        return self.scope is CapScope.LIFETIME and self.settled >= self.cap


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
        refresh_interval_s: float = 1.0,
    ) -> None:
        self._pool = pool
        self._client = client
        self._dsn = dsn
        self._task_queue = task_queue
        self._rate_attempts = rate_limit_attempts
        self._rate_window_s = rate_limit_window_s
        self._gate_margin = gate_margin
        self._refresh_interval_s = refresh_interval_s
        self.slots = SlotState()
        self.in_flight = 0
        #: Bumped by every NOTIFY; a CapReached decided before a slot freed must not re-close it.
        self._generation = 0
        self._refresh_wanted = asyncio.Event()
        #: Set by a NOTIFY (or a LISTEN reconnect): the one thing that re-reads a permanent flag.
        self._notified = False
        self._refresh_lock = asyncio.Lock()
        self._listen_conn: asyncpg.Connection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

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
            **kwargs,
        )

    # ---- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the counts, LISTEN on SLOTS_CHANNEL and start the refresher."""
        await self._listen()
        await self.refresh()
        self._tasks.append(asyncio.create_task(self._refresher(), name="admission-refresh"))

    async def close(self) -> None:
        """Stop the refresher and the LISTEN connection (the pool and client are the caller's)."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
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

    def _on_notify(self, _conn: object, _pid: int, _channel: str, _payload: object) -> None:
        self._generation += 1
        self.slots.forced_sold_out = False
        self._notified = True
        self._refresh_wanted.set()

    def _on_listen_lost(self, _conn: object) -> None:
        # The refresher reconnects; until then the periodic refresh keeps the flag honest.
        if self._closed:
            return
        log.warning("LISTEN connection lost; polling until it is back")
        self._listen_conn = None
        self._notified = True
        self._refresh_wanted.set()

    async def _refresher(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refresh_wanted.wait(), self._refresh_interval_s)
            self._refresh_wanted.clear()
            notified, self._notified = self._notified, False
            try:
                if self._listen_conn is None or self._listen_conn.is_closed():
                    await self._listen()
                    notified = True  # a NOTIFY may have been missed while disconnected
                if notified or not self.slots.permanent:
                    await self.refresh()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("slot refresh failed: %s", exc)

    async def refresh(self) -> SlotState:
        """Re-read cap, scope and counts (one cheap query); concurrent calls coalesce."""
        if self._refresh_lock.locked():
            async with self._refresh_lock:  # someone is reading right now: their answer will do
                return self.slots
        async with self._refresh_lock:
            generation = self._generation
            row = await tickets.slot_counts(self._pool)
            counts = {
                TicketState.RESERVED: row["reserved"],
                TicketState.ISSUED: row["issued"],
                TicketState.REDEEMED: row["redeemed"],
                TicketState.REVOKED: row["revoked"],
            }
            self.slots = SlotState(
                cap=row["cap"],
                scope=CapScope(row["scope"]),
                counts=counts,
                loaded=True,
                forced_sold_out=self.slots.forced_sold_out and generation == self._generation,
                refreshed_at=time.monotonic(),
            )
            # A CapReached flag stands only until a real count says otherwise.
            if self.slots.used < self.slots.cap:
                self.slots.forced_sold_out = False
            return self.slots

    def request_refresh(self) -> None:
        """Ask the refresher for a re-read soon (after a workflow changed the counts)."""
        self._refresh_wanted.set()

    # ---- issuance -----------------------------------------------------------------------------

    async def issue(self, user_id: str, request_id: str | None = None) -> IssueOutcome:
        """Admit and run one issuance; returns the ticket or raises GoldenError/SagaFailed."""
        if not self.slots.loaded:
            await self.refresh()
        request_id = request_id or new_request_id()
        started = time.perf_counter()
        request = validate_issue(user_id, request_id)
        workflow_id = issue_workflow_id(request_id)

        row = await tickets.admission_check(self._pool, request_id, user_id, self._rate_window_s)
        if row["ticket_id"] is not None:
            if row["request_hash"] != request.request_hash:
                raise GoldenError(
                    Reason.IDEMPOTENCY_KEY_REUSED,
                    f"request_id {request_id!r} was already used for a different request",
                )
            state = TicketState(row["state"])
            if state is TicketState.VOIDED:
                raise SagaFailed(
                    workflow_id,
                    f"the issuance for request_id {request_id!r} was compensated "
                    f"({row['void_reason'] or 'voided'}); retry with a new request_id",
                )
            if state is not TicketState.RESERVED:
                return IssueOutcome(
                    tickets.row_to_ticket(row), workflow_id, request_id, replayed=True
                )
            # Reserved: its saga is in flight (or about to be reconciled): join it, no gate.
            return await self._run_issue(request, workflow_id, gated=False)

        if row["denied"]:
            raise GoldenError(Reason.USER_DENIED, f"user {user_id!r} may not receive a ticket")
        if row["attempts"] is not None and row["attempts"] > self._rate_attempts:
            raise GoldenError(
                Reason.RATE_LIMITED,
                f"more than {self._rate_attempts} attempts in {self._rate_window_s:g} s; "
                "try again later",
            )
        if row["holds_ticket"]:
            raise GoldenError(Reason.ONE_PER_USER, f"user {user_id!r} already holds a ticket")

        slots = self.slots
        if slots.sold_out:
            raise GoldenError(
                Reason.CAP_REACHED, f"all {slots.cap} golden tickets are taken ({slots.scope})"
            )
        limit = max(slots.cap - slots.settled, 0) + self._gate_margin
        if self.in_flight >= limit:
            raise GoldenError(
                Reason.CAP_REACHED,
                "every free slot is being claimed by an issuance in flight; try again shortly",
            )
        log.debug("admitted %s in %.1f ms", workflow_id, (time.perf_counter() - started) * 1e3)
        return await self._run_issue(request, workflow_id, gated=True)

    async def _run_issue(
        self, request: IssueTicketInput, workflow_id: str, *, gated: bool
    ) -> IssueOutcome:
        generation = self._generation
        if gated:
            self.in_flight += 1
        try:
            handle = await self._client.start_workflow(
                ISSUE_WORKFLOW,
                request,
                id=workflow_id,
                task_queue=self._task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                result_type=IssueTicketResult,
                # Findable in the Web UI from the first moment, before any workflow task ran.
                search_attributes=TypedSearchAttributes(
                    [SearchAttributePair(sa.USER_ID, request.user_id)]
                ),
                static_summary=f"Issue a golden ticket to {request.user_id}",
            )
            try:
                result: IssueTicketResult = await handle.result()
            except WorkflowFailureError as exc:
                raise SagaFailed(workflow_id, f"workflow failed: {exc.cause or exc}") from exc
        finally:
            if gated:
                self.in_flight -= 1
            self.request_refresh()

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
            error = rejection(workflow_id, result.reason, result.message)
            cap_reached = isinstance(error, GoldenError) and error.reason is Reason.CAP_REACHED
            if cap_reached and generation == self._generation:
                self.slots.forced_sold_out = True
            raise error
        raise SagaFailed(workflow_id, result.message or f"saga ended {result.outcome}")

    # ---- redemption ---------------------------------------------------------------------------

    async def redeem(
        self, ticket_id: str | UUID, user_id: str, bundle: ProofBundle | str
    ) -> RedeemTicketResult:
        """Run one redemption; a second concurrent one for the ticket is RedemptionInProgress."""
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
    "SlotState",
    "new_request_id",
    "parse_bundle",
    "parse_ticket_id",
    "validate_issue",
]
