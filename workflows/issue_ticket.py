"""IssueTicketWorkflow: the issuance saga, step by step as in the seed's sequence diagram.

    reserve -> sign -> finalise -> ledger_append (point of no return) -> publish

Before the ledger holds the ticket, a permanent failure or a cancellation compensates (void the
reservation: slot released, void recorded in the ledger). From the ledger append on, the saga only
retries forward. Business rejections complete with outcome `rejected`; Failed means a bug.
"""

from __future__ import annotations

import asyncio
import uuid

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception
from temporalio.workflow import ActivityCancellationType

from golden_press import sagas as sa
from golden_press.sagas import ticket_id_for

with workflow.unsafe.imports_passed_through():
    from activities.issue_ticket import IssuanceActivities
    from golden_press.models import (
        FinaliseInput,
        IssueTicketInput,
        IssueTicketResult,
        Outcome,
        ReserveInput,
        Ticket,
        TicketRef,
        TicketState,
        VoidInput,
    )
    from workflows.saga import (
        BOUNDED_RETRY,
        DB_TIMEOUT,
        HEARTBEAT,
        SagaWorkflow,
    )


#: Histories before this patch completed a cancelled saga as `compensated` and let a cancel that
#: arrived while `reserve` ran go unnoticed; with it, a cancelled saga compensates and ends
#: Canceled.
CANCEL_PATCH = "cancel-compensates-and-ends-canceled"


def _cancelled(err: BaseException) -> bool:
    """Whether this error is the workflow's own cancellation (asyncio's, or a step's)."""
    if isinstance(err, asyncio.CancelledError):
        return True
    return (
        workflow.cancellation_reason() is not None
        and is_cancelled_exception(err)
        and workflow.patched(CANCEL_PATCH)
    )


