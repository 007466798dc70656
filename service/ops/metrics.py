"""The worker's Prometheus endpoint: Temporal SDK metrics, our counters, gauges, process metrics.

One endpoint per worker (GOLDEN_METRICS_PORT), served by the SDK's runtime: its durations in
seconds (Prometheus conventions), the activities' counters (`golden_tickets_issued_total`, ...),
and what this module adds every GOLDEN_GAUGES_INTERVAL_S: the deployment gauges read from
PostgreSQL (service/store/gauges.py) and this process's CPU (a counter), memory and file
descriptors (gauges).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import asyncpg
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry
from temporalio.common import MetricCounter, MetricGaugeFloat, MetricMeter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from service.store.gauges import OpsGauges, read_gauges

log = logging.getLogger("golden_press.metrics")

#: Gauge name -> (help, OpsGauges field). Ages are seconds; absent features report nothing.
GAUGES: Mapping[str, tuple[str, str]] = {
    "golden_outbox_backlog": ("events written but not yet on the stream", "outbox_backlog"),
    "golden_outbox_oldest_age_seconds": (
        "age of the oldest unpublished event (0: none)",
        "outbox_oldest_age_seconds",
    ),
    "golden_outbox_parked": ("events parked after repeated publish failures", "parked_events"),
    "golden_tickets_counted": ("tickets counted against the cap (its scope)", "tickets_counted"),
    "golden_ticket_cap": ("the cap in force", "ticket_cap"),
    "golden_reservations_past_lease": (
        "reserved slots older than their lease (the reconciler should void them)",
        "reservations_past_lease",
    ),
    "golden_checkpoint_age_seconds": (
        "age of the latest signed ledger checkpoint",
        "checkpoint_age_seconds",
    ),
    "golden_witness_cosignature_age_seconds": (
        "age of the latest witness cosignature",
        "witness_cosignature_age_seconds",
    ),
}

#: prometheus_client's process collector samples re-exported through the SDK's meter: CPU
#: seconds as a counter (Prometheus conventions: a `_total` name is a counter), the rest gauges.
PROCESS_CPU = "process_cpu_seconds_total"
PROCESS_SAMPLES = (
    PROCESS_CPU,
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
)


def metrics_runtime(port: int) -> Runtime | None:
    """A runtime serving Prometheus on the port (durations in seconds); None when port <= 0."""
    if port <= 0:
        return None
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(bind_address=f"0.0.0.0:{port}", durations_as_seconds=True)
        )
    )


class GaugePublisher:
    """Reads the gauges and this process's metrics on an interval, sets them on the meter."""

    def __init__(self, pool: asyncpg.Pool, meter: MetricMeter, interval_s: float = 15.0) -> None:
        self._pool = pool
        self._interval_s = interval_s
        self._gauges: dict[str, MetricGaugeFloat] = {
            name: meter.create_gauge_float(name, help_) for name, (help_, _) in GAUGES.items()
        }
        self._process: dict[str, MetricGaugeFloat] = {
            name: meter.create_gauge_float(name, "this process (as prometheus_client reports it)")
            for name in PROCESS_SAMPLES
            if name != PROCESS_CPU
        }
        # The SDK's counters take integers: the counter carries the whole seconds of CPU time
        # (never ahead, less than a second behind), enough for rate() over minutes.
        self._cpu: MetricCounter = meter.create_counter(
            PROCESS_CPU, "CPU time of this process, user and system, in whole seconds", "s"
        )
        self._cpu.add(0)  # the series exists from the start
        self._cpu_counted = 0
        registry = CollectorRegistry(auto_describe=False)
        self._collector = ProcessCollector(registry=registry)
        self._failing = False

    def set_gauges(self, reading: OpsGauges) -> None:
        """Set every gauge that has a value (features not deployed yet report nothing)."""
        for name, (_, field) in GAUGES.items():
            value = getattr(reading, field)
            if value is not None:
                self._gauges[name].set(float(value))

    def set_process(self) -> None:
        """CPU seconds, memory, fds of this process."""
        for family in self._collector.collect():
            for sample in family.samples:
                if sample.name == PROCESS_CPU:
                    whole = int(sample.value)
                    if whole > self._cpu_counted:
                        self._cpu.add(whole - self._cpu_counted)
                        self._cpu_counted = whole
                    continue
                gauge = self._process.get(sample.name)
                if gauge is not None:
                    gauge.set(float(sample.value))

    async def publish_once(self) -> None:
        """One reading; a failed read is logged once until it works again."""
        self.set_process()
        try:
            reading = await read_gauges(self._pool)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if not self._failing:
                log.warning("cannot read gauges: %s", exc)
            self._failing = True
            return
        self._failing = False
        self.set_gauges(reading)

    async def run(self) -> None:
        """Until cancelled."""
        while True:
            await self.publish_once()
            await asyncio.sleep(self._interval_s)
