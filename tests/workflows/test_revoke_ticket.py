"""RevokeTicketWorkflow with faked activities: revoked (then its event) and rejected."""

from __future__ import annotations

import uuid

import pytest
from temporalio import activity
from temporalio.client import Client

from activities.publish import PublishingActivities
from activities.revoke_ticket import RevocationActivities
from golden_press import sagas as sa
from golden_press.errors import Reason
from golden_press.models import Progress, PublishInput, RevokeTicketInput, RevokeTicketResult
from tests.helpers.fakes import (
    FakePublishing,
    Script,
    activity_names,
    fake_worker,
    search_attribute,
)
from workflows.revoke_ticket import RevokeTicketWorkflow

#: A saga waiting for an activity no fake provides would otherwise hang for the global 300 s.
pytestmark = pytest.mark.timeout(60)

REVOKED_LEAF = 12


class FakeRevocation:
    """RevocationActivities without PostgreSQL: revokes, or refuses as for a ticket not issued."""

    def __init__(self, script: Script, *, refuse: bool = False) -> None:
        self.script = script
        self.refuse = refuse

    @activity.defn(name="revoke_ticket")
    async def revoke_ticket(self, req: RevokeTicketInput) -> RevokeTicketResult:
        """The revoke transaction's answer."""
        await self.script.enter("revoke_ticket", req)
        if self.refuse:
            return RevokeTicketResult(
                outcome="rejected",
                ticket_id=req.ticket_id,
                reason=Reason.TICKET_NOT_REDEEMABLE,
                message="only issued tickets can be revoked; this one is reserved",
            )
        return RevokeTicketResult(
            outcome="revoked", ticket_id=req.ticket_id, leaf_index=REVOKED_LEAF
        )


async def revoke(
    client: Client, revocation: FakeRevocation
) -> tuple[RevokeTicketInput, RevokeTicketResult, Progress, str]:
    """Run one revocation saga to its end: input, result, `progress`, GoldenOutcome."""
    publishing = FakePublishing(revocation.script)
    req = RevokeTicketInput(ticket_id=uuid.uuid4(), reason="fraud")
    async with fake_worker(
        client, [RevokeTicketWorkflow], [revocation.revoke_ticket, publishing.publish_events]
    ) as tq:
        handle = await client.start_workflow(
            RevokeTicketWorkflow.run, req, id=sa.revoke_workflow_id(req.ticket_id), task_queue=tq
        )
        result = await handle.result()
        progress = await handle.query(RevokeTicketWorkflow.progress)
        outcome = await search_attribute(handle, sa.OUTCOME)
        assert await search_attribute(handle, sa.TICKET_ID) == str(req.ticket_id)
    return req, result, progress, outcome


def test_the_fakes_cover_every_real_activity_name() -> None:
    assert activity_names(FakeRevocation, FakePublishing) == activity_names(
        RevocationActivities, PublishingActivities
    )


async def test_revoked_then_its_event_is_published(wf_client: Client) -> None:
    script = Script()
    req, result, progress, outcome = await revoke(wf_client, FakeRevocation(script))

    assert script.calls == ["revoke_ticket", "publish_events"]
    assert script.inputs["revoke_ticket"] == [req]
    assert script.inputs["publish_events"] == [PublishInput(up_to_leaf=REVOKED_LEAF)]
    assert result == RevokeTicketResult(
        outcome="revoked", ticket_id=req.ticket_id, leaf_index=REVOKED_LEAF
    )
    assert progress == Progress(steps_done=["revoke", "publish"], current_step="done")
    assert outcome == "revoked"


async def test_rejected_writes_no_event(wf_client: Client) -> None:
    script = Script()
    req, result, progress, outcome = await revoke(wf_client, FakeRevocation(script, refuse=True))

    assert script.calls == ["revoke_ticket"]
    assert (result.outcome, result.ticket_id, result.reason, result.leaf_index) == (
        "rejected",
        req.ticket_id,
        Reason.TICKET_NOT_REDEEMABLE,
        None,
    )
    assert progress == Progress(steps_done=["revoke"], current_step="done")
    assert outcome == "rejected"
