"""Worker and API metrics on their Prometheus endpoints (SDK, counters, gauges, process), JSON
logs with the saga's ids as top-level keys and never key material."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import grpc
from temporalio.client import Client

from golden_press.models import Outcome
from service.api.pb import golden_pb2, golden_pb2_grpc
from service.devstack.servers import free_port
from service.ops.metrics import GAUGES, PROCESS_SAMPLES
from service.store.cosignatures import latest_cosigned_size
from service.store.gauges import read_gauges
from tests.helpers.api import served_api
from tests.helpers.metrics import families, sample_values, scrape
from tests.helpers.poison import poison_events
from tests.helpers.servers import Servers
from tests.helpers.stack import Stack, golden_stack
from tests.helpers.waiting import wait_until
from tests.helpers.witness import WITNESS_NAME, stack_with_witness
from tests.helpers.worker import WorkerProcess, start_api_process, stop_process


def sample(text: str, name: str) -> float | None:
    """The value of an unlabelled-by-us metric (the SDK adds service_name) in a scrape."""
    found = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    return float(found.group(1)) if found else None


async def scrape_until(port: int, name: str, value: float, timeout: float = 20.0) -> str:
    """Scrape until a gauge shows the value (the worker re-reads gauges on an interval)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        text = await asyncio.to_thread(scrape, port)
        if sample(text, name) == value or loop.time() > deadline:
            return text
        await asyncio.sleep(0.2)


async def test_worker_metrics_and_logs(servers: Servers, session_dir: Path, client: Client) -> None:
    port = free_port()
    async with golden_stack(
        servers, session_dir, client, run_worker=False, metrics_port=port
    ) as stack:
        worker = WorkerProcess(stack.settings, session_dir / "logs", GOLDEN_GAUGES_INTERVAL_S="0.2")
        await worker.start()
        try:
            issued_result = await stack.issue("observed", "observed-1")
            assert issued_result.outcome == Outcome.ISSUED
            assert (await stack.issue("observed")).outcome == Outcome.REJECTED
            await scrape_until(port, "golden_tickets_counted", 1.0)
            # The publish step may still be sending the issued event: wait for the drained outbox.
            text = await scrape_until(port, "golden_outbox_backlog", 0.0)
            reading = await read_gauges(stack.pool)
        finally:
            worker.stop()
        # Temporal SDK metrics and our own domain counters share the endpoint.
        # SDK durations in seconds (Prometheus conventions), not milliseconds.
        # (in milliseconds the buckets would be 50, 100, 500; in seconds they are fractions).
        assert re.search(r'temporal_activity_execution_latency_bucket\{[^}]*le="0\.05"\}', text)
        assert "golden_tickets_issued_total" in text
        assert re.search(r'golden_issuance_rejected_total\{[^}]*reason="OnePerUser"', text)
        # Every gauge of the deployment this schema has, with the value PostgreSQL gives.
        assert sample(text, "golden_tickets_counted") == 1
        assert sample(text, "golden_ticket_cap") == 5
        assert sample(text, "golden_outbox_backlog") == 0
        assert sample(text, "golden_outbox_oldest_age_seconds") == 0
        assert sample(text, "golden_reservations_past_lease") == 0
        checkpoint_age = sample(text, "golden_checkpoint_age_seconds")
        assert checkpoint_age is not None and 0 <= checkpoint_age < 300
        for name, (_help, field) in GAUGES.items():
            if getattr(reading, field) is not None:
                assert sample(text, name) is not None, name
        # This process's own metrics.
        for name in PROCESS_SAMPLES:
            assert sample(text, name) is not None, name
        assert "# TYPE process_cpu_seconds_total counter" in text
        resident = sample(text, "process_resident_memory_bytes")
        assert resident is not None and resident > 10e6

        log_text = worker.log_path.read_text()
        lines = [json.loads(line) for line in log_text.splitlines() if line.startswith("{")]
        assert lines, log_text
        issued = [line for line in lines if "issued at leaf" in line["msg"]]
        assert len(issued) == 1
        # The saga's ids are top-level keys (what operations.md tells operators to filter on).
        line = issued[0]
        assert line["workflow_id"] == "issue-observed-1"
        assert line["request_id"] == "observed-1"
        assert line["ticket_id"] == str(issued_result.ticket_id)
        assert line["step"] == "append_issued_to_ledger"
        for key_file in (stack.settings.signing_key_file, stack.settings.ledger_key_file):
            assert key_file.read_text().strip() not in log_text


