"""One isolated golden-press per test: own database, stream, subject prefix, task queue, worker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy

from activities.faults import Faults
from golden_press.models import (
    IssueTicketInput,
    IssueTicketResult,
    ProofBundle,
    ReconcileResult,
    RedeemTicketInput,
    RedeemTicketResult,
    request_hash,
)
from golden_press.sagas import issue_workflow_id, redeem_workflow_id
from golden_press.settings import Settings
from service.ops.audit import AuditReport, run_audit
from service.store.db import create_pool
from service.store.key_files import generate_key_file
from service.store.ledger import LedgerStore
from service.store.tickets import row_to_ticket
from tests.helpers.servers import (
    Servers,
    create_database_from_template,
    drop_database,
    dsn_for,
)
from worker import Keys, golden_worker, load_keys
from workflows.issue_ticket import IssueTicketWorkflow
from workflows.reconcile import ReconcileReservationsWorkflow
from workflows.redeem_ticket import RedeemTicketWorkflow


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
