"""The GoldenPress servicer: writes through admission and the sagas, reads from PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import grpc
from prometheus_client import Counter, Histogram
from temporalio.service import RPCError, RPCStatusCode

from golden_press.bundle import TrustRoots, check_bundle_size, redact_bundle, redact_ticket
from golden_press.errors import GoldenError, InvalidRequest, Reason
from golden_press.models import ProofBundle, Ticket, as_shown, validate_user_id
from golden_press.sagas import redeem_workflow_id
from golden_press.settings import Settings
from service.api.auth import authenticate
from service.api.convert import (
    STATUS_FOR_REASON,
    decode_page_token,
    encode_page_token,
    error_status,
    state_from_pb,
    ticket_to_pb,
)
from service.api.decode import BadRequest
from service.api.pb import golden_pb2, golden_pb2_grpc
from service.api.verify import TicketVerifier
from service.sagas.admission import Admission, SagaFailed, new_request_id, parse_ticket_id
from service.store import cosignatures
from service.store import keys as key_store
from service.store import tickets as queries
from service.store.ledger import LedgerStore
from service.store.outbox import timestamp

log = logging.getLogger("golden_press.api")

RPC_TOTAL = Counter("golden_rpc_total", "gRPC calls by method and status code", ["method", "code"])
RPC_SECONDS = Histogram(
    "golden_rpc_seconds",
    "gRPC call latency",
    ["method", "outcome"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


_RPC_METRICS: dict[tuple[str, grpc.StatusCode], tuple[Any, Any]] = {}


def _count_rpc(method: str, code: grpc.StatusCode, elapsed: float) -> None:
    """Count and time one call; the labelled children are looked up once per (method, code),
    not per call (labels() takes a lock and builds its key each time: a herd makes thousands)."""
    children = _RPC_METRICS.get((method, code))
    if children is None:
        outcome = "ok" if code is grpc.StatusCode.OK else "error"
        children = (RPC_TOTAL.labels(method, code.name), RPC_SECONDS.labels(method, outcome))
        _RPC_METRICS[(method, code)] = children
    children[0].inc()
    children[1].observe(elapsed)


_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
Handler = Callable[[Any, _Req, grpc.aio.ServicerContext], Awaitable[_Resp]]


def rpc(*, write: bool = False) -> Callable[[Handler[_Req, _Resp]], Handler[_Req, _Resp]]:
    """Wrap a handler: bearer auth for writes, error mapping, metrics, one log line."""

    def decorate(fn: Handler[_Req, _Resp]) -> Handler[_Req, _Resp]:
        method = fn.__name__

        @functools.wraps(fn)
        async def wrapper(self: GoldenPressService, request: _Req, context: Any) -> _Resp:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            status: grpc.Status | None = None
            extra: dict[str, Any] = {"method": method}
            try:
                if write:
                    self.authenticate(context)
                if isinstance(request, BadRequest):
                    raise InvalidRequest(request.message)
                return await fn(self, request, context)
            except GoldenError as err:
                code = STATUS_FOR_REASON.get(err.reason, grpc.StatusCode.FAILED_PRECONDITION)
                status = error_status(code, err.reason.value, err.message)
                extra["reason"] = err.reason.value
            except SagaFailed as err:
                code = grpc.StatusCode.ABORTED
                status = error_status(
                    code, "SagaFailed", err.message, {"workflow_id": err.workflow_id}
                )
                extra["workflow_id"] = err.workflow_id
                log.error("saga failed: %s", err.message, extra=extra)
            except RPCError as exc:
                if exc.status == RPCStatusCode.INVALID_ARGUMENT:
                    # Temporal refused what we sent (e.g. over its payload size limit): the
                    # request is at fault, retrying it cannot help.
                    code = grpc.StatusCode.INVALID_ARGUMENT
                    status = error_status(
                        code,
                        Reason.INVALID_REQUEST.value,
                        "the workflow service refused the request",
                    )
                    log.warning("workflow service refused a request: %s", exc, extra=extra)
                else:
                    code = grpc.StatusCode.UNAVAILABLE
                    status = error_status(code, "Unavailable", "backend unavailable")
                    log.error("workflow service unavailable: %s", exc, extra=extra)
            except (asyncpg.DataError, ValueError) as exc:
                # A value the database or its driver cannot take (out of range, not text): the
                # caller's input, so INVALID_ARGUMENT; the message quotes none of it.
                code = grpc.StatusCode.INVALID_ARGUMENT
                status = error_status(
                    code,
                    Reason.INVALID_REQUEST.value,
                    "a request value is out of range or not valid text",
                )
                extra["reason"] = type(exc).__name__
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                code = grpc.StatusCode.UNAVAILABLE
                status = error_status(code, "Unavailable", "backend unavailable")
                log.exception("backend error", extra=extra)
            finally:
                elapsed = time.perf_counter() - started
                _count_rpc(method, code, elapsed)
                extra.update(code=code.name, ms=round(elapsed * 1e3, 2))
                # Successful writes at INFO; reads and business rejections (a herd's worth) at
                # DEBUG: the metrics above count them, and a log line per rejection cost ~7% CPU.
                level = logging.INFO if write and code is grpc.StatusCode.OK else logging.DEBUG
                log.log(level, "rpc", extra=extra)
            assert status is not None
            await context.abort_with_status(status)
            raise AssertionError("unreachable")  # abort_with_status raises

        return wrapper

    return decorate


R = TypeVar("R")


async def until_started(
    run: Callable[[Callable[[str], None]], Awaitable[R]],
    *,
    wait: bool,
    background: set[asyncio.Future[Any]],
) -> tuple[str, R | None]:
    """Run a saga call; with wait=False, answer (workflow id, None) once its workflow started.

    The call itself goes on in the background, so admission's in-flight gate and refresh stay
    exact; what admission refuses before the start (deny-list, cap, ...) is raised as usual, and
    a call that finishes first (a replayed request) returns its result.
    """
    if wait:  # every call of a herd: no future, no task
        return "", await run(_not_waited_for)
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_started(workflow_id: str) -> None:
        if not started.done():
            started.set_result(workflow_id)

    task = asyncio.ensure_future(run(on_started))
    pending: set[asyncio.Future[Any]] = {task, started}
    await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        return "", task.result()
    background.add(task)
    task.add_done_callback(_background_done(background))
    return started.result(), None


def _not_waited_for(_workflow_id: str) -> None:
    """on_started of a call whose caller waits for the result anyway."""


def _background_done(background: set[asyncio.Future[Any]]) -> Callable[[asyncio.Future[Any]], None]:
    def done(task: asyncio.Future[Any]) -> None:
        background.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.info("saga answered with no_wait ended with %s: %s", type(exc).__name__, exc)

    return done


@dataclass
class ApiDeps:
    """What the service needs; `owned` are closed by shutdown()."""

    settings: Settings
    pool: asyncpg.Pool
    admission: Admission
    ledger: LedgerStore
    tokens: frozenset[str]
    owned: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)


#: How stale the cached public keys may be (a rotated-in key verifies within this delay).
TRUST_ROOTS_TTL_S = 5.0


#: Largest GetEntries page: four entry bundles' worth, a few hundred KiB at most.
MAX_ENTRIES_PAGE = 1000


class GoldenPressService(golden_pb2_grpc.GoldenPressServicer):
    """GoldenPress: writes through admission and the sagas, reads straight from PostgreSQL."""

    def __init__(self, deps: ApiDeps) -> None:
        self._deps = deps
        self._pool = deps.pool
        self._admission = deps.admission
        self._ledger = deps.ledger
        self._origin = deps.settings.ledger_origin
        self._roots: tuple[float, TrustRoots] | None = None
        self._witnesses = deps.settings.witness_list()
        self._policy = deps.settings.witness_policy()
        self._verifier = TicketVerifier(
            deps.admission, deps.pool, self._trust_roots, policy=self._policy
        )
        #: Sagas a no_wait call answered for before they finished (kept referenced until done).
        self._background: set[asyncio.Future[Any]] = set()

    async def _trust_roots(self, issuer_key_id: str) -> TrustRoots:
        """Public keys change only on rotation: cached, re-read when stale or a key id is new."""
        now = time.monotonic()
        cached = self._roots
        if cached is not None:
            age = now - cached[0]
            # An unknown key id may be a freshly rotated key: re-read, but at most once a second,
            # so forged key ids cannot turn this public RPC into a query per call.
            unknown = issuer_key_id not in cached[1].issuer_keys
            if age <= TRUST_ROOTS_TTL_S and not (unknown and age > 1.0):
                return cached[1]
        roots = await key_store.trust_roots(self._pool, self._origin)
        self._roots = (now, roots)
        return roots

    def authenticate(self, context: Any) -> None:
        """Unauthenticated unless the call carries `authorization: Bearer <known token>`."""
        authenticate(context, self._deps.tokens)

    def authenticated(self, context: Any) -> bool:
        """True when a read carries a valid bearer token: it may see who holds a ticket."""
        try:
            self.authenticate(context)
        except GoldenError:
            return False
        return True

    def _view(self, ticket: Ticket, holder: bool) -> golden_pb2.Ticket:
        """The ticket as this caller may see it: without a token, no user id nor signature;
        issued only once in the ledger (as_shown)."""
        shown = as_shown(ticket)
        return ticket_to_pb(shown if holder else redact_ticket(shown))

    @rpc(write=True)
    async def IssueTicket(
        self, request: golden_pb2.IssueTicketRequest, context: Any
    ) -> golden_pb2.IssueTicketResponse:
        """Admission, then the issuance saga (no_wait: answer once it has started)."""
        request_id = request.request_id or new_request_id()
        run = self._admission.issue
        started, result = await until_started(
            lambda on_started: run(request.user_id, request_id, on_started=on_started),
            wait=not request.no_wait,
            background=self._background,
        )
        if result is None:
            return golden_pb2.IssueTicketResponse(
                workflow_id=started, request_id=request_id, pending=True
            )
        return golden_pb2.IssueTicketResponse(
            ticket=ticket_to_pb(result.ticket),
            workflow_id=result.workflow_id,
            request_id=result.request_id,
            replayed=result.replayed,
        )

    @rpc(write=True)
    async def RedeemTicket(
        self, request: golden_pb2.RedeemTicketRequest, context: Any
    ) -> golden_pb2.RedeemTicketResponse:
        """The redemption saga with the holder's bundle (no_wait: answer once it has started)."""
        check_bundle_size(request.bundle_json)  # before parsing; the model bounds each field
        run = self._admission.redeem
        started, result = await until_started(
            lambda on_started: run(
                request.ticket_id, request.user_id, request.bundle_json, on_started=on_started
            ),
            wait=not request.no_wait,
            background=self._background,
        )
        if result is None:
            return golden_pb2.RedeemTicketResponse(
                ticket_id=request.ticket_id, workflow_id=started, pending=True
            )
        resp = golden_pb2.RedeemTicketResponse(
            ticket_id=str(result.ticket_id), workflow_id=redeem_workflow_id(result.ticket_id)
        )
        if result.leaf_index is not None:
            resp.leaf_index = result.leaf_index
        return resp

    @rpc()
    async def VerifyTicket(
        self, request: golden_pb2.VerifyTicketRequest, context: Any
    ) -> golden_pb2.VerifyTicketResponse:
        """Crypto (memoised) plus the stored state, from memory while the snapshot is fresh."""
        return await self._verifier.verify(request)

    @rpc()
    async def GetTicket(
        self, request: golden_pb2.GetTicketRequest, context: Any
    ) -> golden_pb2.GetTicketResponse:
        """One ticket by id."""
        ticket = await queries.get_ticket(self._pool, parse_ticket_id(request.ticket_id))
        if ticket is None:
            raise GoldenError(Reason.TICKET_NOT_FOUND, f"no ticket {request.ticket_id}")
        return golden_pb2.GetTicketResponse(ticket=self._view(ticket, self.authenticated(context)))

    @rpc()
    async def ListTickets(
        self, request: golden_pb2.ListTicketsRequest, context: Any
    ) -> golden_pb2.ListTicketsResponse:
        """A keyset page of tickets by serial."""
        if request.page_size < 0:
            raise InvalidRequest("page_size must not be negative")
        holder = self.authenticated(context)
        if request.user_id and not holder:
            raise GoldenError(
                Reason.UNAUTHENTICATED,
                "listing a user's tickets reveals who holds them: it needs a bearer token",
            )
        size = min(request.page_size or queries.DEFAULT_PAGE_SIZE, queries.MAX_PAGE_SIZE)
        if request.user_id:
            try:
                validate_user_id(request.user_id)
            except ValueError as exc:
                raise InvalidRequest(f"user_id filter: {exc}") from exc
        tickets = await queries.list_tickets(
            self._pool,
            state=state_from_pb(request.state),
            user_id=request.user_id or None,
            after_serial=decode_page_token(request.page_token),
            limit=size + 1,  # one more tells whether there is a next page
        )
        resp = golden_pb2.ListTicketsResponse(
            tickets=[self._view(t, holder) for t in tickets[:size]]
        )
        if len(tickets) > size:
            resp.next_page_token = encode_page_token(tickets[size - 1].serial)
        return resp

    @rpc()
    async def GetCheckpoint(
        self, request: golden_pb2.GetCheckpointRequest, context: Any
    ) -> golden_pb2.GetCheckpointResponse:
        """The latest signed checkpoint."""
        async with self._pool.acquire() as conn:
            head = await self._ledger.latest_checkpoint(conn)
        return golden_pb2.GetCheckpointResponse(
            checkpoint=head.note,
            origin=self._origin,
            tree_size=head.size,
            root_hash=head.root,
        )

    @rpc()
    async def GetInclusionProof(
        self, request: golden_pb2.GetInclusionProofRequest, context: Any
    ) -> golden_pb2.GetInclusionProofResponse:
        """The proof bundle of a ticket's `issued` entry against the latest checkpoint."""
        ticket_id = parse_ticket_id(request.ticket_id)
        async with self._pool.acquire() as conn:
            found = await queries.ticket_with_salt(conn, ticket_id)
            if found is None:
                raise GoldenError(Reason.TICKET_NOT_FOUND, f"no ticket {ticket_id}")
            ticket, salt = found
            if ticket.leaf_index is None:
                raise GoldenError(
                    Reason.TICKET_NOT_REDEEMABLE,
                    f"ticket {ticket_id} is {ticket.state.value} and not in the ledger",
                )
            checkpoint = None
            if self._policy.quorum:
                size = await cosignatures.trusted_checkpoint_size(
                    conn,
                    ticket.leaf_index + 1,
                    [w.name for w in self._policy.witnesses],
                    self._policy.quorum,
                )
                if size is not None:
                    checkpoint = await self._ledger.checkpoint_at(conn, size)
            bundle: ProofBundle = await self._ledger.build_bundle(conn, ticket, salt, checkpoint)
        if not self.authenticated(context):
            bundle = redact_bundle(bundle)  # no holder, no signature, no salt: docs/privacy.md
        return golden_pb2.GetInclusionProofResponse(
            bundle_json=bundle.model_dump_json(),
            ticket=ticket_to_pb(bundle.ticket),
            leaf_index=bundle.leaf_index,
            tree_size=bundle.tree_size,
            inclusion_proof=[base64.b64decode(h) for h in bundle.inclusion_proof],
            checkpoint=bundle.checkpoint,
        )

    @rpc()
    async def GetEntries(
        self, request: golden_pb2.GetEntriesRequest, context: Any
    ) -> golden_pb2.GetEntriesResponse:
        """Entries [start, end) of the public log, at most MAX_ENTRIES_PAGE, all checkpointed."""
        start, end = request.start, request.end
        if not 0 <= start < end or end - start > MAX_ENTRIES_PAGE:
            raise InvalidRequest(
                f"need 0 <= start < end and end - start <= {MAX_ENTRIES_PAGE}, got {start}, {end}"
            )
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            head = await self._ledger.latest_checkpoint(conn)
            if end > head.size:
                raise InvalidRequest(f"end {end} is beyond the latest checkpoint ({head.size})")
            entries = await self._ledger.entry_bytes(conn, start, end)
        return golden_pb2.GetEntriesResponse(entries=entries, checkpoint=head.note)

    @rpc()
    async def GetConsistencyProof(
        self, request: golden_pb2.GetConsistencyProofRequest, context: Any
    ) -> golden_pb2.GetConsistencyProofResponse:
        """RFC 9162 PROOF(first, D[second]) with both roots, up to the latest checkpoint."""
        first, second = request.first, request.second
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            head = await self._ledger.latest_checkpoint(conn)
            if not 0 < first <= second <= head.size:
                raise InvalidRequest(
                    f"need 0 < first <= second <= {head.size} (latest checkpoint), "
                    f"got {first}, {second}"
                )
            proof = await self._ledger.consistency_proof(conn, first, second)
            first_root = await self._ledger.root_at(conn, first)
            second_root = await self._ledger.root_at(conn, second)
        return golden_pb2.GetConsistencyProofResponse(
            proof=proof, first_root=first_root, second_root=second_root
        )

    @rpc()
    async def GetPublicKeys(
        self, request: golden_pb2.GetPublicKeysRequest, context: Any
    ) -> golden_pb2.GetPublicKeysResponse:
        """Every issuer and ledger key, current and retired."""
        keys = await key_store.public_keys(self._pool)
        resp = golden_pb2.GetPublicKeysResponse(
            ledger_origin=self._origin, witness_quorum=self._policy.quorum
        )
        for w in self._witnesses:
            resp.keys.add(
                key_id=w.verifier.key_id.hex(),
                purpose="witness",
                public_key=w.verifier.public_key,
                status="current",
                name=w.name,
            )
        for k in keys:
            msg = resp.keys.add(
                key_id=k.key_id,
                purpose=k.purpose,
                public_key=k.public_key,
                status=k.status,
                name=k.name,
                created_at=timestamp(k.created_at),
            )
            if k.retired_at is not None:
                msg.retired_at.CopyFrom(timestamp(k.retired_at))
        return resp
