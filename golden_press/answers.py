"""Reading an untrusted peer's HTTP answer: at most so many bytes, all of it by a deadline.

The monitor reads tiles from a log's server and the log's submitter reads cosignatures from
third-party witnesses; neither may let the other side fill its memory or keep it waiting for
ever with an answer that never ends or drips a byte at a time within each read's timeout.
"""

from __future__ import annotations

import http.client
import socket
import time

_CHUNK = 1 << 16


def read_body(
    resp: http.client.HTTPResponse, limit: int, deadline: float, sock: socket.socket | None = None
) -> bytes:
    """The response's body: at most `limit` bytes, all of it before `deadline` (monotonic).

    Reads what each packet brings (read1), so a body dripping a byte at a time still ends by
    the deadline; given the socket, also cuts its timeout to the time left (else the deadline
    can be passed by one read's timeout).
    """
    if resp.length is not None and resp.length > limit:
        raise OSError(f"answer of {resp.length} bytes, at most {limit} expected")
    chunks: list[bytes] = []
    size = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("answer not complete within the timeout")
        if sock is not None:
            sock.settimeout(left)
        chunk = resp.read1(_CHUNK)
        if not chunk:
            resp.read()  # nothing left; closes the response so the connection can be reused
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise OSError(f"answer of over {limit} bytes, at most {limit} expected")
        chunks.append(chunk)


__all__ = ["read_body"]
