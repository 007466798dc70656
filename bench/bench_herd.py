"""The launch-moment herd: many IssueTicket calls at once through gRPC; exactly five must win.

    .venv/bin/python -m bench.bench_herd [--requests 10000] [--users 2000] [--concurrency 200]
        [--api-processes N] [--channels C] [--variants stock,untuned] [--skip-baseline]
        [--tracing off,on,sampled]

Starts a private Temporal dev server, then, each on a fresh database:
- idle: 20 sequential IssueTicket through the API with nothing else running (idle saga p50);
- the transport floor: a servicer with the same proto answering the same sold-out status (code,
  message, ErrorInfo) from memory, measured before AND after golden-press (other load on the box
  moves figures between runs);
- baseline: the seed's direct design (bench/baseline.py) behind the same gRPC entry point;
- golden-press: `python worker.py` + `python -m service.api.server` with GOLDEN_API_PROCESSES=N.
The client (this process) sends every user's attempts (requests/users each, shuffled, a fresh
request id per attempt) over C channels (default N: SO_REUSEPORT spreads connections, not calls)
with a bearer token, `--concurrency` in flight. Asserts exactly 5 tickets. Ends with ONE JSON line:
bench, rate, floor_rate, rate_vs_floor, reject_p99_ms, floor_p99_ms, winner_p99_ms,
idle_saga_p50_ms, vs_seed, tickets. Targets: rate_vs_floor >= 0.6, reject p99 <= 2x the floor's,
winners' p99 <= 4x the idle saga p50, >= 2x the seed. GOLDEN_BENCH_PROFILE=FILE records the API
with py-spy (raw format); GOLDEN_BENCH_TIMELINE=1 prints each winner's saga event times, the
refusals' latencies by send time and each process's CPU (on a CPU / waiting for one) in the
herd's first two seconds (100 ms steps).
`--tracing off,on,sampled` runs golden-press once per mode (off: no OTEL_* variables; on: every
call traced and exported over OTLP/gRPC to bench.otlp_sink; sampled: the same with
`parentbased_traceidratio` 0.1); the JSON line then gains `tracing_api_cpu_ratio`, API CPU
seconds per call of each mode over off's (the overhead ratio).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
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
    cpu_wait_seconds,
    finish,
    free_port,
    fresh_database,
    golden_processes,
    machine,
    ms,
    pct,
    print_table,
    process_tree,
    renice,
    rss_mib,
    run_load,
    schedstat_seconds,
    server_latencies,
    start_floor_server,
    status_details,
    temporal_dev,
    tree_cpu_seconds,
    wait_grpc_healthy,
)
from service.api.pb import golden_pb2, golden_pb2_grpc
from service.sagas.client import connect_client
from service.store.config import cap_status, set_cap


@dataclass
class Run:
    """A design's load result plus where its CPU went and its handler-side latencies."""

    name: str
    load: LoadResult
    cpu: dict[str, float] = field(default_factory=dict)
    handler_rejections: list[float] = field(default_factory=list)
    rss_mib: float = float("nan")
    rejection: bytes = b""
    tickets: int = 0
    tracing: str = "off"
    spans: list[str] = field(default_factory=list)

    @property
    def api_cpu_per_call(self) -> float:
        """API CPU seconds per call (the tracing overhead's measure: rates swing under load)."""
        return self.cpu.get("api", float("nan")) / max(1, len(self.load.samples))


def workload(requests: int, users: int, seed: int) -> list[tuple[str, str]]:
    """(user_id, request_id) per attempt: every user the same number of attempts, shuffled."""
    run = uuid.uuid4().hex[:6]
    names = [f"herd-{run}-{i:05d}" for i in range(users)]
    attempts = [names[i % users] for i in range(requests)]
    random.Random(seed).shuffle(attempts)
    return [(u, f"req-{run}-{n:06d}") for n, u in enumerate(attempts)]


