"""ReconcileReservationsWorkflow with faked activities: one pass, and a pass while NATS is down."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.reconcile import ReconcilerActivities
from golden_press import sagas as sa
from golden_press.models import Progress, PublishInput, ReconcileResult
from tests.helpers.fakes import Script, activity_names, fake_worker
from workflows.reconcile import ReconcileReservationsWorkflow

#: A saga waiting for an activity no fake provides would otherwise hang for the global 300 s.
pytestmark = pytest.mark.timeout(60)

VOIDED = [uuid.uuid4(), uuid.uuid4()]


class FakeReconciler:
    """ReconcilerActivities without PostgreSQL, Temporal client or NATS."""

    def __init__(self, script: Script) -> None:
        self.script = script

    @activity.defn(name="void_expired_reservations")
    async def void_expired_reservations(self) -> ReconcileResult:
        """Two expired reservations of closed sagas, voided."""
        await self.script.enter("void_expired_reservations")
        return ReconcileResult(voided=VOIDED)

    @activity.defn(name="publish_pending_events")
    async def publish_pending_events(self, req: PublishInput) -> int:
        """The voids' events drained from the outbox."""
        await self.script.enter("publish_pending_events", req)
        return len(VOIDED)


async def one_pass(client: Client, script: Script) -> tuple[ReconcileResult, Progress]:
    """Run one reconciler pass to its end: result and `progress`."""
    reconciler = FakeReconciler(script)
    activities: list[Callable[..., Any]] = [
        reconciler.void_expired_reservations,
        reconciler.publish_pending_events,
    ]
    async with fake_worker(client, [ReconcileReservationsWorkflow], activities) as tq:
        handle = await client.start_workflow(
            ReconcileReservationsWorkflow.run,
            id=f"{sa.reconcile_workflow_id(tq)}-{uuid.uuid4()}",
            task_queue=tq,
        )
        result = await handle.result()
        progress = await handle.query(ReconcileReservationsWorkflow.progress)
    return result, progress


def test_the_fakes_cover_every_real_activity_name() -> None:
    assert activity_names(FakeReconciler) == activity_names(ReconcilerActivities)


async def test_one_pass_voids_then_drains_the_whole_outbox(wf_client: Client) -> None:
    script = Script()
    result, progress = await one_pass(wf_client, script)

    assert script.calls == ["void_expired_reservations", "publish_pending_events"]
    assert script.inputs["publish_pending_events"] == [PublishInput(up_to_leaf=-1)]  # everything
    assert result == ReconcileResult(voided=VOIDED)
    assert progress == Progress(steps_done=["void_expired", "publish"], current_step="done")


async def test_a_pass_while_the_stream_is_down_still_completes(wf_client: Client) -> None:
    # BOUNDED_RETRY gives the drain six attempts (backoff skipped by the test server), then the
    # events wait in the outbox: the pass completes, it is not a Failed workflow.
    down = [ApplicationError("nats: no servers available", type="NoServersError")] * 6
    script = Script().fail("publish_pending_events", *down)
    result, progress = await one_pass(wf_client, script)

    assert script.calls == ["void_expired_reservations", *["publish_pending_events"] * 6]
    assert result == ReconcileResult(voided=VOIDED)
    assert progress.current_step == "done"
    assert progress.last_error == "event stream unavailable; events wait in the outbox"
