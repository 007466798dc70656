"""A step that keeps failing with a retryable error until the test clears it, or that raises a
plain ValueError (bad input it can never process).

activities.faults has `fail` (non-retryable: no retries to see) and `fail_once` (one retry, gone
before anyone looks). A saga held *in* its retries needs a step that fails every attempt, the way
a database or NATS outage does, and recovers the moment the outage ends.

VALUE_ERROR raises what a step raises on input it can never process (a pydantic ValidationError
is a ValueError): the StepGuard interceptor must make it non-retryable, which only shows when
the step is counted, so every attempt of every step is counted in `attempts`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from temporalio.exceptions import ApplicationError

from activities.faults import Faults

#: The plan action of a step that fails (retryably) on every attempt while it is in the plan.
OUTAGE = "outage"
#: The plan action of a step that raises a plain ValueError on every attempt.
VALUE_ERROR = "value_error"


def outage_message(step: str) -> str:
    """The error text every failing attempt of `step` raises (what status should show)."""
    return f"injected outage at {step}"


def value_error_message(step: str) -> str:
    """The text of the ValueError a VALUE_ERROR step raises."""
    return f"injected bad input at {step}"


@dataclass
class OutageFaults(Faults):
    """Faults plus OUTAGE (a retryable error) and VALUE_ERROR (a plain ValueError), raised
    before the step does anything; `attempts` counts every attempt of every step."""

    attempts: Counter[str] = field(default_factory=Counter)

    async def before(self, step: str) -> None:
        self.attempts[step] += 1
        action = self.plan.get(step)
        if action == OUTAGE:
            raise ApplicationError(outage_message(step), type="InjectedOutage")
        if action == VALUE_ERROR:
            raise ValueError(value_error_message(step))
        await super().before(step)
