"""Faked activities for workflow tests: no PostgreSQL, no NATS, only a Temporal test server.

The fakes are registered under the real activity names (`@activity.defn(name="reserve_slot")`,
as in temporalio/samples-python `hello/hello_activity_test.py`), so the workflows call them through
`execute_activity_method(IssuanceActivities.reserve_slot, ...)` exactly as in production. Every
fake reports to one `Script`: it records the call (the test asserts which steps ran, in what
order, with what input) and plays what the test planned for that step: return a result, raise
errors on the first attempts, or block until the workflow cancels it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributeKey
from temporalio.worker import Worker

from golden_press.models import PublishInput, PublishResult

#: Cancellation reaches an activity only with a heartbeat's answer; throttle them little in tests.
HEARTBEAT_THROTTLE = timedelta(milliseconds=50)


class Hold:
    """A blocked activity: `started` once it blocks; `released.set()` lets it complete."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.released = asyncio.Event()


class Script:
    """What the fake activities do, and the record of what they did."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        #: The calls and, as "<name> cancelled", the moment a blocked activity saw its cancel.
        self.timeline: list[str] = []
        self.inputs: dict[str, list[Any]] = defaultdict(list)
        self._errors: dict[str, list[BaseException]] = {}
        self._holds: dict[str, Hold] = {}

    def fail(self, name: str, *errors: BaseException) -> Script:
        """The activity `name` raises these errors on its first attempts, one per attempt."""
        self._errors[name] = list(errors)
        return self

    def block(self, name: str) -> Hold:
        """The first attempt of `name` blocks, heartbeating, until cancelled or released."""
        hold = Hold()
        self._holds[name] = hold
        return hold

    async def enter(self, name: str, arg: Any = None) -> None:
        """Called first by every fake: record the call, then raise or block as planned."""
        self.calls.append(name)
        self.timeline.append(name)
        self.inputs[name].append(arg)
        errors = self._errors.get(name)
        if errors:
            raise errors.pop(0)
        hold = self._holds.pop(name, None)
        if hold is None:
            return
        hold.started.set()
        try:
            while not hold.released.is_set():
                activity.heartbeat()
                await asyncio.sleep(HEARTBEAT_THROTTLE.total_seconds())
        except asyncio.CancelledError:
            self.timeline.append(f"{name} cancelled")
            raise


class FakePublishing:
    """PublishingActivities without NATS: records the leaf each saga waits for."""

    def __init__(self, script: Script) -> None:
        self.script = script

    @activity.defn(name="publish_events")
    async def publish_events(self, req: PublishInput) -> PublishResult:
        """Pretend one event reached the stream."""
        await self.script.enter("publish_events", req)
        return PublishResult(published=1)


def activity_names(*holders: object) -> set[str]:
    """The activity names of every `@activity.defn` method of these classes or instances."""
    names = set()
    for holder in holders:
        for attr in dir(holder):
            # The SDK keeps the definition on the function (no public accessor for it).
            defn = activity._Definition.from_callable(getattr(holder, attr))
            if defn is not None and defn.name is not None:
                names.add(defn.name)
    return names


@asynccontextmanager
async def fake_worker(
    client: Client,
    workflows: Sequence[type],
    activities: Sequence[Callable[..., Any]],
) -> AsyncIterator[str]:
    """A worker on a fresh task queue (yielded) with these workflows and fake activities."""
    task_queue = f"wftest-{uuid.uuid4()}"
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=workflows,
        activities=activities,
        default_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
    ):
        yield task_queue


async def cancel_handled(handle: WorkflowHandle[Any, Any], timeout: float = 10.0) -> None:
    """Wait until the workflow has completed a workflow task after its cancel request."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        kinds = [event.event_type async for event in handle.fetch_history_events()]
        requested = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED
        if requested in kinds:
            after = kinds[kinds.index(requested) :]
            if EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED in after:
                return
        if loop.time() > deadline:
            raise TimeoutError("the workflow did not handle its cancel request")
        await asyncio.sleep(0.02)


async def search_attribute(handle: WorkflowHandle[Any, Any], key: SearchAttributeKey[str]) -> str:
    """One keyword search attribute of a workflow as the server reports it ("" when unset)."""
    desc = await handle.describe()
    return desc.typed_search_attributes.get(key) or ""
