"""One in-memory span exporter for the test session (OpenTelemetry allows one global provider)."""

from __future__ import annotations

from functools import cache
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client


@cache
def in_memory_tracing() -> tuple[TracerProvider, InMemorySpanExporter]:
    """The session's provider and its exporter (clear it at the start of a test)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def traced_client(client: Client, interceptors: list[Any]) -> Client:
    """The session's Temporal client with the tracing interceptors (what connect_client builds
    when tracing is on)."""
    config = client.config()
    config["interceptors"] = interceptors
    return Client(**config)
