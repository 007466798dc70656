"""The witness submitter sleeps between passes, whatever state its witnesses' backoffs are in."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from service.witness.submitter import Submitter, _Track


class _Head:
    """A ledger whose newest checkpoint never changes (a quiet log: no issuance)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.reads = 0

    async def latest_checkpoint(self, _conn: object) -> Any:
        self.reads += 1
        return SimpleNamespace(size=self.size, note="note")


class _ListeningConn:
    async def add_listener(self, _channel: str, _callback: object) -> None:
        return None


async def test_a_caught_up_witness_with_an_expired_backoff_does_not_spin_the_loop() -> None:
    """A witness whose last round failed after its 409 told the head's size is caught up but
    still counts failures; once its backoff ends nothing is due, so the loop must sleep until
    the poll (or a NOTIFY), not wake at once for ever and query the database in a hot loop."""
    ledger = _Head(size=7)
    submitter = Submitter(ledger, [], poll_s=30)  # type: ignore[arg-type]
    witness = SimpleNamespace(name="w", url="http://unused")
    track = _Track(witness, size=7, failures=1, not_before=time.monotonic() - 1)  # type: ignore[arg-type]
    submitter._tracks = [track]
    stop = asyncio.Event()
    task = asyncio.create_task(submitter._loop(_ListeningConn(), stop))  # type: ignore[arg-type]
    await asyncio.sleep(0.3)
    stop.set()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert ledger.reads <= 2, f"{ledger.reads} passes in 0.3 s: the loop never slept"
