"""A step that keeps failing with a retryable error until the test clears it.

activities.faults has `fail` (non-retryable: no retries to see) and `fail_once` (one retry, gone
before anyone looks). A saga held *in* its retries needs a step that fails every attempt, the way
a database or NATS outage does, and recovers the moment the outage ends.
"""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

from activities.faults import Faults

#: The plan action of a step that fails (retryably) on every attempt while it is in the plan.
OUTAGE = "outage"


def outage_message(step: str) -> str:
    """The error text every failing attempt of `step` raises (what status should show)."""
    return f"injected outage at {step}"


class OutageFaults(Faults):
    """Faults plus OUTAGE: the step raises a retryable error before it does anything."""

    async def before(self, step: str) -> None:
        if self.plan.get(step) == OUTAGE:
            raise ApplicationError(outage_message(step), type="InjectedOutage")
        await super().before(step)
