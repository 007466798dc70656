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
from collections.abc import Sequence


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until `event` is set or `timeout_s` passes; True when it was set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
    return event.is_set()


async def wait_any(events: Sequence[asyncio.Event], timeout_s: float) -> bool:
    """Wait until one of `events` is set or `timeout_s` passes; True when one was set.

    asyncio.wait (unlike wait_for) never turns a cancellation into a result; its waiters are
    cancelled on the way out, whatever ended the wait.
    """
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return any(e.is_set() for e in events)


__all__ = ["wait_any", "wait_event"]
