"""End to end through a real grpcio channel: every RPC, every error mapping, bearer auth."""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from golden_press.bundle import load_trust_roots, verify_bundle
from golden_press.errors import Reason
from service.api_server import (
    STATUS_FOR_REASON,
    bound_port,
    error_reason,
    golden_pb2,
    golden_pb2_grpc,
    serve,
    shutdown,
)
from service.cli import Api, Endpoint, public_keys_json
from tests.helpers import Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")

TOKEN = "test-token-" + uuid.uuid4().hex


@dataclass
class ApiHandle:
    """A served API over the test's stack and a stub on a real channel."""

    stack: Stack
    stub: golden_pb2_grpc.GoldenPressStub
    channel: grpc.aio.Channel
    address: str

    @property
    def auth(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {TOKEN}")]

    async def issue(
        self, user: str, request_id: str | None = None
    ) -> golden_pb2.IssueTicketResponse:
        return await self.stub.IssueTicket(
            golden_pb2.IssueTicketRequest(user_id=user, request_id=request_id or ""),
            metadata=self.auth,
        )

    async def bundle(self, ticket_id: str) -> str:
        resp = await self.stub.GetInclusionProof(
            golden_pb2.GetInclusionProofRequest(ticket_id=ticket_id)
        )
        return str(resp.bundle_json)


@pytest_asyncio.fixture(loop_scope="session")
async def api(stack: Stack) -> AsyncIterator[ApiHandle]:
    """The API served in-process on a free port, sharing the stack's pool and client."""
    settings = stack.settings
    settings.api_tokens_file.parent.mkdir(parents=True, exist_ok=True)
    settings.api_tokens_file.write_text(f"# test tokens\n{TOKEN}\n")
    os.chmod(settings.api_tokens_file, 0o600)
    server = await serve(settings, pool=stack.pool, client=stack.client, address="127.0.0.1:0")
    address = f"127.0.0.1:{bound_port(server)}"
    channel = grpc.aio.insecure_channel(address)
    try:
        yield ApiHandle(stack, golden_pb2_grpc.GoldenPressStub(channel), channel, address)
    finally:
        await channel.close()
        await shutdown(server, grace=None)


async def expect(call: object, code: grpc.StatusCode, reason: Reason | str) -> grpc.aio.AioRpcError:
    """Await a call that must fail with this status code and ErrorInfo reason."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    err = info.value
    assert (err.code(), error_reason(err)) == (code, str(reason)), err.details()
    return err


def uid(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_every_rpc_happy_path(api: ApiHandle) -> None:
    """Issue five, sixth refused, get/list/verify/proof/checkpoint/keys, redeem once."""
    users = [uid() for _ in range(5)]
    issued = [await api.issue(u, f"r-{u}") for u in users]
    assert sorted(r.ticket.serial for r in issued) == [1, 2, 3, 4, 5]
    assert all(
        r.ticket.state == golden_pb2.TICKET_STATE_ISSUED and r.ticket.signature for r in issued
    )
    first = issued[0].ticket

    # A winner's retry gets its ticket back (no workflow, no CapReached).
    again = await api.issue(users[0], f"r-{users[0]}")
    assert again.replayed and again.ticket.ticket_id == first.ticket_id

    await expect(api.issue(uid()), grpc.StatusCode.RESOURCE_EXHAUSTED, Reason.CAP_REACHED)

    got = await api.stub.GetTicket(golden_pb2.GetTicketRequest(ticket_id=first.ticket_id))
    assert got.ticket == first

    page1 = await api.stub.ListTickets(golden_pb2.ListTicketsRequest(page_size=3))
    page2 = await api.stub.ListTickets(
        golden_pb2.ListTicketsRequest(page_size=3, page_token=page1.next_page_token)
    )
    assert [t.serial for t in page1.tickets] == [1, 2, 3] and page1.next_page_token
    assert [t.serial for t in page2.tickets] == [4, 5] and not page2.next_page_token
    mine = await api.stub.ListTickets(golden_pb2.ListTicketsRequest(user_id=users[2]))
    assert [t.user_id for t in mine.tickets] == [users[2]]
    redeemed = await api.stub.ListTickets(
        golden_pb2.ListTicketsRequest(state=golden_pb2.TICKET_STATE_REDEEMED)
    )
    assert list(redeemed.tickets) == []

    by_id = await api.stub.VerifyTicket(golden_pb2.VerifyTicketRequest(ticket_id=first.ticket_id))
    assert by_id.valid and by_id.signature_valid and by_id.redeemable
    by_fields = await api.stub.VerifyTicket(golden_pb2.VerifyTicketRequest(ticket=first))
    assert by_fields.valid

    proof = await api.stub.GetInclusionProof(
        golden_pb2.GetInclusionProofRequest(ticket_id=first.ticket_id)
    )
    bundle = json.loads(proof.bundle_json)
    assert bundle["version"] == 1 and bundle["leaf_index"] == proof.leaf_index
    assert [base64.b64encode(h).decode() for h in proof.inclusion_proof] == bundle[
        "inclusion_proof"
    ]
    by_bundle = await api.stub.VerifyTicket(
        golden_pb2.VerifyTicketRequest(bundle_json=proof.bundle_json)
    )
    assert by_bundle.valid and by_bundle.proof_valid
    assert by_bundle.checkpoint_tree_size == proof.tree_size

    checkpoint = await api.stub.GetCheckpoint(golden_pb2.GetCheckpointRequest())
    assert checkpoint.tree_size >= 5 and checkpoint.checkpoint.startswith(checkpoint.origin)

    keys = await api.stub.GetPublicKeys(golden_pb2.GetPublicKeysRequest())
    purposes = {(k.purpose, k.status) for k in keys.keys}
    assert {("issuer", "current"), ("ledger", "current")} <= purposes
    assert first.key_id in {k.key_id for k in keys.keys}

    # Offline: the bundle verifies with the published keys only.
    roots = load_trust_roots(
        await public_keys_json(Api(Endpoint(address=api.address, token="", dsn="")))
    )
    from golden_press.bundle import load_bundle

    assert verify_bundle(load_bundle(proof.bundle_json), roots).size == proof.tree_size

    resp = await api.stub.RedeemTicket(
        golden_pb2.RedeemTicketRequest(
            ticket_id=first.ticket_id, user_id=users[0], bundle_json=proof.bundle_json
        ),
        metadata=api.auth,
    )
    assert resp.ticket_id == first.ticket_id and resp.HasField("leaf_index")
    after = await api.stub.VerifyTicket(golden_pb2.VerifyTicketRequest(ticket_id=first.ticket_id))
    assert after.valid and not after.redeemable
    assert after.state == golden_pb2.TICKET_STATE_REDEEMED
    await expect(
        api.stub.RedeemTicket(
            golden_pb2.RedeemTicketRequest(
                ticket_id=first.ticket_id, user_id=users[0], bundle_json=proof.bundle_json
            ),
            metadata=api.auth,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        Reason.ALREADY_REDEEMED,
    )


async def test_unauthenticated_writes_refused(api: ApiHandle) -> None:
    """IssueTicket and RedeemTicket need a known bearer token; reads do not."""
    request = golden_pb2.IssueTicketRequest(user_id=uid(), request_id=uid("r"))
    for metadata in (None, [("authorization", "Bearer wrong")], [("authorization", TOKEN)]):
        await expect(
            api.stub.IssueTicket(request, metadata=metadata),
            grpc.StatusCode.UNAUTHENTICATED,
            Reason.UNAUTHENTICATED,
        )
    await expect(
        api.stub.RedeemTicket(golden_pb2.RedeemTicketRequest(ticket_id=str(uuid.uuid4()))),
        grpc.StatusCode.UNAUTHENTICATED,
        Reason.UNAUTHENTICATED,
    )
    # Nothing was admitted: no ticket, and the public reads work without a token.
    listed = await api.stub.ListTickets(golden_pb2.ListTicketsRequest())
    assert list(listed.tickets) == []


async def test_error_mapping(api: ApiHandle) -> None:
    """Each reason type arrives with its status code and an ErrorInfo in golden-press's domain."""
    pool = api.stack.pool
    holder = uid()
    ticket = (await api.issue(holder, f"r-{holder}")).ticket
    bundle = await api.bundle(ticket.ticket_id)

    err = await expect(
        api.issue("not a user!"), grpc.StatusCode.INVALID_ARGUMENT, Reason.INVALID_REQUEST
    )
    status = __import__("grpc_status").rpc_status.from_call(err)
    assert status is not None and len(status.details) == 1
    await expect(
        api.stub.GetTicket(golden_pb2.GetTicketRequest(ticket_id="nope")),
        grpc.StatusCode.INVALID_ARGUMENT,
        Reason.INVALID_REQUEST,
    )
    await expect(api.issue(holder), grpc.StatusCode.FAILED_PRECONDITION, Reason.ONE_PER_USER)
    await expect(
        api.issue(uid(), f"r-{holder}"),
        grpc.StatusCode.FAILED_PRECONDITION,
        Reason.IDEMPOTENCY_KEY_REUSED,
    )
    denied = uid("denied")
    await pool.execute("INSERT INTO deny_list (user_id) VALUES ($1)", denied)
    await expect(api.issue(denied), grpc.StatusCode.PERMISSION_DENIED, Reason.USER_DENIED)

    busy = uid("busy")
    attempts = api.stack.settings.rate_limit_attempts
    for _ in range(attempts):
        await pool.execute(
            "INSERT INTO rate_limit (user_id, window_start, attempts) VALUES ($1, now(), $2)"
            " ON CONFLICT (user_id) DO UPDATE SET attempts = $2",
            busy,
            attempts,
        )
    await expect(api.issue(busy), grpc.StatusCode.RESOURCE_EXHAUSTED, Reason.RATE_LIMITED)

    await expect(
        api.stub.GetTicket(golden_pb2.GetTicketRequest(ticket_id=str(uuid.uuid4()))),
        grpc.StatusCode.NOT_FOUND,
        Reason.TICKET_NOT_FOUND,
    )

    # Tampering: signature, inclusion proof, checkpoint.
    forged = golden_pb2.Ticket()
    forged.CopyFrom(ticket)
    forged.serial = ticket.serial + 100
    await expect(
        api.stub.VerifyTicket(golden_pb2.VerifyTicketRequest(ticket=forged)),
        grpc.StatusCode.INVALID_ARGUMENT,
        Reason.BAD_SIGNATURE,
    )
    doc = json.loads(bundle)
    doc["leaf_index"] += 1
    await expect(
        api.stub.VerifyTicket(golden_pb2.VerifyTicketRequest(bundle_json=json.dumps(doc))),
        grpc.StatusCode.INVALID_ARGUMENT,
        Reason.BAD_PROOF,
    )
    doc = json.loads(bundle)
    lines = doc["checkpoint"].split("\n")
    lines[1] = str(int(lines[1]) + 1)  # the tree size line: the note signature no longer holds
    doc["checkpoint"] = "\n".join(lines)
    await expect(
        api.stub.VerifyTicket(golden_pb2.VerifyTicketRequest(bundle_json=json.dumps(doc))),
        grpc.StatusCode.INVALID_ARGUMENT,
        Reason.BAD_CHECKPOINT,
    )

    # Redemption: not the issuee; in progress elsewhere; a voided ticket has no proof.
    await expect(
        api.stub.RedeemTicket(
            golden_pb2.RedeemTicketRequest(
                ticket_id=ticket.ticket_id, user_id=uid("thief"), bundle_json=bundle
            ),
            metadata=api.auth,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        Reason.NOT_ISSUEE,
    )
    blocker = await api.stack.client.start_workflow(
        "NoSuchWorkflow",
        id=f"redeem-{ticket.ticket_id}",
        task_queue=f"nobody-polls-{uuid.uuid4().hex[:6]}",
    )
    try:
        await expect(
            api.stub.RedeemTicket(
                golden_pb2.RedeemTicketRequest(
                    ticket_id=ticket.ticket_id, user_id=holder, bundle_json=bundle
                ),
                metadata=api.auth,
            ),
            grpc.StatusCode.ABORTED,
            Reason.REDEMPTION_IN_PROGRESS,
        )
    finally:
        await blocker.terminate("test done")
    voided = uuid.uuid4()
    await pool.execute(
        "INSERT INTO tickets (ticket_id, serial, user_id, request_id, request_hash, workflow_id,"
        " state, issued_at, user_salt) VALUES ($1, nextval('ticket_serial_seq'), $2, $3, 'x',"
        " 'wf', 'voided', now(), '\\x00')",
        voided,
        uid("gone"),
        uid("r"),
    )
    await expect(
        api.stub.GetInclusionProof(golden_pb2.GetInclusionProofRequest(ticket_id=str(voided))),
        grpc.StatusCode.FAILED_PRECONDITION,
        Reason.TICKET_NOT_REDEEMABLE,
    )
    unsigned = await api.stub.VerifyTicket(golden_pb2.VerifyTicketRequest(ticket_id=str(voided)))
    assert not unsigned.valid and unsigned.state == golden_pb2.TICKET_STATE_VOIDED


async def test_status_mapping_covers_every_reason() -> None:
    """No reason type falls through to a default code."""
    assert set(STATUS_FOR_REASON) == set(Reason)


async def test_health_and_reflection(api: ApiHandle) -> None:
    """Health checking says SERVING and reflection lists the service."""
    health = health_pb2_grpc.HealthStub(api.channel)
    resp = await health.Check(health_pb2.HealthCheckRequest(service="golden.v1.GoldenPress"))
    assert resp.status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(api.channel)
    names: set[str] = set()
    async for answer in refl.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    ):
        names |= {s.name for s in answer.list_services_response.service}
    assert "golden.v1.GoldenPress" in names
