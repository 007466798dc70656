"""The PostgreSQL ledger: dense serialised appends, stored-subtree proofs equal the reference."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from nacl.signing import SigningKey

from golden_press.bundle import LedgerTrust, TrustRoots, verify_bundle
from golden_press.checkpoint import open_checkpoint
from golden_press.errors import GoldenError, Reason
from golden_press.ledger_entry import EntryKind, LedgerEntry, entry_for_ticket, user_commitment
from golden_press.merkle import (
    EMPTY_ROOT,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)
from golden_press.models import Ticket, TicketState
from golden_press.signing import canonical_payload, key_id_for, sign_payload
from service.store.db import apply_migrations
from service.store.ledger import LedgerStore
from tests.helpers.servers import drop_database, dsn_for

pytestmark = pytest.mark.asyncio(loop_scope="session")

ORIGIN = "golden-press.test/ledger"
LEDGER_KEY = SigningKey(b"\x11" * 32)
ROOT_DIR = Path(__file__).resolve().parent.parent


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def ledger_dsn(pg_admin_dsn: str) -> AsyncIterator[str]:
    """A fresh database of our own: these tests assert on the log's absolute shape (from leaf 0)."""
    name = f"golden_t_{uuid.uuid4().hex}"
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = dsn_for(pg_admin_dsn, name)
    conn = await asyncpg.connect(dsn)
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()
    yield dsn
    await drop_database(pg_admin_dsn, name)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def pool(ledger_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(ledger_dsn, min_size=1, max_size=4)
    assert p is not None
    yield p
    await p.close()


@pytest.fixture
def store() -> LedgerStore:
    return LedgerStore(LEDGER_KEY, ORIGIN)


def _entry(kind: EntryKind = EntryKind.VOIDED, tid: uuid.UUID | None = None) -> LedgerEntry:
    issued = kind is EntryKind.ISSUED
    return LedgerEntry(
        kind=kind,
        ticket_id=tid or uuid.uuid4(),
        serial=random.randrange(1, 10_000),
        key_id="00" * 8 if issued else "",
        signature_digest="cd" * 32 if issued else "",
        user_commitment=user_commitment(os.urandom(16), "u"),
        at=datetime.now(UTC),
        reason="" if issued else "test",
    )


async def _all_hashes(conn: asyncpg.Connection) -> list[bytes]:
    rows = await conn.fetch("SELECT leaf_hash FROM ledger_entries ORDER BY leaf_index")
    return [bytes(r["leaf_hash"]) for r in rows]


async def test_empty_log_checkpoint(pool: asyncpg.Pool, store: LedgerStore) -> None:
    async with pool.acquire() as conn:
        head = await store.latest_checkpoint(conn)
        if head.size:
            pytest.skip("log not empty")
        assert head.root == EMPTY_ROOT
        cp = open_checkpoint(head.note, [store.verifier], ORIGIN)
        assert (cp.size, cp.root) == (0, EMPTY_ROOT)
        assert await store.checkpoint_note(conn, 0) == head.note


async def test_append_requires_a_transaction(pool: asyncpg.Pool, store: LedgerStore) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError, match="transaction"):
            await store.append(conn, _entry())


