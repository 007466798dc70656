"""Several writes in one round trip: data-modifying CTEs composed into one statement.

A saga step that holds the cap's lock pays a round trip per statement, and the next winner of a
herd waits for every one of them. Writes to different tables that depend on nothing read in
between (a ledger entry, its subtrees, its checkpoint, its outbox row, the ticket's leaf) can
go as one statement: PostgreSQL runs every data-modifying CTE exactly once and to completion,
in the caller's transaction, and a failure in any of them fails the whole statement.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_PLACEHOLDER = re.compile(r"\$(\d+)")


@dataclass(frozen=True)
class Write:
    """One statement with its own $1.. placeholders and their values."""

    sql: str
    args: tuple[Any, ...]


def one_statement(writes: Sequence[Write], last: Write | None = None) -> tuple[Any, ...]:
    """`WITH w0 AS (..), w1 AS (..) <last>` and its arguments, for `conn.execute(*...)`.

    Every write but `last` must be data-modifying (a plain SELECT in a WITH that nothing reads
    is never run); `last`, the top-level statement, may be anything (default `SELECT 1`). The
    writes do not see each other's rows: they must not depend on one another.
    """
    parts: list[str] = []
    args: list[Any] = []
    for i, write in enumerate(writes):
        parts.append(f"w{i} AS ({_shift(write.sql, len(args))})")
        args.extend(write.args)
    final = last or Write("SELECT 1", ())
    sql = _shift(final.sql, len(args))
    args.extend(final.args)
    if parts:
        sql = "WITH " + ", ".join(parts) + " " + sql
    return (sql, *args)


def _shift(sql: str, offset: int) -> str:
    """Renumber $n to $(n + offset)."""
    if not offset:
        return sql
    return _PLACEHOLDER.sub(lambda m: f"${int(m.group(1)) + offset}", sql)


__all__ = ["Write", "one_statement"]
