"""End to end through a real grpcio channel: every RPC, every error mapping, bearer auth."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from temporalio.client import Client

from golden_press.bundle import load_trust_roots, verify_bundle
from golden_press.errors import Reason
from golden_press.sagas import redeem_workflow_id
from service.api.convert import STATUS_FOR_REASON
from service.api.pb import golden_pb2
from service.cli.client import Api, Endpoint
from service.cli.keys import public_keys_json
from service.store.db import SLOTS_CHANNEL
from tests.helpers.api import API_TOKEN as TOKEN
from tests.helpers.api import ServedApi as ApiHandle
from tests.helpers.api import expect_error as expect
from tests.helpers.api import served_api
from tests.helpers.servers import Servers
from tests.helpers.stack import Stack, golden_stack

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def api(stack: Stack) -> AsyncIterator[ApiHandle]:
    """The API over this test's own stack."""
    async with served_api(stack) as handle:
        yield handle


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

    # The holder's service (bearer token) sees holders; the public view is tests/.../test_privacy.
    got = await api.stub.GetTicket(
        golden_pb2.GetTicketRequest(ticket_id=first.ticket_id), metadata=api.auth
    )
    assert got.ticket == first

    page1 = await api.stub.ListTickets(golden_pb2.ListTicketsRequest(page_size=3))
    page2 = await api.stub.ListTickets(
        golden_pb2.ListTicketsRequest(page_size=3, page_token=page1.next_page_token)
    )
    assert [t.serial for t in page1.tickets] == [1, 2, 3] and page1.next_page_token
    assert [t.serial for t in page2.tickets] == [4, 5] and not page2.next_page_token
    mine = await api.stub.ListTickets(
        golden_pb2.ListTicketsRequest(user_id=users[2]), metadata=api.auth
    )
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
        golden_pb2.GetInclusionProofRequest(ticket_id=first.ticket_id), metadata=api.auth
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
    assert resp.workflow_id == redeem_workflow_id(first.ticket_id)
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


async def test_leaf_zero_is_present_in_the_json_of_the_proof_response(api: ApiHandle) -> None:
    """The first ticket of a fresh ledger is leaf 0: GetInclusionProof's leaf_index must still
    show in its JSON rendering, and in the ticket it carries, for the holder and the public."""
    issued = await api.issue(uid(), uid("r"))
    request = golden_pb2.GetInclusionProofRequest(ticket_id=issued.ticket.ticket_id)
    for metadata in (api.auth, None):
        proof = await api.stub.GetInclusionProof(request, metadata=metadata)
        assert proof.HasField("leaf_index") and proof.leaf_index == 0
        rendered = json.loads(json_format.MessageToJson(proof))
        assert rendered["leafIndex"] == "0", rendered
        assert rendered["ticket"]["leafIndex"] == "0", rendered
        assert json.loads(proof.bundle_json)["leaf_index"] == 0


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


@dataclass
class Seeded:
    """One API with one issued ticket, shared by the error-mapping cases (each uses own users)."""

    api: ApiHandle
    holder: str
    ticket: golden_pb2.Ticket
    bundle: str


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def seeded(servers: Servers, session_dir: Path, client: Client) -> AsyncIterator[Seeded]:
    """A stack, its API and one ticket, built once for the whole error table."""
    async with golden_stack(servers, session_dir, client) as stack, served_api(stack) as api:
        holder = uid()
        ticket = (await api.issue(holder, f"r-{holder}")).ticket
        yield Seeded(api, holder, ticket, await api.bundle(ticket.ticket_id))


async def _denied(s: Seeded) -> Any:
    denied = uid("denied")
    await s.api.stack.pool.execute("INSERT INTO deny_list (user_id) VALUES ($1)", denied)
    return await s.api.issue(denied)


async def _rate_limited(s: Seeded) -> Any:
    busy = uid("busy")
    await s.api.stack.pool.execute(
        "INSERT INTO rate_limit (user_id, window_start, attempts) VALUES ($1, now(), $2)",
        busy,
        s.api.stack.settings.rate_limit_attempts,
    )
    return await s.api.issue(busy)


async def _forged_serial(s: Seeded) -> Any:
    forged = golden_pb2.Ticket()
    forged.CopyFrom(s.ticket)
    forged.serial = s.ticket.serial + 100
    return await s.api.stub.VerifyTicket(golden_pb2.VerifyTicketRequest(ticket=forged))


def _bundle_edit(edit: Callable[[dict[str, Any]], None]) -> Callable[[Seeded], Awaitable[Any]]:
    async def case(s: Seeded) -> Any:
        doc = json.loads(s.bundle)
        edit(doc)
        request = golden_pb2.VerifyTicketRequest(bundle_json=json.dumps(doc))
        return await s.api.stub.VerifyTicket(request)

    return case


def _next_leaf(doc: dict[str, Any]) -> None:
    doc["leaf_index"] += 1


def _grown_checkpoint(doc: dict[str, Any]) -> None:
    lines = doc["checkpoint"].split("\n")
    lines[1] = str(int(lines[1]) + 1)  # the tree size line: the note signature no longer holds
    doc["checkpoint"] = "\n".join(lines)


async def _thief(s: Seeded) -> Any:
    request = golden_pb2.RedeemTicketRequest(
        ticket_id=s.ticket.ticket_id, user_id=uid("thief"), bundle_json=s.bundle
    )
    return await s.api.stub.RedeemTicket(request, metadata=s.api.auth)


