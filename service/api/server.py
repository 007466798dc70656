"""The GoldenPress gRPC API (grpc.aio): admission + sagas for writes, PostgreSQL for reads.

`python -m service.api.server` serves on GOLDEN_GRPC_ADDR with health checking and reflection on.
IssueTicket and RedeemTicket need `authorization: Bearer <token>` with a token listed in
GOLDEN_API_TOKENS_FILE (one per line); every other RPC is public. Rejections carry a
google.rpc.ErrorInfo (domain "golden-press", reason = the reason type) in the status details.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server
from pydantic import ValidationError
from temporalio.client import Client

from golden_press.errors import EXIT_UNAVAILABLE, EXIT_USAGE, Unreachable
from golden_press.settings import Settings, settings_problem
from service.api.auth import TokenFileError, load_tokens
from service.api.convert import SERVICE_NAME
from service.api.decode import MAX_RECEIVE_BYTES, add_service
from service.api.processes import CHILD_ENV, supervise
from service.api.reflection import enable_reflection
from service.api.servicer import ApiDeps, GoldenPressService
from service.api.tiles_http import TilesServer, start_tiles_server
from service.api.tls import ReloadingServerCredentials, is_loopback, server_tls_files
from service.observability import tracing as telemetry
from service.observability.logs import configure_logging
from service.sagas.admission import Admission
from service.sagas.client import connect_client
from service.store.db import create_pool
from service.store.ledger import LedgerStore
from service.witness.submitter import start_submitter

log = logging.getLogger("golden_press.api")


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
    tokens = load_tokens(settings.api_tokens_file)  # first: a readable file stops us here
    owned: list[Callable[[], Awaitable[Any]]] = []
    tiles: TilesServer | None = None
    if settings.http_addr and settings.tiles_dir:
        # The public ledger as static files (c2sp.org/tlog-tiles); a CDN may serve the same dir.
        # Bound before anything else is opened: a port in use stops us with nothing to undo.
        tiles = start_tiles_server(settings.tiles_dir, settings.http_addr)
        owned.append(_stopper(tiles))
    try:
        return await _serve(settings, tokens, owned, tiles, pool, client, address)
    except BaseException:
        # Whatever failed later (the gRPC bind, a database error): close what was opened, so an
        # in-process caller is not left with ports, tasks and connections it cannot reach.
        await _close_all(owned)
        raise


async def _serve(
    settings: Settings,
    tokens: frozenset[str],
    owned: list[Callable[[], Awaitable[Any]]],
    tiles: TilesServer | None,
    pool: asyncpg.Pool | None,
    client: Client | None,
    address: str | None,
) -> grpc.aio.Server:
    if pool is None:
        pool = await create_pool(
            settings.pg_dsn,
            min_size=2,
            max_size=20,
            durable_commits=settings.rate_limit_durable,
            reset_on_release=settings.pg_pool_reset,
        )
        owned.append(pool.close)
    if client is None:
        client = await connect_client(settings)
    admission = Admission.from_settings(settings, pool, client)
    owned.insert(0, admission.close)  # before start: it undoes a partial start too
    await admission.start()
    ledger = make_ledger_store(settings)
    witnesses = settings.witness_list()
    if witnesses:
        # Cosignatures are collected in the background: issuance never waits for a witness.
        owned.insert(0, start_submitter(settings.pg_dsn, ledger, witnesses))
    deps = ApiDeps(
        settings=settings,
        pool=pool,
        admission=admission,
        ledger=ledger,
        tokens=tokens,
        owned=owned,
    )

    # SO_REUSEPORT: the GOLDEN_API_PROCESSES children share one port (service/api/processes.py).
    tracing = telemetry.active()
    server = grpc.aio.server(
        options=[("grpc.so_reuseport", 1), ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)],
        interceptors=tracing.grpc_server_interceptors() if tracing else None,
    )
    add_service(GoldenPressService(deps), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    # Served with the .proto comments when `make proto` wrote the descriptor set.
    enable_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    addr = address or settings.grpc_addr
    try:
        port, tls = _bind(server, addr, settings)
        await server.start()
        await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    except BaseException:
        await server.stop(None)
        raise
    server.golden_port = port  # type: ignore[attr-defined]
    server.golden_tiles = tiles  # type: ignore[attr-defined]
    if tiles is not None:
        log.info("tiles over HTTP", extra={"address": settings.http_addr, "port": tiles.port})
    _RUNNING[id(server)] = deps
    log.info("gRPC API listening", extra={"address": addr, "port": port, "tls": tls})
    return server


def _bind(server: grpc.aio.Server, addr: str, settings: Settings) -> tuple[int, str]:
    """Bind TLS when the certificate files are set, else plaintext; returns (port, tls mode)."""
    files = server_tls_files(
        settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
    )
    if files is None:
        if not is_loopback(addr):
            log.warning(
                "gRPC API serving PLAINTEXT on non-loopback address %s: bearer tokens and tickets "
                "cross the network unencrypted. Set GOLDEN_TLS_CERT_FILE and GOLDEN_TLS_KEY_FILE "
                "(and GOLDEN_TLS_CLIENT_CA_FILE for mutual TLS); see docs/operations.md.",
                addr,
            )
        port = server.add_insecure_port(addr)
        mode = "off"
    else:
        port = server.add_secure_port(addr, ReloadingServerCredentials(files).credentials)
        mode = "mutual" if files.mutual else "server"
    if port == 0:
        raise OSError(f"cannot bind gRPC address {addr}")
    return port, mode


def _stopper(tiles: TilesServer) -> Callable[[], Awaitable[None]]:
    async def stop() -> None:
        await asyncio.to_thread(tiles.stop)

    return stop


def tiles_url(server: grpc.aio.Server) -> str | None:
    """Base URL of the tiles this server serves over HTTP (None when it serves none)."""
    tiles: TilesServer | None = server.golden_tiles  # type: ignore[attr-defined]
    if tiles is None:
        return None
    return f"http://{tiles.host}:{tiles.port}/"


def bound_port(server: grpc.aio.Server) -> int:
    """The port serve() bound (useful with an address ending in :0)."""
    return int(server.golden_port)  # type: ignore[attr-defined]


def admission_of(server: grpc.aio.Server) -> Admission:
    """The admission instance behind a served server (tests inspect its flag)."""
    return _RUNNING[id(server)].admission


def pool_of(server: grpc.aio.Server) -> asyncpg.Pool:
    """The PostgreSQL pool behind a served server (tests inspect its sessions)."""
    return _RUNNING[id(server)].pool


async def shutdown(server: grpc.aio.Server, grace: float | None = 2.0) -> None:
    """Stop the server, then close what serve() opened."""
    await server.stop(grace)
    deps = _RUNNING.pop(id(server), None)
    if deps is not None:
        await _close_all(deps.owned)


async def _close_all(owned: list[Callable[[], Awaitable[Any]]]) -> None:
    for close in owned:
        try:
            await close()
        except Exception:
            log.exception("error while closing API resources")


# ---- logging and main -------------------------------------------------------------------------


async def _main() -> int:
    settings = Settings()  # read from the environment (main() has checked that it parses)
    telemetry.setup_tracing("golden-press-api")
    if settings.metrics_port > 0:
        start_http_server(settings.metrics_port)
    server = await serve(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await shutdown(server, grace=5.0)
    telemetry.shutdown_tracing()
    return 0


def main() -> None:
    """`python -m service.api.server`: one server, or a supervisor of GOLDEN_API_PROCESSES."""
    configure_logging()  # INFO until the settings parse
    try:
        settings = Settings()
    except ValidationError as err:
        log.error("invalid settings: %s", settings_problem(err))
        os._exit(EXIT_USAGE)
    configure_logging(settings.log_level)
    if CHILD_ENV not in os.environ:
        if settings.api_nice:
            os.nice(settings.api_nice)  # the children inherit it
        if settings.api_processes > 1:
            os._exit(supervise(settings, settings.api_processes))
    try:
        code = asyncio.run(_main())
    except TokenFileError as err:
        log.error("%s", err)
        code = EXIT_USAGE
    except Unreachable as err:  # started before its database or Temporal: one line, no traceback
        log.error("%s", err)
        code = EXIT_UNAVAILABLE
    except Exception:
        log.exception("API server crashed")
        code = 1
    os._exit(code)


if __name__ == "__main__":
    main()
