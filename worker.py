"""The golden-press worker: registers the saga workflows and their activities on one task queue.

Run many of these: the advisory lock in PostgreSQL keeps the cap across all of them.
    python worker.py        (settings from the environment, see golden_press/settings.py)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import asyncpg
from nacl.signing import SigningKey
from nats.aio.client import Client as NATS
from pydantic import ValidationError
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
)
from temporalio.worker import Worker

from activities.faults import Faults
from activities.guard import StepGuard
from activities.issue_ticket import IssuanceActivities
from activities.publish import PublishingActivities
from activities.reconcile import ReconcilerActivities
from activities.redeem_ticket import RedemptionActivities
from activities.revoke_ticket import RevocationActivities
from golden_press.checkpoint import ledger_key_id
from golden_press.errors import EXIT_UNAVAILABLE, EXIT_USAGE, Unreachable
from golden_press.sagas import reconcile_schedule_id, reconcile_workflow_id
from golden_press.settings import Settings, settings_problem
from golden_press.signing import key_id_for
from service.observability import tracing as telemetry
from service.observability.logs import SagaLogInterceptor, configure_logging
from service.ops.metrics import GaugePublisher, metrics_runtime
from service.sagas.client import connect_client
from service.store.db import create_pool
from service.store.key_files import KeyFileError, load_key_file
from service.store.keys import register_keys as register_public_keys
from service.store.ledger import LedgerStore
from service.store.nats_client import connect_nats
from service.store.outbox import OutboxPublisher, ensure_stream
from service.store.tile_files import TilePublisher
from workflows.issue_ticket import IssueTicketWorkflow
from workflows.reconcile import ReconcileReservationsWorkflow
from workflows.redeem_ticket import RedeemTicketWorkflow
from workflows.revoke_ticket import RevokeTicketWorkflow
from workflows.saga import STICKY_TIMEOUT

log = logging.getLogger("golden_press.worker")

WORKFLOWS = [
    IssueTicketWorkflow,
    RedeemTicketWorkflow,
    RevokeTicketWorkflow,
    ReconcileReservationsWorkflow,
]


@dataclass
class Keys:
    """The two private keys a worker signs with."""

    issuer: SigningKey
    ledger: SigningKey


def load_keys(settings: Settings) -> Keys:
    """Load both key files, refusing any that group or others can read."""
    return Keys(
        issuer=load_key_file(settings.signing_key_file),
        ledger=load_key_file(settings.ledger_key_file),
    )


async def register_keys(pool: asyncpg.Pool, keys: Keys, origin: str) -> None:
    """Publish our public keys; a newly rotated key becomes current and retires the previous one."""
    rows = [
        ("issuer", key_id_for(bytes(keys.issuer.verify_key)), bytes(keys.issuer.verify_key), ""),
        (
            "ledger",
            ledger_key_id(origin, bytes(keys.ledger.verify_key)),
            bytes(keys.ledger.verify_key),
            origin,
        ),
    ]
    await register_public_keys(pool, rows)


async def ensure_reconciler_schedule(
    client: Client, task_queue: str, every: timedelta = timedelta(seconds=30)
) -> None:
    """Create the reconciler's Temporal Schedule once; every worker may call this."""
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            ReconcileReservationsWorkflow.run,
            id=reconcile_workflow_id(task_queue),
            task_queue=task_queue,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    try:
        await client.create_schedule(reconcile_schedule_id(task_queue), schedule)
    except ScheduleAlreadyRunningError:
        pass


