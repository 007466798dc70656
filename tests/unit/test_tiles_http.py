"""The API's tiles HTTP server keeps a crowd within bounds, and the monitor's client rides it out.

The server shares the API's process: a thousand idle connections must not become a thousand
threads. Over its bound a connection is answered 503 with Retry-After; the client waits and asks
again instead of calling the log broken.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.api.tiles_http import TilesServer
from service.cli.tiles_client import HttpSource

NOTE = "example.com/log\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"


@pytest.fixture
def tiles_dir(tmp_path: Path) -> Path:
    (tmp_path / "checkpoint").write_text(NOTE)
    return tmp_path


@pytest.fixture
def small_server(tiles_dir: Path) -> Iterator[TilesServer]:
    server = TilesServer(tiles_dir, "127.0.0.1", 0, max_connections=2).start()
    yield server
    server.stop()


def idle_connection(server: TilesServer) -> socket.socket:
    """A kept-open connection that has not sent anything: it holds a slot until its timeout."""
    conn = socket.create_connection((server.host, server.port))
    time.sleep(0.05)  # let the server accept it
    return conn


def get_checkpoint(server: TilesServer) -> bytes:
    with socket.create_connection((server.host, server.port), timeout=5) as conn:
        conn.sendall(b"GET /checkpoint HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def tiles_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("Thread-"))


def test_over_the_bound_a_connection_is_told_to_come_back(small_server: TilesServer) -> None:
    held = [idle_connection(small_server) for _ in range(2)]
    try:
        answer = get_checkpoint(small_server)
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert b"\r\nRetry-After: 1\r\n" in answer
    finally:
        for conn in held:
            conn.close()
    time.sleep(0.2)  # the freed slots
    answer = get_checkpoint(small_server)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(NOTE.encode()), answer


def test_a_crowd_of_idle_connections_costs_no_more_threads_than_the_bound(
    small_server: TilesServer,
) -> None:
    before = tiles_threads()
    crowd = [socket.create_connection((small_server.host, small_server.port)) for _ in range(50)]
    try:
        time.sleep(0.3)
        assert tiles_threads() - before <= 2
    finally:
        for conn in crowd:
            conn.close()


def test_the_monitor_client_waits_out_a_busy_server(small_server: TilesServer) -> None:
    held = [idle_connection(small_server) for _ in range(2)]

    def free_the_slots() -> None:
        for conn in held:
            conn.close()

    threading.Timer(0.5, free_the_slots).start()
    began = time.monotonic()
    assert HttpSource(f"http://{small_server.host}:{small_server.port}/").checkpoint() == NOTE
    assert time.monotonic() - began >= 0.9  # it waited the server's Retry-After


def test_a_server_that_stays_busy_is_an_error_not_a_hang(small_server: TilesServer) -> None:
    held = [idle_connection(small_server) for _ in range(2)]
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("service.cli.tiles_client.MAX_RETRY_AFTER_S", 0.0)
            with pytest.raises(OSError, match="HTTP 503"):
                HttpSource(f"http://{small_server.host}:{small_server.port}/").checkpoint()
    finally:
        for conn in held:
            conn.close()


def test_api_processes_share_the_tiles_port(tiles_dir: Path) -> None:
    """GOLDEN_API_PROCESSES children all serve tiles on one GOLDEN_HTTP_ADDR (SO_REUSEPORT)."""
    first = TilesServer(tiles_dir, "127.0.0.1", 0).start()
    try:
        second = TilesServer(tiles_dir, "127.0.0.1", first.port).start()
        try:
            assert second.port == first.port
            assert get_checkpoint(second).endswith(NOTE.encode())
        finally:
            second.stop()
    finally:
        first.stop()


def test_a_port_taken_by_another_program_is_an_os_error(tiles_dir: Path) -> None:
    """A failed bind reports the bind's OSError, not an error from the half-built server."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError) as raised:
            TilesServer(tiles_dir, "127.0.0.1", taken.getsockname()[1])
    assert raised.value.errno == errno.EADDRINUSE
