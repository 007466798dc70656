"""The worker's process metrics, re-exported through the Temporal SDK's Prometheus endpoint, keep
Prometheus' types: `process_cpu_seconds_total` is a counter (a `_total` name is one), the rest
are gauges."""

from __future__ import annotations

from typing import Any, cast

import asyncpg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from service.devstack.servers import free_port
from service.ops.metrics import PROCESS_SAMPLES, GaugePublisher, metrics_runtime
from tests.helpers.metrics import families, scrape


class FakeProcess:
    """Stands in for prometheus_client's ProcessCollector: these CPU seconds, 50 MB resident."""

    def __init__(self) -> None:
        self.cpu = 0.0

    def collect(self) -> list[Any]:
        cpu = CounterMetricFamily("process_cpu_seconds", "cpu", value=self.cpu)
        rss = GaugeMetricFamily("process_resident_memory_bytes", "rss", value=50e6)
        return [cpu, rss]


def test_cpu_seconds_is_a_counter_and_the_rest_are_gauges() -> None:
    port = free_port()
    runtime = metrics_runtime(port)
    assert runtime is not None
    publisher = GaugePublisher(cast(asyncpg.Pool, None), runtime.metric_meter)
    publisher.set_process()  # the real ProcessCollector
    by_name = families(scrape(port))
    # prometheus_client's parser names a counter's family without its `_total`.
    assert by_name["process_cpu_seconds"].type == "counter"
    (cpu,) = by_name["process_cpu_seconds"].samples
    assert cpu.name == "process_cpu_seconds_total" and cpu.value >= 0
    for name in PROCESS_SAMPLES:
        if name != "process_cpu_seconds_total":
            assert by_name[name].type == "gauge", name


def test_cpu_counter_follows_the_process_in_whole_seconds() -> None:
    """The SDK's counters take integers: the counter is the CPU time's whole seconds, never
    behind by a second or more, never ahead, never decreasing."""
    port = free_port()
    runtime = metrics_runtime(port)
    assert runtime is not None
    publisher = GaugePublisher(cast(asyncpg.Pool, None), runtime.metric_meter)
    fake = FakeProcess()
    publisher._collector = fake  # type: ignore[assignment]
    seen = []
    for cpu in (0.4, 2.7, 3.2, 3.9, 3.9, 7.0):
        fake.cpu = cpu
        publisher.set_process()
        seen.append(families(scrape(port))["process_cpu_seconds"].samples[0].value)
    assert seen == [0, 2, 3, 3, 3, 7]
    assert families(scrape(port))["process_resident_memory_bytes"].samples[0].value == 50e6
