"""IssueTicketWorkflow with faked activities: every saga path, no database, no NATS.

reserve -> sign -> finalise -> ledger_append (point of no return) -> publish; before the ledger a
permanent failure or a cancellation runs the void, after it the saga only retries forward.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError, CancelledError

from activities.issue_ticket import IssuanceActivities
from activities.publish import PublishingActivities
from golden_press import sagas as sa
from golden_press.models import (
    FinaliseInput,
    IssueTicketInput,
    IssueTicketResult,
    LedgerAppendResult,
    Outcome,
    Progress,
    PublishInput,
    ReserveInput,
    ReserveResult,
    SignResult,
    Ticket,
    TicketRef,
    TicketState,
    VoidInput,
    VoidResult,
    request_hash,
)
from tests.helpers.fakes import (
    FakePublishing,
    Script,
    activity_names,
    cancel_handled,
    fake_worker,
    search_attribute,
)
from workflows.issue_ticket import IssueTicketWorkflow

#: A saga waiting for an activity no fake provides would otherwise hang for the global 300 s.
pytestmark = pytest.mark.timeout(60)

ISSUED_AT = datetime(2026, 12, 3, 5, 0, tzinfo=UTC)
LEDGER_LEAF = 41
VOID_LEAF = 42
#: The five steps of an issuance, as the fakes record them.
ISSUED_CALLS = [
    "reserve_slot",
    "sign_ticket",
    "finalise_ticket",
    "append_issued_to_ledger",
    "publish_events",
]


def permanent(step: str) -> ApplicationError:
    """What a step raises when it can never succeed (no retry: the saga compensates at once)."""
    return ApplicationError(
        f"injected permanent failure at {step}", type="InjectedFault", non_retryable=True
    )


def transient(step: str) -> ApplicationError:
    """A retryable failure (a DB or NATS outage, a lost result after the commit)."""
    return ApplicationError(f"injected failure at {step}", type="InjectedFault")


class FakeIssuance:
    """IssuanceActivities without PostgreSQL or keys: a reservation is a Ticket in memory."""

    def __init__(
        self,
        script: Script,
        *,
        reserved_state: TicketState = TicketState.RESERVED,
        rejection: str = "",
        void_state: TicketState = TicketState.VOIDED,
    ) -> None:
        self.script = script
        self.reserved_state = reserved_state
        self.rejection = rejection
        self.void_state = void_state

    def ticket(self, ticket_id: uuid.UUID, state: TicketState) -> Ticket:
        """The ticket row this fake pretends to hold."""
        return Ticket(
            ticket_id=ticket_id,
            serial=1,
            user_id="charlie",
            issued_at=ISSUED_AT,
            key_id="k1",
            signature="c2ln" if state != TicketState.RESERVED else "",
            state=state,
        )

    @activity.defn(name="reserve_slot")
    async def reserve_slot(self, req: ReserveInput) -> ReserveResult:
        """A slot, or the planned rejection."""
        await self.script.enter("reserve_slot", req)
        if self.rejection:
            return ReserveResult(reason=self.rejection, message=f"refused: {self.rejection}")
        return ReserveResult(ticket=self.ticket(req.ticket_id, self.reserved_state))

    @activity.defn(name="sign_ticket")
    async def sign_ticket(self, ref: TicketRef) -> SignResult:
        """A made-up signature (crypto lives in the real activity, not in the saga)."""
        await self.script.enter("sign_ticket", ref)
        return SignResult(signature="c2ln", key_id="k1")

    @activity.defn(name="finalise_ticket")
    async def finalise_ticket(self, req: FinaliseInput) -> Ticket:
        """The ticket, now issued."""
        await self.script.enter("finalise_ticket", req)
        return self.ticket(req.ticket_id, TicketState.ISSUED)

    @activity.defn(name="append_issued_to_ledger")
    async def append_issued_to_ledger(self, ref: TicketRef) -> LedgerAppendResult:
        """The point of no return: the ticket's leaf."""
        await self.script.enter("append_issued_to_ledger", ref)
        ticket = self.ticket(ref.ticket_id, TicketState.ISSUED)
        return LedgerAppendResult(leaf_index=LEDGER_LEAF, tree_size=LEDGER_LEAF + 1, ticket=ticket)

    @activity.defn(name="void_reservation")
    async def void_reservation(self, req: VoidInput) -> VoidResult:
        """The compensation; refuses (voided=False) for a ticket already in the ledger."""
        await self.script.enter("void_reservation", req)
        if self.void_state != TicketState.VOIDED:
            return VoidResult(voided=False, state=self.void_state)
        return VoidResult(voided=True, state=TicketState.VOIDED, leaf_index=VOID_LEAF)


