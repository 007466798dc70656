"""Monitor checks over the public ledger alone: no database, no token, no private key (pure).

A monitor reads a log through a `LogSource` (tiles over HTTP, a tiles directory, or the gRPC
API: the I/O lives in service/cli/monitor.py and service/cli/tiles_client.py) and checks, in
this order, stopping at the first violation it finds:

1. the checkpoint note carries a valid signature by the log's key and, when the monitor is given
   a `WitnessPolicy`, a valid `cosignature/v1` line (c2sp.org/tlog-cosignature) from at least
   its quorum of known witnesses; a known witness's line that does not verify is a violation,
   while unknown signature lines are ignored (c2sp.org/signed-note);
2. it does not roll back or fork the last checkpoint this monitor saw (`MonitorState`, kept in
   the state file): the tree rebuilt from the log has the remembered root at the remembered size;
3. every entry bundle decodes and every entry hashes (RFC 6962 leaf hash) to the level-0 tile,
   every full tile hashes to its slot in the tile above, and the tree hashes to the checkpoint
   root (c2sp.org/tlog-tiles);
4. every entry decodes (ledger_entry v1 ticket entries, v2 cap entries);
5. every ticket's lifecycle is legal: issued at most once; a redeem or revoke only after its
   issue and at most one of them; a void never after an issue (nor twice); an issued serial never
   reused by another ticket;
6. the supply invariant (see `SupplyState`).

The cap in force before the first `cap` entry is `DEFAULT_CAP` tickets in scope `live` (the
database default since the first migration); a log whose operator changed the cap before cap
entries existed must say so with a `cap` entry, or earlier issuance above five is reported.
"""

from __future__ import annotations

import base64
import bisect
import uuid
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from golden_press.checkpoint import Checkpoint, CheckpointError, NoteVerifier, open_checkpoint
from golden_press.cosignature import WitnessPolicy, verify_cosignatures
from golden_press.errors import GoldenError
from golden_press.ledger_entry import CapEntry, scan_entry
from golden_press.merkle import hash_b64, leaf_hash
from golden_press.models import CapScope
from golden_press.ticket_table import (
    ISSUED,
    REDEEMED,
    REVOKED,
    STATE_NAME,
    VOIDED,
    SerialMismatch,
    TicketTable,
    ticket_key,
)
from golden_press.tiles import (
    TILE_HEIGHT,
    TILE_WIDTH,
    Tile,
    TileError,
    TreeBuilder,
    decode_bundle,
    decode_tile,
    root_from_tiles,
    tile_root,
    tile_width_at,
)

DEFAULT_CAP = 5
DEFAULT_SCOPE = CapScope.LIVE


class ViolationKind(StrEnum):
    """What kind of rule the log broke (stable strings for --json output)."""

    BAD_CHECKPOINT = "bad-checkpoint"
    BAD_COSIGNATURE = "bad-cosignature"
    NO_QUORUM = "witness-quorum"
    ROLLBACK = "rollback"
    FORK = "fork"
    TAMPERED_TILE = "tampered-tile"
    TAMPERED_BUNDLE = "tampered-entry-bundle"
    ROOT_MISMATCH = "root-mismatch"
    UNREADABLE = "unreadable"
    BAD_ENTRY = "bad-entry"
    ILLEGAL_LIFECYCLE = "illegal-lifecycle"
    OVER_CAP = "over-cap"