async def test_scrape_shows_parked_events_and_the_witness_cosignature_age(
    servers: Servers, session_dir: Path, client: Client
) -> None:
    """The two gauges a calm deployment leaves at nothing, with real data: an event NATS refuses
    for good is parked by the publish step (golden_outbox_parked 1, the backlog stays 0), and a
    real witness cosigns the checkpoint (golden_witness_cosignature_age_seconds, a few seconds)."""
    port = free_port()
    async with stack_with_witness(
        servers, session_dir, client, "1", run_worker=False, metrics_port=port
    ) as (stack, witness):
        witness.start()
        worker = WorkerProcess(stack.settings, session_dir / "logs", GOLDEN_GAUGES_INTERVAL_S="0.2")
        await worker.start()
        try:
            await poison_events(stack, "issued")
            async with served_api(stack) as api:  # its witness submitter collects cosignatures
                ticket = (await api.issue("parked-holder")).ticket

                async def cosigned() -> bool:
                    size = await latest_cosigned_size(stack.pool, WITNESS_NAME)
                    return size is not None and size > ticket.leaf_index

                await wait_until(cosigned)
            reading = await read_gauges(stack.pool)
            text = await scrape_until(port, "golden_outbox_parked", 1.0)
            if sample(text, "golden_witness_cosignature_age_seconds") is None:
                await asyncio.sleep(0.5)  # one more gauge interval: read after the cosignature
                text = await asyncio.to_thread(scrape, port)
        finally:
            worker.stop()
    assert reading.parked_events == 1 and reading.outbox_backlog == 0
    assert sample(text, "golden_outbox_parked") == 1
    assert sample(text, "golden_outbox_backlog") == 0  # parked events are not a backlog
    assert reading.witness_cosignature_age_seconds is not None
    age = sample(text, "golden_witness_cosignature_age_seconds")
    assert age is not None and 0 <= age < 60


async def test_api_metrics_endpoint(stack: Stack, tmp_path: Path) -> None:
    """`python -m service.api.server` with GOLDEN_METRICS_PORT serves prometheus_client's
    endpoint: each call counted by method and code, its latency histogram, process metrics."""
    metrics_port = free_port()
    proc, address, _ = await start_api_process(
        stack.settings, tmp_path / "api.log", GOLDEN_METRICS_PORT=str(metrics_port)
    )
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = golden_pb2_grpc.GoldenPressStub(channel)
            await stub.ListTickets(golden_pb2.ListTicketsRequest(), timeout=10)
            await stub.ListTickets(golden_pb2.ListTicketsRequest(), timeout=10)
        text = await asyncio.to_thread(scrape, metrics_port)
    finally:
        stop_process(proc)
    by_name = families(text)

    # Two calls of the method, counted under its status code.
    assert by_name["golden_rpc"].type == "counter"
    assert sample_values(
        by_name, "golden_rpc", "golden_rpc_total", method="ListTickets", code="OK"
    ) == {"": 2}
    # Their latency: a histogram in seconds, every bucket present, +Inf holding both calls.
    assert by_name["golden_rpc_seconds"].type == "histogram"
    ok = {"method": "ListTickets", "outcome": "ok"}
    buckets = sample_values(by_name, "golden_rpc_seconds", "golden_rpc_seconds_bucket", **ok)
    assert list(buckets) == [
        "0.002", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0",
        "10.0", "+Inf",
    ], buckets  # fmt: skip
    assert buckets["+Inf"] == 2
    assert sample_values(by_name, "golden_rpc_seconds", "golden_rpc_seconds_count", **ok) == {"": 2}
    # The process's own metrics; CPU seconds are a counter (a `_total` name is one).
    assert by_name["process_resident_memory_bytes"].samples[0].value > 10e6
    assert by_name["process_cpu_seconds"].type == "counter"
    assert by_name["process_cpu_seconds"].samples[0].name == "process_cpu_seconds_total"
    assert by_name["process_cpu_seconds"].samples[0].value > 0
