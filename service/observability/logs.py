"""Structured logs: one JSON object per line, ids as top-level fields, never key material.

Every line written while a saga step runs carries `workflow_id`, `step`, and the `ticket_id` /
`request_id` the saga is about, as top-level keys (what docs/operations.md tells operators to
filter on): the Temporal SDK's `temporal_activity` / `temporal_workflow` context is flattened,
and a worker interceptor (`saga_log_context`) puts the ids of the running activity in a context
variable that every logger's records pick up, not only the activity logger's.

A dependency that is down (NATS, PostgreSQL) makes every retry of every activity fail the same
way; the SDK logs each failure with its traceback (~3 KB). RepeatedErrorFilter keeps the first
traceback of each kind per window and counts the rest (`repeats_suppressed` on the next one).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from golden_press.sagas import ids_from_workflow_id

#: Ids of the saga step running in this task (set by the worker's interceptor).
_saga_ids: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "golden_saga_ids", default=None
)

#: Top-level keys lifted out of the SDK's context dicts.
_LIFTED = {
    "temporal_activity": {
        "workflow_id": "workflow_id",
        "activity_type": "step",
        "attempt": "attempt",
    },
    "temporal_workflow": {"workflow_id": "workflow_id", "workflow_type": "workflow_type"},
}


@contextmanager
def saga_log_context(ids: Mapping[str, str]) -> Iterator[None]:
    """Every log record in this block carries these ids as top-level fields."""
    token = _saga_ids.set(ids)
    try:
        yield
    finally:
        _saga_ids.reset(token)


def _plain(value: Any) -> Any:
    if isinstance(value, str | int | float | bool | None):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extras (ticket_id, workflow_id, method, ...) become fields."""

    _STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        ids = _saga_ids.get()
        if ids:
            out.update(ids)
        for key, value in vars(record).items():
            if key in self._STANDARD or key.startswith("_"):
                continue
            lifted = _LIFTED.get(key)
            if lifted is not None and isinstance(value, Mapping):
                for inner, outer in lifted.items():
                    if inner in value:
                        out.setdefault(outer, _plain(value[inner]))
            out[key] = _plain(value)
        if "workflow_id" in out and "ticket_id" not in out:
            for key, value in ids_from_workflow_id(str(out["workflow_id"])).items():
                out.setdefault(key, value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"))


class RepeatWindow:
    """Lets the first of each kind through per window and counts the rest it holds back."""

    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self._window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        # key -> (window start, held-back count)
        self._seen: dict[Hashable, tuple[float, int]] = {}

    @property
    def window_s(self) -> float:
        return self._window_s

    def admit(self, key: Hashable) -> int | None:
        """None: held back (its window is open); else how many were held back before it."""
        now = self._clock()
        with self._lock:
            started, held = self._seen.get(key, (None, 0))
            if started is not None and now - started < self._window_s:
                self._seen[key] = (started, held + 1)
                return None
            self._seen[key] = (now, 0)
            if len(self._seen) > 1000:  # bounded: forget the oldest windows
                for old in sorted(self._seen, key=lambda k: self._seen[k][0])[:500]:
                    del self._seen[old]
        return held


class RepeatedErrorFilter(logging.Filter):
    """One traceback per (logger, step, exception type) per window; the repeats are counted.

    The record that opens the next window carries `repeats_suppressed`, so an outage still
    shows how often it failed and its first and latest tracebacks, not one per retry.
    """

    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self._window = RepeatWindow(window_s, clock)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        step = ""
        context = getattr(record, "temporal_activity", None)
        if isinstance(context, Mapping):
            step = str(context.get("activity_type", ""))
        ids = _saga_ids.get()
        if not step and ids:
            step = ids.get("step", "")
        key = (record.name, step, type(exc).__module__, type(exc).__qualname__)
        suppressed = self._window.admit(key)
        if suppressed is None:
            return False
        if suppressed:
            record.repeats_suppressed = suppressed
        return True


class SagaLogInterceptor(Interceptor):
    """Worker interceptor: every log line of a running activity names its saga and step."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        """Wrap each activity execution."""
        return _SagaLogActivityInbound(next)


class _SagaLogActivityInbound(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        ids = {"workflow_id": info.workflow_id or "", "step": info.activity_type}
        ids.update(ids_from_workflow_id(info.workflow_id or ""))
        # The step's own input knows best (a redemption's ticket, a reserve's request id).
        for arg in input.args[:1]:
            for key in ("ticket_id", "request_id"):
                value = getattr(arg, key, None)
                if value:
                    ids[key] = str(value)
        with saga_log_context(ids):
            return await super().execute_activity(input)


#: The loggers of golden-press's own code (module names; `__main__`: the API or worker run as
#: a module): GOLDEN_LOG_LEVEL applies to these.
OWN_LOGGERS = (
    "golden_press",
    "service",
    "activities",
    "workflows",
    "worker",
    "starter",
    "__main__",
)


def configure_logging(level: int | str = logging.INFO) -> None:
    """JSON lines on stderr (never key material: keys are never logged anywhere); level as a
    number or a name (GOLDEN_LOG_LEVEL).

    The level is golden-press's own: libraries stay at INFO, because their DEBUG output is not
    ours to vet (the Temporal SDK's logs whole workflow activations, with user ids and a
    redemption's bundle and salt)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RepeatedErrorFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(level)
