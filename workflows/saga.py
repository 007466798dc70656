"""Saga bookkeeping shared by the workflows: progress query state and search-attribute upserts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

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
#:
#: Every FOREVER path, and why none of them can retry an error that can never succeed:
#: - ledger_append, redeem, revoke, void (compensation): their inputs are validated models
#:   (a workflow whose input fails its model fails at once: the worker's
#:   workflow_failure_exception_types), and any ValueError/ValidationError raised inside a step
#:   is made non-retryable by activities.guard.StepGuard. A ticket voided behind a rerun's back
#:   is the non-retryable TicketVoided. What is left is the database being away.
#: - publish: a row NATS refuses for good (too big, refused by the stream) is parked as a dead
#:   letter by the outbox publisher, so only NATS being away is retried.
#: - redemption checks (CHECK_RETRY, bounded by CHECKS_TIMEOUT): read-only; bad bundles are
#:   business rejections, returned, never raised.
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
#: Steps past the point of no return retry in rounds (SagaWorkflow.forward_step): a round of a
#: few attempts, then the saga records the error where operators look, pauses, and goes again.
ROUND_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=2),
    maximum_attempts=2,
)
ROUND_PAUSE_MAX = timedelta(seconds=10)
#: Histories before it ran forward steps as one activity with FOREVER_RETRY.
FORWARD_PATCH = "forward-steps-report-their-errors"
#: Longer than the pool's lock_timeout (4 s) and statement_timeout (8 s, service.store.db), so a
#: lock wait or a stuck statement fails inside the activity first (a herd queues on the cap's
#: lock). A dead worker is noticed by HEARTBEAT, not by this.
DB_TIMEOUT = timedelta(seconds=10)
#: Every step heartbeats (activities.guard): a step whose worker was SIGKILLed is retried on
#: another worker this long after its last beat, and a cancellation reaches a waiting step.
#: A step resumes ~0.3-0.9 s after its heartbeat timeout (the first retry's 200 ms, Temporal's
#: timer and dispatch), so 2 s keeps the resume under 3 s (issue 13: 9). What a live step must
#: never do is go this long without a beat: the guard beats every HEARTBEAT / 10, so its event
#: loop may stall 1.8 s (1 s with a beat every 0.25 s timed live steps out in the R1 herd).
HEARTBEAT = timedelta(seconds=2)
#: How long a dead worker's sticky queue may hold its sagas' next workflow task (worker.py).
STICKY_TIMEOUT = timedelta(seconds=2)


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
        self.failed_attempts = 0
        self._searchable = searchable

    def step(self, name: str) -> None:
        """Enter a saga step; the Web UI can filter on it (GoldenSagaStep='publish')."""
        if self.current:
            self.done.append(self.current)
        self.current = name
        self.failed_attempts = 0
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
            steps_done=list(self.done),
            current_step=self.current,
            last_error=self.last_error,
            failed_attempts=self.failed_attempts,
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

    async def forward_step(self, activity: Any, arg: Any, *, summary: str) -> Any:
        """Run a step past the point of no return: retried until it works, never cancelled.

        While it keeps failing, its last error is in `progress.last_error` and in the
        workflow's current details (the Web UI shows them), so an operator sees "nats: timeout"
        rather than a step that silently retries. The retries run in rounds of ROUND_RETRY
        attempts with a growing pause between rounds; histories from before FORWARD_PATCH
        keep one activity with FOREVER_RETRY.
        """

        def attempt(policy: RetryPolicy) -> Awaitable[Any]:
            return workflow.execute_activity_method(
                activity,
                arg,
                start_to_close_timeout=DB_TIMEOUT,
                heartbeat_timeout=HEARTBEAT,
                retry_policy=policy,
                summary=summary,
            )

        if not workflow.patched(FORWARD_PATCH):
            return await forward(attempt(FOREVER_RETRY))
        pause = ROUND_RETRY.initial_interval
        while True:
            try:
                result = await forward(attempt(ROUND_RETRY))
            except ActivityError as err:
                cause = err.cause
                if isinstance(cause, ApplicationError) and cause.non_retryable:
                    raise
                self._saga.last_error = describe(err)
                # Query state only (no command): replay-safe without a patch.
                self._saga.failed_attempts += ROUND_RETRY.maximum_attempts
                workflow.set_current_details(
                    f"{self._saga.current}: retrying after {self._saga.last_error}"
                )
                await forward(workflow.sleep(pause))
                pause = min(pause * 2, ROUND_PAUSE_MAX)
                continue
            if workflow.get_current_details():
                workflow.set_current_details("")
            return result

    async def publish_up_to(self, leaf_index: int) -> None:
        """Step `publish`: wait until every event up to this ledger leaf is on the stream.

        Past the point of no return, so it retries through outages and ignores cancellation.
        """
        self._saga.step("publish")
        await self.forward_step(
            PublishingActivities.publish_events,
            PublishInput(up_to_leaf=leaf_index),
            summary="publish events up to this ledger leaf",
        )


def describe(err: BaseException) -> str:
    """One line about a step's failure: its cause's message, or the error's type."""
    cause = err.cause if isinstance(err, ActivityError) else None
    return (str(cause or err) or type(err).__name__).splitlines()[0][:300]
