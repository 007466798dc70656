"""Reliability R7: how fast a saga step resumes after its worker is SIGKILLed (issue 13: 9).

Two worker processes run; on one the step hangs by fault (heartbeating like any running step),
so the sagas whose step landed there are parked mid-step; then that worker is SIGKILLed. The
interrupted activity must be retried on the survivor within the heartbeat timeout plus the first
retry interval. Resume time = start of the retried attempt (from the workflow history) minus the
moment of the kill; the suite prints its p99 as one JSON line, with the p99 of the time until
the saga's next step was scheduled (the retried step's run and a workflow task included). The
target is 3 s; being a timing, it is reported rather than asserted. What is asserted: every
interrupted step was retried because its heartbeat stopped (not after its start_to_close).

    .venv/bin/pytest tests/system/test_worker_kill_recovery.py -s     (GOLDEN_LONG=1: more rounds)
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType, TimeoutType
from temporalio.client import Client, WorkflowHandle

from golden_press.models import Outcome
from tests.helpers.servers import Servers
from tests.helpers.stack import golden_stack
from tests.helpers.waiting import wait_until
from tests.helpers.worker import WorkerProcess
from workflows.issue_ticket import IssueTicketWorkflow

pytestmark = pytest.mark.asyncio(loop_scope="session")

LONG = os.environ.get("GOLDEN_LONG") == "1"
STEPS = ["reserve", "sign", "finalise", "ledger_append", "publish"]
#: What the issue asks for (reported beside the measured figure).
TARGET_S = 3.0


def p99(values: list[float]) -> float:
    """Nearest-rank 99th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


async def resume_delays(
    handle: WorkflowHandle[Any, Any], killed_at: float, detected_by: list[int] | None = None
) -> tuple[list[float], float | None]:
    """Seconds from the kill to the (re)start of each step that was scheduled before it, and to
    the saga's next step (the first command after such a step completed; a workflow task)."""
    history = await handle.fetch_history()
    scheduled_before: set[int] = set()
    resumed: set[int] = set()
    delays = []
    next_step = None
    waiting = False
    for event in history.events:
        at = event.event_time.ToDatetime(tzinfo=UTC).timestamp()
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED and at < killed_at:
            scheduled_before.add(event.event_id)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attrs = event.activity_task_started_event_attributes
            if attrs.scheduled_event_id in scheduled_before and at > killed_at:
                delays.append(at - killed_at)
                resumed.add(event.event_id)
                if attrs.attempt > 1 and detected_by is not None:
                    detected_by.append(attrs.last_failure.timeout_failure_info.timeout_type)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            done = event.activity_task_completed_event_attributes
            waiting = waiting or done.started_event_id in resumed
        elif (
            waiting
            and next_step is None
            and kind
            in (
                EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
                EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
            )
        ):
            next_step = at - killed_at
    return delays, next_step


async def debug(handle: WorkflowHandle[Any, Any]) -> str:
    history = await handle.fetch_history()
    return " | ".join(
        f"{EventType.Name(e.event_type)} {e.event_time.ToDatetime()} "
        f"{e.activity_task_started_event_attributes.attempt}"
        for e in history.events
    )


async def kill_mid_step(
    servers: Servers, session_dir: Path, client: Client, step: str, sagas: int
) -> tuple[list[float], list[float]]:
    """With a doomed worker (its `step` hangs) and a survivor both running, start `sagas`
    issuances; once those whose step ran on the doomed worker are parked there (the others have
    finished on the survivor), SIGKILL it. Both workers run first, so the kill comes well
    inside the step's start_to_close timeout however slow the machine is to start a worker."""
    async with golden_stack(servers, session_dir, client, run_worker=False) as stack:
        doomed = WorkerProcess(stack.settings, session_dir / "logs", GOLDEN_FAULTS=f"{step}:hang")
        survivor = WorkerProcess(stack.settings, session_dir / "logs")
        await asyncio.gather(doomed.start(), survivor.start())
        try:
            handles = [await stack.start_issue(f"r7-{step}-{i}") for i in range(sagas)]

            async def settled() -> bool:
                for h in handles:
                    current = (await h.query(IssueTicketWorkflow.progress)).current_step
                    if current not in (step, "done"):
                        return False
                return True

            await wait_until(settled, 60)
            await asyncio.sleep(1.0)  # a step still at `step` now hangs on the doomed worker
            assert doomed.proc is not None
            killed_at = time.time()
            os.kill(doomed.proc.pid, signal.SIGKILL)
            results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 120)
            assert [r.outcome for r in results] == [Outcome.ISSUED] * sagas
            delays, sagas_on = [], []
            detected_by: list[int] = []
            for h in handles:
                found, moved_on = await resume_delays(h, killed_at, detected_by)
                if not found:
                    continue  # its step had not reached the doomed worker yet
                delays.append(min(found))
                if moved_on is not None:
                    sagas_on.append(moved_on)
            # The dead worker's step was noticed by its missing heartbeat, not by waiting out
            # the step's whole start_to_close timeout.
            assert delays, f"{step}: no step resumed after the kill: {await debug(handles[0])}"
            assert set(detected_by) <= {TimeoutType.TIMEOUT_TYPE_HEARTBEAT}, (
                step,
                [TimeoutType.Name(t) for t in detected_by],  # type: ignore[arg-type]
            )
            return delays, sagas_on
        finally:
            doomed.stop()
            survivor.stop()


async def test_r7_step_resumes_soon_after_a_worker_sigkill(
    servers: Servers, session_dir: Path, client: Client
) -> None:
    rounds = 3 if LONG else 1
    sagas = 5  # the cap: every saga of a fresh stack is issued
    delays: list[float] = []
    next_steps: list[float] = []
    for _ in range(rounds):
        for found, moved_on in await asyncio.gather(
            *(kill_mid_step(servers, session_dir, client, s, sagas) for s in STEPS)
        ):
            delays.extend(found)
            next_steps.extend(moved_on)
    figure: dict[str, Any] = {
        "bench": "worker_kill_recovery",
        "samples": len(delays),
        "p50_s": round(sorted(delays)[len(delays) // 2], 3),
        "p99_s": round(p99(delays), 3),
        "max_s": round(max(delays), 3),
        "next_step_p99_s": round(p99(next_steps), 3) if next_steps else None,
        "target_s": TARGET_S,
        "at": datetime.now().isoformat(timespec="seconds"),
        "run": uuid.uuid4().hex[:6],
    }
    # A figure to report (shared 2-core machine: no timed assertion; R7's check is that every
    # interrupted step was retried because its heartbeat stopped).
    print(json.dumps(figure))