@workflow.defn
class IssueTicketWorkflow(SagaWorkflow):
    """Mint one golden ticket, or complete with the reason it was refused."""

    @workflow.run
    async def run(self, req: IssueTicketInput) -> IssueTicketResult:
        """Run the saga; the result says issued, rejected or compensated."""
        ticket_id = ticket_id_for(req.request_id)
        workflow.upsert_search_attributes(
            [sa.TICKET_ID.value_set(str(ticket_id)), sa.USER_ID.value_set(req.user_id)]
        )
        try:
            ticket = await self._reserve_sign_finalise(req, ticket_id)
        except (ActivityError, asyncio.CancelledError) as err:
            return await self._compensate(ticket_id, err)
        if isinstance(ticket, IssueTicketResult):
            return ticket
        return await self._append_and_publish(ticket_id)

    async def _append_and_publish(self, ticket_id: uuid.UUID) -> IssueTicketResult:
        """Steps 4-5. Point of no return: from here the saga never compensates, it retries."""
        self._saga.step("ledger_append")
        try:
            appended = await self.forward_step(
                IssuanceActivities.append_issued_to_ledger,
                TicketRef(ticket_id=ticket_id),
                summary="append the issued entry to the ledger (point of no return)",
            )
        except ActivityError as err:
            if _error_type(err) != "TicketVoided":
                raise
            # The reconciler voided this reservation while no run of its saga was alive (a
            # rerun of a request whose earlier run died): the void stands, it is not a bug.
            self._saga.finish(Outcome.COMPENSATED)
            return IssueTicketResult(
                outcome=Outcome.COMPENSATED,
                ticket_id=ticket_id,
                reason="TicketVoided",
                message="the reservation was voided by the reconciler after its lease",
            )
        await self.publish_up_to(appended.leaf_index)
        self._saga.finish(Outcome.ISSUED)
        ticket = appended.ticket
        return IssueTicketResult(
            outcome=Outcome.ISSUED,
            ticket_id=ticket_id,
            serial=ticket.serial if ticket else None,
            signature=ticket.signature if ticket else "",
            key_id=ticket.key_id if ticket else "",
            issued_at=ticket.issued_at if ticket else None,
            leaf_index=appended.leaf_index,
        )

    async def _reserve_sign_finalise(
        self, req: IssueTicketInput, ticket_id: uuid.UUID
    ) -> Ticket | IssueTicketResult:
        """Steps 1-3; returns a rejection result instead of a ticket when a rule refuses."""
        self._saga.step("reserve")
        reserved = await workflow.execute_activity_method(
            IssuanceActivities.reserve_slot,
            ReserveInput(
                ticket_id=ticket_id,
                user_id=req.user_id,
                request_id=req.request_id,
                request_hash=req.request_hash,
                workflow_id=workflow.info().workflow_id,
            ),
            start_to_close_timeout=DB_TIMEOUT,
            heartbeat_timeout=HEARTBEAT,
            retry_policy=BOUNDED_RETRY,
            summary="reserve a slot: advisory lock, rules, count, insert",
            # On cancellation, wait for an in-flight reserve to finish, so the void that follows
            # sees its row instead of racing it (a late commit would hold a slot until its lease).
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )
        if reserved.ticket is None:
            self._saga.finish(Outcome.REJECTED)
            return IssueTicketResult(
                outcome=Outcome.REJECTED, reason=reserved.reason, message=reserved.message
            )
        ticket = reserved.ticket
        if ticket.state == TicketState.VOIDED:
            # An earlier run of this request was compensated: that stays its result.
            self._saga.finish(Outcome.COMPENSATED)
            return IssueTicketResult(
                outcome=Outcome.COMPENSATED,
                ticket_id=ticket.ticket_id,
                serial=ticket.serial,
                reason="Voided",
                message="this request's reservation was voided",
            )
        if ticket.state != TicketState.RESERVED:
            return ticket  # issued by an earlier run: continue forward from the ledger step
        if workflow.cancellation_reason() is not None and workflow.patched(CANCEL_PATCH):
            # The cancel arrived as the reserve committed: honour it, the slot is given back.
            raise asyncio.CancelledError("cancelled during reserve")
        self._saga.step("sign")
        signed = await workflow.execute_activity_method(
            IssuanceActivities.sign_ticket,
            TicketRef(ticket_id=ticket_id),
            start_to_close_timeout=DB_TIMEOUT,
            heartbeat_timeout=HEARTBEAT,
            retry_policy=BOUNDED_RETRY,
            summary="sign the stored ticket (Ed25519)",
        )
        self._saga.step("finalise")
        return await workflow.execute_activity_method(
            IssuanceActivities.finalise_ticket,
            FinaliseInput(ticket_id=ticket_id, signature=signed.signature, key_id=signed.key_id),
            start_to_close_timeout=DB_TIMEOUT,
            heartbeat_timeout=HEARTBEAT,
            retry_policy=BOUNDED_RETRY,
            summary="store the signature, state issued",
        )

    async def _compensate(self, ticket_id: uuid.UUID, err: BaseException) -> IssueTicketResult:
        """Release the slot and record the void, then report (or re-raise a cancellation)."""
        failed_step = self._saga.current
        why = self._saga.last_error = _describe(err)
        self._saga.step("compensate")
        voided = await self.forward_step(
            IssuanceActivities.void_reservation,
            VoidInput(ticket_id=ticket_id, reason=f"compensated after {failed_step}"),
            summary="compensate: void the reservation, record it in the ledger",
        )
        if not voided.voided and voided.state != TicketState.VOIDED:
            # A rerun found its ticket already in the ledger: never void it, finish forward.
            result = await self._append_and_publish(ticket_id)
            if _cancelled(err):
                raise err
            return result
        if voided.leaf_index is not None:
            await self.publish_up_to(voided.leaf_index)
        self._saga.finish(Outcome.COMPENSATED)
        if _cancelled(err):
            raise err
        return IssueTicketResult(
            outcome=Outcome.COMPENSATED,
            ticket_id=ticket_id,
            reason=_error_type(err),
            message=f"{failed_step} failed: {why}",
        )


def _error_type(err: BaseException) -> str:
    cause = err.cause if isinstance(err, ActivityError) else None
    if isinstance(cause, ApplicationError) and cause.type:
        return cause.type
    return type(err).__name__


def _describe(err: BaseException) -> str:
    cause = err.cause if isinstance(err, ActivityError) else None
    return str(cause or err) or type(err).__name__
