"""The privacy model through real gRPC (docs/privacy.md): no public answer carries a user id, a
ticket signature or a salt; with the bearer token the holder's service sees and redeems."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import json_format
from google.protobuf.message import Message

from golden_press.bundle import load_bundle, load_trust_roots, verify_bundle, verify_public_bundle
from golden_press.errors import Reason
from service.api.pb import golden_pb2
from service.api.servicer import GoldenPressService
from service.cli.client import Api, Endpoint
from service.cli.keys import public_keys_json
from service.store.outbox import events_pb2
from tests.helpers.api import ServedApi as ApiHandle
from tests.helpers.api import expect_error as expect
from tests.helpers.api import served_api
from tests.helpers.stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def api(stack: Stack) -> AsyncIterator[ApiHandle]:
    """The API over this test's own stack."""
    async with served_api(stack) as handle:
        yield handle


def _secrets(user: str, salt: bytes, signature: str) -> list[bytes]:
    """Every form a leaked holder or salt could take in a response."""
    return [
        user.encode(),
        salt,
        base64.b64encode(salt),
        salt.hex().encode(),
        signature.encode(),
        base64.b64decode(signature),
    ]


def _assert_clean(what: str, message: Message, secrets: list[bytes]) -> None:
    wire = message.SerializeToString()
    text = json_format.MessageToJson(message).encode()
    for secret in secrets:
        assert secret not in wire and secret not in text, f"{what} leaks {secret[:24]!r}"


async def _public_calls(api: ApiHandle, ticket_id: str, public_bundle: str) -> dict[str, Any]:
    """Every public read, without a token."""
    stub = api.stub
    calls: dict[str, Any] = {
        "GetCheckpoint": stub.GetCheckpoint(golden_pb2.GetCheckpointRequest()),
        "GetPublicKeys": stub.GetPublicKeys(golden_pb2.GetPublicKeysRequest()),
        "GetTicket": stub.GetTicket(golden_pb2.GetTicketRequest(ticket_id=ticket_id)),
        "ListTickets": stub.ListTickets(golden_pb2.ListTicketsRequest()),
        "GetInclusionProof": stub.GetInclusionProof(
            golden_pb2.GetInclusionProofRequest(ticket_id=ticket_id)
        ),
        "VerifyTicket(id)": stub.VerifyTicket(golden_pb2.VerifyTicketRequest(ticket_id=ticket_id)),
        "VerifyTicket(bundle)": stub.VerifyTicket(
            golden_pb2.VerifyTicketRequest(bundle_json=public_bundle)
        ),
    }
    answers = {name: await call for name, call in calls.items()}
    if "GetEntries" in vars(GoldenPressService):  # the public log, once served (tiles' twin)
        cp = answers["GetCheckpoint"]
        answers["GetEntries"] = await stub.GetEntries(
            golden_pb2.GetEntriesRequest(start=0, end=cp.tree_size)
        )
    return answers


async def test_public_reads_carry_no_user_no_salt_no_signature(api: ApiHandle) -> None:
    user = f"alice-{uuid.uuid4().hex[:8]}"
    issued = await api.issue(user)
    ticket = issued.ticket
    salt = bytes(
        await api.stack.pool.fetchval(
            "SELECT user_salt FROM tickets WHERE ticket_id = $1", uuid.UUID(ticket.ticket_id)
        )
    )
    secrets = _secrets(user, salt, ticket.signature)

    public = await api.stub.GetInclusionProof(
        golden_pb2.GetInclusionProofRequest(ticket_id=ticket.ticket_id)
    )
    answers = await _public_calls(api, ticket.ticket_id, public.bundle_json)
    for name, answer in answers.items():
        _assert_clean(name, answer, secrets)

    # What the public still learns is checkable: the public bundle verifies, holder aside.
    roots = load_trust_roots(
        await public_keys_json(Api(Endpoint(address=api.address, token="", dsn="")))
    )
    bundle = load_bundle(public.bundle_json)
    assert bundle.ticket.user_id == "" and bundle.user_salt == "" and bundle.ticket.signature == ""
    assert verify_public_bundle(bundle, roots).size == public.tree_size
    by_bundle = answers["VerifyTicket(bundle)"]
    assert by_bundle.valid and by_bundle.proof_valid and by_bundle.signature_valid
    assert answers["GetTicket"].ticket.ticket_id == ticket.ticket_id
    assert answers["GetTicket"].ticket.user_id == ""

    # The public bundle cannot redeem: it does not prove the holder.
    await expect(
        api.stub.RedeemTicket(
            golden_pb2.RedeemTicketRequest(
                ticket_id=ticket.ticket_id, user_id=user, bundle_json=public.bundle_json
            ),
            metadata=api.auth,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        Reason.BAD_SIGNATURE,
    )


async def test_listing_by_user_needs_a_token(api: ApiHandle) -> None:
    user = f"bob-{uuid.uuid4().hex[:8]}"
    await api.issue(user)
    await expect(
        api.stub.ListTickets(golden_pb2.ListTicketsRequest(user_id=user)),
        grpc.StatusCode.UNAUTHENTICATED,
        Reason.UNAUTHENTICATED,
    )
    await expect(
        api.stub.ListTickets(
            golden_pb2.ListTicketsRequest(user_id=user),
            metadata=[("authorization", "Bearer wrong")],
        ),
        grpc.StatusCode.UNAUTHENTICATED,
        Reason.UNAUTHENTICATED,
    )
    mine = await api.stub.ListTickets(
        golden_pb2.ListTicketsRequest(user_id=user), metadata=api.auth
    )
    assert [t.user_id for t in mine.tickets] == [user] and mine.tickets[0].signature


async def test_holder_bundle_redeems_and_the_event_has_no_salt(api: ApiHandle) -> None:
    user = f"carol-{uuid.uuid4().hex[:8]}"
    issued = await api.issue(user)
    ticket = issued.ticket
    holder = await api.stub.GetInclusionProof(
        golden_pb2.GetInclusionProofRequest(ticket_id=ticket.ticket_id), metadata=api.auth
    )
    bundle = load_bundle(holder.bundle_json)
    assert bundle.ticket.user_id == user and bundle.user_salt and bundle.ticket.signature
    roots = load_trust_roots(
        await public_keys_json(Api(Endpoint(address=api.address, token="", dsn="")))
    )
    verify_bundle(bundle, roots)

    await api.stub.RedeemTicket(
        golden_pb2.RedeemTicketRequest(
            ticket_id=ticket.ticket_id, user_id=user, bundle_json=holder.bundle_json
        ),
        metadata=api.auth,
    )
    payload = await api.stack.pool.fetchval(
        "SELECT payload FROM event_outbox WHERE kind = 'redeemed' AND ticket_id = $1",
        uuid.UUID(ticket.ticket_id),
    )
    event = events_pb2.GoldenTicketRedeemed.FromString(bytes(payload))
    in_event = json.loads(event.proof_bundle_json)
    assert in_event["user_salt"] == "" and in_event["ticket"]["user_id"] == user
    assert bundle.user_salt not in event.proof_bundle_json
    assert base64.b64decode(bundle.user_salt) not in bytes(payload)
