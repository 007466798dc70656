"""The launch-moment herd: many IssueTicket calls at once through gRPC; exactly five must win.

    .venv/bin/python -m bench.bench_herd [--requests 10000] [--users 2000] [--concurrency 200]

Starts a private Temporal dev server, then for each design a fresh database and its servers:
- baseline: the seed's direct design (bench/baseline.py) behind the same gRPC entry point;
- golden-press: `python worker.py` + `python -m service.api.server` (admission, then the saga).
The client (this process) sends every user's attempts (requests/users each, shuffled, a fresh
request id per attempt) over one grpc.aio channel with a bearer token, `--concurrency` in flight.
Asserts exactly 5 tickets in both databases. Targets: rate >= 0.5x baseline, p99 rejection < 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc

from bench.common import (
    API_VARIANTS,
    BENCH_TOKEN,
    Child,
    LoadResult,
    auth_metadata,
    cpu_seconds,
    finish,
    fresh_database,
    golden_processes,
    machine,
    ms,
    pct,
    print_table,
    run_load,
    server_latencies,
    temporal_dev,
    wait_grpc_healthy,
)
from service.api.pb import golden_pb2, golden_pb2_grpc
from service.devstack.servers import free_port


@dataclass
class Run:
    """A design's load result plus where its CPU went and its handler-side latencies."""

    name: str
    load: LoadResult
    cpu: dict[str, float] = field(default_factory=dict)
    handler_rejections: list[float] = field(default_factory=list)


def workload(requests: int, users: int, seed: int) -> list[tuple[str, str]]:
    """(user_id, request_id) per attempt: every user the same number of attempts, shuffled."""
    run = uuid.uuid4().hex[:6]
    names = [f"herd-{run}-{i:05d}" for i in range(users)]
    attempts = [names[i % users] for i in range(requests)]
    random.Random(seed).shuffle(attempts)
    return [(u, f"req-{run}-{n:06d}") for n, u in enumerate(attempts)]


async def herd(address: str, attempts: list[tuple[str, str]], concurrency: int) -> LoadResult:
    """Fire every attempt through a fresh channel (connected and warmed before the clock starts)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = golden_pb2_grpc.GoldenPressStub(channel)
        await channel.channel_ready()
        auth = auth_metadata()

        def call(user: str, request_id: str):  # type: ignore[no-untyped-def]
            return lambda: stub.IssueTicket(
                golden_pb2.IssueTicketRequest(user_id=user, request_id=request_id),
                metadata=auth,
                timeout=60,
            )

        return await run_load([call(u, r) for u, r in attempts], concurrency)


async def run_baseline(args: argparse.Namespace, attempts: list[tuple[str, str]]) -> Run:
    """The seed's transaction per request behind gRPC, on its own fresh database."""
    with tempfile.TemporaryDirectory(prefix="golden-bench-") as tmp:
        tokens = Path(tmp) / "tokens"
        tokens.write_text(BENCH_TOKEN + "\n")
        async with fresh_database("golden_bench_seed", migrate=False) as dsn:
            addr = f"127.0.0.1:{free_port()}"
            argv = [sys.executable, "-m", "bench.baseline", "serve"]
            argv += ["--dsn", dsn, "--addr", addr, "--tokens-file", str(tokens)]
            child = Child.spawn("baseline", argv, dict(os.environ), Path(tmp))
            try:
                await wait_grpc_healthy(addr, child)
                cpu0 = (os.times(), cpu_seconds(child.proc.pid))
                result = await herd(addr, attempts, args.concurrency)
                cpu = {
                    "client": _self_cpu(cpu0[0]),
                    "server": cpu_seconds(child.proc.pid) - cpu0[1],
                }
                child.check()
            finally:
                child.stop()
            conn = await asyncpg.connect(dsn)
            try:
                tickets = await conn.fetchval("SELECT count(*) FROM golden_tickets")
            finally:
                await conn.close()
    wins = result.outcomes()["ok"]
    assert tickets == 5 and wins == 5, f"baseline: {tickets} rows, {wins} wins (want 5)"
    return Run("seed (tx per request)", result, cpu)


