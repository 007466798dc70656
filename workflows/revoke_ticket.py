"""RevokeTicketWorkflow: an administrator revokes an issued ticket (fraud); its event follows."""

from __future__ import annotations

from temporalio import workflow

from golden_press import sagas as sa

with workflow.unsafe.imports_passed_through():
    from activities.revoke_ticket import RevocationActivities
    from golden_press.models import RevokeTicketInput, RevokeTicketResult
    from workflows.saga import SagaWorkflow


@workflow.defn
class RevokeTicketWorkflow(SagaWorkflow):
    """revoke (state + ledger entry + outbox, one transaction) -> publish."""

    @workflow.run
    async def run(self, req: RevokeTicketInput) -> RevokeTicketResult:
        """Revoke once; a second revocation reports the first."""
        workflow.upsert_search_attributes([sa.TICKET_ID.value_set(str(req.ticket_id))])
        self._saga.step("revoke")
        result = await self.forward_step(
            RevocationActivities.revoke_ticket,
            req,
            summary="revoke: state and ledger entry in one transaction",
        )
        if result.leaf_index is not None:
            await self.publish_up_to(result.leaf_index)
        self._saga.finish(result.outcome)
        return result
