"""Deliberately changed copies of IssueTicketWorkflow, for the replay guard's own tests.

Kept apart from the test module so the workflow sandbox re-imports only this small file.
"""

from __future__ import annotations

import uuid

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.issue_ticket import IssuanceActivities
    from golden_press.models import IssueTicketInput, IssueTicketResult, TicketRef
    from golden_press.sagas import ticket_id_for
    from workflows.issue_ticket import IssueTicketWorkflow
    from workflows.saga import BOUNDED_RETRY, DB_TIMEOUT


async def _extra_sign(ticket_id: uuid.UUID) -> None:
    await workflow.execute_activity_method(
        IssuanceActivities.sign_ticket,
        TicketRef(ticket_id=ticket_id),
        start_to_close_timeout=DB_TIMEOUT,
        retry_policy=BOUNDED_RETRY,
    )


@workflow.defn(name="IssueTicketWorkflow")
class SignFirstIssueTicketWorkflow(IssueTicketWorkflow):
    """A careless edit: sign before reserving (steps swapped)."""

    @workflow.run
    async def run(self, req: IssueTicketInput) -> IssueTicketResult:
        """Schedules sign_ticket where the history has reserve_slot."""
        await _extra_sign(ticket_id_for(req.request_id))
        return await super().run(req)


@workflow.defn(name="IssueTicketWorkflow")
class PatchedIssueTicketWorkflow(IssueTicketWorkflow):
    """The same edit, guarded: old executions take the old path on replay."""

    @workflow.run
    async def run(self, req: IssueTicketInput) -> IssueTicketResult:
        """New executions sign first; replays of old ones do not."""
        if workflow.patched("sign-before-reserve"):
            await _extra_sign(ticket_id_for(req.request_id))
        return await super().run(req)
