"""Tiles over HTTP(S) for the monitor: persistent connections and a bounded parallel prefetch.

A monitor of a large log makes two GETs per 256 entries. Over urllib each is a new TCP (and TLS)
connection, and one at a time the monitor waits a round trip per tile. Here every fetching
thread keeps its own HTTP/1.1 connection (http.client), and `read_many` keeps `parallel` GETs in
flight. Redirects and configured proxies go through urllib, which handles them.
"""

from __future__ import annotations

import http.client
import threading
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from urllib.parse import urlsplit

from golden_press.tiles import Tile

_HEADERS = {"Accept-Encoding": "identity", "User-Agent": "golden-press"}
#: Errors of a kept-alive connection the server closed meanwhile: reconnect once and resend.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class HttpSource:
    """Tiles over HTTP(S) under a base URL (a CDN, an object store, or the API's server)."""

    def __init__(self, base_url: str, timeout: float = 30.0, parallel: int = 4) -> None:
        self.base = base_url.rstrip("/") + "/"
        self.timeout = timeout
        self.parallel = parallel
        url = urlsplit(self.base)
        self._https = url.scheme == "https"
        self._host, self._port, self._prefix = url.hostname or "", url.port, url.path
        self._direct = not urllib.request.getproxies().get(url.scheme)
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
        self._local.conn = None

    def _get(self, path: str) -> bytes:
        if not self._direct:
            return self._get_urllib(path)
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request("GET", self._prefix + path, headers=_HEADERS)
                resp = conn.getresponse()
                body = resp.read()
            except _STALE as exc:
                self._drop()
                if attempt == 2:
                    raise OSError(f"{self.base + path}: {exc}") from exc
                continue
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                raise OSError(f"{self.base + path}: {exc}") from exc
            if resp.will_close:
                self._drop()
            if 300 <= resp.status < 400:
                return self._get_urllib(path)  # a redirect: let urllib follow it
            if resp.status != 200:
                raise OSError(f"HTTP {resp.status} for {self.base + path}")
            return body
        raise AssertionError("unreachable")

    def _get_urllib(self, path: str) -> bytes:
        req = urllib.request.Request(self.base + path, headers=_HEADERS)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return bytes(resp.read())
        except urllib.error.HTTPError as exc:
            raise OSError(f"HTTP {exc.code} for {self.base + path}") from exc
        except urllib.error.URLError as exc:
            raise OSError(f"{self.base + path}: {exc.reason}") from exc

    def checkpoint(self) -> str:
        """GET <base>/checkpoint."""
        return self._get("checkpoint").decode("utf-8")

    def read(self, tile: Tile) -> bytes | None:
        """GET <base>/tile/..."""
        return self._get(tile.path)

    def read_many(self, tiles: Iterator[Tile]) -> Generator[bytes | None, None, None]:
        """The tiles in order, `parallel` GETs in flight and at most twice that many held.

        Bounded both ways: a CDN sees a few connections, not thousands, and memory holds a
        window of tiles (a bundle of 256 entries is ~80 KB), whatever the log's size.
        """
        if self.parallel <= 1:
            yield from (self.read(t) for t in tiles)
            return
        pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="tiles")
        window: deque[Future[bytes | None]] = deque()
        try:
            for tile in tiles:
                window.append(pool.submit(self.read, tile))
                if len(window) >= 2 * self.parallel:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


__all__ = ["HttpSource"]
