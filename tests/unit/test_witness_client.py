"""The log's witness client against a misbehaving witness: a bounded answer in bounded time.

The submitter POSTs every new checkpoint to third-party witnesses from the API process; one that
answers without end, or drips its answer, must cost a failed round (and its backoff), never the
API's memory or a submitter stuck for every other witness.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from service.witness.client import MAX_ANSWER_BYTES, post


@pytest.fixture
def witness() -> Iterator[Callable[..., str]]:
    """A one-answer HTTP server: `start(body, pause, status=200)` sends the status and the body,
    `pause` seconds a byte."""
    servers: list[socket.socket] = []

    def start(body: bytes, pause: float, status: int = 200) -> str:
        server = socket.create_server(("127.0.0.1", 0))
        servers.append(server)

        def serve() -> None:
            with server.accept()[0] as conn:
                conn.recv(65536)
                head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n"
                try:
                    conn.sendall(head.encode())
                    if not pause:
                        conn.sendall(body)
                    for i in range(len(body) if pause else 0):
                        conn.sendall(body[i : i + 1])
                        time.sleep(pause)
                except OSError:
                    pass  # the client hung up

        threading.Thread(target=serve, daemon=True).start()
        return f"http://127.0.0.1:{server.getsockname()[1]}/add-checkpoint"

    yield start
    for server in servers:
        server.close()


def test_an_answer_larger_than_any_cosignature_is_refused(
    witness: Callable[..., str],
) -> None:
    answer = post(witness(b"x" * (MAX_ANSWER_BYTES + 1), 0), b"old 0\n\n", timeout=5)
    assert answer.status == 0 and "at most" in answer.body, answer.body[:200]


def test_a_dripping_answer_ends_by_the_timeout(witness: Callable[..., str]) -> None:
    began = time.monotonic()
    answer = post(witness(b"- " * 1000, 0.05), b"old 0\n\n", timeout=1)
    assert answer.status == 0, answer
    assert time.monotonic() - began < 4


def test_a_dripping_refusal_ends_by_the_timeout(witness: Callable[..., str]) -> None:
    """The same for an error answer, whose text is only logged."""
    began = time.monotonic()
    answer = post(witness(b"- " * 1000, 0.05, 500), b"old 0\n\n", timeout=1)
    assert answer.status == 500, answer
    assert time.monotonic() - began < 4
