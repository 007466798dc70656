"""Winners first (issue 15): GOLDEN_WORKER_NICE gives every thread of the worker its priority.

Under a herd the API and its clients keep the cores busy; a worker at a lower niceness runs the
winners' saga steps as soon as they are runnable. Linux sets niceness per thread, so the worker
sets it before any thread starts (the SDK's runtime, the event loop's executors): asserted on
every thread of a running worker. Speed is shown by bench/bench_herd.py --worker-nice.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from temporalio.client import Client

from golden_press.models import Outcome
from tests.helpers.servers import Servers
from tests.helpers.stack import golden_stack
from tests.helpers.worker import WorkerProcess

pytestmark = pytest.mark.asyncio(loop_scope="session")


def thread_niceness(pid: int) -> set[int]:
    """The niceness of every thread of a process (/proc/<pid>/task/<tid>/stat, field 19)."""
    values = set()
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        values.add(int(stat.read_text().rsplit(")", 1)[1].split()[16]))
    return values


@pytest.mark.skipif(os.geteuid() != 0, reason="a negative niceness needs CAP_SYS_NICE")
async def test_every_worker_thread_runs_at_the_worker_niceness(
    servers: Servers, session_dir: Path, client: Client
) -> None:
    async with golden_stack(servers, session_dir, client, run_worker=False) as stack:
        worker = WorkerProcess(stack.settings, session_dir / "logs", GOLDEN_WORKER_NICE="-3")
        await worker.start()
        try:
            assert worker.proc is not None
            result = await stack.issue("nice-user")  # the worker's threads all started
            assert result.outcome == Outcome.ISSUED
            assert thread_niceness(worker.proc.pid) == {-3}
        finally:
            worker.stop()
