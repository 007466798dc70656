"""Witness cosignatures of ledger checkpoints in PostgreSQL (migrations/010_*.sql).

The ledger's checkpoint rows are append-only and carry the ledger's own signature; cosignature
lines live beside them, one per (tree size, witness), and readers append them to the note. Every
line is verified by the submitter before it is stored, and verified again by whoever trusts it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TypeAlias

import asyncpg

from golden_press.checkpoint import (
    CheckpointError,
    parse_checkpoint_body,
    parse_note,
    parse_signature_lines,
)
from golden_press.cosignature import add_signature_lines
from service.store.db import LEDGER_CHANNEL

#: Both a pool and a connection answer fetch/fetchrow; reads need no transaction.
Executor: TypeAlias = asyncpg.Pool | asyncpg.Connection

#: pg_try_advisory_lock key of the witness submitter election ("witness" in ASCII).
SUBMITTER_LOCK = 0x7769746E657373


async def elect_submitter(conn: asyncpg.Connection) -> bool:
    """Whether this session is now the one witness submitter: a session advisory lock, held
    until the connection closes (so a submitter that dies hands over at once)."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", SUBMITTER_LOCK))


async def add_cosignature(
    db: Executor, tree_size: int, witness: str, line: str, timestamp: int
) -> bool:
    """Store a verified cosignature line; False when that witness's line was already stored."""
    status: str = await db.execute(
        "INSERT INTO ledger_cosignatures (tree_size, witness, line, cosigned_at)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT (tree_size, witness) DO NOTHING",
        tree_size,
        witness,
        line,
        datetime.fromtimestamp(timestamp, UTC),
    )
    stored = status.endswith(" 1")
    if stored:  # wakes the tile publisher: the published `checkpoint` gains the line
        await db.execute("SELECT pg_notify($1, '')", LEDGER_CHANNEL)
    return stored


async def latest_cosigned_size(db: Executor, witness: str) -> int | None:
    """The largest tree size `witness` cosigned for this log, as far as this log stored."""
    size: int | None = await db.fetchval(
        "SELECT max(tree_size) FROM ledger_cosignatures WHERE witness = $1", witness
    )
    return size


async def cosignature_lines(db: Executor, tree_size: int) -> list[str]:
    """Every stored cosignature line of the checkpoint at `tree_size`, by witness name."""
    rows = await db.fetch(
        "SELECT line FROM ledger_cosignatures WHERE tree_size = $1 ORDER BY witness", tree_size
    )
    return [r["line"] for r in rows]


def with_lines(note: str, lines: Sequence[str]) -> str:
    """A signed note with cosignature lines appended (one per witness key; the ledger's first)."""
    if not lines:
        return note
    return add_signature_lines(note, parse_signature_lines("".join(lines)))


async def cosigned_note(db: Executor, tree_size: int, note: str) -> str:
    """The checkpoint note at `tree_size` with every stored cosignature line appended."""
    return with_lines(note, await cosignature_lines(db, tree_size))


async def with_stored_cosignatures(db: Executor, note: str) -> str:
    """A presented checkpoint note plus the cosignatures this log stored for that very checkpoint.

    A bundle fetched just before its checkpoint was cosigned still meets the quorum later: the
    lines are added only when the stored checkpoint at that size has the same body, and whoever
    trusts the result verifies every line anyway. A note that does not parse is returned as is
    (its verification reports why).
    """
    try:
        text = parse_note(note).text
        size = parse_checkpoint_body(text).size
    except CheckpointError:
        return note
    row = await db.fetchrow("SELECT note FROM ledger_checkpoints WHERE tree_size = $1", size)
    if row is None or parse_note(row["note"]).text != text:
        return note
    lines = await cosignature_lines(db, size)
    return with_lines(note, lines) if lines else note


async def trusted_checkpoint_size(
    db: Executor, min_size: int, witnesses: Sequence[str], quorum: int
) -> int | None:
    """Largest checkpoint size >= min_size with cosignatures from >= quorum of `witnesses`.

    Stored lines were verified when stored; callers verify the note again before trusting it.
    """
    if quorum <= 0:
        size: int | None = await db.fetchval(
            "SELECT max(tree_size) FROM ledger_checkpoints WHERE tree_size >= $1", min_size
        )
        return size
    size = await db.fetchval(
        "SELECT tree_size FROM ledger_cosignatures WHERE tree_size >= $1 AND witness = ANY($2)"
        " GROUP BY tree_size HAVING count(*) >= $3 ORDER BY tree_size DESC LIMIT 1",
        min_size,
        list(witnesses),
        quorum,
    )
    return size


__all__ = [
    "SUBMITTER_LOCK",
    "add_cosignature",
    "cosignature_lines",
    "cosigned_note",
    "elect_submitter",
    "latest_cosigned_size",
    "trusted_checkpoint_size",
    "with_lines",
    "with_stored_cosignatures",
]
