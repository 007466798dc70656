"""Request decoding that cannot fail the call: bad bytes become a typed InvalidRequest.

grpc.aio decodes a request before any handler runs; a protobuf DecodeError there (invalid UTF-8
in a string, a truncated field, not protobuf at all) ends the call as UNKNOWN with a traceback
in the log, before even the token check. The service is registered with these deserializers
instead: a request that is too big or does not decode reaches the handler as a BadRequest, and
the handler's error mapping answers INVALID_ARGUMENT with an ErrorInfo like any other bad input
(after the token check, for the write RPCs). The size check comes first and costs nothing, so a
multi-megabyte public request is refused without parsing it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from service.api.pb import golden_pb2, golden_pb2_grpc

log = logging.getLogger("golden_press.api")

#: The biggest request any RPC needs: a RedeemTicket or VerifyTicket with a bundle at its bound
#: (golden_press.bundle.MAX_BUNDLE_JSON_BYTES) and change.
MAX_REQUEST_BYTES = 128 * 1024
#: What grpc itself accepts (its default, stated); bigger messages are RESOURCE_EXHAUSTED.
MAX_RECEIVE_BYTES = 4 * 1024 * 1024
#: At most one log line about undecodable requests per this many seconds.
LOG_EVERY_S = 60.0


@dataclass(frozen=True)
class BadRequest:
    """What a handler receives instead of a request that could not be decoded."""

    method: str
    message: str


class _Quiet:
    """One log line per LOG_EVERY_S about bad requests, with how many there were."""

    def __init__(self) -> None:
        self._last = -LOG_EVERY_S
        self._since = 0

    def note(self, method: str, message: str) -> None:
        self._since += 1
        now = time.monotonic()
        if now - self._last >= LOG_EVERY_S:
            log.warning(
                "%d undecodable request(s) in the last %.0f s, e.g. %s: %s",
                self._since,
                now - self._last if self._last >= 0 else 0.0,
                method,
                message,
            )
            self._last, self._since = now, 0


_QUIET = _Quiet()


def guarded(method: str, message: type[Message]) -> Callable[[bytes], Any]:
    """A deserializer that returns a BadRequest instead of raising."""

    def deserialize(data: bytes) -> Any:
        if len(data) > MAX_REQUEST_BYTES:
            bad = BadRequest(method, f"request is {len(data)} bytes, at most {MAX_REQUEST_BYTES}")
        else:
            try:
                return message.FromString(data)
            except (DecodeError, ValueError) as exc:
                bad = BadRequest(method, f"request is not a valid {message.__name__}: {exc}"[:200])
        _QUIET.note(method, bad.message)
        return bad

    return deserialize


def add_service(servicer: golden_pb2_grpc.GoldenPressServicer, server: grpc.aio.Server) -> None:
    """Register GoldenPress like the generated add_..._to_server, with guarded deserializers."""
    service = golden_pb2.DESCRIPTOR.services_by_name["GoldenPress"]
    handlers = {}
    for method in service.methods:
        request = getattr(golden_pb2, method.input_type.name)
        response = getattr(golden_pb2, method.output_type.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=guarded(method.name, request),
            response_serializer=response.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)
