"""Public keys: every issuer and ledger key that ever signed, and the trust roots they make."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from golden_press.bundle import LedgerTrust, TrustRoots
from golden_press.cosignature import CosignatureVerifier
from service.store.tickets import Executor


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


def trust_roots_from_keys(
    keys: list[PublicKeyRow], origin: str, witness_quorum: int | None = None
) -> TrustRoots:
    """Trust roots an offline verifier pins: every issuer and ledger key, retired ones too, and
    the witness keys (purpose "witness") with the quorum checkpoints need (None: all of them)."""
    issuer = {
        k.key_id: base64.b64encode(k.public_key).decode("ascii")
        for k in keys
        if k.purpose == "issuer"
    }
    ledger = [
        LedgerTrust(
            public_key=base64.b64encode(k.public_key).decode("ascii"),
            name=k.name or origin,
            origin=origin,
        )
        for k in keys
        if k.purpose == "ledger"
    ]
    if not ledger:
        raise LookupError("no ledger key registered yet (has a worker started?)")
    witnesses = [
        CosignatureVerifier(k.name, k.public_key).vkey for k in keys if k.purpose == "witness"
    ]
    return TrustRoots(
        origin=origin,
        issuer_keys=issuer,
        ledger=ledger,
        witnesses=witnesses,
        witness_quorum=witness_quorum,
    )


async def trust_roots(db: Executor, origin: str) -> TrustRoots:
    """Trust roots read from `signing_keys` (what `golden-press keys` writes for offline use)."""
    return trust_roots_from_keys(await public_keys(db), origin)


async def issuer_public_key(db: Executor, key_id: str) -> bytes | None:
    """The raw public key of an issuer key id (retired keys included), or None."""
    key = await db.fetchval(
        "SELECT public_key FROM signing_keys WHERE key_id = $1 AND purpose = 'issuer'", key_id
    )
    return bytes(key) if key is not None else None


async def register_keys(pool: asyncpg.Pool, rows: list[tuple[str, str, bytes, str]]) -> None:
    """Publish (purpose, key_id, public_key, name) rows; a new key retires the current one."""
    async with pool.acquire() as conn, conn.transaction():
        for purpose, key_id, public_key, name in rows:
            inserted = await conn.fetchval(
                "INSERT INTO signing_keys (key_id, purpose, public_key, name)"
                " VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (key_id) DO NOTHING RETURNING key_id",
                key_id,
                purpose,
                public_key,
                name,
            )
            if inserted:
                await conn.execute(
                    "UPDATE signing_keys SET status = 'retired', retired_at = now()"
                    " WHERE purpose = $1 AND key_id <> $2 AND status = 'current'",
                    purpose,
                    key_id,
                )