def new_request() -> IssueTicketInput:
    """A request of its own for every test (a fresh workflow id)."""
    return IssueTicketInput(
        user_id="charlie", request_id=f"wf-{uuid.uuid4()}", request_hash=request_hash("charlie")
    )


async def start_issue(
    client: Client, task_queue: str, req: IssueTicketInput
) -> WorkflowHandle[IssueTicketWorkflow, IssueTicketResult]:
    """Start the saga under its real workflow id."""
    return await client.start_workflow(
        IssueTicketWorkflow.run, req, id=sa.issue_workflow_id(req.request_id), task_queue=task_queue
    )


def activities_of(issuance: FakeIssuance) -> list[Callable[..., Any]]:
    """Every fake the issuance saga calls."""
    publishing = FakePublishing(issuance.script)
    return [
        issuance.reserve_slot,
        issuance.sign_ticket,
        issuance.finalise_ticket,
        issuance.append_issued_to_ledger,
        issuance.void_reservation,
        publishing.publish_events,
    ]


def test_the_fakes_cover_every_real_activity_name() -> None:
    # A real activity renamed without its fake would leave a test's saga waiting for a worker.
    assert activity_names(FakeIssuance, FakePublishing) == activity_names(
        IssuanceActivities, PublishingActivities
    )


async def test_issued_runs_all_five_steps(wf_client: Client) -> None:
    script = Script()
    req = new_request()
    async with fake_worker(
        wf_client, [IssueTicketWorkflow], activities_of(FakeIssuance(script))
    ) as tq:
        handle = await start_issue(wf_client, tq, req)
        result = await handle.result()
        progress = await handle.query(IssueTicketWorkflow.progress)
        step = await search_attribute(handle, sa.SAGA_STEP)
        outcome = await search_attribute(handle, sa.OUTCOME)
        ticket_attr = await search_attribute(handle, sa.TICKET_ID)
        user_attr = await search_attribute(handle, sa.USER_ID)

    ticket_id = sa.ticket_id_for(req.request_id)
    assert result == IssueTicketResult(
        outcome=Outcome.ISSUED,
        ticket_id=ticket_id,
        serial=1,
        signature="c2ln",
        key_id="k1",
        issued_at=ISSUED_AT,
        leaf_index=LEDGER_LEAF,
    )
    assert script.calls == ISSUED_CALLS
    reserve = script.inputs["reserve_slot"][0]
    assert (reserve.ticket_id, reserve.workflow_id) == (ticket_id, handle.id)
    assert script.inputs["finalise_ticket"][0].signature == "c2ln"
    assert script.inputs["publish_events"] == [PublishInput(up_to_leaf=LEDGER_LEAF)]
    assert progress == Progress(
        steps_done=["reserve", "sign", "finalise", "ledger_append", "publish"],
        current_step="done",
    )
    assert (step, outcome, ticket_attr, user_attr) == ("done", "issued", str(ticket_id), "charlie")


@pytest.mark.parametrize(
    "reason", ["CapReached", "OnePerUser", "UserDenied", "IdempotencyKeyReused"]
)
async def test_rejected_at_reserve_completes_with_the_reason(
    wf_client: Client, reason: str
) -> None:
    script = Script()
    issuance = FakeIssuance(script, rejection=reason)
    async with fake_worker(wf_client, [IssueTicketWorkflow], activities_of(issuance)) as tq:
        handle = await start_issue(wf_client, tq, new_request())
        result = await handle.result()  # Completed, not Failed: a rejection is not a bug
        progress = await handle.query(IssueTicketWorkflow.progress)
        outcome = await search_attribute(handle, sa.OUTCOME)

    assert (result.outcome, result.reason, result.ticket_id) == (Outcome.REJECTED, reason, None)
    assert script.calls == ["reserve_slot"]  # nothing reserved, so nothing to compensate
    assert progress == Progress(steps_done=["reserve"], current_step="done")
    assert outcome == "rejected"


