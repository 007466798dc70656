"""Read-only SQL for the API and the CLI: tickets, keyset pages, public keys and trust roots."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeAlias
from uuid import UUID

import asyncpg

from golden_press.bundle import LedgerTrust, TrustRoots
from golden_press.models import Ticket, TicketState

#: Both a pool and a connection answer fetch/fetchrow; reads need no transaction.
Executor: TypeAlias = asyncpg.Pool | asyncpg.Connection

MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50

_TICKET_COLUMNS = (
    "ticket_id, serial, user_id, issued_at, key_id, signature, state, request_id, issued_leaf"
)


def row_to_ticket(row: asyncpg.Record) -> Ticket:
    """The public view of a stored ticket row (timestamps in UTC)."""
    issued_at: datetime = row["issued_at"]
    return Ticket(
        ticket_id=row["ticket_id"],
        serial=row["serial"],
        user_id=row["user_id"],
        issued_at=issued_at.astimezone(UTC),
        key_id=row["key_id"],
        signature=row["signature"],
        state=TicketState(row["state"]),
        request_id=row["request_id"],
        leaf_index=row["issued_leaf"],
    )


async def get_ticket(db: Executor, ticket_id: UUID) -> Ticket | None:
    """One ticket by id, or None."""
    row = await db.fetchrow(
        f"SELECT {_TICKET_COLUMNS} FROM tickets WHERE ticket_id = $1", ticket_id
    )
    return row_to_ticket(row) if row is not None else None


async def list_tickets(
    db: Executor,
    *,
    state: TicketState | None = None,
    user_id: str | None = None,
    after_serial: int = 0,
    limit: int = DEFAULT_PAGE_SIZE,
) -> list[Ticket]:
    """Tickets with serial > after_serial, oldest first (keyset pages stay stable on inserts)."""
    limit = max(1, min(limit, MAX_PAGE_SIZE))
    rows = await db.fetch(
        f"SELECT {_TICKET_COLUMNS} FROM tickets"
        " WHERE serial > $1 AND ($2::text IS NULL OR state = $2)"
        " AND ($3::text IS NULL OR user_id = $3)"
        " ORDER BY serial LIMIT $4",
        after_serial,
        state.value if state is not None else None,
        user_id,
        limit,
    )
    return [row_to_ticket(r) for r in rows]


async def ticket_with_salt(db: Executor, ticket_id: UUID) -> tuple[Ticket, bytes] | None:
    """A ticket and the salt of its user commitment (needed to build a proof bundle)."""
    row = await db.fetchrow(
        f"SELECT {_TICKET_COLUMNS}, user_salt FROM tickets WHERE ticket_id = $1", ticket_id
    )
    if row is None:
        return None
    return row_to_ticket(row), bytes(row["user_salt"])


@dataclass(frozen=True)
class PublicKeyRow:
    """One registered public key: issuer (tickets) or ledger (checkpoints), current or retired."""

    key_id: str
    purpose: str
    public_key: bytes
    status: str
    name: str
    created_at: datetime
    retired_at: datetime | None


async def public_keys(db: Executor) -> list[PublicKeyRow]:
    """Every key that ever signed, oldest first: retired keys still verify old tickets."""
    rows = await db.fetch(
        "SELECT key_id, purpose, public_key, status, name, created_at, retired_at"
        " FROM signing_keys ORDER BY created_at, key_id"
    )
    return [
        PublicKeyRow(
            key_id=r["key_id"],
            purpose=r["purpose"],
            public_key=bytes(r["public_key"]),
            status=r["status"],
            name=r["name"],
            created_at=r["created_at"],
            retired_at=r["retired_at"],
        )
        for r in rows
    ]


def trust_roots_from_keys(keys: list[PublicKeyRow], origin: str) -> TrustRoots:
    """Trust roots an offline verifier pins: every issuer and ledger key, retired ones too."""
    issuer = {
        k.key_id: base64.b64encode(k.public_key).decode("ascii")
        for k in keys
        if k.purpose == "issuer"
    }
    ledger = [
        LedgerTrust(
            public_key=base64.b64encode(k.public_key).decode("ascii"),
            name=k.name if k.name != origin else "",
        )
        for k in keys
        if k.purpose == "ledger"
    ]
    if not ledger:
        raise LookupError("no ledger key registered yet (has a worker started?)")
    return TrustRoots(origin=origin, issuer_keys=issuer, ledger=ledger)


async def trust_roots(db: Executor, origin: str) -> TrustRoots:
    """Trust roots read from `signing_keys` (what `golden-press keys` writes for offline use)."""
    return trust_roots_from_keys(await public_keys(db), origin)


__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "PublicKeyRow",
    "get_ticket",
    "list_tickets",
    "public_keys",
    "row_to_ticket",
    "ticket_with_salt",
    "trust_roots",
    "trust_roots_from_keys",
]
