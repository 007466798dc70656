"""The seed's direct design, the yardstick of the benches: one transaction per request, no engine.

    lock (pg_advisory_xact_lock) -> SELECT count(*) ... WHERE NOT redeemed -> INSERT -> COMMIT

behind the same gRPC entry point (golden.v1.GoldenPress/IssueTicket, bearer token, ErrorInfo
details) so a herd against it and against golden-press differ only in what is behind the API.
Run as a server process by the benches:

    .venv/bin/python -m bench.baseline serve --dsn DSN --addr 127.0.0.1:PORT --tokens-file FILE
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import os
import signal
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from nacl.signing import SigningKey

from golden_press.models import Ticket, TicketState
from golden_press.signing import canonical_payload, key_id_for, sign_payload
from service.api.convert import error_status, ticket_to_pb
from service.api.pb import golden_pb2, golden_pb2_grpc

#: The seed's lock key (any constant: the baseline has its own database).
BASELINE_LOCK = 0x5EED
CAP = 5

SCHEMA = """
CREATE TABLE IF NOT EXISTS golden_tickets (
    ticket_id  uuid PRIMARY KEY,
    serial     bigserial UNIQUE,
    user_id    text NOT NULL,
    request_id text NOT NULL,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    key_id     text NOT NULL DEFAULT '',
    signature  text NOT NULL DEFAULT '',
    redeemed   boolean NOT NULL DEFAULT false
)
"""


@dataclass
class Issued:
    """A baseline ticket."""

    ticket_id: uuid.UUID
    serial: int
    issued_at: datetime
    signature: str
    key_id: str


class CapReachedError(Exception):
    """All CAP tickets are out."""


async def create_schema(dsn: str) -> None:
    """The seed's single table."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SCHEMA)
    finally:
        await conn.close()


async def issue(
    pool: asyncpg.Pool, key: SigningKey, user_id: str, request_id: str, cap: int = CAP
) -> Issued:
    """The seed's transaction: lock, count, insert (and sign, as the seed did, inside it)."""
    key_id = key_id_for(bytes(key.verify_key))
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", BASELINE_LOCK)
        used = await conn.fetchval("SELECT count(*) FROM golden_tickets WHERE NOT redeemed")
        if used >= cap:
            raise CapReachedError(f"all {cap} golden tickets are taken")
        ticket_id = uuid.uuid4()
        row = await conn.fetchrow(
            "INSERT INTO golden_tickets (ticket_id, user_id, request_id, key_id)"
            " VALUES ($1, $2, $3, $4) RETURNING serial, issued_at",
            ticket_id,
            user_id,
            request_id,
            key_id,
        )
        payload = canonical_payload(ticket_id, row["serial"], user_id, row["issued_at"], key_id)
        signature = sign_payload(key, payload)
        await conn.execute(
            "UPDATE golden_tickets SET signature = $2 WHERE ticket_id = $1", ticket_id, signature
        )
    return Issued(ticket_id, row["serial"], row["issued_at"], signature, key_id)


class BaselineService(golden_pb2_grpc.GoldenPressServicer):
    """IssueTicket only, with the same auth and error details as the real API."""

    def __init__(self, pool: asyncpg.Pool, tokens: frozenset[str]) -> None:
        self._pool = pool
        self._tokens = tokens
        self._key = SigningKey.generate()

    def _authenticated(self, context: Any) -> bool:
        header = ""
        for k, v in context.invocation_metadata() or ():
            if k == "authorization":
                header = v if isinstance(v, str) else v.decode()
        scheme, _, token = header.partition(" ")
        matched = False
        for known in self._tokens:
            matched |= hmac.compare_digest(known.encode(), token.strip().encode())
        return scheme.lower() == "bearer" and matched

    async def IssueTicket(
        self, request: golden_pb2.IssueTicketRequest, context: Any
    ) -> golden_pb2.IssueTicketResponse:
        """Lock, count, insert."""
        if not self._authenticated(context):
            await context.abort_with_status(
                error_status(grpc.StatusCode.UNAUTHENTICATED, "Unauthenticated", "bad token")
            )
        request_id = request.request_id or f"req-{uuid.uuid4().hex}"
        try:
            t = await issue(self._pool, self._key, request.user_id, request_id)
        except CapReachedError as err:
            await context.abort_with_status(
                error_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "CapReached", str(err))
            )
            raise AssertionError("unreachable") from err
        ticket = Ticket(
            ticket_id=t.ticket_id,
            serial=t.serial,
            user_id=request.user_id,
            issued_at=t.issued_at,
            key_id=t.key_id,
            signature=t.signature,
            state=TicketState.ISSUED,
            request_id=request_id,
        )
        return golden_pb2.IssueTicketResponse(ticket=ticket_to_pb(ticket), request_id=request_id)


async def serve(dsn: str, addr: str, tokens_file: Path, pool_size: int = 20) -> None:
    """Serve until SIGTERM/SIGINT."""
    await create_schema(dsn)
    pool = await asyncpg.create_pool(dsn, min_size=pool_size, max_size=pool_size)
    assert pool is not None
    tokens = frozenset(t.strip() for t in tokens_file.read_text().splitlines() if t.strip())
    server = grpc.aio.server()
    golden_pb2_grpc.add_GoldenPressServicer_to_server(BaselineService(pool, tokens), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_insecure_port(addr)
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)
    await pool.close()


def main() -> None:
    """`.venv/bin/python -m bench.baseline serve ...`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--dsn", required=True)
    s.add_argument("--addr", required=True)
    s.add_argument("--tokens-file", type=Path, required=True)
    s.add_argument("--pool-size", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(serve(args.dsn, args.addr, args.tokens_file, args.pool_size))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