@pytest.mark.parametrize("step", ["sign_ticket", "finalise_ticket"])
async def test_permanent_failure_before_the_ledger_compensates(
    wf_client: Client, step: str
) -> None:
    script = Script().fail(step, permanent(step))
    async with fake_worker(
        wf_client, [IssueTicketWorkflow], activities_of(FakeIssuance(script))
    ) as tq:
        req = new_request()
        handle = await start_issue(wf_client, tq, req)
        result = await handle.result()
        progress = await handle.query(IssueTicketWorkflow.progress)
        outcome = await search_attribute(handle, sa.OUTCOME)

    done = ISSUED_CALLS[: ISSUED_CALLS.index(step) + 1]
    assert script.calls == [*done, "void_reservation", "publish_events"]
    saga_step = step.removesuffix("_ticket")
    assert script.inputs["void_reservation"] == [
        VoidInput(
            ticket_id=sa.ticket_id_for(req.request_id), reason=f"compensated after {saga_step}"
        )
    ]
    assert script.inputs["publish_events"] == [PublishInput(up_to_leaf=VOID_LEAF)]
    assert (result.outcome, result.reason) == (Outcome.COMPENSATED, "InjectedFault")
    assert (
        result.message == f"{saga_step} failed: InjectedFault: injected permanent failure at {step}"
    )
    assert progress.steps_done[-2:] == ["compensate", "publish"]
    assert "injected permanent failure" in progress.last_error
    assert outcome == "compensated"


async def test_retries_run_out_before_the_ledger_then_compensate(wf_client: Client) -> None:
    # BOUNDED_RETRY: six attempts (backoff 0.2 s .. 3.2 s, skipped by the test server), then void.
    script = Script().fail("sign_ticket", *(transient("sign") for _ in range(6)))
    async with fake_worker(
        wf_client, [IssueTicketWorkflow], activities_of(FakeIssuance(script))
    ) as tq:
        result = await (await start_issue(wf_client, tq, new_request())).result()

    assert script.calls == [
        "reserve_slot",
        *["sign_ticket"] * 6,
        "void_reservation",
        "publish_events",
    ]
    assert result.outcome == Outcome.COMPENSATED


async def cancel_while_blocked(
    client: Client, script: Script, step: str, *, release: bool = False
) -> tuple[WorkflowExecutionStatus, IssueTicketResult | None]:
    """Start a saga, cancel it while `step` blocks; its final status and result (None if none).

    With `release`, the step (one the saga does not cancel) completes once the saga handled the
    cancel request; otherwise it blocks until its cancellation reaches it.
    """
    hold = script.block(step)
    async with fake_worker(
        client, [IssueTicketWorkflow], activities_of(FakeIssuance(script))
    ) as tq:
        handle = await start_issue(client, tq, new_request())
        await asyncio.wait_for(hold.started.wait(), 10)
        await handle.cancel()
        if release:
            await cancel_handled(handle)
            hold.released.set()
        try:
            result: IssueTicketResult | None = await handle.result()
        except WorkflowFailureError as err:
            assert isinstance(err.cause, CancelledError)
            result = None
        status = (await handle.describe()).status
        assert status is not None
        return status, result


@pytest.mark.parametrize("step", ["sign_ticket", "finalise_ticket"])
async def test_cancel_before_the_ledger_runs_the_void(private_wf_client: Client, step: str) -> None:
    script = Script()
    status, result = await cancel_while_blocked(private_wf_client, script, step)

    # The compensation ran (the void, then its event; never the ledger), then the saga ended
    # Canceled: a cancel is not reported as a `compensated` completion.
    done = ISSUED_CALLS[: ISSUED_CALLS.index(step) + 1]
    assert script.calls == [*done, "void_reservation", "publish_events"]
    assert status == WorkflowExecutionStatus.CANCELED
    assert result is None


async def test_cancel_during_reserve_voids_only_after_the_reserve_ended(wf_client: Client) -> None:
    # reserve waits for its cancellation to complete (WAIT_CANCELLATION_COMPLETED), so the void
    # cannot race a reserve that is about to commit; it learns of the cancel by heartbeating
    # (the fake heartbeats, as every real step does under activities.guard.StepGuard).
    script = Script()
    status, result = await cancel_while_blocked(wf_client, script, "reserve_slot")

    assert script.timeline == [
        "reserve_slot",
        "reserve_slot cancelled",
        "void_reservation",
        "publish_events",
    ]
    assert status == WorkflowExecutionStatus.CANCELED
    assert result is None


