"""The GoldenPress gRPC API (grpc.aio): admission + sagas for writes, PostgreSQL for reads.

`python -m service.api_server` serves on GOLDEN_GRPC_ADDR with health checking and reflection on.
IssueTicket and RedeemTicket need `authorization: Bearer <token>` with a token listed in
GOLDEN_API_TOKENS_FILE (one per line); every other RPC is public. Rejections carry a
google.rpc.ErrorInfo (domain "golden-press", reason = the reason type) in the status details.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hmac
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status
from prometheus_client import Counter, Histogram, start_http_server
from temporalio.client import Client
from temporalio.service import RPCError

from golden_press.bundle import TrustRoots, load_bundle, verify_bundle, verify_ticket
from golden_press.errors import GoldenError, InvalidRequest, Reason
from golden_press.models import ProofBundle, Ticket, TicketState
from golden_press.settings import Settings
from service import queries
from service.admission import Admission, SagaFailed, connect_client, parse_ticket_id
from service.db import create_pool
from service.events import timestamp
from service.ledger_store import LedgerStore
from service.logs import configure_logging
from service.protogen import ensure_generated

ensure_generated()
from proto.golden.v1 import golden_pb2, golden_pb2_grpc  # noqa: E402

log = logging.getLogger("golden_press.api")

ERROR_DOMAIN = "golden-press"
SERVICE_NAME = "golden.v1.GoldenPress"

#: The issue's mapping of reason types to gRPC status codes.
STATUS_FOR_REASON: dict[Reason, grpc.StatusCode] = {
    Reason.CAP_REACHED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.RATE_LIMITED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.ONE_PER_USER: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.NOT_ISSUEE: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.ALREADY_REDEEMED: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.TICKET_NOT_REDEEMABLE: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.IDEMPOTENCY_KEY_REUSED: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.USER_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    Reason.INVALID_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.BAD_SIGNATURE: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.BAD_PROOF: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.BAD_CHECKPOINT: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.INCONSISTENT_CHECKPOINT: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.TICKET_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Reason.REDEMPTION_IN_PROGRESS: grpc.StatusCode.ABORTED,
    Reason.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
}

_STATE_TO_PB = {
    TicketState.RESERVED: golden_pb2.TICKET_STATE_RESERVED,
    TicketState.ISSUED: golden_pb2.TICKET_STATE_ISSUED,
    TicketState.REDEEMED: golden_pb2.TICKET_STATE_REDEEMED,
    TicketState.VOIDED: golden_pb2.TICKET_STATE_VOIDED,
    TicketState.REVOKED: golden_pb2.TICKET_STATE_REVOKED,
}
_PB_TO_STATE = {v: k for k, v in _STATE_TO_PB.items()}

RPC_TOTAL = Counter("golden_rpc_total", "gRPC calls by method and status code", ["method", "code"])
RPC_SECONDS = Histogram(
    "golden_rpc_seconds",
    "gRPC call latency",
    ["method", "outcome"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


# ---- conversions ------------------------------------------------------------------------------


def ticket_to_pb(ticket: Ticket) -> golden_pb2.Ticket:
    """Protobuf view of a ticket."""
    msg = golden_pb2.Ticket(
        ticket_id=str(ticket.ticket_id),
        serial=ticket.serial,
        user_id=ticket.user_id,
        issued_at=timestamp(ticket.issued_at),
        key_id=ticket.key_id,
        signature=ticket.signature,
        state=_STATE_TO_PB[ticket.state],
        request_id=ticket.request_id,
    )
    if ticket.leaf_index is not None:
        msg.leaf_index = ticket.leaf_index
    return msg


def ticket_from_pb(msg: golden_pb2.Ticket) -> Ticket:
    """A ticket from its protobuf form, or InvalidRequest."""
    try:
        return Ticket(
            ticket_id=UUID(msg.ticket_id),
            serial=msg.serial,
            user_id=msg.user_id,
            issued_at=msg.issued_at.ToDatetime(tzinfo=UTC),
            key_id=msg.key_id,
            signature=msg.signature,
            state=_PB_TO_STATE.get(msg.state, TicketState.ISSUED),
            request_id=msg.request_id,
            leaf_index=msg.leaf_index if msg.HasField("leaf_index") else None,
        )
    except ValueError as exc:
        raise InvalidRequest(f"malformed ticket: {exc}") from exc


def state_from_pb(value: int) -> TicketState | None:
    """None for UNSPECIFIED (no filter)."""
    if value == golden_pb2.TICKET_STATE_UNSPECIFIED:
        return None
    try:
        return _PB_TO_STATE[value]  # type: ignore[index]
    except KeyError as exc:
        raise InvalidRequest(f"unknown ticket state {value}") from exc


def encode_page_token(serial: int) -> str:
    """Opaque keyset cursor: the last serial of the page."""
    return base64.urlsafe_b64encode(f"v1:{serial}".encode()).decode("ascii")


def decode_page_token(token: str) -> int:
    """The serial a page token continues after, or InvalidRequest."""
    if not token:
        return 0
    try:
        version, _, serial = base64.urlsafe_b64decode(token.encode("ascii")).decode().partition(":")
        if version != "v1":
            raise ValueError(version)
        return int(serial)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidRequest("malformed page_token") from exc


def error_status(
    code: grpc.StatusCode, reason: str, message: str, metadata: dict[str, str] | None = None
) -> grpc.Status:
    """A status with an ErrorInfo detail (domain golden-press, reason = reason type)."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata or {})
    detail = any_pb2.Any()
    detail.Pack(info)
    return rpc_status.to_status(
        status_pb2.Status(code=code.value[0], message=message, details=[detail])
    )