class Violation(Exception):
    """The first rule the log breaks: its kind, the leaf (when one is to blame) and why."""

    def __init__(self, kind: ViolationKind, message: str, leaf: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.leaf = leaf
        self.message = message

    def __str__(self) -> str:
        where = f" at leaf {self.leaf}" if self.leaf is not None else ""
        return f"{self.kind.value}{where}: {self.message}"


class SourceUnreachable(OSError):
    """The source could not be reached at all: connection refused, a name that does not
    resolve, no answer within the timeout, a server error or a server that stays busy.

    Nothing was read, so it says nothing about the log: not a Violation (the CLI's exit 3,
    Unavailable; `--follow` polls again). A source raises it for those failures only; a read
    that got an answer and found it wrong (missing, too large, too slow) is a plain OSError,
    an UNREADABLE violation.
    """


class LogSource(Protocol):
    """Where a monitor reads a log; tiles are optional (the gRPC API serves entries only).

    A source may also offer `read_many(tiles: Iterator[Tile]) -> Iterator[bytes | None]`, the
    same reads in the same order, fetched ahead (the monitor then overlaps network latency
    with its own hashing); it must stop fetching when the iterator it returns is closed.
    """

    def checkpoint(self) -> str:
        """The log's current signed checkpoint note."""
        ...

    def read(self, tile: Tile) -> bytes | None:
        """A hash tile or entry bundle (tile.level == -1); None when the source has no tiles."""
        ...


class MonitorState(BaseModel):
    """What the state file keeps between runs: the last checkpoint verified, and its key."""

    model_config = ConfigDict(frozen=True)

    origin: str
    size: int
    root_b64: str
    note: str
    #: Known witnesses whose cosignature on `note` verified (name -> its timestamp).
    cosigned_by: dict[str, int] = Field(default_factory=dict)

    @property
    def root(self) -> bytes:
        """The remembered root hash."""
        return base64.b64decode(self.root_b64)

    @classmethod
    def of(
        cls, cp: Checkpoint, note: str, cosigned_by: dict[str, int] | None = None
    ) -> MonitorState:
        """The state after verifying checkpoint `cp` (its signed note kept for evidence)."""
        return cls(
            origin=cp.origin,
            size=cp.size,
            root_b64=hash_b64(cp.root),
            note=note,
            cosigned_by=cosigned_by or {},
        )


# ---- entries: lifecycle and supply ---------------------------------------------------------


@dataclass
class SupplyState:
    """Replays entries in log order: lifecycle legality per ticket and the supply invariant.

    Supply invariant: at every prefix of the log and for each scope S, let C be the tickets that
    count under S (live: issued, not redeemed, not revoked; lifetime: issued) and t the one of C
    with the highest serial. If the cap in force for t's serial has scope S, then |C| <= that cap.

    Why this is the right test: serials are taken under the same advisory lock as reservations
    and cap changes, so t was reserved after every other member of C, and each of them was
    still counted then (an earlier redeem or revoke would already be in this prefix). When t was
    reserved the count was below the cap in force for t, hence |C| <= cap. A cap lowered below
    the current count is therefore not a violation (nothing is voided: issuance waits), while
    an issuance above the cap is, whatever order the issued entries reached the log in.

    Memory: the tickets live in a `TicketTable` (about 17 bytes a serial plus a hash a ticket);
    nothing else grows with the log but the list of cap entries.
    """

    default_cap: int = DEFAULT_CAP
    default_scope: CapScope = DEFAULT_SCOPE
    entries: int = 0
    tickets: TicketTable = field(default_factory=TicketTable)
    cap_marks: list[int] = field(default_factory=list)  # cap entries' serial watermarks
    caps: list[tuple[int, CapScope]] = field(default_factory=list)
    live: int = 0
    lifetime: int = 0
    max_issued_serial: int = 0

    def cap_for(self, serial: int) -> tuple[int, CapScope]:
        """The cap and scope in force when the ticket with `serial` was reserved."""
        i = bisect.bisect_left(self.cap_marks, serial) - 1
        return self.caps[i] if i >= 0 else (self.default_cap, self.default_scope)

    def apply(self, leaf: int, data: bytes) -> None:
        """Check and replay one entry; raise Violation on the first broken rule."""
        try:
            scanned = scan_entry(data)
        except GoldenError as exc:
            raise Violation(ViolationKind.BAD_ENTRY, exc.message, leaf) from exc
        self.entries += 1
        if isinstance(scanned, CapEntry):
            self._cap(leaf, scanned)
            return
        kind, tid, serial = scanned
        key = ticket_key(tid)
        state = self._state_of(leaf, kind, tid, key, serial)
        table = self.tickets
        if kind == "issued":
            if state:
                raise self._illegal(leaf, tid, f"issued after {STATE_NAME[state]}")
            table.claim(serial, key, ISSUED)
            self.live += 1
            self.lifetime += 1
            self.max_issued_serial = max(self.max_issued_serial, serial)
        elif kind in ("redeemed", "revoked"):
            if state != ISSUED:
                when = f"after {STATE_NAME[state]}" if state else "before its issue"
                raise self._illegal(leaf, tid, f"{kind} {when}")
            table.set_state(serial, REDEEMED if kind == "redeemed" else REVOKED)
            self.live -= 1
        else:  # voided
            if state:
                raise self._illegal(leaf, tid, f"voided after {STATE_NAME[state]}")
            table.claim(serial, key, VOIDED)
        self._check_supply(leaf)

    def _state_of(self, leaf: int, kind: str, tid: str, key: bytes, serial: int) -> int:
        """The ticket's state so far (0: new), once its serial is known to be its own.

        A serial is one ticket's for ever (issuance ordinals are never reused, a void's
        included), and a ticket keeps the serial it was first seen with.
        """
        try:
            state = self.tickets.state_of(serial, key)
        except SerialMismatch as known:
            raise self._illegal(leaf, tid, f"{kind} with serial {serial}, {known}") from None
        if state >= 0:
            return state
        if kind in ("issued", "voided"):
            owner = uuid.UUID(bytes=self.tickets.at(serial)[0])
            held = "issued to" if state == -ISSUED else f"used by {STATE_NAME[-state]}"
            raise self._illegal(leaf, tid, f"serial {serial} already {held} ticket {owner}")
        return 0  # another ticket's serial: this one was never issued

    def _cap(self, leaf: int, entry: CapEntry) -> None:
        if self.cap_marks and entry.serial < self.cap_marks[-1]:
            raise Violation(
                ViolationKind.ILLEGAL_LIFECYCLE,
                f"cap entry watermark {entry.serial} is below the previous one "
                f"{self.cap_marks[-1]} (serials only grow)",
                leaf,
            )
        if entry.serial < self.max_issued_serial:
            raise Violation(
                ViolationKind.ILLEGAL_LIFECYCLE,
                f"cap entry watermark {entry.serial} is below serial {self.max_issued_serial},"
                " already issued earlier in the log",
                leaf,
            )
        self.cap_marks.append(entry.serial)
        self.caps.append((entry.cap, entry.scope))

    def _check_supply(self, leaf: int) -> None:
        for scope, count, top in (
            (CapScope.LIVE, self.live, self.tickets.top_issued()),
            (CapScope.LIFETIME, self.lifetime, self.max_issued_serial),
        ):
            if not count:
                continue
            cap, in_force = self.cap_for(top)
            if in_force is scope and count > cap:
                raise Violation(
                    ViolationKind.OVER_CAP,
                    f"{count} tickets count under scope {scope.value} after {leaf + 1} entries,"
                    f" but the cap in force for serial {top} is {cap}",
                    leaf,
                )

    @staticmethod
    def _illegal(leaf: int, tid: str, what: str) -> Violation:
        return Violation(ViolationKind.ILLEGAL_LIFECYCLE, f"ticket {tid}: {what}", leaf)


# ---- the log: checkpoint, tiles, tree ------------------------------------------------------


@dataclass
class Progress:
    """Counters a caller may show (and the benchmark reports)."""

    entries: int = 0
    fetches: int = 0
    target: int = 0


class Monitor:
    """Verifies successive checkpoints of one log, remembering the tree between them."""

    def __init__(
        self,
        source: LogSource,
        verifiers: Sequence[NoteVerifier],
        origin: str,
        state: MonitorState | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        progress_every: int = 65536,
        witnesses: WitnessPolicy | None = None,
    ) -> None:
        self.source = source
        self.verifiers = list(verifiers)
        self.witnesses = witnesses or WitnessPolicy()
        self.origin = origin
        self.state = state
        self.progress = Progress()
        self._on_progress = on_progress
        self._every = progress_every
        self._tree = TreeBuilder()
        self._supply = SupplyState()

    @property
    def size(self) -> int:
        """How many entries have been verified so far."""
        return self._tree.size

    def _read(self, tile: Tile, required: bool = True) -> bytes | None:
        self.progress.fetches += 1
        try:
            data = self.source.read(tile)
        except SourceUnreachable:
            raise
        except OSError as exc:
            raise Violation(ViolationKind.UNREADABLE, f"{tile.path}: {exc}") from exc
        if data is None and required:
            raise Violation(ViolationKind.UNREADABLE, f"{tile.path} is missing")
        return data

    def check(self) -> MonitorState:
        """Fetch and verify the current checkpoint and everything new under it; the new state."""
        try:
            note = self.source.checkpoint()
        except SourceUnreachable:
            raise
        except OSError as exc:
            raise Violation(ViolationKind.UNREADABLE, f"checkpoint: {exc}") from exc
        except UnicodeDecodeError as exc:  # a source decodes the note; the log's bytes are no text
            raise Violation(
                ViolationKind.BAD_CHECKPOINT, f"checkpoint is not UTF-8 text (byte {exc.start})"
            ) from exc
        return self.check_note(note)

    def check_note(self, note: str) -> MonitorState:
        """Verify one checkpoint note against the log and the remembered state."""
        try:
            cp = open_checkpoint(note, self.verifiers, origin=self.origin)
        except GoldenError as exc:
            raise Violation(ViolationKind.BAD_CHECKPOINT, exc.message) from exc
        cosigned_by = self._check_witnesses(note, cp)
        old = self.state
        if old is not None and old.origin != cp.origin:
            raise Violation(
                ViolationKind.BAD_CHECKPOINT,
                f"the state file is for log {old.origin!r}, this checkpoint is {cp.origin!r}",
            )
        if old is not None:
            if cp.size < old.size:
                raise Violation(
                    ViolationKind.ROLLBACK,
                    f"checkpoint size {cp.size} is smaller than the {old.size} seen before",
                )
            if cp.size == old.size and cp.root != old.root:
                raise Violation(
                    ViolationKind.FORK,
                    f"two checkpoints of size {cp.size} with different roots: "
                    f"{hash_b64(old.root)} (seen before) and {hash_b64(cp.root)}",
                )
        if cp.size < self._tree.size:
            raise Violation(
                ViolationKind.ROLLBACK,
                f"checkpoint size {cp.size} is smaller than the {self._tree.size} verified",
            )
        self._extend(cp, old)
        root = self._tree.root()
        if root != cp.root:
            raise Violation(
                ViolationKind.ROOT_MISMATCH,
                f"the tiles of size {cp.size} hash to {hash_b64(root)}, "
                f"the checkpoint says {hash_b64(cp.root)}",
            )
        self.state = MonitorState.of(cp, note, cosigned_by)
        return self.state

    def _check_witnesses(self, note: str, cp: Checkpoint) -> dict[str, int]:
        """Known witnesses' cosignatures all verify and reach the quorum (before any tile read).

        Checked before the tree, so a checkpoint still short of its quorum (the log publishes
        it before the witnesses answer) leaves this monitor's state untouched: a follower can
        simply look again.
        """
        policy = self.witnesses
        if not policy.witnesses:
            return {}
        try:
            cosigned = verify_cosignatures(note, policy.witnesses)
        except CheckpointError as exc:
            raise Violation(
                ViolationKind.BAD_COSIGNATURE, f"checkpoint of size {cp.size}: {exc.message}"
            ) from exc
        if len(cosigned) < policy.quorum:
            missing = [w.name for w in policy.witnesses if w.name not in cosigned]
            raise Violation(
                ViolationKind.NO_QUORUM,
                f"checkpoint of size {cp.size} is cosigned by {len(cosigned)} known witness(es)"
                f" ({', '.join(sorted(cosigned)) or 'none'}), the quorum is {policy.quorum};"
                f" no cosignature from {', '.join(missing)}",
            )
        return cosigned

    def _extend(self, cp: Checkpoint, old: MonitorState | None) -> None:
        """Read entries [tree.size, size) tile by tile, verifying tiles, entries and supply."""
        size = cp.size
        tree, start = self._tree, self._tree.size
        self.progress.target = size
        fork_at = old.size if old is not None and start < old.size <= size else None
        first, end = start >> TILE_HEIGHT, (size + 255) >> TILE_HEIGHT
        reads = self._read_ahead(
            t
            for n in range(first, end)
            for level0 in (Tile(0, n, tile_width_at(0, n, size)),)
            for t in (level0.bundle(), level0)
        )
        try:
            for n in range(first, end):
                self._verify_tile(n, size, next(reads), next(reads), cp, start, fork_at, old)
        finally:
            reads.close()  # a violation stops the prefetch too
        for partial, partial_hashes in tree.partial_tiles():
            if partial.level:
                self._compare(partial, partial_hashes)
        if self._on_progress:
            self._on_progress(self.progress)

    def _read_ahead(self, tiles: Iterator[Tile]) -> Generator[bytes | None, None, None]:
        """The tiles' contents in order; a source with `read_many` fetches ahead in parallel.

        A bundle is required, a hash tile may be None (a source without tiles); any read
        error or missing bundle is an UNREADABLE violation at the tile it concerns.
        """
        order: deque[Tile] = deque()

        def remembered() -> Iterator[Tile]:
            for tile in tiles:
                order.append(tile)
                yield tile

        read_many = getattr(self.source, "read_many", None)
        if read_many is not None:
            results: Iterator[bytes | None] = read_many(remembered())
        else:
            results = (self.source.read(t) for t in remembered())
        try:
            while True:
                try:
                    data = next(results)
                except StopIteration:
                    return
                except SourceUnreachable:
                    raise
                except OSError as exc:
                    raise Violation(ViolationKind.UNREADABLE, f"{order[0].path}: {exc}") from exc
                tile = order.popleft()
                self.progress.fetches += 1
                if data is None and tile.is_bundle:
                    raise Violation(ViolationKind.UNREADABLE, f"{tile.path} is missing")
                yield data
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()

    def _verify_tile(
        self,
        n: int,
        size: int,
        bundle_data: bytes | None,
        tile_data: bytes | None,
        cp: Checkpoint,
        start: int,
        fork_at: int | None,
        old: MonitorState | None,
    ) -> None:
        """One level-0 tile and its entry bundle: entries, hashes, lifecycle and supply."""
        tree = self._tree
        width = tile_width_at(0, n, size)
        level0 = Tile(0, n, width)
        assert bundle_data is not None
        entries = _decoded(
            decode_bundle, bundle_data, level0.bundle(), ViolationKind.TAMPERED_BUNDLE
        )
        hashes = (
            None
            if tile_data is None
            else _decoded(decode_tile, tile_data, level0, ViolationKind.TAMPERED_TILE)
        )
        seen = tree.tail(0)
        for j, entry in enumerate(entries):
            leaf = (n << TILE_HEIGHT) + j
            h = leaf_hash(entry)
            if hashes is not None and hashes[j] != h:
                raise Violation(
                    self._blame(level0, hashes, cp),
                    f"{level0.path} hash {j} is {hash_b64(hashes[j])}, but entry {leaf} in "
                    f"{level0.bundle().path} hashes to {hash_b64(h)}",
                    leaf,
                )
            if leaf < start:
                if seen[j] != h:
                    raise Violation(
                        ViolationKind.FORK,
                        f"entry {leaf} changed since it was verified at size {start}",
                        leaf,
                    )
                continue
            self._supply.apply(leaf, entry)
            for full, full_hashes in tree.add(h):
                if full.level:
                    self._compare(full, full_hashes)
            if fork_at is not None and tree.size == fork_at and old is not None:
                root = tree.root()
                if root != old.root:
                    raise Violation(
                        ViolationKind.FORK,
                        f"the log's tree of size {fork_at} has root {hash_b64(root)}, but the "
                        f"checkpoint seen before says {hash_b64(old.root)}",
                        leaf,
                    )
            self.progress.entries += 1
            if self._on_progress and self.progress.entries % self._every == 0:
                self._on_progress(self.progress)

    def _blame(self, level0: Tile, hashes: list[bytes], cp: Checkpoint) -> ViolationKind:
        """Which of a disagreeing level-0 tile and entry bundle was altered.

        The tile is trusted when the tiles alone still hash to the signed root through it (for a
        full tile: its root is its slot in the level-1 tile), so the bundle is to blame.
        """
        try:
            if level0.width == TILE_WIDTH:
                n = level0.index
                upper = Tile(1, n >> TILE_HEIGHT, tile_width_at(1, n >> TILE_HEIGHT, cp.size))
                data = self.source.read(upper)
                if data is None or decode_tile(data, upper.width)[n % TILE_WIDTH] != tile_root(
                    hashes
                ):
                    return ViolationKind.TAMPERED_TILE
            read = self.source.read
            if root_from_tiles(cp.size, lambda t: read(t) or b"") == cp.root:
                return ViolationKind.TAMPERED_BUNDLE
        except (OSError, GoldenError):
            pass
        return ViolationKind.TAMPERED_TILE

    def _compare(self, tile: Tile, expected: list[bytes]) -> None:
        """A level >= 1 tile must hold exactly the roots of the full tiles below it."""
        data = self._read(tile, required=False)
        if data is None:
            return
        try:
            got = decode_tile(data, tile.width)
        except TileError as exc:
            raise Violation(ViolationKind.TAMPERED_TILE, f"{tile.path}: {exc.message}") from exc
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            if g != e:
                raise Violation(
                    ViolationKind.TAMPERED_TILE,
                    f"{tile.path} hash {i} is {hash_b64(g)}, the tiles below hash to {hash_b64(e)}",
                    ((tile.index << TILE_HEIGHT) + i) << (TILE_HEIGHT * tile.level),
                )


def _decoded(
    decode: Callable[[bytes, int], list[bytes]], data: bytes, tile: Tile, kind: ViolationKind
) -> list[bytes]:
    """A level-0 tile or entry bundle decoded; a malformed one is a Violation of `kind` at its
    first leaf."""
    try:
        return decode(data, tile.width)
    except TileError as exc:
        raise Violation(kind, f"{tile.path}: {exc.message}", tile.index << TILE_HEIGHT) from exc


__all__ = [
    "DEFAULT_CAP",
    "DEFAULT_SCOPE",
    "LogSource",
    "Monitor",
    "MonitorState",
    "Progress",
    "SourceUnreachable",
    "SupplyState",
    "Violation",
    "ViolationKind",
]
