"""Saga latency: one issuance end to end, sequentially, vs Temporal's floor and the seed's.

    .venv/bin/python -m bench.bench_saga [--runs 200] [--warmup 10]

Sequential calls (no contention): a private Temporal dev server, golden-press as it is deployed
(`python worker.py` and `python -m service.api.server` processes on a fresh database, the cap
raised so no run meets CapReached), and in this process a worker running the floor: a sandboxed
workflow with five no-op activities (pydantic in/out, same timeouts), i.e. what Temporal costs
for the saga's shape. Rows, interleaved run by run so drift hits every row alike:
- issuance saga via the Temporal client (start IssueTicketWorkflow, wait for the result);
- issuance via the gRPC API (admission + saga);
- the floor workflow; the seed's transaction (bench/baseline.py) on its own database.
Target: the saga's p50 <= 1.5x the floor's.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity, workflow

# The sandbox re-runs this module for FloorWorkflow: plain string paths, heavy imports passed
# through (as workflows/ does for its activity modules).

with workflow.unsafe.imports_passed_through():
    import asyncpg
    import grpc
    from nacl.signing import SigningKey
    from temporalio.client import Client
    from temporalio.worker import Worker

    from bench.baseline import create_schema
    from bench.baseline import issue as baseline_issue
    from bench.common import (
        auth_metadata,
        finish,
        fresh_database,
        golden_processes,
        machine,
        ms,
        pct,
        print_table,
        temporal_dev,
    )
    from golden_press.models import IssueTicketInput, IssueTicketResult, Outcome, request_hash
    from golden_press.sagas import ISSUE_WORKFLOW, issue_workflow_id
    from service.api.pb import golden_pb2, golden_pb2_grpc
    from service.store.config import set_cap


class Step(BaseModel):
    """Input and output of a floor activity (the saga's activities also take one model)."""

    ticket_id: uuid.UUID
    step: int


@activity.defn(name="floor_noop")
async def floor_noop(step: Step) -> Step:
    """Does nothing: the floor measures Temporal's cost only."""
    return step


@workflow.defn
class FloorWorkflow:
    """Five sequential no-op activities: the issuance saga's shape without its work."""

    @workflow.run
    async def run(self, step: Step) -> Step:
        """reserve, sign, finalise, ledger_append, publish -- as no-ops."""
        for i in range(5):
            step = await workflow.execute_activity(
                floor_noop,
                Step(ticket_id=step.ticket_id, step=i),
                start_to_close_timeout=timedelta(seconds=10),
            )
        return step


async def main_async(args: argparse.Namespace) -> int:
    samples: dict[str, list[float]] = {}
    async with temporal_dev() as env:
        client: Client = env.client  # type: ignore[attr-defined]
        address = client.service_client.config.target_host
        floor_queue = f"floor-{uuid.uuid4().hex[:8]}"
        floor_worker = Worker(
            client,
            task_queue=floor_queue,
            workflows=[FloorWorkflow],
            activities=[floor_noop],
            max_concurrent_activities=50,
        )
        async with (
            golden_processes(address) as stack,
            floor_worker,
            fresh_database("golden_bench_seed", migrate=False) as seed_dsn,
        ):
            # As an operator does (`admin set-cap`): the cap's ledger entry, and the NOTIFY on
            # which the API re-reads its snapshot.
            await set_cap(stack.settings.pg_dsn, 1_000_000, "live")
            await create_schema(seed_dsn)
            seed_pool = await asyncpg.create_pool(seed_dsn, min_size=2, max_size=20)
            channel = grpc.aio.insecure_channel(stack.address)
            stub = golden_pb2_grpc.GoldenPressStub(channel)
            try:
                samples = await measure(
                    args,
                    client,
                    stack.settings.task_queue,
                    floor_queue,
                    stub,
                    seed_pool,
                    SigningKey.generate(),
                )
            finally:
                await channel.close()
                await seed_pool.close()
    floor = pct(samples["floor"], 50)
    names = {
        "saga": "issuance saga (Temporal client)",
        "api": "IssueTicket via gRPC API (admission + saga)",
        "floor": "floor: 5 no-op activities",
        "seed": "seed transaction (lock, count, insert, sign)",
    }
    rows = [
        [
            names[k],
            len(v),
            ms(pct(v, 50)),
            ms(pct(v, 90)),
            ms(pct(v, 99)),
            ms(max(v)),
            f"{pct(v, 50) / floor:.2f}x",
        ]
        for k, v in samples.items()
    ]
    print_table(
        f"saga latency: {args.runs} sequential runs each, interleaved -- {machine()}",
        ["path", "runs", "p50 ms", "p90 ms", "p99 ms", "max ms", "p50 vs floor"],
        rows,
    )
    met = pct(samples["saga"], 50) <= 1.5 * floor
    print(f"\ntarget (saga p50 <= 1.5x floor p50): {'met' if met else 'NOT met'}")
    return 0


async def measure(
    args: argparse.Namespace,
    client: Client,
    task_queue: str,
    floor_queue: str,
    stub: golden_pb2_grpc.GoldenPressStub,
    seed_pool: asyncpg.Pool,
    seed_key: SigningKey,
) -> dict[str, list[float]]:
    """Run every path once per round, `warmup` rounds unrecorded, then `runs` recorded."""
    run = uuid.uuid4().hex[:6]

    async def saga(n: int) -> None:
        user, request_id = f"saga-{run}-{n}", f"req-saga-{run}-{n}"
        result = await client.execute_workflow(
            ISSUE_WORKFLOW,
            IssueTicketInput(user_id=user, request_id=request_id, request_hash=request_hash(user)),
            id=issue_workflow_id(request_id),
            task_queue=task_queue,
            result_type=IssueTicketResult,
        )
        assert result.outcome is Outcome.ISSUED, result

    async def api(n: int) -> None:
        resp = await stub.IssueTicket(
            golden_pb2.IssueTicketRequest(user_id=f"api-{run}-{n}"),
            metadata=auth_metadata(),
            timeout=30,
        )
        assert resp.ticket.signature

    async def floor(n: int) -> None:
        await client.execute_workflow(
            FloorWorkflow.run,
            Step(ticket_id=uuid.uuid4(), step=0),
            id=f"floor-{run}-{n}",
            task_queue=floor_queue,
        )

    async def seed(n: int) -> None:
        # Redeem each one at once so the seed's cap of five never refuses.
        t = await baseline_issue(seed_pool, seed_key, f"seed-{run}-{n}", f"req-seed-{n}")
        await seed_pool.execute(
            "UPDATE golden_tickets SET redeemed = true WHERE ticket_id = $1", t.ticket_id
        )

    paths: dict[str, Callable[[int], Awaitable[None]]] = {
        "saga": saga,
        "api": api,
        "floor": floor,
        "seed": seed,
    }
    out: dict[str, list[float]] = {k: [] for k in paths}
    for n in range(args.warmup + args.runs):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            await fn(n)
            if n >= args.warmup:
                out[name].append(time.perf_counter() - t0)
    return out


def main() -> None:
    """Parse options, run, leave with os._exit."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    finish(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
