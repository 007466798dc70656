"""OpenTelemetry tracing, configured by the standard OTEL_* variables; off and free without them.

One saga is one trace: the gRPC server span (opentelemetry-instrumentation-grpc) -> the Temporal
client's StartWorkflow -> the workflow and each activity (temporalio's TracingInterceptor on the
client, which the worker inherits) -> the asyncpg calls (opentelemetry-instrumentation-asyncpg)
-> the JetStream publish, whose W3C `traceparent` header lets a consumer continue the trace
(service/store/outbox.py stores it with the event, so a later publish keeps the saga's context).

Tracing is on when an OTLP endpoint is configured (OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) and not disabled (OTEL_SDK_DISABLED=true,
OTEL_TRACES_EXPORTER=none). The exporter, service name, resource attributes and sampler read
their own OTEL_* variables. When off nothing is installed: no interceptor, no wrapped asyncpg
method, no span processor.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("golden_press.telemetry")

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
TRACER_NAME = "golden_press"


def tracing_requested(env: Mapping[str, str] | None = None) -> bool:
    """True when the OTEL_* variables ask for traces to be exported."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return any(env.get(name, "").strip() for name in ENDPOINT_VARIABLES)


@dataclass
class Tracing:
    """Active tracing: the provider and what every client and server of this process adds."""

    provider: TracerProvider

    def tracer(self) -> trace.Tracer:
        """Our tracer (the Temporal interceptor's spans are ours too)."""
        return self.provider.get_tracer(TRACER_NAME)

    def temporal_interceptors(self) -> list[Any]:
        """TracingInterceptor for Client.connect; the worker built on that client inherits it."""
        from temporalio.contrib.opentelemetry import TracingInterceptor

        return [TracingInterceptor(self.tracer())]

    def grpc_server_interceptors(self) -> list[Any]:
        """The server span of each RPC, continuing a caller's traceparent metadata (rejections
        end their span with their status, not with a recorded traceback: grpc_spans)."""
        from service.observability.grpc_spans import server_interceptor

        return [server_interceptor(self.provider)]


_active: Tracing | None = None


def active() -> Tracing | None:
    """The process's tracing, or None when it is off."""
    return _active


def enable_tracing(provider: TracerProvider) -> Tracing:
    """Trace with this provider (tests pass one with an in-memory exporter); idempotent."""
    global _active
    if _active is not None and _active.provider is provider:
        return _active
    if _active is not None:
        disable_tracing()
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    # The global provider is what library code (the outbox publish) gets from the OTel API;
    # OpenTelemetry lets it be set only once per process, later calls are ignored with a warning.
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(provider)
    AsyncPGInstrumentor().instrument(tracer_provider=provider)
    _active = Tracing(provider)
    return _active


def disable_tracing() -> None:
    """Undo enable_tracing (tests); spans already recorded stay in their exporter."""
    global _active
    if _active is None:
        return
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    AsyncPGInstrumentor().uninstrument()
    _active = None


def setup_tracing(service_name: str, env: Mapping[str, str] | None = None) -> Tracing | None:
    """Tracing from the OTEL_* variables (OTLP exporter, batched), or None when not asked for."""
    if not tracing_requested(env):
        return None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_RESOURCE_ATTRIBUTES are read by Resource.create; OTEL_SERVICE_NAME wins over ours.
    variables = os.environ if env is None else env
    resource = Resource.create({SERVICE_NAME: variables.get("OTEL_SERVICE_NAME") or service_name})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    log.info("tracing on", extra={"service": service_name})
    return enable_tracing(provider)


def shutdown_tracing() -> None:
    """Flush and stop the exporter (end of process)."""
    tracing = _active
    if tracing is not None:
        tracing.provider.shutdown()
