"""Tiles over HTTP(S) for the monitor: persistent connections and a bounded parallel prefetch.

A monitor of a large log makes two GETs per 256 entries. Over urllib each is a new TCP (and TLS)
connection, and one at a time the monitor waits a round trip per tile. Here every fetching
thread keeps its own HTTP/1.1 connection (http.client), and `read_many` keeps `parallel` GETs in
flight. Redirects and configured proxies go through urllib, which handles them.

The server is untrusted, so every answer is bounded: never more bytes than the resource can
hold (a signed note, a hash tile, an entry bundle of 65,535-byte entries), and a body must
arrive whole within `timeout` seconds, however slowly it drips (golden_press.answers). Status
line and headers are left to http.client's own limits: 100 lines of at most 64 KiB, each read
within the timeout.

A busy server (503, or 429 from a CDN's rate limit) is asked again after its Retry-After
(at most `MAX_RETRY_AFTER_S`; 1 s when it names none), up to `BUSY_ATTEMPTS` times in all:
a monitor mirroring a log should ride out a crowd, not report it as a broken log.

A GET that gets no answer (connection refused, a name that does not resolve, no status line
within the timeout), a 5xx or a server still busy after those attempts raises SourceUnreachable:
the monitor reached no log (exit 3), which is not the log breaking a rule. Once an answer
arrives, anything wrong with it (a 404, too large, too slow) is a plain OSError: unreadable.
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from urllib.parse import urlsplit

from golden_press.answers import read_body
from golden_press.checkpoint import MAX_NOTE_BYTES
from golden_press.merkle import HASH_SIZE
from golden_press.monitor import SourceUnreachable
from golden_press.tiles import MAX_ENTRY_LEN, Tile

_HEADERS = {"Accept-Encoding": "identity", "User-Agent": "golden-press"}
#: Errors of a kept-alive connection the server closed meanwhile: reconnect once and resend.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
_BUSY_STATUSES = (429, 503)
BUSY_ATTEMPTS = 4
MAX_RETRY_AFTER_S = 10.0


class _Busy(Exception):
    """The server answered 503 or 429; ask again after `retry_after` seconds."""

    def __init__(self, status: int, retry_after: str | None) -> None:
        super().__init__(f"HTTP {status}")
        try:
            seconds = float(retry_after) if retry_after else 1.0
        except ValueError:
            seconds = 1.0  # an HTTP date, or nonsense: wait the default
        self.retry_after = min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def max_size(tile: Tile) -> int:
    """The most bytes `tile` can hold: its hashes, or its entries each with a 2-byte length."""
    return tile.width * ((2 + MAX_ENTRY_LEN) if tile.is_bundle else HASH_SIZE)


class HttpSource:
    """Tiles over HTTP(S) under a base URL (a CDN, an object store, or the API's server).

    `timeout`: seconds for one GET's answer as a whole (and for each connect and read).
    """

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

    def _get(self, path: str, limit: int) -> bytes:
        for attempt in range(1, BUSY_ATTEMPTS + 1):
            try:
                if not self._direct:
                    return self._get_urllib(path, limit)
                return self._get_direct(path, limit)
            except _Busy as busy:
                if attempt == BUSY_ATTEMPTS:
                    raise SourceUnreachable(
                        f"{busy} for {self.base + path} ({attempt} times)"
                    ) from None
                time.sleep(busy.retry_after)
        raise AssertionError("unreachable")

    def _get_direct(self, path: str, limit: int) -> bytes:
        for attempt in (1, 2):
            conn = self._connection()
            deadline = time.monotonic() + self.timeout
            answered = False  # no status line yet: a failure so far is the source unreachable
            try:
                conn.request("GET", self._prefix + path, headers=_HEADERS)
                sock = conn.sock  # the response may outlive the connection's hold on it
                if sock is not None:
                    sock.settimeout(self.timeout)
                resp = conn.getresponse()
                answered = True
                body = read_body(resp, limit, deadline, sock)
            except _STALE as exc:
                self._drop()
                if attempt == 2:
                    error = SourceUnreachable if not answered else OSError
                    raise error(f"{self.base + path}: {exc}") from exc
                continue
            except OSError as exc:
                self._drop()
                error = SourceUnreachable if not answered else OSError
                raise error(f"{self.base + path}: {exc}") from exc
            except http.client.HTTPException as exc:  # an answer, but not HTTP
                self._drop()
                raise OSError(f"{self.base + path}: {exc}") from exc
            if resp.will_close:
                self._drop()
            if 300 <= resp.status < 400:
                return self._get_urllib(path, limit)  # a redirect: let urllib follow it
            if resp.status in _BUSY_STATUSES:
                self._drop()
                raise _Busy(resp.status, resp.getheader("Retry-After"))
            if resp.status >= 500:
                raise SourceUnreachable(f"HTTP {resp.status} for {self.base + path}")
            if resp.status != 200:
                raise OSError(f"HTTP {resp.status} for {self.base + path}")
            return body
        raise AssertionError("unreachable")

    def _get_urllib(self, path: str, limit: int) -> bytes:
        req = urllib.request.Request(self.base + path, headers=_HEADERS)
        deadline = time.monotonic() + self.timeout
        try:
            resp = urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            if exc.code in _BUSY_STATUSES:
                raise _Busy(exc.code, exc.headers.get("Retry-After")) from None
            error = SourceUnreachable if exc.code >= 500 else OSError
            raise error(f"HTTP {exc.code} for {self.base + path}") from exc
        except urllib.error.URLError as exc:
            raise SourceUnreachable(f"{self.base + path}: {exc.reason}") from exc
        except OSError as exc:
            raise SourceUnreachable(f"{self.base + path}: {exc}") from exc
        try:
            with resp:
                return read_body(resp, limit, deadline)
        except OSError as exc:
            raise OSError(f"{self.base + path}: {exc}") from exc

    def checkpoint(self) -> str:
        """GET <base>/checkpoint."""
        return self._get("checkpoint", MAX_NOTE_BYTES).decode("utf-8")

    def read(self, tile: Tile) -> bytes | None:
        """GET <base>/tile/..."""
        return self._get(tile.path, max_size(tile))

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
