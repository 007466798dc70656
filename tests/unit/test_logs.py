"""Worker log lines: saga ids as top-level JSON keys; repeated errors rate-limited."""

from __future__ import annotations

import json
import logging
import sys

from service.observability.logs import JsonFormatter, RepeatedErrorFilter, saga_log_context


def record(msg: str = "m", exc: BaseException | None = None, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc is not None:
        try:
            raise exc
        except BaseException:
            exc_info = sys.exc_info()
    rec = logging.LogRecord("golden_press.t", logging.WARNING, __file__, 1, msg, (), exc_info)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_sdk_context_is_flattened_to_top_level_keys() -> None:
    line = json.loads(
        JsonFormatter().format(
            record(
                temporal_activity={
                    "activity_type": "reserve_slot",
                    "workflow_id": "issue-req-1",
                    "attempt": 2,
                }
            )
        )
    )
    assert line["workflow_id"] == "issue-req-1"
    assert line["step"] == "reserve_slot"
    assert line["request_id"] == "req-1"
    assert line["ticket_id"]  # derived from the request id, as the saga derives it
    assert line["temporal_activity"]["attempt"] == 2  # kept as an object, not a string


def test_saga_context_reaches_every_logger() -> None:
    ids = {"workflow_id": "redeem-x", "ticket_id": "x", "step": "redeem_ticket"}
    with saga_log_context(ids):
        line = json.loads(JsonFormatter().format(record()))
    assert {k: line[k] for k in ids} == ids
    assert "step" not in json.loads(JsonFormatter().format(record()))


def test_repeated_errors_keep_one_traceback_per_window() -> None:
    now = [0.0]
    limiter = RepeatedErrorFilter(window_s=60.0, clock=lambda: now[0])
    step = {"activity_type": "publish_events"}
    outage = [
        record(exc=ConnectionRefusedError("nats down"), temporal_activity=step) for _ in range(100)
    ]
    kept = []
    for i, rec in enumerate(outage):
        now[0] = i * 1.0  # one retry a second for 100 s
        if limiter.filter(rec):
            kept.append(rec)
    assert len(kept) == 2  # t=0 and t=60
    assert getattr(kept[1], "repeats_suppressed", 0) == 59
    # Another step's error, or a line without a traceback, is not held back.
    assert limiter.filter(
        record(exc=ConnectionRefusedError("x"), temporal_activity={"activity_type": "reserve_slot"})
    )
    assert limiter.filter(record("no traceback"))
    assert limiter.filter(record("no traceback"))
