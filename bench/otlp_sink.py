"""A do-nothing OTLP/gRPC trace receiver: what the tracing-on benchmark exports to.

    .venv/bin/python -m bench.otlp_sink PORT

Accepts every ExportTraceServiceRequest and counts spans (printed at exit), so the benchmark
measures what tracing costs golden-press (span creation, batching, serialisation, the export
RPC), not a collector's speed.
"""

from __future__ import annotations

import signal
import sys
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class Sink(trace_service_pb2_grpc.TraceServiceServicer):
    """Counts and drops."""

    def __init__(self) -> None:
        self.spans = 0
        self._lock = threading.Lock()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        with self._lock:
            self.spans += n
        return trace_service_pb2.ExportTraceServiceResponse()


def main() -> None:
    """Serve on 127.0.0.1:PORT until SIGTERM/SIGINT."""
    port = int(sys.argv[1])
    sink = Sink()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    server.stop(1)
    print(f"otlp sink: {sink.spans} spans received", flush=True)


if __name__ == "__main__":
    main()
