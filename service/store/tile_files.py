"""Publish the ledger as C2SP tlog-tiles static files, catching up from PostgreSQL.

The database is the source of truth; the directory is a cache of it that any object store or
CDN can serve (docs/operations.md). `TilePublisher.catch_up` is idempotent and crash-safe:

- it reads the size of the `checkpoint` file already published (0 when none) and the newest
  checkpoint in the database, and writes only the tiles the growth between them needs
  (golden_press.tiles.tiles_to_write), walking every checkpoint stored in between: c2sp.org/
  tlog-tiles requires the partial tiles of every tree size that got a checkpoint, and several
  appends (each with its checkpoint) may land between two catch-ups;
- every file is written to a temporary name and renamed into place, so a reader (or a crash)
  never sees half a file; a full tile or bundle that exists is never rewritten (immutable);
- the `checkpoint` file is replaced last, so every tile a published checkpoint needs exists
  before the checkpoint does; a crash before that rename is repaired by the next catch-up;
- an exclusive lock on `<dir>/.lock` serialises publishers (several workers may run it), so
  the published checkpoint never moves backwards.

It also signs checkpoints for entries appended without one (a `cap` entry written by
`admin set-cap`, which holds no ledger key): that needs the ledger's key, so the worker runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import Callable
from pathlib import Path

import asyncpg

from golden_press.checkpoint import CheckpointError, parse_checkpoint_body, parse_note
from golden_press.tiles import Tile, encode_bundle, encode_tile, tiles_to_write
from golden_press.waits import wait_event
from service.store.db import LEDGER_CHANNEL
from service.store.ledger import LedgerStore

log = logging.getLogger("golden_press.tiles")

CHECKPOINT_FILE = "checkpoint"


def published_size(directory: Path) -> int:
    """Tree size of the `checkpoint` file in `directory` (0 when there is none yet)."""
    try:
        note = (directory / CHECKPOINT_FILE).read_text("utf-8")
    except FileNotFoundError:
        return 0
    body = note[: note.index("\n\n") + 1] if "\n\n" in note else note
    return parse_checkpoint_body(body).size


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so readers see the whole file or none of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _add_cosignatures(directory: Path, note: str) -> None:
    """Replace the `checkpoint` file by `note` when it is the same checkpoint with more lines."""
    path = directory / CHECKPOINT_FILE
    try:
        current = path.read_text("utf-8")
        if current == note or parse_note(current).text != parse_note(note).text:
            return
        if len(parse_note(note).signatures) <= len(parse_note(current).signatures):
            return
    except (OSError, UnicodeDecodeError, CheckpointError):
        return
    _write_atomic(path, note.encode("utf-8"))


def _lock(directory: Path) -> int:
    """Block until this process holds `<dir>/.lock`; the fd (closing it releases the lock)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _published(directory: Path) -> tuple[int, bool]:
    """(published size, whether a checkpoint file exists)."""
    return published_size(directory), (directory / CHECKPOINT_FILE).exists()


def _complete(directory: Path, tile: Tile) -> bool:
    """True when a tile (and, at level 0, its entry bundle) is already on disk."""
    if not (directory / tile.path).exists():
        return False
    return tile.level != 0 or (directory / tile.bundle().path).exists()


def _write_tile(
    directory: Path, tile: Tile, hashes: list[bytes], entries: list[bytes] | None
) -> None:
    """The bundle first, then the tile: a reader that finds the tile finds its entries too."""
    if entries is not None:
        _write_atomic(directory / tile.bundle().path, encode_bundle(entries))
    _write_atomic(directory / tile.path, encode_tile(hashes))


def _growth(old: int, sizes: list[int]) -> list[Tile]:
    """The tiles a log published at `old` must write to publish each checkpointed size in
    `sizes` (ascending) in turn: every one's partial tiles, each full tile once."""
    out: list[Tile] = []
    for size in sizes:
        out.extend(tiles_to_write(old, size))
        old = size
    return out


