"""Fault injection for the reliability suite: crash or fail an activity right after it commits.

Enabled only by GOLDEN_FAULTS (worker processes started by tests) or by passing a Faults object
(in-process test workers). Format: comma-separated `step:action`, action one of
`kill` (SIGKILL this worker process after the step's transaction committed, once per marker dir),
`fail_once` (raise a retryable error after commit, once), `fail` (raise a non-retryable error),
`hang` (block before the step does anything, until the activity is cancelled or times out).
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.exceptions import ApplicationError


@dataclass
class Faults:
    """Which steps misbehave, and how; `fired` makes one-shot faults fire once."""

    plan: dict[str, str] = field(default_factory=dict)
    marker_dir: Path | None = None
    fired: set[str] = field(default_factory=set)

    @classmethod
    def from_env(cls) -> Faults:
        """Read GOLDEN_FAULTS / GOLDEN_FAULTS_MARKER_DIR; empty plan when unset."""
        spec = os.environ.get("GOLDEN_FAULTS", "")
        plan = dict(item.split(":", 1) for item in spec.split(",") if ":" in item)
        marker = os.environ.get("GOLDEN_FAULTS_MARKER_DIR")
        return cls(plan=plan, marker_dir=Path(marker) if marker else None)

    def _first_time(self, step: str) -> bool:
        if self.marker_dir is not None:
            marker = self.marker_dir / f"{step}.fired"
            try:
                marker.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return False
            os.close(fd)
            return True
        if step in self.fired:
            return False
        self.fired.add(step)
        return True

    async def before(self, step: str) -> None:
        """Called first thing in an activity: `hang` keeps the saga parked at this step."""
        if self.plan.get(step) == "hang":
            await asyncio.sleep(3600)

    def after_commit(self, step: str) -> None:
        """Called by an activity once its work is durable: simulates a lost result or a crash."""
        action = self.plan.get(step)
        if action is None:
            return
        if action == "fail":
            raise ApplicationError(
                f"injected permanent failure at {step}", type="InjectedFault", non_retryable=True
            )
        if not self._first_time(step):
            return
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if action == "fail_once":
            raise ApplicationError(f"injected failure after commit at {step}", type="InjectedFault")


NO_FAULTS = Faults()
