"""Saga bookkeeping shared by the workflows: progress query state and search-attribute upserts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy

from activities.publish import PublishingActivities
from golden_press import sagas as sa
from golden_press.models import Progress, PublishInput

#: Business steps before the point of no return: a few tries, then compensate.
BOUNDED_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=6,
)
#: After the point of no return: retry forward until it works (DB or NATS outage).
FOREVER_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=0,
)
#: Read-only checks: nothing to compensate, so ride out an outage of the database for up to
#: CHECKS_TIMEOUT instead of failing the saga; past that something is truly broken.
CHECK_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=0,
)
CHECKS_TIMEOUT = timedelta(minutes=15)
#: Longer than the pool's lock_timeout (4 s) and statement_timeout (8 s), so a lock wait fails
#: inside the activity first; short enough that a SIGKILLed worker's activity is retried soon.
DB_TIMEOUT = timedelta(seconds=10)


T = TypeVar("T")


async def forward(step: Awaitable[T]) -> T:
    """Run a step past the point of no return to completion, even if the workflow is cancelled."""
    task = asyncio.ensure_future(step)
    while True:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                return task.result()
            continue


class SagaTracker:
    """Records the current step for the `progress` query and the GoldenSagaStep search attribute."""

    def __init__(self, *, searchable: bool = True) -> None:
        self.done: list[str] = []
        self.current = ""
        self.last_error = ""
        self._searchable = searchable

    def step(self, name: str) -> None:
        """Enter a saga step; the Web UI can filter on it (GoldenSagaStep='publish')."""
        if self.current:
            self.done.append(self.current)
        self.current = name
        if self._searchable:
            workflow.upsert_search_attributes([sa.SAGA_STEP.value_set(name)])

    def finish(self, outcome: str) -> None:
        """Close the saga: the step becomes `done` and GoldenOutcome is set."""
        if self.current:
            self.done.append(self.current)
        self.current = "done"
        if self._searchable:
            workflow.upsert_search_attributes(
                [sa.SAGA_STEP.value_set("done"), sa.OUTCOME.value_set(outcome)]
            )

    def progress(self) -> Progress:
        """Snapshot for the `progress` query."""
        return Progress(
            steps_done=list(self.done), current_step=self.current, last_error=self.last_error
        )


class SagaWorkflow:
    """Base of every saga: a tracker and the `progress` query the Web UI can call."""

    #: Upsert GoldenSagaStep/GoldenOutcome as the saga moves (workflows the UI filters on).
    SEARCHABLE = True

    def __init__(self) -> None:
        self._saga = SagaTracker(searchable=self.SEARCHABLE)

    @workflow.query
    def progress(self) -> Progress:
        """Steps done, current step, last error."""
        return self._saga.progress()

    async def publish_up_to(self, leaf_index: int) -> None:
        """Step `publish`: wait until every event up to this ledger leaf is on the stream.

        Past the point of no return, so it retries through outages and ignores cancellation.
        """
        self._saga.step("publish")
        await forward(
            workflow.execute_activity_method(
                PublishingActivities.publish_events,
                PublishInput(up_to_leaf=leaf_index),
                start_to_close_timeout=DB_TIMEOUT,
                retry_policy=FOREVER_RETRY,
                summary="publish events up to this ledger leaf",
            )
        )