async def test_appends_and_proofs_match_the_reference(
    pool: asyncpg.Pool, store: LedgerStore
) -> None:
    rng = random.Random(1)
    async with pool.acquire() as conn:
        sizes_seen = []
        for batch in [1, 1, 2, 5, 1, 64, 3, 200, 1, 17, 400, 1, 33]:
            async with conn.transaction():
                results = await store.append_many(conn, [_entry() for _ in range(batch)])
            assert all(r.created for r in results)
            indices = [r.leaf_index for r in results]
            assert indices == list(range(indices[0], indices[0] + batch))
            assert {r.tree_size for r in results} == {indices[-1] + 1}
            sizes_seen.append(indices[-1] + 1)

        hashes = await _all_hashes(conn)
        n = len(hashes)
        assert n == sizes_seen[-1]
        for size in sizes_seen:
            note = await store.checkpoint_note(conn, size)
            assert note is not None
            cp = open_checkpoint(note, [store.verifier], ORIGIN)
            assert cp.size == size and cp.root == root_hash(hashes[:size])
            assert await store.root_at(conn, size) == cp.root
        head = await store.latest_checkpoint(conn)
        assert head.size == n and head.root == root_hash(hashes)

        for size in [1, 2, 3, 7, 8, 9, n // 2, n - 1, n, *rng.sample(range(1, n + 1), 25)]:
            root = root_hash(hashes[:size])
            assert await store.root_at(conn, size) == root
            for index in {0, size - 1, *rng.sample(range(size), min(size, 8))}:
                proof = await store.inclusion_proof(conn, index, size)
                assert proof == inclusion_proof(hashes, index, size)
                verify_inclusion(hashes[index], index, size, proof, root)
                assert leaf_hash(await store.entry(conn, index)) == hashes[index]
        for _ in range(150):
            size2 = rng.randrange(1, n + 1)
            size1 = rng.randrange(1, size2 + 1)
            proof = await store.consistency_proof(conn, size1, size2)
            assert proof == consistency_proof(hashes, size1, size2)
            verify_consistency(
                size1, size2, root_hash(hashes[:size1]), root_hash(hashes[:size2]), proof
            )
        rows = await store.entries(conn, 3, 9)
        assert [r.leaf_index for r in rows] == list(range(3, 9))
        assert [r.leaf_hash for r in rows] == hashes[3:9]


async def test_idempotent_per_ticket_and_kind(pool: asyncpg.Pool, store: LedgerStore) -> None:
    tid = uuid.uuid4()
    async with pool.acquire() as conn:
        async with conn.transaction():
            first = await store.append(conn, _entry(EntryKind.ISSUED, tid))
        async with conn.transaction():
            again = await store.append(conn, _entry(EntryKind.ISSUED, tid))
        assert first.created and not again.created
        assert again.leaf_index == first.leaf_index
        async with conn.transaction():
            voided = await store.append_many(
                conn, [_entry(EntryKind.VOIDED, tid), _entry(EntryKind.VOIDED, tid)]
            )
        assert [v.created for v in voided] == [True, False]
        assert voided[0].leaf_index == voided[1].leaf_index == first.leaf_index + 1
        assert await store.find_leaf(conn, tid, EntryKind.ISSUED) == first.leaf_index
        assert await store.find_leaf(conn, tid, EntryKind.REDEEMED) is None


async def test_rolled_back_append_leaves_no_trace(pool: asyncpg.Pool, store: LedgerStore) -> None:
    async with pool.acquire() as conn:
        before = await store.latest_checkpoint(conn)
        with pytest.raises(ZeroDivisionError):
            async with conn.transaction():
                await store.append(conn, _entry())
                1 / 0  # noqa: B018
        assert await store.latest_checkpoint(conn) == before
        async with conn.transaction():
            result = await store.append(conn, _entry())
        assert result.leaf_index == before.size


async def test_ledger_is_append_only(pool: asyncpg.Pool, store: LedgerStore) -> None:
    async with pool.acquire() as conn:
        async with conn.transaction():
            await store.append(conn, _entry())
        for sql in [
            "UPDATE ledger_entries SET entry = 'x' WHERE leaf_index = 0",
            "DELETE FROM ledger_entries WHERE leaf_index = 0",
            "TRUNCATE ledger_entries CASCADE",
            "UPDATE ledger_nodes SET hash = hash WHERE level = 0 AND idx = 0",
            "DELETE FROM ledger_nodes",
            "DELETE FROM ledger_checkpoints",
        ]:
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                await conn.execute(sql)


async def test_requests_beyond_the_log_are_refused(pool: asyncpg.Pool, store: LedgerStore) -> None:
    async with pool.acquire() as conn:
        n = (await store.latest_checkpoint(conn)).size
        for call in (
            store.inclusion_proof(conn, n - 1, n + 1),
            store.inclusion_proof(conn, n, n + 1),
            store.consistency_proof(conn, 1, n + 1),
            store.consistency_proof(conn, n + 1, n + 1),
            store.consistency_proof(conn, 0, n),
            store.inclusion_proof(conn, 5, 5),
            store.root_at(conn, n + 1),
            store.entry(conn, n),
        ):
            with pytest.raises(GoldenError) as info:
                await call
            assert info.value.reason is Reason.INVALID_REQUEST


_WORKER = """
import asyncio, os, sys, uuid
from datetime import UTC, datetime
import asyncpg
from nacl.signing import SigningKey
from golden_press.ledger_entry import EntryKind, LedgerEntry, user_commitment
from service.store.ledger import LedgerStore

async def main(dsn, count, seed):
    store = LedgerStore(SigningKey(b"\\x11" * 32), "golden-press.test/ledger")
    conn = await asyncpg.connect(dsn)
    out = []
    done = 0
    while done < count:
        batch = 1 + (seed + done) % 4
        entries = [
            LedgerEntry(kind=EntryKind.VOIDED, ticket_id=uuid.uuid4(), serial=seed,
                        user_commitment=user_commitment(os.urandom(16), "u"),
                        at=datetime.now(UTC), reason=f"p{seed}")
            for _ in range(min(batch, count - done))
        ]
        async with conn.transaction():
            results = await store.append_many(conn, entries)
        out += [r.leaf_index for r in results]
        done += len(entries)
    await conn.close()
    print(" ".join(map(str, out)))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


async def test_concurrent_appends_from_processes_are_dense(
    pool: asyncpg.Pool, store: LedgerStore, ledger_dsn: str
) -> None:
    async with pool.acquire() as conn:
        base = (await store.latest_checkpoint(conn)).size
    procs, per_proc = 5, 60
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _WORKER,
            ledger_dsn,
            str(per_proc),
            str(seed),
            cwd=ROOT_DIR,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for seed in range(procs)
    ]
    outputs = await asyncio.gather(*(c.communicate() for c in children))
    leaves: list[int] = []
    for child, (out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err.decode()
        mine = [int(x) for x in out.split()]
        assert mine == sorted(mine) and len(mine) == per_proc
        leaves += mine
    assert sorted(leaves) == list(range(base, base + procs * per_proc))
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT leaf_index FROM ledger_entries ORDER BY leaf_index")
        assert [r["leaf_index"] for r in rows] == list(range(len(rows)))
        hashes = await _all_hashes(conn)
        head = await store.latest_checkpoint(conn)
        assert head.size == len(hashes) and head.root == root_hash(hashes)
        count = await conn.fetchval("SELECT count(*) FROM ledger_nodes")
        assert count == sum(len(hashes) >> level for level in range(64))


async def test_build_bundle_verifies_offline(pool: asyncpg.Pool, store: LedgerStore) -> None:
    issuer = SigningKey(b"\x22" * 32)
    key_id = key_id_for(bytes(issuer.verify_key))
    tid, salt = uuid.uuid4(), os.urandom(16)
    issued_at = datetime(2024, 6, 1, 9, 30, tzinfo=UTC)
    payload = canonical_payload(tid, 42, "charlie", issued_at, key_id)
    ticket = Ticket(
        ticket_id=tid,
        serial=42,
        user_id="charlie",
        issued_at=issued_at,
        key_id=key_id,
        signature=sign_payload(issuer, payload),
        state=TicketState.ISSUED,
    )
    async with pool.acquire() as conn:
        with pytest.raises(GoldenError) as info:
            await store.build_bundle(conn, ticket, salt)
        assert info.value.reason is Reason.TICKET_NOT_FOUND
        async with conn.transaction():
            appended = await store.append(
                conn, entry_for_ticket(EntryKind.ISSUED, ticket, salt, issued_at)
            )
            await store.append_many(conn, [_entry() for _ in range(3)])
        bundle = await store.build_bundle(conn, ticket, salt)
    assert bundle.leaf_index == appended.leaf_index == bundle.ticket.leaf_index
    roots = TrustRoots(
        issuer_keys={key_id: _b64(bytes(issuer.verify_key))},
        ledger=LedgerTrust(origin=ORIGIN, public_key=_b64(store.public_key)),
    )
    cp = verify_bundle(bundle, roots)
    assert cp.size == bundle.tree_size == appended.tree_size + 3


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


async def test_an_append_already_in_the_log_only_reads_the_head(
    pool: asyncpg.Pool, store: LedgerStore
) -> None:
    """A retried append (its entry is already there) writes nothing: BEGIN, the head, COMMIT."""
    entry = _entry()
    sent: list[str] = []

    def log(record: asyncpg.connection.LoggedQuery) -> None:
        sent.append(record.query)

    async with pool.acquire() as conn:
        async with conn.transaction():
            first = await store.append(conn, entry)
        conn.add_query_logger(log)
        try:
            async with conn.transaction():
                again = await store.append(conn, entry)
        finally:
            conn.remove_query_logger(log)
    assert (again.leaf_index, again.created) == (first.leaf_index, False)
    assert len(sent) == 3, sent
