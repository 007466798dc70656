"""Bad input through the gRPC API is INVALID_ARGUMENT with an ErrorInfo (issue 13: 1, 10, 11).

Never UNAVAILABLE or UNKNOWN (clients retry those forever), never a traceback per bad request,
never more than ~100 characters of the caller's input echoed back. Also: a redemption bundle
padded with extra checkpoint signatures is refused at admission (its event would be a poison
message), two `authorization` headers are refused, the tokens file must be private, big
public requests are refused by size before anything parses them, and a port in use stops the
server with nothing left open.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
import pytest_asyncio
from nacl.signing import SigningKey

from golden_press.errors import Reason
from service.api import server as server_module
from service.api.pb import golden_pb2
from service.api.server import serve
from service.devstack.servers import HOST, free_port, port_in_use
from service.store.db import create_pool
from tests.helpers.api import API_TOKEN as TOKEN
from tests.helpers.api import ServedApi as ApiHandle
from tests.helpers.api import expect_error as expect
from tests.helpers.api import served_api, write_tokens
from tests.helpers.stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def api(stack: Stack) -> AsyncIterator[ApiHandle]:
    """The API over this test's own stack."""
    async with served_api(stack) as handle:
        yield handle


INVALID = grpc.StatusCode.INVALID_ARGUMENT
SERVICE = "/golden.v1.GoldenPress/"


def padded_note(note: str, lines: int) -> str:
    """The same checkpoint with `lines` extra signature lines from a key nobody trusts."""
    stranger = SigningKey.generate()
    blob = base64.b64encode(b"\x00" * 4 + bytes(stranger.sign(b"x").signature)).decode()
    extra = "".join(f"\u2014 stranger.example/{i} {blob}\n" for i in range(lines))
    return note + extra


async def issued_bundle(api: ApiHandle, user: str) -> tuple[str, dict[str, object]]:
    issued = await api.issue(user)
    return issued.ticket.ticket_id, json.loads(await api.bundle(issued.ticket.ticket_id))


async def test_padded_checkpoint_note_is_refused_at_admission(api: ApiHandle) -> None:
    ticket_id, bundle = await issued_bundle(api, "padded")
    bundle["checkpoint"] = padded_note(str(bundle["checkpoint"]), 9_000)  # just under 1 MiB
    assert len(json.dumps(bundle)) > 900_000
    before = await api.stack.snapshot()
    err = await expect(
        api.stub.RedeemTicket(
            golden_pb2.RedeemTicketRequest(
                ticket_id=ticket_id, user_id="padded", bundle_json=json.dumps(bundle)
            ),
            metadata=api.auth,
            timeout=30,
        ),
        INVALID,
        Reason.INVALID_REQUEST,
    )
    assert len(err.details() or "") < 400
    assert await api.stack.snapshot() == before


async def test_overlong_inclusion_proof_is_refused(api: ApiHandle) -> None:
    ticket_id, bundle = await issued_bundle(api, "longproof")
    bundle["inclusion_proof"] = [base64.b64encode(b"\x00" * 32).decode()] * 200
    await expect(
        api.stub.RedeemTicket(
            golden_pb2.RedeemTicketRequest(
                ticket_id=ticket_id, user_id="longproof", bundle_json=json.dumps(bundle)
            ),
            metadata=api.auth,
            timeout=30,
        ),
        INVALID,
        Reason.INVALID_REQUEST,
    )


async def test_bundle_over_the_payload_limit_is_invalid_argument(api: ApiHandle) -> None:
    ticket_id, bundle = await issued_bundle(api, "huge")
    bundle["junk"] = "x" * (3 << 20)  # over Temporal's 2 MB payload limit
    await expect(
        api.stub.RedeemTicket(
            golden_pb2.RedeemTicketRequest(
                ticket_id=ticket_id, user_id="huge", bundle_json=json.dumps(bundle)
            ),
            metadata=api.auth,
            timeout=30,
        ),
        INVALID,
        Reason.INVALID_REQUEST,
    )


async def test_page_token_beyond_int64_is_invalid_argument(api: ApiHandle) -> None:
    for serial in (2**63, 10**30, -1):
        token = base64.urlsafe_b64encode(f"v1:{serial}".encode()).decode()
        await expect(
            api.stub.ListTickets(golden_pb2.ListTicketsRequest(page_token=token)),
            INVALID,
            Reason.INVALID_REQUEST,
        )


async def test_nul_byte_in_a_filter_is_invalid_argument(api: ApiHandle) -> None:
    await expect(
        api.stub.ListTickets(golden_pb2.ListTicketsRequest(user_id="bob\x00"), metadata=api.auth),
        INVALID,
        Reason.INVALID_REQUEST,
    )


async def test_error_messages_quote_little_of_the_input(api: ApiHandle) -> None:
    huge = "y" * (1 << 20)
    for call in (
        api.stub.GetTicket(golden_pb2.GetTicketRequest(ticket_id=huge)),
        api.stub.ListTickets(golden_pb2.ListTicketsRequest(user_id=huge), metadata=api.auth),
        api.stub.VerifyTicket(golden_pb2.VerifyTicketRequest(ticket_id=huge)),
    ):
        err = await expect(call, INVALID, Reason.INVALID_REQUEST)
        assert len(err.details() or "") < 300, (err.details() or "")[:200]


def raw_garbage(method: str) -> list[bytes]:
    """Bytes that are no valid request of this method."""
    request = getattr(golden_pb2, f"{method}Request")
    text = next(f.number for f in request.DESCRIPTOR.fields if f.type == f.TYPE_STRING)
    return [
        bytes([text << 3 | 2, 2]) + b"\xff\xfe",  # a string field with invalid UTF-8
        b"\x0a\xff",  # a length running past the end
        b"\xff" * 10 + b"\x01",  # not a protobuf at all
    ]


