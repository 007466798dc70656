"""Proto <-> domain conversion and error mapping, shared by the server and the CLI.

The CLI imports this module, never the servicer: it needs the same ticket view and the same
ErrorInfo reading, not the server.
"""

from __future__ import annotations

import base64
import binascii
import functools
from datetime import UTC
from uuid import UUID

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from golden_press.errors import InvalidRequest, Reason
from golden_press.models import Ticket, TicketState
from service.api.pb import golden_pb2
from service.store.outbox import timestamp

ERROR_DOMAIN = "golden-press"
SERVICE_NAME = "golden.v1.GoldenPress"

#: The issue's mapping of reason types to gRPC status codes.
STATUS_FOR_REASON: dict[Reason, grpc.StatusCode] = {
    Reason.CAP_REACHED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.RATE_LIMITED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.ONE_PER_USER: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.NOT_ISSUEE: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.ALREADY_REDEEMED: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.TICKET_NOT_REDEEMABLE: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.IDEMPOTENCY_KEY_REUSED: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.USER_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    Reason.INVALID_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.BAD_SIGNATURE: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.BAD_PROOF: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.BAD_CHECKPOINT: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.INCONSISTENT_CHECKPOINT: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.TICKET_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Reason.REDEMPTION_IN_PROGRESS: grpc.StatusCode.ABORTED,
    Reason.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
}

_STATE_TO_PB = {
    TicketState.RESERVED: golden_pb2.TICKET_STATE_RESERVED,
    TicketState.ISSUED: golden_pb2.TICKET_STATE_ISSUED,
    TicketState.REDEEMED: golden_pb2.TICKET_STATE_REDEEMED,
    TicketState.VOIDED: golden_pb2.TICKET_STATE_VOIDED,
    TicketState.REVOKED: golden_pb2.TICKET_STATE_REVOKED,
}
_PB_TO_STATE = {v: k for k, v in _STATE_TO_PB.items()}


def ticket_to_pb(ticket: Ticket) -> golden_pb2.Ticket:
    """Protobuf view of a ticket."""
    msg = golden_pb2.Ticket(
        ticket_id=str(ticket.ticket_id),
        serial=ticket.serial,
        user_id=ticket.user_id,
        issued_at=timestamp(ticket.issued_at),
        key_id=ticket.key_id,
        signature=ticket.signature,
        state=_STATE_TO_PB[ticket.state],
        request_id=ticket.request_id,
    )
    if ticket.leaf_index is not None:
        msg.leaf_index = ticket.leaf_index
    return msg


def ticket_from_pb(msg: golden_pb2.Ticket) -> Ticket:
    """A ticket from its protobuf form, or InvalidRequest."""
    try:
        return Ticket(
            ticket_id=UUID(msg.ticket_id),
            serial=msg.serial,
            user_id=msg.user_id,
            issued_at=msg.issued_at.ToDatetime(tzinfo=UTC),
            key_id=msg.key_id,
            signature=msg.signature,
            state=_PB_TO_STATE.get(msg.state, TicketState.ISSUED),
            request_id=msg.request_id,
            leaf_index=msg.leaf_index if msg.HasField("leaf_index") else None,
        )
    except ValueError as exc:
        raise InvalidRequest(f"malformed ticket: {exc}") from exc


def state_from_pb(value: int) -> TicketState | None:
    """None for UNSPECIFIED (no filter)."""
    if value == golden_pb2.TICKET_STATE_UNSPECIFIED:
        return None
    try:
        return _PB_TO_STATE[value]  # type: ignore[index]
    except KeyError as exc:
        raise InvalidRequest(f"unknown ticket state {value}") from exc


def encode_page_token(serial: int) -> str:
    """Opaque keyset cursor: the last serial of the page."""
    return base64.urlsafe_b64encode(f"v1:{serial}".encode()).decode("ascii")


def decode_page_token(token: str) -> int:
    """The serial a page token continues after, or InvalidRequest."""
    if not token:
        return 0
    try:
        version, _, serial = base64.urlsafe_b64decode(token.encode("ascii")).decode().partition(":")
        if version != "v1" or not serial.isdigit() or len(serial) > 19:
            raise ValueError(version)
        value = int(serial)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidRequest("malformed page_token") from exc
    if value >= 1 << 63:  # serials are bigint
        raise InvalidRequest("malformed page_token")
    return value


def error_status(
    code: grpc.StatusCode, reason: str, message: str, metadata: dict[str, str] | None = None
) -> grpc.Status:
    """A status with an ErrorInfo detail (domain golden-press, reason = reason type).

    Without metadata the same refusal is built once: a sold-out herd gets the one CapReached
    status thousands of times a second (messages quote at most ~100 characters of input, so
    the cache stays small).
    """
    if not metadata:
        return _plain_error_status(code, reason, message)
    return _build_error_status(code, reason, message, metadata)


@functools.lru_cache(maxsize=1024)
def _plain_error_status(code: grpc.StatusCode, reason: str, message: str) -> grpc.Status:
    return _build_error_status(code, reason, message, None)


def _build_error_status(
    code: grpc.StatusCode, reason: str, message: str, metadata: dict[str, str] | None
) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata or {})
    detail = any_pb2.Any()
    detail.Pack(info)
    return rpc_status.to_status(
        status_pb2.Status(code=code.value[0], message=message, details=[detail])
    )


def error_reason(error: grpc.RpcError) -> str:
    """The ErrorInfo reason of a failed call ('' when there is none): what clients match on."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return ""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""
