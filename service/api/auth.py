"""Bearer tokens for the write RPCs: the tokens file and the per-call check."""

from __future__ import annotations

import hmac
import logging
from pathlib import Path
from typing import Any

from golden_press.errors import GoldenError, Reason
from service.store.key_files import read_tokens

log = logging.getLogger("golden_press.api")


def load_tokens(path: Path) -> frozenset[str]:
    """Bearer tokens, one per line (blank lines and # comments ignored); none means no writes."""
    tokens = frozenset(read_tokens(path))
    if not tokens:
        log.warning("API tokens file %s has no token: IssueTicket/RedeemTicket refuse all", path)
    return tokens


def authenticate(context: Any, tokens: frozenset[str]) -> None:
    """Unauthenticated unless the call carries `authorization: Bearer <known token>`."""
    header = ""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            header = value if isinstance(value, str) else value.decode()
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
