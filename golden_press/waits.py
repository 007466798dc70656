"""Waiting for an event with a timeout, without swallowing a cancellation.

Python 3.11's `asyncio.wait_for` returns the inner result instead of raising CancelledError when
the awaited future completes in the same loop iteration as the cancel (CPython gh-86296, fixed
in 3.12 by re-implementing it on `asyncio.timeout`). A background loop built on it can then
swallow the cancel that was meant to stop it and run forever. `asyncio.timeout` counts
cancellations per task and has no such race, so every loop here waits through this function.
"""

from __future__ import annotations

import asyncio
import contextlib


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until `event` is set or `timeout_s` passes; True when it was set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
    return event.is_set()


__all__ = ["wait_event"]