def error_reason(error: grpc.RpcError) -> str:
    """The ErrorInfo reason of a failed call ('' when there is none): what clients match on."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return ""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""


# ---- the service ------------------------------------------------------------------------------


def load_tokens(path: Path) -> frozenset[str]:
    """Bearer tokens, one per line (blank lines and # comments ignored); none means no writes."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        log.warning("API tokens file %s missing: IssueTicket/RedeemTicket refuse everyone", path)
        return frozenset()
    return frozenset(t.strip() for t in lines if t.strip() and not t.strip().startswith("#"))


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
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, RPCError) as exc:
                code = grpc.StatusCode.UNAVAILABLE
                status = error_status(code, "Unavailable", f"backend unavailable: {exc}")
                log.exception("backend error", extra=extra)
            finally:
                elapsed = time.perf_counter() - started
                RPC_TOTAL.labels(method, code.name).inc()
                RPC_SECONDS.labels(method, "ok" if code is grpc.StatusCode.OK else "error").observe(
                    elapsed
                )
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


class GoldenPressService(golden_pb2_grpc.GoldenPressServicer):
    """GoldenPress: writes through admission and the sagas, reads straight from PostgreSQL."""

    def __init__(self, deps: ApiDeps) -> None:
        self._deps = deps
        self._pool = deps.pool
        self._admission = deps.admission
        self._ledger = deps.ledger
        self._origin = deps.settings.ledger_origin
        self._roots: tuple[float, TrustRoots] | None = None

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
        roots = await queries.trust_roots(self._pool, self._origin)
        self._roots = (now, roots)
        return roots

    def authenticate(self, context: Any) -> None:
        """Unauthenticated unless the call carries `authorization: Bearer <known token>`."""
        header = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                header = value if isinstance(value, str) else value.decode()
        scheme, _, token = header.partition(" ")
        token = token.strip()
        ok = scheme.lower() == "bearer" and bool(token)
        # Compare against every token (no early exit) so timing says nothing about which matched.
        matched = False
        for known in self._deps.tokens:
            matched |= hmac.compare_digest(known.encode(), token.encode())
        if not (ok and matched):
            raise GoldenError(
                Reason.UNAUTHENTICATED, "IssueTicket and RedeemTicket need a valid bearer token"
            )

    @rpc(write=True)
    async def IssueTicket(
        self, request: golden_pb2.IssueTicketRequest, context: Any
    ) -> golden_pb2.IssueTicketResponse:
        """Admission, then the issuance saga."""
        outcome = await self._admission.issue(request.user_id, request.request_id or None)
        return golden_pb2.IssueTicketResponse(
            ticket=ticket_to_pb(outcome.ticket),
            workflow_id=outcome.workflow_id,
            request_id=outcome.request_id,
            replayed=outcome.replayed,
        )

    @rpc(write=True)
    async def RedeemTicket(
        self, request: golden_pb2.RedeemTicketRequest, context: Any
    ) -> golden_pb2.RedeemTicketResponse:
        """The redemption saga with the holder's bundle."""
        result = await self._admission.redeem(
            request.ticket_id, request.user_id, request.bundle_json
        )
        resp = golden_pb2.RedeemTicketResponse(
            ticket_id=str(result.ticket_id), workflow_id=f"redeem-{result.ticket_id}"
        )
        if result.leaf_index is not None:
            resp.leaf_index = result.leaf_index
        return resp

    @rpc()
    async def VerifyTicket(
        self, request: golden_pb2.VerifyTicketRequest, context: Any
    ) -> golden_pb2.VerifyTicketResponse:
        """Crypto (signature; inclusion and checkpoint for a bundle) plus the stored state."""
        subject = request.WhichOneof("subject")
        resp = golden_pb2.VerifyTicketResponse()
        stored: Ticket | None = None
        if subject == "ticket_id":
            stored = await queries.get_ticket(self._pool, parse_ticket_id(request.ticket_id))
            if stored is None:
                raise GoldenError(Reason.TICKET_NOT_FOUND, f"no ticket {request.ticket_id}")
            if not stored.signature:
                resp.ticket.CopyFrom(ticket_to_pb(stored))
                resp.state = _STATE_TO_PB[stored.state]
                resp.reason = Reason.TICKET_NOT_REDEEMABLE.value
                resp.message = f"ticket is {stored.state.value}, not signed yet"
                return resp
            ticket = stored
            verify_ticket(ticket, await self._trust_roots(ticket.key_id))
        elif subject == "ticket":
            ticket = ticket_from_pb(request.ticket)
            verify_ticket(ticket, await self._trust_roots(ticket.key_id))
        elif subject == "bundle_json":
            bundle = load_bundle(request.bundle_json)
            checkpoint = verify_bundle(bundle, await self._trust_roots(bundle.ticket.key_id))
            ticket = bundle.ticket
            resp.proof_valid = True
            resp.checkpoint_tree_size = checkpoint.size
        else:
            raise InvalidRequest("give ticket_id, ticket or bundle_json")
        resp.signature_valid = True

        stored_now = (
            stored
            if subject == "ticket_id"
            else await queries.get_ticket(self._pool, ticket.ticket_id)
        )
        if stored_now is None:
            resp.ticket.CopyFrom(ticket_to_pb(ticket))
            resp.reason = Reason.TICKET_NOT_FOUND.value
            resp.message = "signature is authentic but this ledger has no such ticket"
            return resp
        resp.ticket.CopyFrom(ticket_to_pb(stored_now))
        resp.state = _STATE_TO_PB[stored_now.state]
        if stored_now.state in (TicketState.ISSUED, TicketState.REDEEMED):
            resp.valid = True
            resp.redeemable = stored_now.state is TicketState.ISSUED
        else:
            resp.reason = Reason.TICKET_NOT_REDEEMABLE.value
            resp.message = f"ticket is {stored_now.state.value}"
        return resp

    @rpc()
    async def GetTicket(
        self, request: golden_pb2.GetTicketRequest, context: Any
    ) -> golden_pb2.GetTicketResponse:
        """One ticket by id."""
        ticket = await queries.get_ticket(self._pool, parse_ticket_id(request.ticket_id))
        if ticket is None:
            raise GoldenError(Reason.TICKET_NOT_FOUND, f"no ticket {request.ticket_id}")
        return golden_pb2.GetTicketResponse(ticket=ticket_to_pb(ticket))

    @rpc()
    async def ListTickets(
        self, request: golden_pb2.ListTicketsRequest, context: Any
    ) -> golden_pb2.ListTicketsResponse:
        """A keyset page of tickets by serial."""
        if request.page_size < 0:
            raise InvalidRequest("page_size must not be negative")
        size = min(request.page_size or queries.DEFAULT_PAGE_SIZE, queries.MAX_PAGE_SIZE)
        tickets = await queries.list_tickets(
            self._pool,
            state=state_from_pb(request.state),
            user_id=request.user_id or None,
            after_serial=decode_page_token(request.page_token),
            limit=size + 1,  # one more tells whether there is a next page
        )
        resp = golden_pb2.ListTicketsResponse(tickets=[ticket_to_pb(t) for t in tickets[:size]])
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
            bundle: ProofBundle = await self._ledger.build_bundle(conn, ticket, salt)
        return golden_pb2.GetInclusionProofResponse(
            bundle_json=bundle.model_dump_json(),
            ticket=ticket_to_pb(bundle.ticket),
            leaf_index=bundle.leaf_index,
            tree_size=bundle.tree_size,
            inclusion_proof=[base64.b64decode(h) for h in bundle.inclusion_proof],
            checkpoint=bundle.checkpoint,
        )

    @rpc()
    async def GetPublicKeys(
        self, request: golden_pb2.GetPublicKeysRequest, context: Any
    ) -> golden_pb2.GetPublicKeysResponse:
        """Every issuer and ledger key, current and retired."""
        keys = await queries.public_keys(self._pool)
        resp = golden_pb2.GetPublicKeysResponse(ledger_origin=self._origin)
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


