"""nats-py's error callback: one line per kind of error per window, the repeats counted."""

from __future__ import annotations

import asyncio
import logging

import pytest

from service.store.nats_client import QuietErrors


def test_one_line_per_kind_per_window(caplog: pytest.LogCaptureFixture) -> None:
    quiet = QuietErrors(window_s=0.2)
    caplog.set_level(logging.WARNING, logger="golden_press.nats")

    async def burst() -> None:
        for _ in range(50):
            await quiet.report(ConnectionRefusedError(111, "Connect call failed"))
        await quiet.report(TimeoutError())
        await asyncio.sleep(0.25)
        await quiet.report(ConnectionRefusedError(111, "Connect call failed"))

    asyncio.run(burst())
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "NATS: ConnectionRefusedError: [Errno 111] Connect call failed",
        "NATS: TimeoutError: no detail",
        "NATS: ConnectionRefusedError: [Errno 111] Connect call failed (49 more in the last 0.2 s)",
    ]
    assert all(r.exc_info is None for r in caplog.records)  # never a traceback
