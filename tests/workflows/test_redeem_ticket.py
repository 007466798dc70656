"""RedeemTicketWorkflow with faked activities: redeemed, and each rejection, without a database.

verify_signature -> verify_proof -> redeem (point of no return) -> publish; a failed check
completes `rejected` with the check's reason and runs nothing after it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client

from activities.publish import PublishingActivities
from activities.redeem_ticket import RedemptionActivities
from golden_press import sagas as sa
from golden_press.errors import Reason
from golden_press.models import (
    CheckResult,
    Outcome,
    Progress,
    ProofBundle,
    PublishInput,
    RedeemInput,
    RedeemResult,
    RedeemTicketInput,
    RedeemTicketResult,
    Ticket,
    TicketState,
    VerifyBundleInput,
)
from tests.helpers.fakes import (
    FakePublishing,
    Script,
    activity_names,
    fake_worker,
    search_attribute,
)
from workflows.redeem_ticket import RedeemTicketWorkflow

#: A saga waiting for an activity no fake provides would otherwise hang for the global 300 s.
pytestmark = pytest.mark.timeout(60)

REDEEMED_LEAF = 77
REDEEM_CALLS = ["verify_ticket_signature", "verify_ledger_proof", "redeem_ticket", "publish_events"]


class FakeRedemption:
    """RedemptionActivities without PostgreSQL: each step passes or gives its planned reason."""

    def __init__(self, script: Script, *, refuse: dict[str, Reason] | None = None) -> None:
        self.script = script
        self.refuse = refuse or {}

    def check(self, name: str) -> CheckResult:
        """A pass, or the rejection planned for this step."""
        reason = self.refuse.get(name)
        return CheckResult(reason=reason, message=f"{name} refused") if reason else CheckResult()

    @activity.defn(name="verify_ticket_signature")
    async def verify_ticket_signature(self, req: VerifyBundleInput) -> CheckResult:
        """Step 1 (a read-only check)."""
        await self.script.enter("verify_ticket_signature", req)
        return self.check("verify_ticket_signature")

    @activity.defn(name="verify_ledger_proof")
    async def verify_ledger_proof(self, req: VerifyBundleInput) -> CheckResult:
        """Step 2 (a read-only check)."""
        await self.script.enter("verify_ledger_proof", req)
        return self.check("verify_ledger_proof")

    @activity.defn(name="redeem_ticket")
    async def redeem_ticket(self, req: RedeemInput) -> RedeemResult:
        """Step 3: the redeemed leaf, or the refusal found under the lock (e.g. NotIssuee)."""
        await self.script.enter("redeem_ticket", req)
        reason = self.refuse.get("redeem_ticket")
        if reason:
            return RedeemResult(reason=reason, message="redeem_ticket refused")
        return RedeemResult(leaf_index=REDEEMED_LEAF)


def new_redemption() -> RedeemTicketInput:
    """A redemption of a ticket of its own (a fresh workflow id); the bundle is never checked."""
    ticket = Ticket(
        ticket_id=uuid.uuid4(),
        serial=3,
        user_id="veruca",
        issued_at=datetime(2026, 12, 3, tzinfo=UTC),
        key_id="k1",
        signature="c2ln",
        state=TicketState.ISSUED,
        leaf_index=5,
    )
    bundle = ProofBundle(
        ticket=ticket,
        user_salt="c2FsdA==",
        entry="ZW50cnk=",
        leaf_index=5,
        tree_size=6,
        inclusion_proof=[],
        checkpoint="golden-press.local/ledger\n6\nroot\n",
    )
    return RedeemTicketInput(ticket_id=ticket.ticket_id, user_id="veruca", bundle=bundle)


async def redeem(
    client: Client, redemption: FakeRedemption
) -> tuple[RedeemTicketResult, Progress, str]:
    """Run one redemption saga to its end: result, `progress`, GoldenOutcome."""
    publishing = FakePublishing(redemption.script)
    activities: list[Callable[..., Any]] = [
        redemption.verify_ticket_signature,
        redemption.verify_ledger_proof,
        redemption.redeem_ticket,
        publishing.publish_events,
    ]
    req = new_redemption()
    async with fake_worker(client, [RedeemTicketWorkflow], activities) as tq:
        handle = await client.start_workflow(
            RedeemTicketWorkflow.run,
            req,
            id=sa.redeem_workflow_id(req.ticket_id),
            task_queue=tq,
        )
        result = await handle.result()
        progress = await handle.query(RedeemTicketWorkflow.progress)
        outcome = await search_attribute(handle, sa.OUTCOME)
    redeemed = redemption.script.inputs["redeem_ticket"]
    if redeemed:
        # The run, not only the id, tells this run's own lost result from another caller's.
        assert redeemed[0].workflow_id == f"{handle.id}/{handle.result_run_id}"
    return result, progress, outcome


def test_the_fakes_cover_every_real_activity_name() -> None:
    assert activity_names(FakeRedemption, FakePublishing) == activity_names(
        RedemptionActivities, PublishingActivities
    )


async def test_redeemed_runs_the_checks_then_redeems_and_publishes(wf_client: Client) -> None:
    script = Script()
    result, progress, outcome = await redeem(wf_client, FakeRedemption(script))

    assert script.calls == REDEEM_CALLS
    assert (result.outcome, result.leaf_index, result.reason) == (
        Outcome.REDEEMED,
        REDEEMED_LEAF,
        "",
    )
    assert script.inputs["publish_events"] == [PublishInput(up_to_leaf=REDEEMED_LEAF)]
    assert progress == Progress(
        steps_done=["verify_signature", "verify_proof", "redeem", "publish"], current_step="done"
    )
    assert outcome == "redeemed"


@pytest.mark.parametrize(
    ("step", "reason"),
    [
        ("verify_ticket_signature", Reason.BAD_SIGNATURE),
        ("verify_ledger_proof", Reason.BAD_PROOF),
        ("redeem_ticket", Reason.NOT_ISSUEE),
    ],
)
async def test_each_rejection_completes_rejected_and_stops_there(
    wf_client: Client, step: str, reason: Reason
) -> None:
    script = Script()
    result, progress, outcome = await redeem(
        wf_client, FakeRedemption(script, refuse={step: reason})
    )

    # Nothing after the refusing step runs: no redemption after a failed check, no event.
    assert script.calls == REDEEM_CALLS[: REDEEM_CALLS.index(step) + 1]
    assert (result.outcome, result.reason, result.leaf_index) == (Outcome.REJECTED, reason, None)
    assert result.message == f"{step} refused"
    assert progress.current_step == "done"
    assert progress.last_error == f"{reason}: {step} refused"
    assert outcome == "rejected"
