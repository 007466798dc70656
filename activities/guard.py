"""The activity guard: every saga step heartbeats while it runs, and never retries bad input.

Heartbeats are what let Temporal notice quickly that a worker died mid-step (the attempt times
out after the step's heartbeat_timeout instead of its whole start_to_close_timeout) and what
delivers a workflow's cancellation to a step that is waiting, e.g. `reserve` queued on the cap's
advisory lock. The guard beats in the background for the whole attempt, so no step has to
remember to.

A ValueError (pydantic's ValidationError is one) raised inside a step means its input can never
be processed: retrying it forever would hang the saga (a FOREVER_RETRY step would never end).
The guard turns it into a non-retryable ApplicationError of type InvalidRequest, so the saga
fails or compensates at once and the error is visible.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from golden_press.errors import Reason

#: Beat this many times per heartbeat timeout (the SDK throttles what reaches the server): a
#: live step is timed out only if its event loop stalls for a whole timeout minus one beat, so
#: frequent beats keep that margin near the timeout itself. A beat is a queue put in the SDK.
BEATS_PER_TIMEOUT = 10
#: Quote at most this much of an error about bad input.
MAX_MESSAGE_CHARS = 200


class StepGuard(Interceptor):
    """Worker interceptor: heartbeats and deterministic errors for every activity."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        """Wrap each activity execution."""
        return _GuardedActivity(next)


class _GuardedActivity(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        timeout = activity.info().heartbeat_timeout
        beating = asyncio.create_task(_beat(timeout)) if timeout else None
        try:
            return await super().execute_activity(input)
        except ValueError as err:
            text = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ApplicationError(
                f"{type(err).__name__}: {text[:MAX_MESSAGE_CHARS]}",
                type=Reason.INVALID_REQUEST.value,
                non_retryable=True,
            ) from err
        finally:
            if beating is not None:
                beating.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beating


async def _beat(heartbeat_timeout: timedelta) -> None:
    """Heartbeat until cancelled (the activity's context is copied into this task)."""
    every = max(heartbeat_timeout.total_seconds() / BEATS_PER_TIMEOUT, 0.05)
    while True:
        activity.heartbeat()
        await asyncio.sleep(every)


__all__ = ["StepGuard"]