async def herd(
    address: str, attempts: list[tuple[str, str]], concurrency: int, channels: int = 1
) -> LoadResult:
    """Fire every attempt over `channels` connections (connected before the clock starts).

    SO_REUSEPORT spreads connections, not calls, over API processes: a herd over one channel
    reaches one process whatever GOLDEN_API_PROCESSES says.
    """
    # A local subchannel pool per channel: otherwise equal channels share one TCP connection.
    opened = [
        grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(channels)
    ]
    try:
        stubs = [golden_pb2_grpc.GoldenPressStub(c) for c in opened]
        for c in opened:
            await c.channel_ready()
        auth = auth_metadata()

        def call(n: int, user: str, request_id: str):  # type: ignore[no-untyped-def]
            stub = stubs[n % len(stubs)]
            return lambda: stub.IssueTicket(
                golden_pb2.IssueTicketRequest(user_id=user, request_id=request_id),
                metadata=auth,
                timeout=60,
            )

        return await run_load([call(n, u, r) for n, (u, r) in enumerate(attempts)], concurrency)
    finally:
        for c in opened:
            await c.close()


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
    tracing: str = "off",
) -> Run:
    """golden-press: worker and API processes on a fresh database."""
    async with (
        traced(tracing) as sink_log,
        golden_processes(
            temporal_address,
            workers=args.workers,
            variant=variant,
            api_processes=args.api_processes,
            api_nice=args.api_nice,
            worker_nice=args.worker_nice,
        ) as stack,
    ):
        before = os.times()
        cpu0 = {c.name: tree_cpu_seconds(c.proc.pid) for c in stack.children}
        waiting = await waiting_parts(stack)
        wait0 = {name: cpu_wait_seconds(pids) for name, pids in waiting.items()}
        sampler = None
        if os.environ.get("GOLDEN_BENCH_TIMELINE"):
            sampler = asyncio.create_task(sample_schedstat(waiting))
        result = await herd(stack.address, attempts, args.concurrency, args.channels)
        if sampler is not None:
            sampler.cancel()
            print_cpu_timeline(await sampler)
        wait = {name: cpu_wait_seconds(pids) - wait0[name] for name, pids in waiting.items()}
        cpu = {"client": _self_cpu(before)}
        for c in stack.children:
            cpu[c.name] = tree_cpu_seconds(c.proc.pid) - cpu0[c.name]
        for child in stack.children:
            child.check()
        if os.environ.get("GOLDEN_BENCH_TIMELINE"):
            await print_timelines(stack)
        api_child = next(c for c in stack.children if c.name == "api")
        rss = rss_mib(api_child.proc.pid)
        rejection = await one_rejection(stack.address)
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
    if tracing != "off":
        name += f" [tracing {tracing}]"
    print(
        "waited for a CPU during the herd (runnable, not running; s; postgres: this database's"
        " sessions, worker's and API's): " + ", ".join(f"{k} {v:.2f}" for k, v in wait.items())
    )
    run = Run(name, result, cpu, handler, rss, rejection, states.get("issued", 0))
    run.tracing = tracing
    run.spans = sink_log
    return run


#: OTEL_* variables of each --tracing mode (the processes read them at start).
TRACING_MODES: dict[str, dict[str, str]] = {
    "off": {},
    "on": {"OTEL_TRACES_SAMPLER": "parentbased_always_on"},
    "sampled": {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
    },
}


@contextlib.asynccontextmanager
async def traced(mode: str) -> AsyncIterator[list[str]]:
    """The OTEL_* environment of a mode for the processes started inside, with an OTLP sink.

    Yields a list that receives the sink's span count line once it stopped.
    """
    spans: list[str] = []
    if mode == "off":
        yield spans
        return
    with tempfile.TemporaryDirectory(prefix="golden-bench-otlp-") as tmp:
        port = free_port()
        variables = {
            **TRACING_MODES[mode],
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
        }
        argv = [sys.executable, "-m", "bench.otlp_sink", str(port)]
        sink = Child.spawn("otlp-sink", argv, dict(os.environ), Path(tmp))
        saved = {k: os.environ.get(k) for k in variables}
        os.environ.update(variables)
        try:
            yield spans
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            sink.stop()
            spans.extend(sink.log_path.read_text(errors="replace").strip().splitlines()[-1:])