async def test_past_the_ledger_it_retries_forward_and_never_voids(wf_client: Client) -> None:
    # The append committed but its result was lost (retryable), then NATS is down twice.
    script = (
        Script()
        .fail("append_issued_to_ledger", transient("append"))
        .fail("publish_events", transient("publish"), transient("publish"))
    )
    async with fake_worker(
        wf_client, [IssueTicketWorkflow], activities_of(FakeIssuance(script))
    ) as tq:
        handle = await start_issue(wf_client, tq, new_request())
        result = await handle.result()
        progress = await handle.query(IssueTicketWorkflow.progress)

    assert script.calls == [
        "reserve_slot",
        "sign_ticket",
        "finalise_ticket",
        *["append_issued_to_ledger"] * 2,
        *["publish_events"] * 3,
    ]
    assert (result.outcome, result.leaf_index) == (Outcome.ISSUED, LEDGER_LEAF)
    assert progress.steps_done == ["reserve", "sign", "finalise", "ledger_append", "publish"]


@pytest.mark.parametrize("step", ["append_issued_to_ledger", "publish_events"])
async def test_cancel_past_the_ledger_still_issues(wf_client: Client, step: str) -> None:
    script = Script()
    status, result = await cancel_while_blocked(wf_client, script, step, release=True)

    # The blocked step ignored the cancel (workflows.saga.forward); no void, the event went out.
    assert script.calls == ISSUED_CALLS
    assert status == WorkflowExecutionStatus.COMPLETED
    assert result is not None
    assert result.outcome == Outcome.ISSUED


async def test_rerun_finds_its_ticket_in_the_ledger_and_finishes_forward(wf_client: Client) -> None:
    # An earlier run appended to the ledger and died; this run's finalise fails for good, and
    # the void refuses (voided=False, state issued): past the point of no return, finish forward.
    script = Script().fail("finalise_ticket", permanent("finalise"))
    issuance = FakeIssuance(script, void_state=TicketState.ISSUED)
    async with fake_worker(wf_client, [IssueTicketWorkflow], activities_of(issuance)) as tq:
        result = await (await start_issue(wf_client, tq, new_request())).result()

    assert script.calls == [
        "reserve_slot",
        "sign_ticket",
        "finalise_ticket",
        "void_reservation",
        "append_issued_to_ledger",
        "publish_events",
    ]
    assert (result.outcome, result.leaf_index) == (Outcome.ISSUED, LEDGER_LEAF)


async def test_rerun_of_an_issued_request_continues_from_the_ledger(wf_client: Client) -> None:
    script = Script()
    issuance = FakeIssuance(script, reserved_state=TicketState.ISSUED)
    async with fake_worker(wf_client, [IssueTicketWorkflow], activities_of(issuance)) as tq:
        result = await (await start_issue(wf_client, tq, new_request())).result()

    assert script.calls == ["reserve_slot", "append_issued_to_ledger", "publish_events"]
    assert result.outcome == Outcome.ISSUED


async def test_rerun_of_a_compensated_request_stays_compensated(wf_client: Client) -> None:
    script = Script()
    issuance = FakeIssuance(script, reserved_state=TicketState.VOIDED)
    async with fake_worker(wf_client, [IssueTicketWorkflow], activities_of(issuance)) as tq:
        result = await (await start_issue(wf_client, tq, new_request())).result()

    assert script.calls == ["reserve_slot"]
    assert (result.outcome, result.reason) == (Outcome.COMPENSATED, "Voided")


async def test_reservation_voided_by_the_reconciler_completes_compensated(
    wf_client: Client,
) -> None:
    # The append finds the row voided (the reconciler reclaimed it while no run was alive).
    voided = ApplicationError("ticket is not issuable", type="TicketVoided", non_retryable=True)
    script = Script().fail("append_issued_to_ledger", voided)
    async with fake_worker(
        wf_client, [IssueTicketWorkflow], activities_of(FakeIssuance(script))
    ) as tq:
        handle = await start_issue(wf_client, tq, new_request())
        result = await handle.result()
        outcome = await search_attribute(handle, sa.OUTCOME)

    assert script.calls == ISSUED_CALLS[:4]  # no void of its own, no event
    assert (result.outcome, result.reason) == (Outcome.COMPENSATED, "TicketVoided")
    assert outcome == "compensated"
