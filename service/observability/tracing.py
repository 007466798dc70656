"""OpenTelemetry tracing, configured by the standard OTEL_* variables; off and free without them.

One saga is one trace: the gRPC server span (opentelemetry-instrumentation-grpc) -> the Temporal
client's StartWorkflow -> the workflow and each activity (temporalio's TracingInterceptor on the
client, which the worker inherits) -> the asyncpg calls (opentelemetry-instrumentation-asyncpg)
-> the JetStream publish, whose W3C `traceparent` header lets a consumer continue the trace
(service/store/outbox.py stores it with the event, so a later publish keeps the saga's context).

The exporters are the standard OTEL_TRACES_EXPORTER's (a comma-separated list, default `otlp`):
`otlp` over OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or else OTEL_EXPORTER_OTLP_PROTOCOL, `grpc`
(default) or `http/protobuf`, and only when an endpoint is configured
(OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); `console` (spans on stdout,
no collector needed); `none`. As the OpenTelemetry specification asks of enum variables, a value
this SDK does not know (`zipkin`, `http/json`) is warned about once and ignored: an unknown
exporter is dropped (tracing stays off when none is left), an unknown protocol falls back to gRPC.
OTEL_SDK_DISABLED=true turns everything off. The exporters, service name, resource attributes
and sampler read their own OTEL_* variables. When off nothing is installed: no interceptor, no
wrapped asyncpg method, no span processor.
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
from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger("golden_press.telemetry")

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
#: OTEL_TRACES_EXPORTER values this process knows (`none` is handled on its own).
EXPORTERS = ("otlp", "console")
PROTOCOLS = ("grpc", "http/protobuf")
TRACER_NAME = "golden_press"


@dataclass(frozen=True)
class ExporterChoice:
    """What the OTEL_* variables select: exporter names, the OTLP protocol, what to warn about."""

    exporters: tuple[str, ...]
    protocol: str
    warnings: tuple[str, ...]


def _first(env: Mapping[str, str], names: tuple[str, ...]) -> str:
    """The first of these variables that is set and not empty (the spec: empty means unset)."""
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return value
    return ""


def exporter_choice(env: Mapping[str, str] | None = None) -> ExporterChoice:
    """The trace exporters the standard OTEL_* variables select (none: tracing is off)."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ExporterChoice((), "grpc", ())
    requested = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    names = [name.strip() for name in (requested or "otlp").split(",") if name.strip()]
    if "none" in names:
        return ExporterChoice((), "grpc", ())
    warnings: list[str] = []
    exporters: list[str] = []
    for name in dict.fromkeys(names):
        if name not in EXPORTERS:
            warnings.append(
                f"OTEL_TRACES_EXPORTER {name!r} is not supported (only otlp, console, none): "
                "ignored"
            )
        elif name == "otlp" and not _first(env, ENDPOINT_VARIABLES):
            if requested:  # asked for by name: say why nothing is exported
                warnings.append(
                    "OTEL_TRACES_EXPORTER otlp without OTEL_EXPORTER_OTLP_ENDPOINT "
                    "(or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT): no OTLP export"
                )
        else:
            exporters.append(name)
    protocol = _first(env, PROTOCOL_VARIABLES).lower() or "grpc"
    if protocol not in PROTOCOLS:
        if "otlp" in exporters:  # the protocol only matters to OTLP
            warnings.append(
                f"OTLP protocol {protocol!r} is not supported (only {', '.join(PROTOCOLS)}): "
                "ignored, using grpc"
            )
        protocol = "grpc"
    return ExporterChoice(tuple(exporters), protocol, tuple(warnings))


def tracing_requested(env: Mapping[str, str] | None = None) -> bool:
    """True when the OTEL_* variables ask for traces to be exported."""
    return bool(exporter_choice(env).exporters)


def span_exporters(env: Mapping[str, str] | None = None) -> list[SpanExporter]:
    """The exporters the OTEL_* variables select, each warning about the choice logged once.

    Each exporter reads its own settings (endpoint, headers, timeout) from os.environ."""
    choice = exporter_choice(env)
    for warning in choice.warnings:
        log.warning("tracing: %s", warning)
    exporters: list[SpanExporter] = []
    for name in choice.exporters:
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter())
        elif choice.protocol == "http/protobuf":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter as HttpSpanExporter,
            )

            exporters.append(HttpSpanExporter())
        else:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcSpanExporter,
            )

            exporters.append(GrpcSpanExporter())
    return exporters


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
    """Tracing from the OTEL_* variables (their exporters, batched), or None when not asked for."""
    exporters = span_exporters(env)
    if not exporters:
        return None
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_RESOURCE_ATTRIBUTES are read by Resource.create; OTEL_SERVICE_NAME wins over ours.
    variables = os.environ if env is None else env
    resource = Resource.create({SERVICE_NAME: variables.get("OTEL_SERVICE_NAME") or service_name})
    provider = TracerProvider(resource=resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    log.info(
        "tracing on",
        extra={"service": service_name, "exporters": ",".join(type(e).__name__ for e in exporters)},
    )
    return enable_tracing(provider)


def shutdown_tracing() -> None:
    """Flush and stop the exporter (end of process)."""
    tracing = _active
    if tracing is not None:
        tracing.provider.shutdown()
