"""The one way every process connects to NATS: URL, TLS and credentials from the settings.

TLS: a `tls://` URL, or GOLDEN_NATS_TLS_CA_FILE (the CA to trust) and, when the server verifies
clients, GOLDEN_NATS_TLS_CERT_FILE / GOLDEN_NATS_TLS_KEY_FILE. Authentication: a decentralised-auth
credentials file (GOLDEN_NATS_CREDS_FILE: user JWT + nkey seed, what `nsc` writes) or a bare nkey
seed file (GOLDEN_NATS_NKEY_SEED_FILE); a user/password or token goes in the URL's userinfo.
nats-py reads the files itself; their contents never pass through our logs.

Outages: a process that cannot reach NATS when it starts gives up after INITIAL_ATTEMPTS
(Unreachable: one line, exit 3, a supervisor restarts it) unless it asks to wait (the worker);
once connected it reconnects forever. Either way each kind of connection error is logged as one
line per minute, never as nats-py's traceback per attempt (twice a second while NATS is down).
"""

from __future__ import annotations

import logging
import ssl
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import nats
from nats.aio.client import Client as NATS
from nats.errors import NoServersError

from golden_press.errors import Unreachable
from golden_press.settings import Settings
from service.observability.logs import RepeatWindow

log = logging.getLogger("golden_press.nats")

#: Connection attempts before a starting process gives up (refused: ~0.5 s apart).
INITIAL_ATTEMPTS = 10


class QuietErrors:
    """nats-py's error callback: one log line per kind of error per window, with the count of
    the repeats it held back (nats-py's default logs a traceback per reconnect attempt)."""

    def __init__(self, window_s: float = 60.0) -> None:
        self._window = RepeatWindow(window_s)

    async def report(self, exc: Exception) -> None:
        """The callback (nats-py accepts only coroutine functions, not callable objects)."""
        kind = type(exc).__name__
        held = self._window.admit(kind)
        if held is None:
            return
        more = f" ({held} more in the last {self._window.window_s:g} s)" if held else ""
        detail = next(iter(str(exc).splitlines()), "") or "no detail"
        log.warning("NATS: %s: %s%s", kind, detail, more)


def nats_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """An SSL context for the configured CA / client certificate (None: nats-py's defaults)."""
    ca, cert, key = (
        settings.nats_tls_ca_file,
        settings.nats_tls_cert_file,
        settings.nats_tls_key_file,
    )
    if ca is None and cert is None:
        return None
    if (cert is None) != (key is None):
        raise ValueError("set both GOLDEN_NATS_TLS_CERT_FILE and GOLDEN_NATS_TLS_KEY_FILE")
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


def nats_options(settings: Settings) -> dict[str, Any]:
    """nats.connect keyword arguments for TLS and credentials (empty when none are set)."""
    options: dict[str, Any] = {}
    context = nats_tls_context(settings)
    if context is not None:
        options["tls"] = context
    if settings.nats_creds_file is not None:
        options["user_credentials"] = str(settings.nats_creds_file)
    if settings.nats_nkey_seed_file is not None:
        options["nkeys_seed"] = str(settings.nats_nkey_seed_file)
    return options


async def connect_nats(
    settings: Settings, *, initial_attempts: int | None = INITIAL_ATTEMPTS, **overrides: Any
) -> NATS:
    """A connection that keeps reconnecting through outages unless the caller says otherwise;
    Unreachable when NATS cannot be reached in `initial_attempts` (None: wait for it)."""
    reconnects = overrides.pop("max_reconnect_attempts", -1)
    first = reconnects if reconnects >= 0 or initial_attempts is None else initial_attempts
    options: dict[str, Any] = {
        "max_reconnect_attempts": first,
        "reconnect_time_wait": 0.5,
        "connect_timeout": 5,
        "error_cb": QuietErrors().report,
        **nats_options(settings),
        **overrides,
    }
    try:
        nc = await nats.connect(settings.nats_servers, **options)
    except (NoServersError, OSError) as exc:
        where = ", ".join(_without_userinfo(url) for url in settings.nats_servers)
        raise Unreachable("NATS", where, exc) from exc
    nc.options["max_reconnect_attempts"] = reconnects  # connected: ride out later outages
    return nc


def _without_userinfo(url: str) -> str:
    """A NATS URL without its user, password or token (a token is the whole userinfo)."""
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


__all__ = ["INITIAL_ATTEMPTS", "QuietErrors", "connect_nats", "nats_options", "nats_tls_context"]
