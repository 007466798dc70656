"""The monitor's HTTP tiles client against a hostile server: bounded size, bounded time.

A monitor reads an untrusted log's server. A response larger than the resource can be (a
checkpoint note, a hash tile, an entry bundle) or one that never ends must be an error the
monitor reports, never all of memory or a monitor that waits for ever.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from golden_press.checkpoint import MAX_NOTE_BYTES
from golden_press.tiles import Tile
from service.cli.tiles_client import HttpSource

#: What the server does with one accepted connection.
Behaviour = Callable[[socket.socket], None]


@pytest.fixture
def hostile() -> Iterator[Callable[[Behaviour], str]]:
    """A one-behaviour HTTP server on loopback; yields a function that starts it, its base URL."""
    servers: list[socket.socket] = []
    stop = threading.Event()

    def start(behaviour: Behaviour) -> str:
        server = socket.create_server(("127.0.0.1", 0))
        servers.append(server)

        def serve() -> None:
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                with conn:
                    conn.recv(65536)  # the request
                    try:
                        behaviour(conn)
                    except OSError:
                        pass  # the client hung up: what it should do

        threading.Thread(target=serve, daemon=True).start()
        return f"http://127.0.0.1:{server.getsockname()[1]}/"

    yield start
    stop.set()
    for server in servers:
        server.close()


def _headers(conn: socket.socket, extra: str) -> None:
    conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n{extra}\r\n".encode())


def _finishes_within(seconds: float, call: Callable[[], object]) -> BaseException | None:
    """Run `call` on a thread; the exception it raised (None: it returned). Fails on a hang."""
    raised: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            raised.append(None)
        except BaseException as exc:  # handed to the test
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still reading after {seconds} s"
    return raised[0]


def test_a_declared_oversized_checkpoint_is_refused(hostile: Callable[[Behaviour], str]) -> None:
    def huge(conn: socket.socket) -> None:
        _headers(conn, f"Content-Length: {MAX_NOTE_BYTES + 1}\r\n")
        conn.sendall(b"x" * (MAX_NOTE_BYTES + 1))

    exc = _finishes_within(10, HttpSource(hostile(huge), timeout=5).checkpoint)
    assert isinstance(exc, OSError) and "at most" in str(exc), exc


def test_an_endless_body_is_cut_at_the_largest_tile(hostile: Callable[[Behaviour], str]) -> None:
    """No Content-Length, chunked for ever: reading stops just past what a hash tile can be."""
    sent = [0]

    def endless(conn: socket.socket) -> None:
        _headers(conn, "Transfer-Encoding: chunked\r\n")
        chunk = b"10000\r\n" + b"\0" * 0x10000 + b"\r\n"
        for _ in range(1000):  # 64 MB, far past any tile
            conn.sendall(chunk)
            sent[0] += 0x10000

    exc = _finishes_within(10, lambda: HttpSource(hostile(endless), timeout=5).read(Tile(0, 0)))
    assert isinstance(exc, OSError) and "at most" in str(exc), exc


def test_a_dripping_body_times_out_as_a_whole(hostile: Callable[[Behaviour], str]) -> None:
    """One byte at a time, each well within the socket timeout: the whole GET still ends."""

    def drip(conn: socket.socket) -> None:
        _headers(conn, "Content-Length: 8192\r\n")
        for _ in range(8192):
            conn.sendall(b"\0")
            time.sleep(0.05)

    began = time.monotonic()
    exc = _finishes_within(8, lambda: HttpSource(hostile(drip), timeout=1).read(Tile(0, 0)))
    assert isinstance(exc, OSError), exc
    assert time.monotonic() - began < 4


def test_a_grpc_source_that_never_answers_times_out() -> None:
    """A gRPC API that accepts the call and never answers: an error, not a monitor stuck for
    ever (its calls had no deadline)."""
    from concurrent import futures

    import grpc

    from service.cli.monitor import GrpcSource

    release = threading.Event()

    def silent(_request: bytes, _context: object) -> bytes:
        release.wait(30)
        return b""

    server = grpc.server(futures.ThreadPoolExecutor(2))
    handler = grpc.unary_unary_rpc_method_handler(silent)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("golden.v1.GoldenPress", {"GetCheckpoint": handler})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    source = GrpcSource(f"127.0.0.1:{port}", timeout=0.5)
    try:
        exc = _finishes_within(10, source.checkpoint)
        assert isinstance(exc, OSError) and "DEADLINE_EXCEEDED" in str(exc), exc
    finally:
        release.set()
        source.close()
        server.stop(0)


def test_a_checkpoint_that_is_not_utf8_is_a_bad_checkpoint(
    hostile: Callable[[Behaviour], str],
) -> None:
    """Bytes that are no text are a bad checkpoint (exit 1), not the monitor's own crash."""
    from golden_press.monitor import Monitor, Violation, ViolationKind
    from tests.helpers.memlog import VERIFIER

    def garbage(conn: socket.socket) -> None:
        _headers(conn, "Content-Length: 4\r\n")
        conn.sendall(b"\xff\xfe\x00\x80")

    monitor = Monitor(HttpSource(hostile(garbage), timeout=5), [VERIFIER], VERIFIER.name)
    with pytest.raises(Violation) as found:
        monitor.check()
    assert found.value.kind is ViolationKind.BAD_CHECKPOINT, found.value


