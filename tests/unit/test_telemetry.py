"""Tracing is configured by the standard OTEL_* variables and is off (nothing installed) without."""

from __future__ import annotations

import http.server
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace.export import ConsoleSpanExporter

from service.devstack.stack import _passed_through
from service.observability import tracing as telemetry

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "golden"}, False),  # a name alone exports nowhere
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_TRACES_EXPORTER": "none"}, False),
        # console needs no collector; an exporter this SDK does not know is ignored (off)
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_TRACES_EXPORTER": "zipkin"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, False),  # otlp without an endpoint stays off
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_TRACES_EXPORTER": ""}, True),
    ],
)
def test_tracing_requested(env: dict[str, str], on: bool) -> None:
    assert telemetry.tracing_requested(env) is on


def exporter_types(env: dict[str, str]) -> list[type]:
    exporters = telemetry.span_exporters(env)
    for exporter in exporters:
        exporter.shutdown()
    return [type(exporter) for exporter in exporters]


@pytest.mark.parametrize(
    ("env", "types"),
    [
        # OTLP over gRPC unless a protocol says otherwise; the traces-specific variable wins.
        (ENDPOINT, [GrpcSpanExporter]),
        ({**ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, [GrpcSpanExporter]),
        ({**ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, [HttpSpanExporter]),
        ({**ENDPOINT, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, [HttpSpanExporter]),
        (
            {
                **ENDPOINT,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
            },
            [GrpcSpanExporter],
        ),
        ({"OTEL_TRACES_EXPORTER": "console"}, [ConsoleSpanExporter]),
        (
            {**ENDPOINT, "OTEL_TRACES_EXPORTER": " OTLP , console"},
            [GrpcSpanExporter, ConsoleSpanExporter],
        ),
        ({**ENDPOINT, "OTEL_TRACES_EXPORTER": "none"}, []),
    ],
)
def test_exporter_follows_the_standard_variables(env: dict[str, str], types: list[type]) -> None:
    assert exporter_types(env) == types


def test_unknown_exporter_is_one_warning_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    """The OTel spec: a value not recognised MUST be warned about and gracefully ignored."""
    env = {**ENDPOINT, "OTEL_TRACES_EXPORTER": "zipkin,console"}
    with caplog.at_level(logging.WARNING, logger="golden_press.telemetry"):
        assert exporter_types(env) == [ConsoleSpanExporter]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "zipkin" in warnings[0], warnings


def test_unknown_protocol_is_one_warning_and_grpc(caplog: pytest.LogCaptureFixture) -> None:
    env = {**ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}
    with caplog.at_level(logging.WARNING, logger="golden_press.telemetry"):
        assert exporter_types(env) == [GrpcSpanExporter]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "http/json" in warnings[0], warnings


def test_http_protobuf_exports_to_a_collector() -> None:
    """A process with OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf posts its spans to the
    collector's /v1/traces (run in a child: the tracer provider is set once per process)."""
    received: list[tuple[str, list[str]]] = []

    class Collector(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = ExportTraceServiceRequest.FromString(body)
            names = [
                span.name
                for resource in request.resource_spans
                for scope in resource.scope_spans
                for span in scope.spans
            ]
            received.append((self.path, names))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()
            self.wfile.write(ExportTraceServiceResponse().SerializeToString())

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{server.server_port}"
    env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf"
    child = (
        "from service.observability import tracing\n"
        "t = tracing.setup_tracing('golden-press-test')\n"
        "with t.tracer().start_as_current_span('probe'): pass\n"
        "tracing.shutdown_tracing()\n"
    )
    try:
        subprocess.run([sys.executable, "-c", child], cwd=ROOT, env=env, check=True, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert received == [("/v1/traces", ["probe"])]


def test_off_installs_nothing() -> None:
    assert telemetry.setup_tracing("golden-press-test", {}) is None
    assert telemetry.active() is None


def test_dev_stack_passes_otel_and_tls_variables_on() -> None:
    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
        "OTEL_SERVICE_NAME": "golden",
        "GOLDEN_TLS_CERT_FILE": "/pki/api.pem",
        "GOLDEN_PG_DSN": "postgresql://x",  # the stack sets its own
        "HOME": "/root",
        "OTEL_EMPTY": "",
    }
    assert _passed_through(environ) == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
        "OTEL_SERVICE_NAME": "golden",
        "GOLDEN_TLS_CERT_FILE": "/pki/api.pem",
    }
