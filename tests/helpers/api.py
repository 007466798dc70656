"""The gRPC API served in-process over a test's stack, and a check for typed failures."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from golden_press.errors import Reason
from golden_press.settings import Settings
from service.api.convert import error_reason
from service.api.pb import golden_pb2, golden_pb2_grpc
from service.api.server import bound_port, serve, shutdown
from tests.helpers.stack import Stack

#: The bearer token the served API accepts.
API_TOKEN = "test-token-" + uuid.uuid4().hex


@dataclass
class ServedApi:
    """A served API over the test's stack and a stub on a real channel."""

    stack: Stack
    stub: golden_pb2_grpc.GoldenPressStub
    channel: grpc.aio.Channel
    address: str

    @property
    def auth(self) -> list[tuple[str, str]]:
        """Metadata of an authorised write."""
        return [("authorization", f"Bearer {API_TOKEN}")]

    async def issue(
        self, user: str, request_id: str | None = None
    ) -> golden_pb2.IssueTicketResponse:
        """IssueTicket for a user (a fresh request id unless one is given)."""
        return await self.stub.IssueTicket(
            golden_pb2.IssueTicketRequest(user_id=user, request_id=request_id or ""),
            metadata=self.auth,
        )

    async def bundle(self, ticket_id: str) -> str:
        """The holder's proof bundle JSON (GetInclusionProof with a token: salt included)."""
        resp = await self.stub.GetInclusionProof(
            golden_pb2.GetInclusionProofRequest(ticket_id=ticket_id), metadata=self.auth
        )
        return str(resp.bundle_json)


def write_tokens(settings: Settings, *tokens: str) -> Path:
    """The API's tokens file with these bearer tokens, private as the API requires."""
    path = settings.api_tokens_file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{token}\n" for token in tokens))
    os.chmod(path, 0o600)
    return path


@asynccontextmanager
async def served_api(stack: Stack) -> AsyncIterator[ServedApi]:
    """The API on a free port, sharing the stack's pool and client; API_TOKEN may write."""
    write_tokens(stack.settings, "# test tokens", API_TOKEN)
    server = await serve(
        stack.settings, pool=stack.pool, client=stack.client, address="127.0.0.1:0"
    )
    address = f"127.0.0.1:{bound_port(server)}"
    channel = grpc.aio.insecure_channel(address)
    try:
        yield ServedApi(stack, golden_pb2_grpc.GoldenPressStub(channel), channel, address)
    finally:
        await channel.close()
        await shutdown(server, grace=None)


async def expect_error(
    call: object, code: grpc.StatusCode, reason: Reason | str
) -> grpc.aio.AioRpcError:
    """Await a call that must fail with this status code and ErrorInfo reason."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    err = info.value
    assert (err.code(), error_reason(err)) == (code, str(reason)), (err.details() or "")[:300]
    return err


def point_cli_at(
    monkeypatch: pytest.MonkeyPatch, stack: Stack, api_address: str, state_dir: Path
) -> None:
    """The environment of a CLI run in this process that talks to this stack: its API (with
    the token), its database, Temporal and task queue, and a state dir of its own."""
    monkeypatch.setenv("GOLDEN_GRPC_ADDR", api_address)
    monkeypatch.setenv("GOLDEN_API_TOKENS_FILE", str(stack.settings.api_tokens_file))
    monkeypatch.setenv("GOLDEN_STATE_DIR", str(state_dir))
    monkeypatch.setenv("GOLDEN_PG_DSN", stack.settings.pg_dsn)
    monkeypatch.setenv("TEMPORAL_ADDRESS", stack.settings.temporal_address)
    monkeypatch.setenv("GOLDEN_TASK_QUEUE", stack.settings.task_queue)
