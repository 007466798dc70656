"""Publishing activity: drain the event outbox to JetStream, in ledger leaf order."""

from __future__ import annotations

from temporalio import activity

from activities.faults import NO_FAULTS, Faults
from activities.metrics import count_parked
from golden_press.models import PublishInput, PublishResult
from service.store.outbox import OutboxPublisher


class PublishingActivities:
    """Wraps the outbox publisher so sagas can wait until their event is on the stream."""

    def __init__(self, publisher: OutboxPublisher, faults: Faults = NO_FAULTS) -> None:
        self._publisher = publisher
        self._faults = faults

    @activity.defn(name="publish_events")
    async def publish_events(self, req: PublishInput) -> PublishResult:
        """Idempotent: JetStream dedups by event id, so a retry sends nothing twice."""
        await self._faults.before("publish")
        drained = await self._publisher.drain(up_to_leaf=req.up_to_leaf)
        count_parked(drained)
        self._faults.after_commit("publish")
        return PublishResult(published=drained.sent)