@pytest.mark.parametrize("method", ["GetTicket", "ListTickets", "VerifyTicket", "IssueTicket"])
async def test_corrupt_protobuf_is_invalid_argument_without_a_traceback(
    api: ApiHandle, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    raw = api.channel.unary_unary(SERVICE + method)  # bytes in, bytes out
    metadata = api.auth if method == "IssueTicket" else None
    with caplog.at_level(logging.DEBUG):
        for _ in range(5):
            for data in raw_garbage(method):
                await expect(raw(data, metadata=metadata), INVALID, Reason.INVALID_REQUEST)
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert not tracebacks, tracebacks[0].getMessage()
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) <= 1, [r.getMessage() for r in loud]  # rate-limited: one line


#: The request size limit (service.api.decode.MAX_REQUEST_BYTES), stated here on purpose: the
#: biggest request any RPC needs is a bundle at its bound (64 KiB) and change.
REQUEST_LIMIT = 128 * 1024


async def test_big_public_request_is_refused_by_size(api: ApiHandle) -> None:
    """A public request over 128 KiB is refused by its size before anything parses it.

    Not a bundle (a ticket id padded to one byte over the limit), so the bundle's own bound
    cannot refuse it first, and the refusal must name the request's size: raising the limit
    makes this a "not a ticket id" refusal, and fails here. A 4 MiB bundle (what stalled the
    event loop) is refused the same way, by size, not by the bundle's bound after parsing.
    """
    over = REQUEST_LIMIT + 1
    # Field 1's tag is one byte and a length of ~128 KiB a three-byte varint.
    request = golden_pb2.VerifyTicketRequest(ticket_id="x" * (over - 4))
    assert request.ByteSize() == over
    err = await expect(api.stub.VerifyTicket(request, timeout=30), INVALID, Reason.INVALID_REQUEST)
    assert err.details() == f"request is {over} bytes, at most {REQUEST_LIMIT}", err.details()

    bundle = json.dumps({"version": 1, "junk": "z" * ((4 << 20) - 1000)})
    request = golden_pb2.VerifyTicketRequest(bundle_json=bundle)
    err = await expect(api.stub.VerifyTicket(request, timeout=30), INVALID, Reason.INVALID_REQUEST)
    size = request.ByteSize()
    assert err.details() == f"request is {size} bytes, at most {REQUEST_LIMIT}", err.details()


async def test_two_authorization_headers_are_refused(api: ApiHandle) -> None:
    for headers in (
        [("authorization", "Bearer wrong"), ("authorization", f"Bearer {TOKEN}")],
        [("authorization", f"Bearer {TOKEN}"), ("authorization", f"Bearer {TOKEN}")],
    ):
        await expect(
            api.stub.IssueTicket(
                golden_pb2.IssueTicketRequest(user_id=f"two-{uuid.uuid4().hex[:6]}"),
                metadata=headers,
            ),
            grpc.StatusCode.UNAUTHENTICATED,
            Reason.UNAUTHENTICATED,
        )


async def test_a_readable_tokens_file_is_refused(stack: Stack) -> None:
    path = stack.settings.api_tokens_file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{TOKEN}\n")
    os.chmod(path, 0o644)
    with pytest.raises(Exception, match=r"0600|group|others"):
        await serve(stack.settings, pool=stack.pool, client=stack.client, address="127.0.0.1:0")


@pytest.mark.parametrize("taken", ["tiles", "grpc"])
async def test_a_port_in_use_stops_serve_with_nothing_left_open(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, taken: str
) -> None:
    """GOLDEN_HTTP_ADDR (bound first) or the gRPC address (bound after the pool and admission
    started) taken by another socket: serve() raises, and an in-process caller is left
    with no port bound, no admission refresher and no pool open."""
    write_tokens(stack.settings, TOKEN)
    pools: list[asyncpg.Pool] = []

    async def recorded_pool(*args: Any, **kwargs: Any) -> asyncpg.Pool:
        pool = await create_pool(*args, **kwargs)
        pools.append(pool)
        return pool

    monkeypatch.setattr(server_module, "create_pool", recorded_pool)

    def refreshers() -> int:
        return sum(
            1 for t in asyncio.all_tasks() if t.get_name() == "admission-refresh" and not t.done()
        )

    before = refreshers()
    with socket.socket() as holder:  # a plain socket: no SO_REUSEPORT to share the port with
        holder.bind((HOST, 0))
        holder.listen()
        held = holder.getsockname()[1]
        grpc_port, http_port = (free_port(), held) if taken == "tiles" else (held, free_port())
        settings = stack.settings.model_copy(
            update={"http_addr": f"{HOST}:{http_port}", "tiles_dir": tmp_path / "tiles"}
        )
        # grpcio reports a failed bind as RuntimeError; the tiles server as the bind's OSError.
        with pytest.raises(OSError if taken == "tiles" else RuntimeError) as raised:
            await serve(settings, client=stack.client, address=f"{HOST}:{grpc_port}")
        if taken == "tiles":
            assert getattr(raised.value, "errno", None) == errno.EADDRINUSE, raised.value
    assert not port_in_use(HOST, grpc_port), "the gRPC server still listens"
    assert not port_in_use(HOST, http_port), "the tiles server still listens"
    assert refreshers() == before, "the admission refresher still runs"
    if taken == "grpc":
        assert len(pools) == 1  # opened before the gRPC bind
    assert all(pool.is_closing() for pool in pools), "the API's own pool is still open"