def _self_cpu(before: os.times_result) -> float:
    now = os.times()
    return now.user - before.user + now.system - before.system


async def run_golden(
    args: argparse.Namespace,
    attempts: list[tuple[str, str]],
    temporal_address: str,
    variant: str,
) -> Run:
    """golden-press: worker and API processes on a fresh database."""
    async with golden_processes(temporal_address, workers=args.workers, variant=variant) as stack:
        before = os.times()
        cpu0 = {c.name: cpu_seconds(c.proc.pid) for c in stack.children}
        result = await herd(stack.address, attempts, args.concurrency)
        cpu = {"client": _self_cpu(before)}
        for c in stack.children:
            cpu[c.name] = cpu_seconds(c.proc.pid) - cpu0[c.name]
        for child in stack.children:
            child.check()
        api_log = next(c.log_path for c in stack.children if c.name == "api")
        handler = [t for code, t in server_latencies(api_log, "IssueTicket") if code != "OK"]
        conn = await asyncpg.connect(stack.settings.pg_dsn)
        try:
            states = dict(
                await conn.fetch("SELECT state, count(*) FROM tickets GROUP BY state")  # type: ignore[arg-type]
            )
        finally:
            await conn.close()
    wins = result.outcomes()["ok"]
    assert states.get("issued", 0) == 5 and wins == 5, f"golden: {states}, {wins} wins (want 5)"
    assert set(states) <= {"issued", "voided"}, states
    name = "golden-press" if variant == "stock" else f"golden-press ({variant})"
    return Run(name, result, cpu, handler)


def row(run: Run, base: Run | None) -> list[object]:
    """One line of the table."""
    r = run.load
    rejections = r.latencies(ok=False)
    wins = r.latencies(ok=True)
    return [
        run.name,
        len(r.samples),
        f"{r.wall_s:.2f}",
        f"{r.rate:.0f}",
        "1.00x" if base is None else f"{r.rate / base.load.rate:.2f}x",
        ms(pct(rejections, 50)),
        ms(pct(rejections, 99)),
        ms(max(rejections, default=float("nan"))),
        ms(pct(run.handler_rejections, 50)),
        ms(pct(run.handler_rejections, 99)),
        ms(pct(wins, 50)),
        ms(pct(wins, 99)),
        " / ".join(f"{k} {v:.1f}" for k, v in run.cpu.items()),
        ", ".join(f"{k} {v}" for k, v in sorted(r.outcomes().items())),
    ]


async def main_async(args: argparse.Namespace) -> int:
    attempts = workload(args.requests, args.users, args.seed)
    base = None
    if not args.skip_baseline:
        base = await run_baseline(args, attempts)
    runs: list[Run] = []
    async with temporal_dev() as env:
        address = env.client.service_client.config.target_host  # type: ignore[attr-defined]
        for variant in args.variants.split(","):
            attempts = workload(args.requests, args.users, args.seed)
            runs.append(await run_golden(args, attempts, address, variant))
    headers = [
        "design",
        "requests",
        "wall s",
        "req/s",
        "vs seed",
        "reject p50 ms",
        "reject p99 ms",
        "reject max ms",
        "handler reject p50 ms",
        "handler reject p99 ms",
        "win p50 ms",
        "win p99 ms",
        "CPU s",
        "outcomes",
    ]
    rows = [row(base, None)] if base else []
    rows += [row(r, base) for r in runs]
    print_table(
        f"herd: {args.requests} IssueTicket from {args.users} users, {args.concurrency} in flight"
        f" -- {machine()}",
        headers,
        rows,
    )
    golden = runs[0].load
    ok = pct(golden.latencies(ok=False), 99) < 0.050
    if base is not None:
        ok = ok and golden.rate >= 0.5 * base.load.rate
    print(f"\ntargets (rate >= 0.5x seed, p99 rejection < 50 ms): {'met' if ok else 'NOT met'}")
    return 0


def main() -> None:
    """Parse options, run, leave with os._exit."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument(
        "--variants",
        default="stock",
        help=f"comma-separated API variants to run, of {', '.join(API_VARIANTS)}",
    )
    args = parser.parse_args()
    finish(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
