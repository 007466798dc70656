"""Tracing is configured by the standard OTEL_* variables and is off (nothing installed) without."""

from __future__ import annotations

import pytest

from service.devstack.stack import _passed_through
from service.observability import tracing as telemetry


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "golden"}, False),  # a name alone exports nowhere
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_tracing_requested(env: dict[str, str], on: bool) -> None:
    assert telemetry.tracing_requested(env) is on


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
