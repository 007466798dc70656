"""A minimal blocking HTTP client for add-checkpoint (stdlib urllib; run it in a thread)."""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from golden_press.answers import read_body

HTTP_TIMEOUT_S = 10.0
#: A witness answers with its cosignature lines (a few hundred bytes); more is not an answer.
MAX_ANSWER_BYTES = 1 << 16


@dataclass(frozen=True)
class HttpAnswer:
    """A witness's HTTP answer (status 0: no answer, the connection failed)."""

    status: int
    content_type: str
    body: str


def post(url: str, body: bytes, timeout: float = HTTP_TIMEOUT_S) -> HttpAnswer:
    """POST body to url (blocking; run it in a thread). Network errors become status 0, and so
    does an answer over MAX_ANSWER_BYTES or not complete within `timeout` seconds."""
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "text/plain; charset=utf-8"}
    )
    deadline = time.monotonic() + timeout
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            text = read_body(resp, MAX_ANSWER_BYTES, deadline).decode("utf-8")
            return HttpAnswer(resp.status, resp.headers.get("Content-Type", ""), text)
    except urllib.error.HTTPError as exc:
        return HttpAnswer(exc.code, exc.headers.get("Content-Type", ""), _refusal(exc, deadline))
    except (OSError, ValueError) as exc:  # URLError, refused, timeout, bad URL
        return HttpAnswer(0, "", str(exc))


def _refusal(exc: urllib.error.HTTPError, deadline: float) -> str:
    """An error answer's text (only ever logged), bounded like an answer; what cannot be read
    in time or is too long is left out."""
    if not isinstance(exc.fp, http.client.HTTPResponse):
        return ""
    try:
        return read_body(exc.fp, MAX_ANSWER_BYTES, deadline).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as problem:
        return f"(answer unread: {problem})"


__all__ = ["HTTP_TIMEOUT_S", "HttpAnswer", "post"]
