"""ReconcileReservationsWorkflow: run by a Temporal Schedule; reclaims slots of dead sagas."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.reconcile import ReconcilerActivities
    from golden_press.models import PublishInput, ReconcileResult
    from workflows.saga import BOUNDED_RETRY, DB_TIMEOUT, HEARTBEAT, SagaWorkflow


@workflow.defn
class ReconcileReservationsWorkflow(SagaWorkflow):
    """One reconciler pass: void expired reservations of closed sagas, then flush their events."""

    SEARCHABLE = False  # a housekeeping pass: `progress` only, no search attributes

    @workflow.run
    async def run(self) -> ReconcileResult:
        """Void, then drain the outbox so every void's event reaches the stream."""
        self._saga.step("void_expired")
        result = await workflow.execute_activity_method(
            ReconcilerActivities.void_expired_reservations,
            start_to_close_timeout=DB_TIMEOUT * 4,
            heartbeat_timeout=HEARTBEAT,
            retry_policy=BOUNDED_RETRY,
        )
        self._saga.step("publish")
        try:
            await workflow.execute_activity_method(
                ReconcilerActivities.publish_pending_events,
                PublishInput(up_to_leaf=-1),
                start_to_close_timeout=DB_TIMEOUT,
                heartbeat_timeout=HEARTBEAT,
                retry_policy=BOUNDED_RETRY,
            )
        except ActivityError:
            # NATS is down: the events wait in the outbox for the next pass or saga, so this
            # pass is not a failure (the UI's Failures view stays for bugs).
            workflow.logger.warning("outbox drain deferred: the event stream is unavailable")
            self._saga.last_error = "event stream unavailable; events wait in the outbox"
        self._saga.finish("reconciled")
        return result
