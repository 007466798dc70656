"""Secrets out of what we print: a DSN's password, whichever form the DSN takes."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
#: Query or keyword parameters that hold a secret (libpq's `password`, `sslpassword`).
SECRET_PARAMETERS = frozenset({"password", "sslpassword"})
_KEYWORD_SECRET = re.compile(r"\b(password|sslpassword)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")


def redact_dsn(dsn: str) -> str:
    """The DSN with every password replaced by ***; host, port, database and sslmode are kept.

    Handles URLs (`postgresql://user:pw@host/db?sslmode=require&password=x`) and libpq
    keyword strings (`host=h user=u password=pw`). A password file (`passfile=`) is a path, not
    a secret, and is kept.
    """
    if "://" not in dsn:
        return _KEYWORD_SECRET.sub(lambda m: f"{m.group(1)}={MASK}", dsn)
    parts = urlsplit(dsn)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}{':' + MASK if sep else ''}@{hosts}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k in SECRET_PARAMETERS for k, _ in pairs):
            query = urlencode(
                [(k, MASK if k in SECRET_PARAMETERS else v) for k, v in pairs], safe="*/"
            )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
