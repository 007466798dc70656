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

from golden_press.waits import wait_any
from service.store import tile_files
from service.store.tile_files import TilePublisher
from service.witness.submitter import Submitter


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


class _ListeningConn:
    """The submitter's elected connection, as far as its loop uses it."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[..., None]] = []

    async def add_listener(self, _channel: str, callback: Callable[..., None]) -> None:
        self.callbacks.append(callback)


async def test_witness_submitter_stops_when_a_notify_meets_the_cancel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def no_step(self: Submitter, _conn: object) -> int:
        return 0

    monkeypatch.setattr(Submitter, "step", no_step)
    conn = _ListeningConn()
    submitter = Submitter(None, [], poll_s=30)  # type: ignore[arg-type]
    task = asyncio.create_task(submitter._loop(conn, asyncio.Event()))  # type: ignore[arg-type]
    for _ in range(20):
        await asyncio.sleep(0)
    assert conn.callbacks, "the submitter never started listening"
    conn.callbacks[0]()  # a new checkpoint's NOTIFY ...
    task.cancel()  # ... as the API stops
    done, _ = await asyncio.wait({task}, timeout=2)
    if not done:
        task.cancel()
    assert task in done and task.cancelled(), "cancel was swallowed: the submitter kept running"


async def test_wait_any_wakes_on_either_event_and_times_out() -> None:
    first, second = asyncio.Event(), asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, second.set)
    assert await wait_any((first, second), 5) is True
    second.clear()
    assert await wait_any((first, second), 0.01) is False