def _named(pid: int, name: str) -> bool:
    try:
        return name in Path(f"/proc/{pid}/comm").read_text(errors="replace")
    except OSError:
        return False


async def waiting_parts(stack) -> dict[str, list[int]]:  # type: ignore[no-untyped-def]
    """The processes a winner's saga runs through: the worker(s), the Temporal server, this
    database's PostgreSQL backends (the API and client too, for comparison)."""
    parts = {c.name: process_tree(c.proc.pid) for c in stack.children}
    parts["client"] = [os.getpid()]
    parts["temporal"] = [pid for pid in process_tree(os.getpid()) if _named(pid, "temporal")]
    conn = await asyncpg.connect(stack.settings.pg_dsn)
    try:
        parts["postgres"] = [
            r["pid"]
            for r in await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()"
            )
        ]
    finally:
        await conn.close()
    return parts


async def sample_schedstat(
    parts: dict[str, list[int]], step_s: float = 0.1, until_s: float = 2.0
) -> list[tuple[float, dict[str, tuple[float, float]]]]:
    """(time, {part: (on-CPU s, waiting-for-CPU s)}) every step_s from now until cancelled or
    until_s: the launch second's profile by process (a few /proc reads per step)."""
    t0 = time.perf_counter()
    samples: list[tuple[float, dict[str, tuple[float, float]]]] = []
    try:
        while True:
            now = time.perf_counter() - t0
            samples.append((now, {k: schedstat_seconds(v) for k, v in parts.items()}))
            if now >= until_s:
                return samples
            await asyncio.sleep(step_s - (time.perf_counter() - t0) % step_s)
    except asyncio.CancelledError:
        return samples


def print_cpu_timeline(samples: list[tuple[float, dict[str, tuple[float, float]]]]) -> None:
    """Per step: each part's CPU (ms on a CPU / ms runnable but waiting for one)."""
    if len(samples) < 2:
        return
    names = list(samples[0][1])
    print("CPU by process from the herd's start (ms on a CPU / ms waiting for one, per step):")
    print("  t(s)  " + "  ".join(f"{n:>13}" for n in names))
    for (t, before), (_, after) in itertools.pairwise(samples):
        cells = []
        for n in names:
            run = (after[n][0] - before[n][0]) * 1e3
            wait = (after[n][1] - before[n][1]) * 1e3
            cells.append(f"{run:6.0f}/{wait:<6.0f}")
        print(f"  {t:4.1f}  " + "  ".join(f"{c:>13}" for c in cells))


async def print_timelines(stack) -> None:  # type: ignore[no-untyped-def]
    """Where each winner's saga spent its time (event times from its history)."""
    client = await connect_client(stack.settings)
    conn = await asyncpg.connect(stack.settings.pg_dsn)
    try:
        rows = await conn.fetch("SELECT workflow_id FROM tickets WHERE state = 'issued'")
    finally:
        await conn.close()
    for r in rows:
        history = await client.get_workflow_handle(r["workflow_id"]).fetch_history()
        t0 = history.events[0].event_time.ToDatetime()
        parts = []
        for e in history.events:
            name = str(e.WhichOneof("attributes") or "").replace("_event_attributes", "")
            ms_ = (e.event_time.ToDatetime() - t0).total_seconds() * 1e3
            parts.append(f"{name}@{ms_:.0f}")
        print(r["workflow_id"], " ".join(parts))


