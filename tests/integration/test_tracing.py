"""One trace from IssueTicket through every saga step to the JetStream publish.

The SDK's in-memory exporter collects the spans: the gRPC server span, the Temporal client's
StartWorkflow, the workflow, each activity, the asyncpg calls inside them and the outbox publish
must all share one trace id, and the event carries that trace's `traceparent` both on its outbox
row and in the message headers; the consumer example continues that trace.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from temporalio.client import Client

from service.api.pb import golden_pb2, golden_pb2_grpc
from service.api.server import bound_port, serve, shutdown
from service.observability.tracing import disable_tracing, enable_tracing
from starter.consume_events import JsonlSink, consume
from tests.helpers.api import write_tokens
from tests.helpers.servers import Servers
from tests.helpers.stack import Stack, golden_stack
from tests.helpers.tracing import in_memory_tracing, traced_client

pytestmark = pytest.mark.asyncio(loop_scope="session")

SAGA_STEPS = ("reserve_slot", "sign_ticket", "finalise_ticket", "append_issued_to_ledger")
PUBLISH_STEP = "publish_events"


def trace_id_of(traceparent: str) -> int:
    """The trace id field of a W3C traceparent (version-traceid-spanid-flags)."""
    version, trace_id, _span_id, _flags = traceparent.split("-")
    assert version == "00"
    return int(trace_id, 16)


async def test_one_trace_from_issue_ticket_to_publish(
    servers: Servers, session_dir: Path, client: Client
) -> None:
    provider, exporter = in_memory_tracing()
    exporter.clear()
    tracing = enable_tracing(provider)
    try:
        traced = traced_client(client, tracing.temporal_interceptors())
        async with golden_stack(servers, session_dir, traced) as stack:
            token = uuid.uuid4().hex
            write_tokens(stack.settings, token)
            server = await serve(
                stack.settings, pool=stack.pool, client=traced, address="127.0.0.1:0"
            )
            try:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{bound_port(server)}") as ch:
                    resp = await golden_pb2_grpc.GoldenPressStub(ch).IssueTicket(
                        golden_pb2.IssueTicketRequest(user_id="traced"),
                        metadata=[("authorization", f"Bearer {token}")],
                    )
            finally:
                await shutdown(server, grace=None)
            ticket_id = uuid.UUID(resp.ticket.ticket_id)
            stored = await stack.pool.fetchval(
                "SELECT traceparent FROM event_outbox WHERE ticket_id = $1 AND kind = 'issued'",
                ticket_id,
            )
            messages = await stack.stream_messages("issued")
    finally:
        disable_tracing()
        provider.force_flush()

    spans: list[ReadableSpan] = list(exporter.get_finished_spans())
    by_name: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    [rpc] = by_name["/golden.v1.GoldenPress/IssueTicket"]
    assert rpc.kind == SpanKind.SERVER
    trace_id = rpc.context.trace_id

    def one_in_trace(name: str) -> ReadableSpan:
        found = [s for s in by_name.get(name, []) if s.context.trace_id == trace_id]
        assert found, f"no span {name!r} in the trace; spans: {sorted(by_name)}"
        return found[0]

    one_in_trace("StartWorkflow:IssueTicketWorkflow")
    one_in_trace("RunWorkflow:IssueTicketWorkflow")
    for step in (*SAGA_STEPS, PUBLISH_STEP):
        run = one_in_trace(f"RunActivity:{step}")
        if step != "sign_ticket":  # signing is pure crypto; every other step talks to PostgreSQL
            children = [
                s
                for s in spans
                if s.parent is not None
                and s.parent.span_id == run.context.span_id
                and s.attributes
                and s.attributes.get("db.system") == "postgresql"
            ]
            assert children, f"no asyncpg span under {step}"
    publish = [s for s in spans if s.kind == SpanKind.PRODUCER and s.context.trace_id == trace_id]
    assert len(publish) == 1, [s.name for s in spans if s.kind == SpanKind.PRODUCER]

    # The stored event carries the saga's trace, and so does the published message.
    assert stored is not None and trace_id_of(stored) == trace_id
    assert len(messages) == 1
    header = (messages[0].headers or {}).get("traceparent")
    assert header is not None and trace_id_of(header) == trace_id
    assert int(header.split("-")[2], 16) == publish[0].context.span_id


async def test_the_consumer_example_continues_the_trace_of_the_event_it_handles(
    servers: Servers, session_dir: Path, client: Client, tmp_path: Path
) -> None:
    """A downstream team's span for an event belongs to the saga that wrote it: the consumer's
    CONSUMER span is a child of the span the event's `traceparent` header names."""
    provider, exporter = in_memory_tracing()
    exporter.clear()
    durable = f"traced-{uuid.uuid4().hex[:8]}"
    tracing = enable_tracing(provider)
    try:
        traced = traced_client(client, tracing.temporal_interceptors())
        async with golden_stack(servers, session_dir, traced) as stack:
            await stack.issue("consumed")
            [message] = await stack.stream_messages("issued")
            handled = await consume(
                stack.js,
                stack.settings,
                durable=durable,
                sink=JsonlSink(tmp_path / "events.jsonl"),
                max_events=1,
                idle_timeout_s=10.0,
            )
    finally:
        disable_tracing()
        provider.force_flush()
    assert handled == 1
    headers = message.headers or {}
    header = headers.get("traceparent")
    assert header is not None, sorted(headers)
    _version, trace_id, span_id, _flags = header.split("-")

    [span] = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    assert span.name == f"process {message.subject}"
    assert span.context.trace_id == int(trace_id, 16)
    assert span.parent is not None and span.parent.span_id == int(span_id, 16)
    assert [link.context.span_id for link in span.links] == [int(span_id, 16)]
    assert dict(span.attributes or {}) == {
        "messaging.system": "nats",
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.destination.name": message.subject,
        "messaging.consumer.group.name": durable,
        "messaging.message.id": headers["ce-id"],
    }


async def test_a_rejection_ends_its_span_with_its_status_not_a_traceback(
    stack: Stack, client: Client
) -> None:
    """An expected rejection (here TicketNotFound, a NOT_FOUND abort) is an answer: its server
    span carries the status code and no exception event (formatting one per rejection was ~20%
    of a traced API's CPU in a herd); a span of a server fault would say ERROR."""
    provider, exporter = in_memory_tracing()
    exporter.clear()
    enable_tracing(provider)
    try:
        server = await serve(stack.settings, pool=stack.pool, client=client, address="127.0.0.1:0")
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{bound_port(server)}") as ch:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await golden_pb2_grpc.GoldenPressStub(ch).GetTicket(
                        golden_pb2.GetTicketRequest(ticket_id=str(uuid.uuid4())), timeout=10
                    )
        finally:
            await shutdown(server, grace=None)
    finally:
        disable_tracing()
        provider.force_flush()
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    [span] = [
        s for s in exporter.get_finished_spans() if s.name == "/golden.v1.GoldenPress/GetTicket"
    ]
    assert [e.name for e in span.events] == []  # no "exception" event, no traceback
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert span.status.status_code == StatusCode.UNSET  # a client's miss, not a server fault