class TilePublisher:
    """Keeps one tiles directory up to date with the ledger tables."""

    def __init__(self, directory: Path | None, ledger: LedgerStore) -> None:
        self.directory = directory
        self.ledger = ledger

    async def catch_up(self, pool: asyncpg.Pool) -> int:
        """Sign a checkpoint for unsigned entries, then publish tiles up to the newest one.

        Returns the published tree size (-1 when no directory is configured).
        """
        async with pool.acquire() as conn:
            if self.ledger.can_sign:
                async with conn.transaction():
                    await self.ledger.checkpoint_tail(conn)
            directory = self.directory
            if directory is None:
                return -1
            fd = await asyncio.to_thread(_lock, directory)
            try:
                old, present = await asyncio.to_thread(_published, directory)
                head = await self.ledger.latest_checkpoint(conn)
                if head.size < old:
                    return old
                if head.size == old and present:
                    # Same tree: republish only to add witness cosignature lines that arrived
                    # after it was written (same body, so the checkpoint never moves).
                    await asyncio.to_thread(_add_cosignatures, directory, head.note)
                    return old
                sizes = await self.ledger.checkpoint_sizes(conn, old, head.size)
                if not sizes or sizes[-1] != head.size:
                    sizes.append(head.size)
                await self._write_tiles(conn, directory, _growth(old, sizes))
                note = head.note.encode("utf-8")
                await asyncio.to_thread(_write_atomic, directory / CHECKPOINT_FILE, note)
            finally:
                os.close(fd)  # releases the lock
        log.info("tiles published", extra={"tree_size": head.size, "from": old})
        return head.size

    async def _write_tiles(
        self, conn: asyncpg.Connection, directory: Path, tiles: list[Tile]
    ) -> None:
        """Write `tiles` (in order) that are not on disk yet. The tiles at one position only
        widen along the walk, so each position is read from the database once, at the widest
        width the walk needs, and the narrower ones are its prefixes."""
        widest: dict[tuple[int, int], int] = {}
        for tile in tiles:
            key = (tile.level, tile.index)
            widest[key] = max(widest.get(key, 0), tile.width)
        read: dict[int, tuple[int, list[bytes], list[bytes] | None]] = {}  # one per level
        for tile in tiles:
            if await asyncio.to_thread(_complete, directory, tile):
                continue  # immutable: written by an earlier, interrupted catch-up
            cached = read.get(tile.level)
            if cached is None or cached[0] != tile.index:
                width = widest[(tile.level, tile.index)]
                hashes, entries = await self._tile_data(conn, Tile(tile.level, tile.index, width))
                cached = read[tile.level] = (tile.index, hashes, entries)
            _, hashes, entries = cached
            await asyncio.to_thread(
                _write_tile,
                directory,
                tile,
                hashes[: tile.width],
                None if entries is None else entries[: tile.width],
            )

    async def _tile_data(
        self, conn: asyncpg.Connection, tile: Tile
    ) -> tuple[list[bytes], list[bytes] | None]:
        """A tile's hashes (and, at level 0, its entries) from the ledger tables."""
        start = tile.index * 256
        if tile.level == 0:
            stored = await self.ledger.entries(conn, start, start + tile.width)
            hashes = [e.leaf_hash for e in stored]
            entries: list[bytes] | None = [e.entry for e in stored]
        else:
            hashes = await self.ledger.node_hashes(conn, 8 * tile.level, start, start + tile.width)
            entries = None
        if len(hashes) != tile.width:
            raise RuntimeError(f"{tile.path}: the database has {len(hashes)} of its hashes")
        return hashes, entries

    async def run(self, pool: asyncpg.Pool, dsn: str, poll_s: float = 2.0) -> None:
        """Catch up at start, then after every ledger NOTIFY (or every poll_s), until cancelled.

        Never raises (a database outage only delays publishing): the database stays the source
        of truth and the next catch-up repairs whatever a failed one left undone. LISTEN uses a
        connection of its own, outside the pool, reopened when it drops.
        """
        wake = asyncio.Event()

        def _notified(*_: object) -> None:
            wake.set()

        listener: asyncpg.Connection | None = None
        try:
            while True:
                if listener is None or listener.is_closed():
                    listener = await _listen(dsn, _notified)
                try:
                    await self.catch_up(pool)
                except Exception as exc:  # every failure is retried on the next round
                    log.warning("tile publishing failed; retrying: %s", exc)
                await wait_event(wake, poll_s)
                wake.clear()
        finally:
            if listener is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(listener.close(), 5)


async def _listen(dsn: str, callback: Callable[..., None]) -> asyncpg.Connection | None:
    """A connection LISTENing on the ledger channel; None while the database is away."""
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except Exception:
        return None
    try:
        await conn.add_listener(LEDGER_CHANNEL, callback)
    except Exception:
        conn.terminate()
        return None
    return conn


__all__ = ["CHECKPOINT_FILE", "TilePublisher", "published_size"]