@asynccontextmanager
async def golden_worker(
    settings: Settings,
    client: Client,
    pool: asyncpg.Pool,
    nc: NATS,
    keys: Keys,
    faults: Faults | None = None,
) -> AsyncIterator[Worker]:
    """Build the activities from their dependencies and run a worker for the context's lifetime."""
    faults = faults or Faults()
    js = nc.jetstream()
    await ensure_stream(js, settings)
    await register_keys(pool, keys, settings.ledger_origin)
    ledger = LedgerStore(keys.ledger, settings.ledger_origin)
    async with pool.acquire() as conn:
        await ledger.ensure_genesis_checkpoint(conn)
    publisher = OutboxPublisher(pool, js, settings)
    issuance = IssuanceActivities(pool, keys.issuer, ledger, settings, faults)
    redemption = RedemptionActivities(
        pool, ledger, settings.ledger_origin, faults, settings.witness_policy()
    )
    publishing = PublishingActivities(publisher, faults)
    reconciler = ReconcilerActivities(pool, ledger, client, publisher)
    revocation = RevocationActivities(pool, ledger)
    worker = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=WORKFLOWS,
        activities=[
            issuance.reserve_slot,
            issuance.sign_ticket,
            issuance.finalise_ticket,
            issuance.append_issued_to_ledger,
            issuance.void_reservation,
            redemption.verify_ticket_signature,
            redemption.verify_ledger_proof,
            redemption.redeem_ticket,
            publishing.publish_events,
            revocation.revoke_ticket,
            reconciler.void_expired_reservations,
            reconciler.publish_pending_events,
        ],
        max_concurrent_activities=50,
        interceptors=[SagaLogInterceptor(), StepGuard()],
        # Input that fails its model fails the workflow at once; otherwise the SDK fails the
        # workflow *task*, which Temporal retries forever (the saga looks stuck, not failed).
        workflow_failure_exception_types=[ValidationError],
        # When a worker dies, its sagas' next workflow tasks wait this long on its sticky queue
        # before any other worker may take them (the SDK default is 10 s).
        sticky_queue_schedule_to_start_timeout=STICKY_TIMEOUT,
    )
    # Signs checkpoints for unsigned appends (set-cap) and publishes tiles when configured.
    tiles = asyncio.create_task(
        TilePublisher(settings.tiles_dir, ledger).run(pool, settings.pg_dsn)
    )
    try:
        async with worker:
            yield worker
    finally:
        tiles.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tiles


async def run(settings: Settings) -> int:
    """Connect everything, run until SIGINT/SIGTERM."""
    try:
        keys = load_keys(settings)
    except KeyFileError as err:
        print(f"golden-press worker: {err}", file=sys.stderr)
        return EXIT_USAGE
    telemetry.setup_tracing("golden-press-worker")
    runtime = metrics_runtime(settings.metrics_port)
    client = await connect_client(settings, runtime)
    pool = await create_pool(settings.pg_dsn, max_size=20, reset_on_release=settings.pg_pool_reset)
    nc = await connect_nats(settings, initial_attempts=None)  # sagas wait; events keep
    stop = asyncio.Event()
    background: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with golden_worker(settings, client, pool, nc, keys, Faults.from_env()):
            await ensure_reconciler_schedule(client, settings.task_queue)
            ready = os.environ.get("GOLDEN_WORKER_READY_FILE")
            if ready:
                await asyncio.to_thread(Path(ready).write_text, str(os.getpid()))
            log.info("worker running on task queue %s", settings.task_queue)
            if runtime is not None:
                gauges = GaugePublisher(pool, runtime.metric_meter, settings.gauges_interval_s)
                background.append(asyncio.create_task(gauges.run(), name="gauges"))
            await stop.wait()
    finally:
        for task in background:
            task.cancel()
        await nc.close()
        await pool.close()
        telemetry.shutdown_tracing()
    return 0


def set_priority(nice: int) -> None:
    """GOLDEN_WORKER_NICE, before any thread starts (Linux sets it per thread; new threads
    inherit it). Without the privilege a negative value needs, the worker runs unchanged."""
    if not nice:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except PermissionError:
        log.warning("GOLDEN_WORKER_NICE=%s not applied: no permission to raise the priority", nice)


def main() -> None:
    """Entry point; os._exit avoids the SDK's exit-time crash hiding our exit code."""
    configure_logging()  # INFO until the settings parse
    try:
        settings = Settings()
    except ValidationError as err:
        log.error("invalid settings: %s", settings_problem(err))
        os._exit(EXIT_USAGE)
    configure_logging(settings.log_level)
    set_priority(settings.worker_nice)
    try:
        code = asyncio.run(run(settings))
    except Unreachable as err:  # started before its database or Temporal: one line (NATS: waits)
        log.error("%s", err)
        code = EXIT_UNAVAILABLE
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
