"""A recording gRPC proxy: forwards unary calls to a real server, noting each call's metadata.

A server that ignores something the client sends (the Temporal dev server ignores API keys) cannot
show that the client sends it. This proxy stands between the two on the wire: messages pass as raw
bytes (never decoded), the invocation metadata passes through unchanged, and each call's method
and metadata are kept for the test to inspect. It serves TLS with `leaf` when given, like
tests/helpers/tls_proxy.py, since a client with an API key speaks only TLS.

Temporal's client calls are unary-unary (long polls too); a streaming method is not supported.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import grpc
import grpc.aio

from tests.helpers.tls import Leaf

Metadata = tuple[tuple[str, str | bytes], ...]


@dataclass(frozen=True)
class RecordedCall:
    """One call as the proxy received it (the client's side of the wire).

    Its repr names the metadata keys only: values can be credentials (`pytest -l` prints locals).
    """

    method: str  # e.g. /temporal.api.workflowservice.v1.WorkflowService/GetSystemInfo
    metadata: Metadata = field(repr=False)

    def __repr__(self) -> str:
        return f"RecordedCall({self.method!r}, keys={[name for name, _ in self.metadata]!r})"

    def values(self, key: str) -> list[str | bytes]:
        """Every value the client sent under `key` (gRPC metadata keys are lower case)."""
        return [value for name, value in self.metadata if name == key]


@dataclass
class RecordingProxy:
    """Where it listens and the calls it forwarded, in arrival order."""

    address: str
    calls: list[RecordedCall] = field(default_factory=list)

    def methods(self) -> set[str]:
        """The method names seen so far."""
        return {call.method for call in self.calls}


def _forwardable(metadata: Metadata) -> Metadata:
    """The client's own metadata: HTTP/2 pseudo-headers and the user agent belong to each hop."""
    return tuple((k, v) for k, v in metadata if not k.startswith(":") and k != "user-agent")


class _Forwarder(grpc.GenericRpcHandler):
    """Any method name: a unary-unary handler with raw bytes in and out (no serializers)."""

    def __init__(self, channel: grpc.aio.Channel, proxy: RecordingProxy) -> None:
        self._channel = channel
        self._proxy = proxy

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        upstream = self._channel.unary_unary(method)
        proxy = self._proxy

        async def forward(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            metadata = _forwardable(tuple(context.invocation_metadata() or ()))
            proxy.calls.append(RecordedCall(method, metadata))
            call = upstream(request, metadata=metadata, timeout=context.time_remaining())
            try:
                response: bytes = await call
            except grpc.aio.AioRpcError as err:
                # Status, message and details (grpc-status-details-bin) as the server sent them.
                await context.abort(
                    err.code(), err.details() or "", tuple(err.trailing_metadata() or ())
                )
            context.set_trailing_metadata(tuple(await call.trailing_metadata() or ()))
            return response

        handler: Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]] = forward
        return grpc.unary_unary_rpc_method_handler(handler)


@contextlib.asynccontextmanager
async def recording_grpc_proxy(
    upstream: str, leaf: Leaf | None = None
) -> AsyncIterator[RecordingProxy]:
    """Serve on 127.0.0.1 (TLS with `leaf` when given, else plaintext), forwarding every unary
    call to `upstream` (HOST:PORT, plaintext) and recording its method and metadata."""
    channel = grpc.aio.insecure_channel(upstream)
    proxy = RecordingProxy("")
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_Forwarder(channel, proxy),))
    if leaf is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        credentials = grpc.ssl_server_credentials(
            [(leaf.key_file.read_bytes(), leaf.cert_file.read_bytes())]
        )
        port = server.add_secure_port("127.0.0.1:0", credentials)
    proxy.address = f"127.0.0.1:{port}"
    await server.start()
    try:
        yield proxy
    finally:
        await server.stop(grace=None)
        await channel.close()
