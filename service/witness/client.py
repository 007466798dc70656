"""A minimal blocking HTTP client for add-checkpoint (stdlib urllib; run it in a thread)."""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass

HTTP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class HttpAnswer:
    """A witness's HTTP answer (status 0: no answer, the connection failed)."""

    status: int
    content_type: str
    body: str


def post(url: str, body: bytes, timeout: float = HTTP_TIMEOUT_S) -> HttpAnswer:
    """POST body to url (blocking; run it in a thread). Network errors become status 0."""
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "text/plain; charset=utf-8"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return HttpAnswer(
                resp.status, resp.headers.get("Content-Type", ""), resp.read().decode("utf-8")
            )
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")
        return HttpAnswer(exc.code, exc.headers.get("Content-Type", ""), text)
    except (OSError, ValueError) as exc:  # URLError, refused, timeout, bad URL
        return HttpAnswer(0, "", str(exc))


__all__ = ["HTTP_TIMEOUT_S", "HttpAnswer", "post"]