def test_through_a_proxy_the_answer_is_bounded_too(
    hostile: Callable[[Behaviour], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a proxy configured the GETs go through urllib: the same size limit holds there."""

    def huge(conn: socket.socket) -> None:
        _headers(conn, f"Content-Length: {MAX_NOTE_BYTES + 1}\r\n")
        conn.sendall(b"x" * (MAX_NOTE_BYTES + 1))

    monkeypatch.setenv("http_proxy", hostile(huge))
    monkeypatch.setenv("no_proxy", "")
    # urlopen's shared opener read the proxies when first built (by any earlier test): rebuild.
    monkeypatch.setattr(urllib.request, "_opener", None)
    source = HttpSource("http://tiles.invalid/", timeout=5)
    exc = _finishes_within(10, source.checkpoint)
    assert isinstance(exc, OSError) and "at most" in str(exc), exc


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.usefixtures("invalid_names_fail_fast")
def test_a_source_that_cannot_be_reached_is_unreachable_not_unreadable(
    hostile: Callable[[Behaviour], str],
) -> None:
    """Connection refused, a name that does not resolve, no answer within the timeout, a server
    error: the monitor reached no log (SourceUnreachable, the CLI's exit 3). An answer that is
    wrong (too large, dripping, a 404) stays an unreadable tile: the log's fault (exit 1)."""
    from golden_press.monitor import SourceUnreachable

    def silent(conn: socket.socket) -> None:
        time.sleep(3)

    def server_error(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")

    def not_found(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

    def oversized(conn: socket.socket) -> None:
        _headers(conn, "Content-Length: 9000\r\n")
        conn.sendall(b"\0" * 9000)

    def dripping(conn: socket.socket) -> None:
        _headers(conn, "Content-Length: 8192\r\n")
        for _ in range(100):
            conn.sendall(b"\0")
            time.sleep(0.05)

    unreachable = {
        "refused": HttpSource(f"http://127.0.0.1:{_closed_port()}/", timeout=2),
        "dns": HttpSource("http://tiles.invalid/", timeout=2),
        "silent": HttpSource(hostile(silent), timeout=0.5),
        "502": HttpSource(hostile(server_error), timeout=2),
    }
    for name, source in unreachable.items():
        exc = _finishes_within(10, source.checkpoint)
        assert isinstance(exc, SourceUnreachable), (name, exc)
    for name, source in {
        "404": HttpSource(hostile(not_found), timeout=2),
        "oversized": HttpSource(hostile(oversized), timeout=5),
        "dripping": HttpSource(hostile(dripping), timeout=1),
    }.items():
        exc = _finishes_within(10, lambda s=source: s.read(Tile(0, 0)))  # type: ignore[misc]
        assert isinstance(exc, OSError) and not isinstance(exc, SourceUnreachable), (name, exc)
