"""Serve a tiles directory over HTTP the way c2sp.org/tlog-tiles asks (stdlib, one thread).

Only two kinds of path exist: `/checkpoint` (text/plain, mutable: `Cache-Control: no-cache`)
and canonical tile paths `/tile/<L>/<N>[.p/<W>]`, `/tile/entries/<N>[.p/<W>]`
(application/octet-stream, immutable: a year's `max-age` and `immutable`). A path is parsed by
golden_press.tiles.parse_tile_path before the filesystem is touched, so `..`, doubled slashes,
symlink tricks through odd names, query strings pointing elsewhere and leading zeros are all
404s. GET and HEAD only, HTTP/1.1 with keep-alive. In production a CDN or object store serves the
same directory instead.
"""

from __future__ import annotations

import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from golden_press.tiles import TileError, parse_tile_path

log = logging.getLogger("golden_press.tiles_http")

CHECKPOINT_TYPE = "text/plain; charset=utf-8"
TILE_TYPE = "application/octet-stream"
IMMUTABLE = "public, max-age=31536000, immutable"
MUTABLE = "no-cache"


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


class TilesServer:
    """A ThreadingHTTPServer on its own daemon thread; `stop` shuts it down."""

    def __init__(self, directory: Path, host: str, port: int) -> None:
        handler = type("TilesHandler", (_Handler,), {"directory": directory})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
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
