"""The log side of c2sp.org/tlog-witness: submit each new checkpoint to the configured witnesses.

A background loop in the API process (never in the issuance path): woken by the NOTIFY every new
checkpoint sends on `golden_ledger` (migrations/006), with a slow safety poll in case a NOTIFY is
lost, it reads the newest stored checkpoint, sends each witness `old <size it last cosigned>`,
the consistency proof from there and the signed note, verifies the cosignature that comes back
and stores it (service/store/cosignatures.py). A witness that is down or refuses only delays its
cosignatures: each witness has its own exponential backoff, and issuance never waits for any of
them.

Several API processes may run this loop; a PostgreSQL session advisory lock on a dedicated
connection elects one submitter at a time, so witnesses see one stream of requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import asyncpg

from golden_press.checkpoint import CheckpointError, parse_signature_lines
from golden_press.cosignature import Witness, add_signature_lines, verify_cosignatures
from golden_press.errors import GoldenError
from golden_press.waits import wait_any, wait_event
from golden_press.witness import SIZE_CONTENT_TYPE, add_checkpoint_body
from service.store import cosignatures
from service.store.db import LEDGER_CHANNEL
from service.store.ledger import LedgerStore
from service.witness.client import HTTP_TIMEOUT_S, post

log = logging.getLogger("golden_press.witness")


@dataclass
class _Track:
    """What the submitter knows of one witness."""

    witness: Witness
    size: int | None = None  # largest size it cosigned for us; None: not asked yet
    failures: int = 0
    not_before: float = 0.0
    last_error: str = field(default="")


class Submitter:
    """Submits the newest checkpoint to every witness whose cosigned size is behind it."""

    def __init__(
        self,
        ledger: LedgerStore,
        witnesses: Sequence[Witness],
        *,
        poll_s: float = 5.0,
        retry_s: float = 0.2,
        max_backoff_s: float = 30.0,
        timeout_s: float = HTTP_TIMEOUT_S,
    ) -> None:
        self._ledger = ledger
        self._tracks = [_Track(w) for w in witnesses]
        self._poll_s = poll_s  # the safety poll: NOTIFYs wake the loop at once
        self._retry_s = retry_s  # first backoff step after a witness failed
        self._max_backoff_s = max_backoff_s
        self._timeout_s = timeout_s

    async def run(self, dsn: str, stop: asyncio.Event, retry_s: float = 5.0) -> None:
        """Until `stop`: win the election on a dedicated connection, then submit in a loop."""
        while not stop.is_set():
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(dsn)
                if await cosignatures.elect_submitter(conn):
                    await self._loop(conn, stop)
                else:
                    await wait_event(stop, 5.0)  # another process submits; take over if it stops
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("witness submitter: database unavailable: %s", exc)
                await wait_event(stop, 2.0)
            except Exception:
                # A background task that dies would stop cosigning silently: log, wait, go on.
                log.exception("witness submitter failed; restarting in %.1f s", retry_s)
                await wait_event(stop, retry_s)
            finally:
                if conn is not None:
                    await conn.close()  # also releases the session advisory lock

    async def _loop(self, conn: asyncpg.Connection, stop: asyncio.Event) -> None:
        """Submit, then sleep until a ledger NOTIFY, a witness's backoff ends, or the poll."""
        wake = asyncio.Event()

        def notified(*_: object) -> None:
            wake.set()

        await conn.add_listener(LEDGER_CHANNEL, notified)  # on the elected connection
        while not stop.is_set():
            wake.clear()  # before the step: a checkpoint stored during it wakes the next one
            await self.step(conn)
            await wait_any((stop, wake), self._next_wait())

    def _next_wait(self) -> float:
        """Seconds until the safety poll or the end of the first backoff still running.

        A backoff already over does not count: its witness was either just retried (and has a
        new one) or is caught up with the head, and waking at once for it would spin the loop
        until the next checkpoint.
        """
        now = time.monotonic()
        due = [t.not_before - now for t in self._tracks if t.failures and t.not_before > now]
        return min([self._poll_s, *due])

    async def step(self, conn: asyncpg.Connection) -> int:
        """One pass: submit the head to each witness that is behind and due; count successes."""
        try:
            head = await self._ledger.latest_checkpoint(conn)
        except GoldenError:
            return 0  # no checkpoint stored yet (the worker writes the genesis one at start)
        now = time.monotonic()
        done = 0
        for track in self._tracks:
            if track.size is None:
                track.size = await cosignatures.latest_cosigned_size(conn, track.witness.name)
            if track.size == head.size or now < track.not_before:
                continue
            if await self._submit(conn, track, head.size, head.note):
                done += 1
        return done

    async def _submit(self, conn: asyncpg.Connection, track: _Track, size: int, note: str) -> bool:
        """Up to three rounds: a 409 tells the witness's size, then we resend from there."""
        witness = track.witness
        for _ in range(3):
            old = track.size or 0
            if old > size:
                return self._failed(
                    track, f"witness has cosigned size {old}, beyond this log's head {size}"
                )
            proof = await self._ledger.consistency_proof(conn, old, size) if 0 < old else []
            body = add_checkpoint_body(old, proof, note)
            answer = await asyncio.to_thread(
                post, witness.url + "/add-checkpoint", body, self._timeout_s
            )
            if answer.status == 409 and answer.content_type.startswith(SIZE_CONTENT_TYPE):
                try:
                    track.size = int(answer.body.strip())
                except ValueError:
                    return self._failed(track, f"409 with a bad size body {answer.body[:40]!r}")
                continue
            if answer.status != 200:
                what = f"HTTP {answer.status}" if answer.status else "unreachable"
                return self._failed(track, f"{what}: {answer.body.strip()[:200]}")
            return await self._store(conn, track, size, note, answer.body)
        return self._failed(track, "witness keeps answering 409")

    async def _store(
        self, conn: asyncpg.Connection, track: _Track, size: int, note: str, body: str
    ) -> bool:
        witness = track.witness
        try:
            lines = [s for s in parse_signature_lines(body) if witness.verifier.matches(s)]
            cosigned = verify_cosignatures(add_signature_lines(note, lines), [witness.verifier])
        except CheckpointError as exc:
            return self._failed(track, f"bad cosignature: {exc.message}")
        if witness.name not in cosigned:
            return self._failed(track, "answer carries no cosignature from its key")
        line = lines[-1]  # add_signature_lines kept (and verify_cosignatures checked) the last
        await cosignatures.add_cosignature(
            conn, size, witness.name, line.line, cosigned[witness.name]
        )
        if track.failures:
            log.info("witness %s cosigns again (size %d)", witness.name, size)
        track.size, track.failures, track.not_before, track.last_error = size, 0, 0.0, ""
        return True

    def _failed(self, track: _Track, message: str) -> bool:
        track.failures += 1
        delay = min(self._max_backoff_s, self._retry_s * (2 ** min(track.failures, 16)))
        track.not_before = time.monotonic() + delay
        if message != track.last_error or track.failures in (1, 10, 100):
            log.warning(
                "witness %s: %s (attempt %d, next in %.1fs)",
                track.witness.name,
                message,
                track.failures,
                delay,
            )
        track.last_error = message
        return False


def start_submitter(
    dsn: str, ledger: LedgerStore, witnesses: Sequence[Witness], **options: float
) -> Callable[[], Awaitable[None]]:
    """Run a Submitter in the background of the running loop; returns its async `close`."""
    stop = asyncio.Event()
    task = asyncio.create_task(Submitter(ledger, witnesses, **options).run(dsn, stop))

    async def close() -> None:
        stop.set()
        try:
            await asyncio.wait_for(task, HTTP_TIMEOUT_S + 5)
        except TimeoutError:
            task.cancel()

    return close


__all__ = ["Submitter", "start_submitter"]
