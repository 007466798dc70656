"""Background loops stop when cancelled, even when their wake-up lands in the same instant.

Python 3.11's `asyncio.wait_for` returns the inner result instead of raising CancelledError when
the awaited future completes in the same loop iteration as the cancel: a loop built on it
swallows its own cancellation and runs forever. The worker's tile publisher hung a test
teardown that way (a NOTIFY arrived as the worker stopped); `asyncio.timeout` has no such race.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from service.store import tile_files
from service.store.tile_files import TilePublisher


class _Listener:
    def is_closed(self) -> bool:
        return False

    async def close(self) -> None:
        return None


async def test_tile_publisher_stops_when_a_notify_meets_the_cancel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    callbacks: list[Callable[..., None]] = []

    async def fake_listen(_dsn: str, callback: Callable[..., None]) -> Any:
        callbacks.append(callback)
        return _Listener()

    async def no_catch_up(self: TilePublisher, _pool: object) -> int:
        return -1

    monkeypatch.setattr(tile_files, "_listen", fake_listen)
    monkeypatch.setattr(TilePublisher, "catch_up", no_catch_up)
    publisher = TilePublisher(None, ledger=None)  # type: ignore[arg-type]
    task = asyncio.create_task(publisher.run(pool=None, dsn="unused", poll_s=30))  # type: ignore[arg-type]
    for _ in range(20):
        await asyncio.sleep(0)
    assert callbacks, "the publisher never started listening"
    callbacks[0]()  # a NOTIFY wakes the loop ...
    task.cancel()  # ... in the same instant as the worker stops it
    done, _ = await asyncio.wait({task}, timeout=2)
    if not done:
        task.cancel()  # do not leave it behind; the assertion below reports the hang
    assert task in done, "cancel was swallowed: the publisher kept running"
    assert task.cancelled()