async def one_rejection(address: str) -> bytes:
    """The status (code, message, ErrorInfo) a sold-out golden-press returns, for the floor."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = golden_pb2_grpc.GoldenPressStub(channel)
        try:
            await stub.IssueTicket(
                golden_pb2.IssueTicketRequest(user_id=f"floor-{uuid.uuid4().hex[:8]}"),
                metadata=auth_metadata(),
                timeout=30,
            )
        except grpc.aio.AioRpcError as err:
            return status_details(err)
    raise AssertionError("a sold-out golden-press issued a sixth ticket")


async def run_floor(
    args: argparse.Namespace, attempts: list[tuple[str, str]], rejection: bytes
) -> Run:
    """The same herd against a servicer that returns the same rejection from memory."""
    with tempfile.TemporaryDirectory(prefix="golden-bench-") as tmp:
        child, addr = await start_floor_server(Path(tmp), rejection=rejection)
        try:
            before, cpu0 = os.times(), cpu_seconds(child.proc.pid)
            result = await herd(addr, attempts, args.concurrency, args.channels)
            cpu = {"client": _self_cpu(before), "server": cpu_seconds(child.proc.pid) - cpu0}
        finally:
            child.stop()
    return Run("floor: same proto, same rejection from memory", result, cpu)


async def idle_saga_ms(temporal_address: str, runs: int) -> tuple[list[float], bytes]:
    """IssueTicket latencies through the API with nothing else running (cap raised for it),
    and the status a sold-out golden-press returns (cap set back to 5): the floor's rejection."""
    async with golden_processes(temporal_address) as stack:
        # As `admin set-cap` does: the cap's ledger entry, and the NOTIFY the API re-reads on.
        dsn = stack.settings.pg_dsn
        scope = (await cap_status(dsn)).scope
        await set_cap(dsn, runs + 10, scope)
        await asyncio.sleep(0.2)
        out = []
        async with grpc.aio.insecure_channel(stack.address) as channel:
            stub = golden_pb2_grpc.GoldenPressStub(channel)
            for i in range(runs + 5):
                t0 = time.perf_counter()
                await stub.IssueTicket(
                    golden_pb2.IssueTicketRequest(user_id=f"idle-{i}"),
                    metadata=auth_metadata(),
                    timeout=30,
                )
                if i >= 5:  # the first few warm up connections and caches
                    out.append(time.perf_counter() - t0)
        await set_cap(dsn, 5, scope)
        await asyncio.sleep(0.2)
        rejection = await one_rejection(stack.address)
    return out, rejection


def print_refusal_timeline(run: Run, step_s: float = 0.1, until_s: float = 2.0) -> None:
    """Refusal latencies by when they were sent, per `step_s` (the launch moment vs later)."""
    print(f"refusals of {run.name} by send time (s: count, p50 / p99 ms):")
    t = 0.0
    while t < until_s:
        xs = run.load.rejections_sent(t, t + step_s)
        if xs:
            print(f"  {t:.1f}: {len(xs)}, {ms(pct(xs, 50))} / {ms(pct(xs, 99))}")
        t += step_s