# ---- server lifecycle -------------------------------------------------------------------------

_RUNNING: dict[int, ApiDeps] = {}


def make_ledger_store(settings: Settings) -> LedgerStore:
    """Read-only: the public-facing API never holds the ledger's private key."""
    return LedgerStore.read_only(settings.ledger_origin)


async def serve(
    settings: Settings,
    *,
    pool: asyncpg.Pool | None = None,
    client: Client | None = None,
    address: str | None = None,
) -> grpc.aio.Server:
    """Build, bind and start the server; pool/client given by the caller stay the caller's."""
    owned: list[Callable[[], Awaitable[Any]]] = []
    if pool is None:
        pool = await create_pool(settings.pg_dsn, min_size=2, max_size=20, durable_commits=False)
        owned.append(pool.close)
    if client is None:
        client = await connect_client(settings)
    admission = Admission.from_settings(settings, pool, client)
    await admission.start()
    owned.insert(0, admission.close)
    deps = ApiDeps(
        settings=settings,
        pool=pool,
        admission=admission,
        ledger=make_ledger_store(settings),
        tokens=load_tokens(settings.api_tokens_file),
        owned=owned,
    )

    server = grpc.aio.server()
    golden_pb2_grpc.add_GoldenPressServicer_to_server(GoldenPressService(deps), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    addr = address or settings.grpc_addr
    port = server.add_insecure_port(addr)
    if port == 0:
        raise OSError(f"cannot bind gRPC address {addr}")
    await server.start()
    await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    server.golden_port = port  # type: ignore[attr-defined]
    _RUNNING[id(server)] = deps
    log.info("gRPC API listening", extra={"address": addr, "port": port})
    return server


def bound_port(server: grpc.aio.Server) -> int:
    """The port serve() bound (useful with an address ending in :0)."""
    return int(server.golden_port)  # type: ignore[attr-defined]


def admission_of(server: grpc.aio.Server) -> Admission:
    """The admission instance behind a served server (tests inspect its flag)."""
    return _RUNNING[id(server)].admission


async def shutdown(server: grpc.aio.Server, grace: float | None = 2.0) -> None:
    """Stop the server, then close what serve() opened."""
    await server.stop(grace)
    deps = _RUNNING.pop(id(server), None)
    if deps is not None:
        for close in deps.owned:
            try:
                await close()
            except Exception:
                log.exception("error while closing API resources")


# ---- logging and main -------------------------------------------------------------------------


async def _main() -> int:
    settings = Settings()  # read from the environment
    if settings.metrics_port > 0:
        start_http_server(settings.metrics_port)
    server = await serve(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await shutdown(server, grace=5.0)
    return 0


def main() -> None:
    """`python -m service.api_server`."""
    configure_logging(logging.DEBUG if os.environ.get("GOLDEN_DEBUG") else logging.INFO)
    try:
        code = asyncio.run(_main())
    except Exception:
        log.exception("API server crashed")
        code = 1
    os._exit(code)


if __name__ == "__main__":
    main()