async def _in_progress(s: Seeded) -> Any:
    blocker = await s.api.stack.client.start_workflow(
        "NoSuchWorkflow",
        id=redeem_workflow_id(s.ticket.ticket_id),
        task_queue=f"nobody-polls-{uuid.uuid4().hex[:6]}",
    )
    request = golden_pb2.RedeemTicketRequest(
        ticket_id=s.ticket.ticket_id, user_id=s.holder, bundle_json=s.bundle
    )
    try:
        return await s.api.stub.RedeemTicket(request, metadata=s.api.auth)
    finally:
        await blocker.terminate("test done")


async def insert_voided(stack: Stack) -> uuid.UUID:
    """A row for a reservation that was voided before it was ever signed."""
    voided = uuid.uuid4()
    await stack.pool.execute(
        "INSERT INTO tickets (ticket_id, serial, user_id, request_id, request_hash, workflow_id,"
        " state, issued_at, user_salt) VALUES ($1, nextval('ticket_serial_seq'), $2, $3, 'x',"
        " 'wf', 'voided', now(), '\\x00')",
        voided,
        uid("gone"),
        uid("r"),
    )
    # As the void step does: the API processes' snapshots re-read (VerifyTicket answers from them).
    await stack.pool.execute("SELECT pg_notify($1, 'voided')", SLOTS_CHANNEL)
    return voided


async def _voided_proof(s: Seeded) -> Any:
    voided = await insert_voided(s.api.stack)
    request = golden_pb2.GetInclusionProofRequest(ticket_id=str(voided))
    return await s.api.stub.GetInclusionProof(request, metadata=s.api.auth)


async def _malformed_user(s: Seeded) -> Any:
    return await s.api.issue("not a user!")


async def _not_a_uuid(s: Seeded) -> Any:
    return await s.api.stub.GetTicket(golden_pb2.GetTicketRequest(ticket_id="nope"))


async def _second_ticket(s: Seeded) -> Any:
    return await s.api.issue(s.holder)


async def _reused_request_id(s: Seeded) -> Any:
    return await s.api.issue(uid(), f"r-{s.holder}")


async def _unknown_ticket(s: Seeded) -> Any:
    return await s.api.stub.GetTicket(golden_pb2.GetTicketRequest(ticket_id=str(uuid.uuid4())))


Case = tuple[str, Callable[[Seeded], Awaitable[Any]], grpc.StatusCode, Reason]
ERROR_CASES: list[Case] = [
    (
        "malformed user id",
        _malformed_user,
        grpc.StatusCode.INVALID_ARGUMENT,
        Reason.INVALID_REQUEST,
    ),
    ("ticket id not a UUID", _not_a_uuid, grpc.StatusCode.INVALID_ARGUMENT, Reason.INVALID_REQUEST),
    ("second ticket", _second_ticket, grpc.StatusCode.FAILED_PRECONDITION, Reason.ONE_PER_USER),
    (
        "request id reused by another user",
        _reused_request_id,
        grpc.StatusCode.FAILED_PRECONDITION,
        Reason.IDEMPOTENCY_KEY_REUSED,
    ),
    ("deny-listed user", _denied, grpc.StatusCode.PERMISSION_DENIED, Reason.USER_DENIED),
    ("over the rate limit", _rate_limited, grpc.StatusCode.RESOURCE_EXHAUSTED, Reason.RATE_LIMITED),
    (
        "unknown ticket",
        _unknown_ticket,
        grpc.StatusCode.NOT_FOUND,
        Reason.TICKET_NOT_FOUND,
    ),
    ("forged serial", _forged_serial, grpc.StatusCode.INVALID_ARGUMENT, Reason.BAD_SIGNATURE),
    (
        "proof for another leaf",
        _bundle_edit(_next_leaf),
        grpc.StatusCode.INVALID_ARGUMENT,
        Reason.BAD_PROOF,
    ),
    (
        "tampered checkpoint",
        _bundle_edit(_grown_checkpoint),
        grpc.StatusCode.INVALID_ARGUMENT,
        Reason.BAD_CHECKPOINT,
    ),
    ("redeemed by a non-issuee", _thief, grpc.StatusCode.FAILED_PRECONDITION, Reason.NOT_ISSUEE),
    (
        "redemption already running",
        _in_progress,
        grpc.StatusCode.ABORTED,
        Reason.REDEMPTION_IN_PROGRESS,
    ),
    (
        "proof of a voided ticket",
        _voided_proof,
        grpc.StatusCode.FAILED_PRECONDITION,
        Reason.TICKET_NOT_REDEEMABLE,
    ),
]


@pytest.mark.parametrize(
    ("make_call", "code", "reason"),
    [pytest.param(make, code, reason, id=name) for name, make, code, reason in ERROR_CASES],
)
async def test_error_mapping(
    seeded: Seeded,
    make_call: Callable[[Seeded], Awaitable[Any]],
    code: grpc.StatusCode,
    reason: Reason,
) -> None:
    """Each reason type arrives with its status code and exactly one ErrorInfo (golden-press)."""
    err = await expect(make_call(seeded), code, reason)
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None and len(status.details) == 1


async def test_voided_ticket_does_not_verify(api: ApiHandle) -> None:
    """VerifyTicket of a voided (never issued) ticket answers valid=false with its state."""
    voided = await insert_voided(api.stack)
    request = golden_pb2.VerifyTicketRequest(ticket_id=str(voided))
    # At once: a row newer than the snapshot is found by the read a miss makes.
    unsigned = await api.stub.VerifyTicket(request)
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