def merged(runs: list[Run]) -> Run:
    """The floor measured before and after golden-press, as one run (other load on the box moves
    figures between runs; bracketing the measured run evens that out)."""
    samples = [x for r in runs for x in r.load.samples]
    wall = sum(r.load.wall_s for r in runs)
    cpu: dict[str, float] = {}
    for r in runs:
        for k, v in r.cpu.items():
            cpu[k] = cpu.get(k, 0.0) + v
    return Run(runs[0].name + " (before + after)", LoadResult(samples, wall), cpu)


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
    floors: list[Run] = []
    async with temporal_dev() as env:
        address = env.client.service_client.config.target_host  # type: ignore[attr-defined]
        if args.temporal_nice:
            renice(
                [p for p in process_tree(os.getpid()) if _named(p, "temporal")], args.temporal_nice
            )
        idle, rejection = await idle_saga_ms(address, args.idle_runs)
        floors.append(await run_floor(args, attempts, rejection))
        for variant in args.variants.split(","):
            for mode in args.tracing.split(","):
                attempts = workload(args.requests, args.users, args.seed)
                runs.append(await run_golden(args, attempts, address, variant, mode))
        floors.append(await run_floor(args, attempts, rejection))
    floor = merged(floors)
    for r in runs:  # the floor returns exactly what golden-press returned when sold out
        assert r.rejection == rejection, (r.rejection, rejection)
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
    rows.append(row(floor, base))
    print_table(
        f"herd: {args.requests} IssueTicket from {args.users} users, {args.concurrency} in flight"
        f" -- {machine()}",
        headers,
        rows,
    )
    if os.environ.get("GOLDEN_BENCH_TIMELINE"):
        for r in [*runs, *floors]:
            print_refusal_timeline(r)
    golden = runs[0]
    g = golden.load
    f = floor.load
    figures = {
        "bench": "herd",
        "rate": round(g.rate),
        "floor_rate": round(f.rate),
        "rate_vs_floor": round(g.rate / f.rate, 2),
        "reject_p99_ms": round(pct(g.latencies(ok=False), 99) * 1e3, 1),
        "floor_p99_ms": round(pct(f.latencies(), 99) * 1e3, 1),  # of both floor runs' calls
        "winner_p99_ms": round(pct(g.latencies(ok=True), 99) * 1e3, 1),
        "idle_saga_p50_ms": round(pct(idle, 50) * 1e3, 1),
        "vs_seed": None if base is None else round(g.rate / base.load.rate, 2),
        "tickets": golden.tickets,
    }
    print(
        f"\nAPI processes: {args.api_processes}, nice {args.api_nice}; worker nice"
        f" {args.worker_nice}, Temporal nice {args.temporal_nice}; API RSS after the herd: "
        + ", ".join(f"{r.name} {r.rss_mib:.0f} MiB" for r in runs)
    )
    print(
        "rejection p99 of the calls sent in the first second / after it (the launch moment,"
        " until the winners hold every slot, vs the steady state): "
        + ", ".join(
            f"{r.name} {ms(pct(r.load.rejections_sent(to_s=1.0), 99))}"
            f" / {ms(pct(r.load.rejections_sent(from_s=1.0), 99))}"
            for r in [*runs, *floors]
        )
    )
    print(
        "targets: rate_vs_floor >= 0.6, reject p99 <= 2x floor p99, winner p99 <= 4x idle saga"
        " p50, exactly 5 tickets, >= 2x the seed"
    )
    off = next((r for r in runs if r.tracing == "off"), None)
    if len(args.tracing.split(",")) > 1 and off is not None:
        figures["tracing_api_cpu_ratio"] = {
            r.tracing: round(r.api_cpu_per_call / off.api_cpu_per_call, 2)
            for r in runs
            if r.tracing != "off"
        }
        for r in runs:
            print(
                f"tracing {r.tracing}: API CPU {r.cpu.get('api', 0):.2f} s for "
                f"{len(r.load.samples)} calls ({r.api_cpu_per_call * 1e3:.3f} ms/call); "
                + (r.spans[0] if r.spans else "no sink")
            )
    print(json.dumps(figures))
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
        "--api-processes",
        type=int,
        default=int(os.environ.get("GOLDEN_API_PROCESSES", "1")),
        help="GOLDEN_API_PROCESSES of the API (SO_REUSEPORT processes on one port)",
    )
    parser.add_argument(
        "--channels", type=int, default=0, help="client connections (default: API processes)"
    )
    parser.add_argument(
        "--api-nice",
        type=int,
        default=int(os.environ.get("GOLDEN_API_NICE", "0")),
        help="GOLDEN_API_NICE of the API (CPU priority below worker, Temporal, PostgreSQL)",
    )
    parser.add_argument(
        "--worker-nice",
        type=int,
        default=int(os.environ.get("GOLDEN_WORKER_NICE", "0")),
        help="GOLDEN_WORKER_NICE of the worker (negative: the winners' steps before the herd)",
    )
    parser.add_argument(
        "--temporal-nice",
        type=int,
        default=0,
        help="niceness of the bench's Temporal dev server (with --worker-nice: sagas first)",
    )
    parser.add_argument("--idle-runs", type=int, default=20, help="idle sagas for the p50")
    parser.add_argument(
        "--variants",
        default="stock",
        help=f"comma-separated API variants to run, of {', '.join(API_VARIANTS)}",
    )
    parser.add_argument(
        "--tracing",
        default="off",
        help=f"comma-separated tracing modes to run, of {', '.join(TRACING_MODES)}",
    )
    args = parser.parse_args()
    if not set(args.tracing.split(",")) <= set(TRACING_MODES):
        parser.error(f"--tracing: modes are {', '.join(TRACING_MODES)}")
    args.channels = args.channels or args.api_processes
    finish(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
