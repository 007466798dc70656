"""Bearer tokens for the write RPCs: the tokens file and the per-call check."""

from __future__ import annotations

import hmac
import logging
import stat
from pathlib import Path
from typing import Any

from golden_press.errors import GoldenError, Reason
from service.store.key_files import read_tokens

log = logging.getLogger("golden_press.api")


class TokenFileError(Exception):
    """The tokens file may be read by others: the API refuses to start (like the key files)."""


def load_tokens(path: Path) -> frozenset[str]:
    """Bearer tokens, one per line (blank lines and # comments ignored); none means no writes.

    The file holds secrets: like the key files it must not be readable or writable by group or
    others (chmod 600), else TokenFileError.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        mode = 0
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TokenFileError(
            f"API tokens file {path} has mode {stat.S_IMODE(mode):04o}; it must not be readable"
            f" by group or others (chmod 600 {path})"
        )
    tokens = frozenset(read_tokens(path))
    if not tokens:
        log.warning("API tokens file %s has no token: IssueTicket/RedeemTicket refuse all", path)
    return tokens


def authenticate(context: Any, tokens: frozenset[str]) -> None:
    """Unauthenticated unless the call carries `authorization: Bearer <known token>`."""
    headers = [
        value if isinstance(value, str) else value.decode(errors="replace")
        for key, value in context.invocation_metadata() or ()
        if key == "authorization"
    ]
    # Exactly one: with two, which one a proxy or a server checks is anyone's guess.
    header = headers[0] if len(headers) == 1 else ""
    scheme, _, token = header.partition(" ")
    token = token.strip()
    ok = scheme.lower() == "bearer" and bool(token)
    # Compare against every token (no early exit) so timing says nothing about which matched.
    matched = False
    for known in tokens:
        matched |= hmac.compare_digest(known.encode(), token.encode())
    if not (ok and matched):
        raise GoldenError(
            Reason.UNAUTHENTICATED, "IssueTicket and RedeemTicket need a valid bearer token"
        )
