"""Worker metrics on a Prometheus endpoint, JSON logs with ids and never key material."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from pathlib import Path

from temporalio.client import Client

from golden_press.models import Outcome
from service.devstack.servers import free_port
from tests.helpers.servers import Servers
from tests.helpers.stack import golden_stack
from tests.helpers.worker import WorkerProcess


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


async def test_worker_metrics_and_logs(servers: Servers, session_dir: Path, client: Client) -> None:
    port = free_port()
    async with golden_stack(
        servers, session_dir, client, run_worker=False, metrics_port=port
    ) as stack:
        worker = WorkerProcess(stack.settings, session_dir / "logs")
        await worker.start()
        try:
            assert (await stack.issue("observed")).outcome == Outcome.ISSUED
            assert (await stack.issue("observed")).outcome == Outcome.REJECTED
            text = await asyncio.to_thread(scrape, port)
        finally:
            worker.stop()
        # Temporal SDK metrics and our own domain counters share the endpoint.
        assert "temporal_activity_execution_latency" in text
        assert "golden_tickets_issued_total" in text
        assert re.search(r'golden_issuance_rejected_total\{[^}]*reason="OnePerUser"', text)

        log_text = worker.log_path.read_text()
        lines = [json.loads(line) for line in log_text.splitlines() if line.startswith("{")]
        assert lines, log_text
        issued = [line for line in lines if "issued at leaf" in line["msg"]]
        assert len(issued) == 1
        # The activity logger's context names the workflow and activity of the line.
        assert "issue-" in issued[0]["temporal_activity"]
        for key_file in (stack.settings.signing_key_file, stack.settings.ledger_key_file):
            assert key_file.read_text().strip() not in log_text
