"""Ledger benchmark: append rate, then inclusion/consistency proof latency at N entries.

    .venv/bin/python -m bench.bench_ledger [--entries 1000000] [--queries 1000]
        [--admin-dsn postgresql://postgres@127.0.0.1:5432/postgres] [--keep]

Creates a fresh database `golden_bench_<hex>`, applies the migrations, measures appends (single
and batched, each batch one transaction with one signed checkpoint, exactly as production does),
fills the log to N with the same code path (real leaf and subtree hashes, large batches), then
times store.inclusion_proof / store.consistency_proof (DB round trip included) over random
queries against the full tree and verifies a sample. Targets: >= 2,000 appends/s batched,
proofs < 2 ms p99 at 1e6.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime

import asyncpg
from nacl.signing import SigningKey

from golden_press.ledger_entry import EntryKind, LedgerEntry, user_commitment
from golden_press.merkle import leaf_hash, verify_consistency, verify_inclusion
from service.store.db import apply_migrations
from service.store.ledger import LedgerStore

ORIGIN = "golden-press.bench/ledger"


def make_entries(n: int, serial0: int) -> list[LedgerEntry]:
    """Realistic `issued` entries (fresh ticket ids, salted commitments)."""
    now = datetime.now(UTC)
    return [
        LedgerEntry(
            kind=EntryKind.ISSUED,
            ticket_id=uuid.uuid4(),
            serial=serial0 + i,
            key_id="0123456789abcdef",
            signature_digest=os.urandom(32).hex(),
            user_commitment=user_commitment(os.urandom(16), f"user-{serial0 + i}"),
            at=now,
        )
        for i in range(n)
    ]


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def append_rate(
    conn: asyncpg.Connection, store: LedgerStore, batch: int, total: int, serial0: int
) -> float:
    """Entries per second appending `total` entries in transactions of `batch`."""
    entries = make_entries(total, serial0)
    start = time.perf_counter()
    for i in range(0, total, batch):
        async with conn.transaction():
            await store.append_many(conn, entries[i : i + batch])
    return total / (time.perf_counter() - start)


async def run(args: argparse.Namespace) -> int:
    name = f"golden_bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(args.admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = args.admin_dsn.rsplit("/", 1)[0] + "/" + name
    conn = await asyncpg.connect(dsn)
    rows: list[tuple[str, str]] = []
    try:
        await apply_migrations(conn)
        store = LedgerStore(SigningKey.generate(), ORIGIN)
        serial = 1

        for batch, total in [(1, 500), (100, 5_000), (1_000, 20_000)]:
            rate = await append_rate(conn, store, batch, total, serial)
            serial += total
            rows.append((f"append, batch {batch} ({total} entries)", f"{rate:,.0f} /s"))
            print(f"  {rows[-1][0]}: {rows[-1][1]}", flush=True)

        target = args.entries
        fill_start = time.perf_counter()
        while serial - 1 < target:
            chunk = min(args.fill_batch, target - (serial - 1))
            async with conn.transaction():
                await store.append_many(conn, make_entries(chunk, serial))
            serial += chunk
            if (serial - 1) % 100_000 < args.fill_batch:
                print(f"  filled {serial - 1:,}", flush=True)
        fill_s = time.perf_counter() - fill_start
        head = await store.latest_checkpoint(conn)
        assert head.size == target, (head.size, target)
        filled = target - 25_500
        rows.append(
            (
                f"fill to {target:,} (batch {args.fill_batch})",
                f"{fill_s:.1f} s, {filled / fill_s if fill_s else 0:,.0f} /s",
            )
        )
        await conn.execute("ANALYZE")

        rng = random.Random(42)
        n = head.size
        for _ in range(200):  # warm the index pages and asyncpg's prepared statements
            await store.inclusion_proof(conn, rng.randrange(n), n)
            await store.consistency_proof(conn, rng.randrange(1, n), n)
        base: list[float] = []
        for _ in range(args.queries):
            t0 = time.perf_counter()
            await conn.fetchval("SELECT 1")
            base.append((time.perf_counter() - t0) * 1000)
        gc.disable()
        incl: list[float] = []
        cons: list[float] = []
        checked = 0
        for q in range(args.queries):
            index = rng.randrange(n)
            t0 = time.perf_counter()
            proof = await store.inclusion_proof(conn, index, n)
            incl.append((time.perf_counter() - t0) * 1000)
            size1 = rng.randrange(1, n)
            t0 = time.perf_counter()
            cproof = await store.consistency_proof(conn, size1, n)
            cons.append((time.perf_counter() - t0) * 1000)
            if q % 50 == 0:
                verify_inclusion(
                    leaf_hash(await store.entry(conn, index)), index, n, proof, head.root
                )
                verify_consistency(size1, n, await store.root_at(conn, size1), head.root, cproof)
                checked += 1
        gc.enable()
        series = (
            ("inclusion proof", incl),
            ("consistency proof", cons),
            ("baseline round trip (SELECT 1)", base),
        )
        for label, values in series:
            rows.append(
                (
                    f"{label} at {n:,} ({len(values)} queries)",
                    f"p50 {statistics.median(values):.3f} ms, p99 {pct(values, 99):.3f} ms, "
                    f"max {max(values):.3f} ms",
                )
            )
        rows.append(("proofs re-verified (sample)", f"{checked * 2} ok"))
    finally:
        await conn.close()
        if not args.keep:
            admin = await asyncpg.connect(args.admin_dsn)
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()

    width = max(len(k) for k, _ in rows)
    print()
    print(f"{'measure'.ljust(width)}  result")
    print(f"{'-' * width}  {'-' * 50}")
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--fill-batch", type=int, default=10_000)
    parser.add_argument(
        "--admin-dsn",
        default=os.environ.get(
            "GOLDEN_BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    if args.entries < 25_501:
        parser.error("--entries must be > 25,500 (the append-rate phase writes that many)")
    code = asyncio.run(run(args))
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
