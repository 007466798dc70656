"""Serve a tiles directory over HTTP the way c2sp.org/tlog-tiles asks (stdlib threads).

Only two kinds of path exist: `/checkpoint` (text/plain, mutable: `Cache-Control: no-cache`)
and canonical tile paths `/tile/<L>/<N>[.p/<W>]`, `/tile/entries/<N>[.p/<W>]`
(application/octet-stream, immutable: a year's `max-age` and `immutable`). A path is parsed by
golden_press.tiles.parse_tile_path before the filesystem is touched, so `..`, doubled slashes,
symlink tricks through odd names, query strings pointing elsewhere and leading zeros are all
404s. GET and HEAD only, HTTP/1.1 with keep-alive. In production a CDN or object store serves the
same directory instead.

The server shares its process with the gRPC API, so what a crowd of HTTP clients can take from
it is bounded: at most `max_connections` connections are served at once (a thread each); one
more is answered `503 Service Unavailable` with `Retry-After` by a single refusing thread, and
beyond what that thread has queued a connection is simply closed.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from golden_press.tiles import TileError, parse_tile_path

log = logging.getLogger("golden_press.tiles_http")

CHECKPOINT_TYPE = "text/plain; charset=utf-8"
TILE_TYPE = "application/octet-stream"
IMMUTABLE = "public, max-age=31536000, immutable"
MUTABLE = "no-cache"
MAX_CONNECTIONS = 64
RETRY_AFTER_S = 1
_REFUSALS_QUEUED = 256
_REFUSAL_READ_S = 0.5
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 5\r\n"
    + f"Retry-After: {RETRY_AFTER_S}\r\n".encode()
    + b"Cache-Control: no-cache\r\n"
    b"Connection: close\r\n\r\nbusy\n"
)


def resolve(directory: Path, raw_path: str) -> tuple[Path, str, str] | None:
    """(file, content type, cache policy) for a request path, or None when it is not served."""
    path = urlsplit(raw_path).path
    if path == "/checkpoint":
        return directory / "checkpoint", CHECKPOINT_TYPE, MUTABLE
    if not path.startswith("/tile/"):
        return None
    try:
        tile = parse_tile_path(path[1:])
    except TileError:
        return None
    return directory / tile.path, TILE_TYPE, IMMUTABLE


class _Handler(BaseHTTPRequestHandler):
    directory: Path
    server_version = "golden-press-tiles"
    sys_version = ""
    # Keep-alive: a monitor or mirror makes thousands of GETs; every response carries its
    # Content-Length. An idle connection is dropped after `timeout` seconds. Headers and body
    # are two writes: without TCP_NODELAY the body would wait for the client's delayed ACK
    # (40 ms a response) on a kept-alive connection.
    protocol_version = "HTTP/1.1"
    timeout = 30
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def _serve(self, body: bool) -> None:
        found = resolve(self.directory, self.path)
        data: bytes | None = None
        if found is not None:
            try:
                data = found[0].read_bytes()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                data = None
        if found is None or data is None:
            self.send_response(HTTPStatus.NOT_FOUND)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", "10")
            self.send_header("Cache-Control", MUTABLE)
            self.end_headers()
            if body:
                self.wfile.write(b"not found\n")
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", found[1])
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", found[2])
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("tiles http: " + format, *args)


class _BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, but never more than `max_connections` of them.

    A connection over the bound goes to one refusing thread, which reads what the client sent
    (briefly: a client that has not sent its request yet would see a reset instead of the
    answer), answers 503 with Retry-After and closes. When even its queue is full, the
    connection is closed unanswered: the process stays within its threads either way.
    """

    daemon_threads = True
    # The GOLDEN_API_PROCESSES children all bind GOLDEN_HTTP_ADDR, as they share
    # GOLDEN_GRPC_ADDR (grpc.so_reuseport): the kernel spreads connections over them. Without
    # it every child but the first fails to bind and the supervisor restarts it forever.
    allow_reuse_port = True

    def __init__(
        self, address: tuple[str, int], handler: type[_Handler], max_connections: int
    ) -> None:
        # Before super().__init__: a failed bind calls server_close, which uses the queue, and
        # must surface as the bind's OSError.
        self._slots = threading.BoundedSemaphore(max_connections)
        self._refusals: queue.Queue[socket.socket | None] = queue.Queue(_REFUSALS_QUEUED)
        super().__init__(address, handler)
        self._refuser = threading.Thread(target=self._refuse_all, name="tiles-busy", daemon=True)
        self._refuser.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            try:
                self._refusals.put_nowait(request)
            except queue.Full:
                self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse_all(self) -> None:
        while (request := self._refusals.get()) is not None:
            with contextlib.suppress(OSError):
                request.settimeout(_REFUSAL_READ_S)
                with contextlib.suppress(OSError):
                    request.recv(8192)
                request.sendall(_BUSY)
            self.shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        with contextlib.suppress(queue.Full):
            self._refusals.put_nowait(None)


class TilesServer:
    """The bounded HTTP server on its own daemon thread; `stop` shuts it down."""

    def __init__(
        self, directory: Path, host: str, port: int, max_connections: int = MAX_CONNECTIONS
    ) -> None:
        handler = type("TilesHandler", (_Handler,), {"directory": directory})
        self._server = _BoundedHTTPServer((host, port), handler, max_connections)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="tiles-http", daemon=True
        )

    @property
    def host(self) -> str:
        """The bound host."""
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        """The bound port (useful when asked for port 0)."""
        return int(self._server.server_address[1])

    def start(self) -> TilesServer:
        """Serve in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()


def start_tiles_server(directory: Path, address: str) -> TilesServer:
    """Serve `directory` on `host:port` (port 0: any free port)."""
    host, _, port = address.rpartition(":")
    return TilesServer(directory, host or "127.0.0.1", int(port)).start()


__all__ = ["TilesServer", "resolve", "start_tiles_server"]
