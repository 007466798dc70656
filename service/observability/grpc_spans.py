"""The gRPC server span of each call, without a formatted traceback per business rejection.

opentelemetry-instrumentation-grpc's aio server interceptor records the `AbortError` that
`context.abort_with_status` raises as an exception event, twice (its own `record_exception` and
the span context's), each formatting a traceback: under a launch herd, where nearly every call is
an expected `CapReached` rejection, that was ~20% of the traced API's CPU (docs/benchmarks.md).
It also missed the status of calls aborted with `abort_with_status` (the span said OK).

This subclass keeps the library's span (name, kind, attributes, remote context from the caller's
`traceparent` metadata) and changes only what happens when the handler ends: an abort is an
answer, so the span gets the call's status code (RPC_GRPC_STATUS_CODE, and the OpenTelemetry
status the semantic conventions give it: ERROR only for server faults such as UNAVAILABLE or
INTERNAL) and no exception event; any other exception is a bug and is still recorded with its
traceback. Unary calls only: the API has no streaming method (streams keep the library's path).
"""

from __future__ import annotations

from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import _aio_server, _utilities
from opentelemetry.instrumentation.grpc.version import __version__ as INSTRUMENTATION_VERSION
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.semconv._incubating.attributes.rpc_attributes import RPC_GRPC_STATUS_CODE
from opentelemetry.trace import Status, StatusCode

#: The library's instrumentation scope, so dashboards keyed on it see the same spans.
SCOPE = "opentelemetry.instrumentation.grpc"


class _NoExceptionEvents:
    """A tracer whose current spans never record the exception that ends them (we decide)."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        """The tracer's span context, with record_exception off."""
        kwargs["record_exception"] = False
        return self._tracer.start_as_current_span(*args, **kwargs)


def _finish(span: trace.Span, context: grpc.aio.ServicerContext) -> None:
    """The call's status on its span, when the handler set or aborted with one."""
    code = context.code()
    if code is None or code is grpc.StatusCode.OK:
        return
    span.set_attribute(RPC_GRPC_STATUS_CODE, code.value[0])
    status = _utilities._server_status(code, context.details() or "")
    if status.status_code is not StatusCode.UNSET:
        span.set_status(status)


class ServerSpans(_aio_server.OpenTelemetryAioServerInterceptor):  # type: ignore[misc]
    """The library's aio server interceptor; aborts end their span without an exception event."""

    def _intercept_aio_server_unary(self, behavior: Any, handler_call_details: Any) -> Any:
        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with (
                self._set_remote_context(context),
                self._start_span(handler_call_details, context) as span,
            ):
                try:
                    return await behavior(request, context)
                except grpc.aio.AbortError:
                    raise  # an answer (a rejection): its status, below, says what it was
                except Exception as error:
                    span.record_exception(error)
                    span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                    raise
                finally:
                    _finish(span, context)

        return unary


def server_interceptor(provider: TracerProvider) -> ServerSpans:
    """The server span interceptor for a grpc.aio server, spans from this provider."""
    tracer = provider.get_tracer(
        SCOPE, INSTRUMENTATION_VERSION, schema_url="https://opentelemetry.io/schemas/1.11.0"
    )
    return ServerSpans(_NoExceptionEvents(tracer))
