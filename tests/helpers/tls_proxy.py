"""A TLS-terminating TCP proxy: a real TLS (or mutual TLS) endpoint in front of a plaintext server.

`temporal server start-dev` serves no TLS (its TLS flags are client options), so the Temporal SDK's
TLS settings are tested against this proxy in front of the session's dev server: the client's
handshake, certificate checks and HTTP/2 over TLS are real, only the last hop is plaintext.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.tls import Leaf


@dataclass
class TlsProxy:
    """Where it listens and how many TLS sessions it completed (a refused handshake is not one)."""

    address: str
    sessions: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def tls_proxy(upstream: str, leaf: Leaf, client_ca: Path | None) -> AsyncIterator[TlsProxy]:
    """Serve TLS with `leaf` on 127.0.0.1 (client certificates signed by `client_ca` required
    when given), forwarding each connection to `upstream` (HOST:PORT) in plaintext."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(leaf.cert_file, leaf.key_file)
    context.set_alpn_protocols(["h2"])
    if client_ca is not None:
        context.load_verify_locations(cafile=client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    host, _, port = upstream.rpartition(":")
    proxy = TlsProxy("")

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        proxy.sessions += 1
        try:
            server_r, server_w = await asyncio.open_connection(host, int(port))
        except OSError:
            client_w.close()
            return
        both = asyncio.gather(_pipe(client_r, server_w), _pipe(server_r, client_w))
        await both

    def track(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(handle(client_r, client_w))
        proxy.tasks.add(task)
        task.add_done_callback(proxy.tasks.discard)

    server = await asyncio.start_server(track, "127.0.0.1", 0, ssl=context)
    proxy.address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield proxy
    finally:
        server.close()
        for task in list(proxy.tasks):
            task.cancel()
        await asyncio.gather(*proxy.tasks, return_exceptions=True)
        await server.wait_closed()
