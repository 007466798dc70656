"""RedeemTicketWorkflow: verify signature -> verify ledger proof -> redeem once -> publish.

The checks write nothing; a failed check completes the workflow with outcome `rejected` and the
check's reason type. The redeem transaction (state `redeemed` plus the `redeemed` ledger entry) is
the point of no return: after it the saga only retries forward.
"""

from __future__ import annotations

from temporalio import workflow

from golden_press import sagas as sa

with workflow.unsafe.imports_passed_through():
    from activities.redeem_ticket import RedemptionActivities
    from golden_press.models import (
        CheckResult,
        Outcome,
        RedeemInput,
        RedeemTicketInput,
        RedeemTicketResult,
        VerifyBundleInput,
    )
    from workflows.saga import (
        CHECK_RETRY,
        CHECKS_TIMEOUT,
        DB_TIMEOUT,
        HEARTBEAT,
        SagaWorkflow,
    )


@workflow.defn
class RedeemTicketWorkflow(SagaWorkflow):
    """Redeem one golden ticket at most once, for its original issuee only."""

    @workflow.run
    async def run(self, req: RedeemTicketInput) -> RedeemTicketResult:
        """Run the checks, then the once-only redemption and its event."""
        workflow.upsert_search_attributes(
            [sa.TICKET_ID.value_set(str(req.ticket_id)), sa.USER_ID.value_set(req.user_id)]
        )
        checks = VerifyBundleInput(ticket_id=req.ticket_id, bundle=req.bundle)

        self._saga.step("verify_signature")
        check: CheckResult = await workflow.execute_activity_method(
            RedemptionActivities.verify_ticket_signature,
            checks,
            start_to_close_timeout=DB_TIMEOUT,
            heartbeat_timeout=HEARTBEAT,
            schedule_to_close_timeout=CHECKS_TIMEOUT,
            retry_policy=CHECK_RETRY,
            summary="verify the issuer signature",
        )
        if check.reason:
            return self._reject(req, check.reason, check.message)

        self._saga.step("verify_proof")
        check = await workflow.execute_activity_method(
            RedemptionActivities.verify_ledger_proof,
            checks,
            start_to_close_timeout=DB_TIMEOUT,
            heartbeat_timeout=HEARTBEAT,
            schedule_to_close_timeout=CHECKS_TIMEOUT,
            retry_policy=CHECK_RETRY,
            summary="verify inclusion and checkpoint consistency",
        )
        if check.reason:
            return self._reject(req, check.reason, check.message)

        self._saga.step("redeem")
        redeemed = await self.forward_step(
            RedemptionActivities.redeem_ticket,
            RedeemInput(
                ticket_id=req.ticket_id,
                user_id=req.user_id,
                # The run, not just the id: every caller's redemption has the same id.
                workflow_id=f"{workflow.info().workflow_id}/{workflow.info().run_id}",
                bundle_json=req.bundle.model_dump_json(),
            ),
            summary="redeem once: state and ledger entry in one transaction",
        )
        if redeemed.leaf_index is None:
            return self._reject(req, redeemed.reason, redeemed.message)

        await self.publish_up_to(redeemed.leaf_index)
        self._saga.finish(Outcome.REDEEMED)
        return RedeemTicketResult(
            outcome=Outcome.REDEEMED, ticket_id=req.ticket_id, leaf_index=redeemed.leaf_index
        )

    def _reject(self, req: RedeemTicketInput, reason: str, message: str) -> RedeemTicketResult:
        self._saga.last_error = f"{reason}: {message}"
        self._saga.finish(Outcome.REJECTED)
        return RedeemTicketResult(
            outcome=Outcome.REJECTED, ticket_id=req.ticket_id, reason=reason, message=message
        )
