"""The Merkle ledger in PostgreSQL: serialised appends, stored subtree hashes, signed checkpoints.

Tables (migrations/002_ledger.sql): `ledger_entries` (one row per leaf), `ledger_nodes` (the hash
of every complete subtree, leaves included, keyed by (level, idx)) and `ledger_checkpoints` (one
signed C2SP note per append batch). A complete subtree never changes once its last leaf exists,
so any proof or historical root is a fold of O(log n) stored hashes fetched in one query.

Appends run inside the caller's transaction under pg_advisory_xact_lock(LEDGER_KEY): the leaf
index, the new subtree hashes, the checkpoint and the caller's own state change commit or roll
back together, and leaf indices stay dense (0..n-1) across processes.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from uuid import UUID, uuid4

import asyncpg
from google.protobuf.message import Message
from nacl.signing import SigningKey
from pydantic import BaseModel, ConfigDict

from golden_press.checkpoint import Checkpoint, NoteVerifier, ledger_key_id, sign_checkpoint
from golden_press.errors import GoldenError, InvalidRequest, Reason
from golden_press.ledger_entry import (
    CAP_KIND,
    CapEntry,
    EntryKind,
    LedgerEntry,
    encode_cap_entry,
    encode_entry,
    entry_for_ticket,
)
from golden_press.merkle import (
    EMPTY_ROOT,
    Node,
    consistency_ranges,
    fold_nodes,
    frontier_nodes,
    hash_b64,
    inclusion_ranges,
    leaf_hash,
    node_hash,
    range_nodes,
)
from golden_press.models import ProofBundle, Ticket
from service.store.cosignatures import with_lines
from service.store.db import GOLDEN_KEY, LEDGER_KEY
from service.store.outbox import outbox_write
from service.store.statements import Write, one_statement
from service.store.tickets import row_to_ticket

_FETCH_NODES = (
    "SELECT n.level, n.idx, n.hash FROM unnest($1::smallint[], $2::bigint[]) AS k(level, idx)"
    " JOIN ledger_nodes n ON n.level = k.level AND n.idx = k.idx"
)


class AppendResult(BaseModel):
    """Where an entry sits; tree_size is the size of the checkpoint that covers it."""

    model_config = ConfigDict(frozen=True)

    leaf_index: int
    tree_size: int
    created: bool


@dataclass(frozen=True)
class LedgerHead:
    """The tree as read under the ledger lock: its size, the leaf of each asked-for key (None
    when new, in the order asked) and its right edge (level -> hash of a complete subtree)."""

    size: int
    known: list[int | None]
    frontier: dict[int, bytes]


@dataclass(frozen=True)
class AppendPlan:
    """Where entries go and the writes that put them there (for the caller's one statement)."""

    results: list[AppendResult]
    writes: list[Write]


#: The columns of ledger_head() and lock_ticket_for_ledger() that head_from_row() reads.
HEAD_COLUMNS = "head_size, known_leaves, frontier_levels, frontier_hashes"


def head_from_row(row: asyncpg.Record) -> LedgerHead:
    """A LedgerHead from migrations/042's columns; a missing subtree is refused."""
    size: int = row["head_size"]
    levels = list(row["frontier_levels"] or [])
    hashes = [bytes(h) for h in row["frontier_hashes"] or []]
    wanted = frontier_nodes(size)
    if levels != [level for level, _ in wanted]:
        missing = next(node for node in wanted if node[0] not in levels)
        raise InvalidRequest(
            f"ledger has no subtree {missing}: the requested tree size is beyond the log"
        )
    return LedgerHead(
        size=size, known=list(row["known_leaves"]), frontier=dict(zip(levels, hashes, strict=True))
    )


class StoredCheckpoint(BaseModel):
    """A signed tree head as stored (or, for the empty tree, as freshly signed)."""

    model_config = ConfigDict(frozen=True)

    size: int
    root: bytes
    note: str


class StoredEntry(BaseModel):
    """One leaf row, for audits and mirrors."""

    model_config = ConfigDict(frozen=True)

    leaf_index: int
    ticket_id: UUID  # for a `cap` entry: the id naming that change
    kind: EntryKind | Literal["cap"]
    entry: bytes
    leaf_hash: bytes
    created_at: datetime


class LedgerStore:
    """Append to and prove from the ledger; holds only the checkpoint key, never a connection.

    Without a signing key the store is read-only (the public API): it serves stored checkpoints
    and proofs and never holds the ledger's private key.
    """

    def __init__(self, signing_key: SigningKey | None, origin: str) -> None:
        self._key = signing_key
        self.origin = origin

    @classmethod
    def read_only(cls, origin: str) -> LedgerStore:
        """A store for readers: proofs and stored checkpoints, no appends, no key."""
        return cls(None, origin)

    @property
    def public_key(self) -> bytes:
        """Raw 32-byte Ed25519 public key of the checkpoint signer."""
        return bytes(self._signer.verify_key)

    @property
    def verifier(self) -> NoteVerifier:
        """The note verifier of this store's checkpoint key."""
        return NoteVerifier(self.origin, self.public_key)

    @property
    def key_id(self) -> str:
        """Hex C2SP note key id of the checkpoint signer (name = origin)."""
        return ledger_key_id(self.origin, self.public_key)

    @property
    def can_sign(self) -> bool:
        """True when this store holds the ledger's private key."""
        return self._key is not None

    @property
    def _signer(self) -> SigningKey:
        if self._key is None:
            raise GoldenError(
                Reason.BAD_CHECKPOINT, "this ledger store is read-only and the ledger is empty"
            )
        return self._key

    def sign(self, size: int, root: bytes) -> str:
        """The signed checkpoint note for (size, root)."""
        return sign_checkpoint(
            Checkpoint(origin=self.origin, size=size, root=root), self._signer, self.origin
        )

    # ---- appends ------------------------------------------------------------------------------

    async def append(self, conn: asyncpg.Connection, entry: LedgerEntry) -> AppendResult:
        """Append one entry in the caller's transaction (idempotent per ticket and kind)."""
        return (await self.append_many(conn, [entry]))[0]

    async def append_many(
        self, conn: asyncpg.Connection, entries: Sequence[LedgerEntry]
    ) -> list[AppendResult]:
        """Append a batch under the ledger lock with one checkpoint; must run in a transaction."""
        rows = [(e.ticket_id, e.kind.value, encode_entry(e)) for e in entries]
        return await self._append(conn, rows, sign=True)

    async def append_cap(self, conn: asyncpg.Connection, entry: CapEntry) -> AppendResult:
        """Append a `cap` entry in the caller's transaction (which holds the cap lock).

        Signed at once when this store holds the ledger key; otherwise (`admin set-cap` holds
        none) the worker's tile publisher signs a checkpoint covering it (`checkpoint_tail`).
        The row's ticket_id is a fresh id naming the change: a cap entry names no ticket.
        """
        row = (uuid4(), CAP_KIND, encode_cap_entry(entry))
        return (await self._append(conn, [row], sign=self.can_sign))[0]

    async def _append(
        self, conn: asyncpg.Connection, entries: Sequence[tuple[UUID, str, bytes]], sign: bool
    ) -> list[AppendResult]:
        """Append (key, kind, bytes) rows under the ledger lock; idempotent per (key, kind).

        Two round trips: the head (lock and reads) and one statement writing everything (none
        when every entry is already in the log).
        """
        if not entries:
            return []
        head = await self.head(conn, [(tid, kind) for tid, kind, _ in entries])
        plan = self.plan(head, entries, sign=sign)
        if plan.writes:  # a retry whose entries are all in the log writes nothing
            await conn.execute(*one_statement(plan.writes))
        return plan.results

    async def head(self, conn: asyncpg.Connection, keys: Sequence[tuple[UUID, str]]) -> LedgerHead:
        """Take the ledger lock and read the tree's head and which keys have a leaf (one call;
        migrations/042); must run in a transaction."""
        if not conn.is_in_transaction():
            raise RuntimeError("LedgerStore.append must run inside the caller's transaction")
        row = await conn.fetchrow(
            f"SELECT {HEAD_COLUMNS} FROM ledger_head($1, $2::uuid[], $3::text[])",
            LEDGER_KEY,
            [tid for tid, _ in keys],
            [kind for _, kind in keys],
        )
        assert row is not None
        return head_from_row(row)

    async def lock_ticket_for_ledger(
        self, conn: asyncpg.Connection, ticket_id: UUID, kind: EntryKind
    ) -> tuple[asyncpg.Record | None, LedgerHead]:
        """A ticket's ledger step in one call, in the lock order (migrations/042): the cap's
        lock, the ticket row locked FOR UPDATE (None when there is none), the ledger lock and
        the head for its `kind` entry. Must run in a READ COMMITTED transaction."""
        if not conn.is_in_transaction():
            raise RuntimeError("LedgerStore.append must run inside the caller's transaction")
        row = await conn.fetchrow(
            f"SELECT (l.ticket).*, {HEAD_COLUMNS} FROM lock_ticket_for_ledger($1, $2, $3, $4) AS l",
            GOLDEN_KEY,
            ticket_id,
            LEDGER_KEY,
            kind.value,
        )
        assert row is not None
        return (row if row["ticket_id"] is not None else None), head_from_row(row)

    def plan(
        self, head: LedgerHead, entries: Sequence[tuple[UUID, str, bytes]], *, sign: bool
    ) -> AppendPlan:
        """Place (key, kind, bytes) rows on the tree `head` names: leaves, the subtrees they
        complete, the signed checkpoint; the writes are left to the caller's statement."""
        known = {
            (tid, kind): leaf
            for (tid, kind, _), leaf in zip(entries, head.known, strict=True)
            if leaf is not None
        }
        frontier = dict(head.frontier)
        placed: list[tuple[int, bool]] = []
        new_idx: list[int] = []
        new_tid: list[UUID] = []
        new_kind: list[str] = []
        new_data: list[bytes] = []
        new_hash: list[bytes] = []
        node_level: list[int] = []
        node_idx: list[int] = []
        node_val: list[bytes] = []
        n = head.size
        for tid, kind, data in entries:
            key = (tid, kind)
            if key in known:
                placed.append((known[key], False))
                continue
            h = leaf_hash(data)
            known[key] = n
            placed.append((n, True))
            new_idx.append(n)
            new_tid.append(tid)
            new_kind.append(kind)
            new_data.append(data)
            new_hash.append(h)
            node_level.append(0)
            node_idx.append(n)
            node_val.append(h)
            # Carry up: every trailing 1 bit of n closes a complete subtree (binary counter).
            level, i = 0, n
            while i & 1:
                h = node_hash(frontier.pop(level), h)
                level, i = level + 1, i >> 1
                node_level.append(level)
                node_idx.append(i)
                node_val.append(h)
            frontier[level] = h
            n += 1

        writes: list[Write] = []
        if new_idx:
            writes.append(
                Write(
                    "INSERT INTO ledger_entries (leaf_index, ticket_id, kind, entry, leaf_hash)"
                    " SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::bytea[],"
                    " $5::bytea[])",
                    (new_idx, new_tid, new_kind, new_data, new_hash),
                )
            )
            writes.append(
                Write(
                    "INSERT INTO ledger_nodes (level, idx, hash)"
                    " SELECT * FROM unnest($1::smallint[], $2::bigint[], $3::bytea[])",
                    (node_level, node_idx, node_val),
                )
            )
            if sign:
                root = fold_nodes([frontier[lv] for lv in sorted(frontier, reverse=True)])
                writes.append(
                    Write(
                        "INSERT INTO ledger_checkpoints (tree_size, root, note)"
                        " VALUES ($1::bigint, $2::bytea, $3::text)",
                        (n, root, self.sign(n, root)),
                    )
                )
        return AppendPlan(
            results=[AppendResult(leaf_index=i, tree_size=n, created=c) for i, c in placed],
            writes=writes,
        )

    async def checkpoint_tail(self, conn: asyncpg.Connection) -> int | None:
        """Sign a checkpoint for entries appended without one (a `cap` entry); its size or None.

        Runs in the caller's transaction under the ledger lock, so it never races an append.
        """
        if not conn.is_in_transaction():
            raise RuntimeError("LedgerStore.checkpoint_tail must run inside a transaction")
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LEDGER_KEY)
        size: int = await conn.fetchval(
            "SELECT coalesce(max(leaf_index) + 1, 0) FROM ledger_entries"
        )
        signed: int = await conn.fetchval(
            "SELECT coalesce(max(tree_size), 0) FROM ledger_checkpoints"
        )
        if size <= signed:
            return None
        root = await self.root_at(conn, size)
        await conn.execute(
            "INSERT INTO ledger_checkpoints (tree_size, root, note) VALUES ($1, $2, $3)",
            size,
            root,
            self.sign(size, root),
        )
        return size

    async def _nodes(self, conn: asyncpg.Connection, nodes: Sequence[Node]) -> dict[Node, bytes]:
        """Fetch stored subtree hashes in one query; a missing one means the tree is smaller."""
        if not nodes:
            return {}
        rows = await conn.fetch(_FETCH_NODES, [lv for lv, _ in nodes], [ix for _, ix in nodes])
        found = {(r["level"], r["idx"]): bytes(r["hash"]) for r in rows}
        missing = [node for node in nodes if node not in found]
        if missing:
            raise InvalidRequest(
                f"ledger has no subtree {missing[0]}: the requested tree size is beyond the log"
            )
        return found

    async def _ranges(
        self, conn: asyncpg.Connection, ranges: Sequence[tuple[int, int]], extra: Sequence[Node]
    ) -> list[bytes]:
        """MTH of each leaf range, from one fetch of all the stored subtrees they need."""
        plans = [range_nodes(start, end) for start, end in ranges]
        wanted = sorted({node for plan in plans for node in plan} | set(extra))
        found = await self._nodes(conn, wanted)
        return [fold_nodes([found[node] for node in plan]) for plan in plans]

    # ---- checkpoints --------------------------------------------------------------------------

    async def ensure_genesis_checkpoint(self, conn: asyncpg.Connection) -> None:
        """Store the signed empty-tree checkpoint, so read-only stores can serve it too."""
        await conn.execute(
            "INSERT INTO ledger_checkpoints (tree_size, root, note) VALUES (0, $1, $2)"
            " ON CONFLICT (tree_size) DO NOTHING",
            EMPTY_ROOT,
            self.sign(0, EMPTY_ROOT),
        )

    async def latest_checkpoint(self, conn: asyncpg.Connection) -> StoredCheckpoint:
        """The newest signed checkpoint with its witness cosignatures; the empty tree's is signed
        on demand."""
        row = await conn.fetchrow(
            f"SELECT tree_size, root, note, {_COSIGNATURE_LINES} FROM ledger_checkpoints c"
            " ORDER BY tree_size DESC LIMIT 1"
        )
        if row is None:
            return StoredCheckpoint(size=0, root=EMPTY_ROOT, note=self.sign(0, EMPTY_ROOT))
        return _stored_checkpoint(row)

    async def checkpoint_at(self, conn: asyncpg.Connection, size: int) -> StoredCheckpoint | None:
        """The checkpoint at exactly `size` with its witness cosignatures, if one was written."""
        row = await conn.fetchrow(
            f"SELECT tree_size, root, note, {_COSIGNATURE_LINES} FROM ledger_checkpoints c"
            " WHERE tree_size = $1",
            size,
        )
        return _stored_checkpoint(row) if row is not None else None

    async def checkpoint_note(self, conn: asyncpg.Connection, size: int) -> str | None:
        """The signed note (with cosignatures) of the checkpoint at exactly `size`, if written."""
        stored = await self.checkpoint_at(conn, size)
        if stored is None and size == 0:
            return self.sign(0, EMPTY_ROOT)
        return stored.note if stored is not None else None

    async def checkpoint_sizes(self, conn: asyncpg.Connection, after: int, upto: int) -> list[int]:
        """Tree sizes with a stored checkpoint in (after, upto], ascending (the tile publisher:
        each one's partial tiles must be published)."""
        rows = await conn.fetch(
            "SELECT tree_size FROM ledger_checkpoints WHERE tree_size > $1 AND tree_size <= $2"
            " ORDER BY tree_size",
            after,
            upto,
        )
        return [int(r["tree_size"]) for r in rows]

    async def root_at(self, conn: asyncpg.Connection, size: int) -> bytes:
        """MTH of the first `size` leaves, from stored subtrees (any size, checkpointed or not)."""
        if size < 0:
            raise InvalidRequest(f"tree size must be >= 0, got {size}")
        if size == 0:
            return EMPTY_ROOT
        return (await self._ranges(conn, [(0, size)], []))[0]

    # ---- proofs -------------------------------------------------------------------------------

    async def inclusion_proof(
        self, conn: asyncpg.Connection, leaf_index: int, tree_size: int
    ) -> list[bytes]:
        """PATH(leaf_index, D[tree_size]) (RFC 9162 2.1.3.1) in one query of O(log n) rows."""
        if not 0 <= leaf_index < tree_size:
            raise InvalidRequest(f"need 0 <= leaf_index < tree_size, got {leaf_index}, {tree_size}")
        ranges = inclusion_ranges(leaf_index, tree_size)
        return await self._ranges(conn, ranges, [(0, leaf_index), (0, tree_size - 1)])

    async def consistency_proof(
        self, conn: asyncpg.Connection, size1: int, size2: int
    ) -> list[bytes]:
        """PROOF(size1, D[size2]) (RFC 9162 2.1.4.1) in one query of O(log n) rows."""
        if not 0 < size1 <= size2:
            raise InvalidRequest(f"need 0 < size1 <= size2, got {size1}, {size2}")
        if size1 == size2:
            await self._nodes(conn, [(0, size2 - 1)])
            return []
        return await self._ranges(conn, consistency_ranges(size1, size2), [(0, size2 - 1)])

    # ---- entries ------------------------------------------------------------------------------

    async def entry(self, conn: asyncpg.Connection, leaf_index: int) -> bytes:
        """The canonical bytes of leaf `leaf_index`."""
        data = await conn.fetchval(
            "SELECT entry FROM ledger_entries WHERE leaf_index = $1", leaf_index
        )
        if data is None:
            raise InvalidRequest(f"ledger has no leaf {leaf_index}")
        return bytes(data)

    async def find_leaf(
        self, conn: asyncpg.Connection, ticket_id: UUID, kind: EntryKind
    ) -> int | None:
        """Leaf index of a ticket's entry of `kind`, if appended."""
        leaf: int | None = await conn.fetchval(
            "SELECT leaf_index FROM ledger_entries WHERE ticket_id = $1 AND kind = $2",
            ticket_id,
            EntryKind(kind).value,
        )
        return leaf

    async def entries(self, conn: asyncpg.Connection, start: int, stop: int) -> list[StoredEntry]:
        """Leaves [start, stop) in order, for the audit and the tiles (page through large logs)."""
        rows = await conn.fetch(
            "SELECT leaf_index, ticket_id, kind, entry, leaf_hash, created_at FROM ledger_entries"
            " WHERE leaf_index >= $1 AND leaf_index < $2 ORDER BY leaf_index",
            start,
            stop,
        )
        return [
            StoredEntry(
                leaf_index=r["leaf_index"],
                ticket_id=r["ticket_id"],
                kind=CAP_KIND if r["kind"] == CAP_KIND else EntryKind(r["kind"]),
                entry=bytes(r["entry"]),
                leaf_hash=bytes(r["leaf_hash"]),
                created_at=r["created_at"],
            )
            for r in rows
        ]

    async def node_hashes(
        self, conn: asyncpg.Connection, level: int, start: int, stop: int
    ) -> list[bytes]:
        """Stored subtree hashes [start, stop) at `level` (a hash tile of tile level level/8)."""
        rows = await conn.fetch(
            "SELECT hash FROM ledger_nodes WHERE level = $1 AND idx >= $2 AND idx < $3"
            " ORDER BY idx",
            level,
            start,
            stop,
        )
        return [bytes(r["hash"]) for r in rows]

    async def entry_bytes(self, conn: asyncpg.Connection, start: int, stop: int) -> list[bytes]:
        """The canonical bytes of leaves [start, stop), in order (GetEntries)."""
        rows = await conn.fetch(
            "SELECT entry FROM ledger_entries WHERE leaf_index >= $1 AND leaf_index < $2"
            " ORDER BY leaf_index",
            start,
            stop,
        )
        return [bytes(r["entry"]) for r in rows]

    # ---- bundles ------------------------------------------------------------------------------

    async def build_bundle(
        self,
        conn: asyncpg.Connection,
        ticket: Ticket,
        user_salt: bytes,
        checkpoint: StoredCheckpoint | None = None,
    ) -> ProofBundle:
        """The holder's proof bundle: the ticket's `issued` leaf against `checkpoint` (default:
        the latest), which must cover it."""
        leaf = await self.find_leaf(conn, ticket.ticket_id, EntryKind.ISSUED)
        if leaf is None:
            raise GoldenError(
                Reason.TICKET_NOT_FOUND, f"ticket {ticket.ticket_id} has no issued ledger entry"
            )
        head = checkpoint if checkpoint is not None else await self.latest_checkpoint(conn)
        proof = await self.inclusion_proof(conn, leaf, head.size)
        data = await self.entry(conn, leaf)
        if ticket.leaf_index is None:
            ticket = ticket.model_copy(update={"leaf_index": leaf})
        return ProofBundle(
            ticket=ticket,
            user_salt=_b64(user_salt),
            entry=_b64(data),
            leaf_index=leaf,
            tree_size=head.size,
            inclusion_proof=[hash_b64(h) for h in proof],
            checkpoint=head.note,
        )


async def record_entry(
    conn: asyncpg.Connection,
    ledger: LedgerStore,
    kind: EntryKind,
    row: asyncpg.Record,
    event: Message,
    *,
    at: datetime,
    reason: str = "",
    head: LedgerHead | None = None,
    leaf_write: Callable[[int], Write] | None = None,
    notify: Write | None = None,
) -> AppendResult:
    """Append a ticket's ledger entry and its outbox event in the caller's transaction.

    Fills the fields every event shares (ticket id, serial, leaf index; outbox_write adds the
    event id); the caller sets only what is particular to its event. Two round trips under the
    ledger lock, one when the caller read `head` itself (lock_ticket_for_ledger): the head, then
    ONE statement writing the entry, its subtrees, the signed checkpoint, the outbox row and
    the caller's own follow-ups: `leaf_write(leaf_index)` (the ticket's leaf column) and
    `notify` (run last: a NOTIFY for the API processes' snapshots).
    """
    entry = entry_for_ticket(kind, row_to_ticket(row), bytes(row["user_salt"]), at, reason)
    if head is None:
        head = await ledger.head(conn, [(entry.ticket_id, kind.value)])
    plan = ledger.plan(head, [(entry.ticket_id, kind.value, encode_entry(entry))], sign=True)
    appended = plan.results[0]
    event.ticket_id = str(row["ticket_id"])  # type: ignore[attr-defined]
    event.serial = row["serial"]  # type: ignore[attr-defined]
    event.leaf_index = appended.leaf_index  # type: ignore[attr-defined]
    writes = [
        *plan.writes,
        outbox_write(
            leaf_index=appended.leaf_index, ticket_id=row["ticket_id"], kind=kind.value, event=event
        ),
    ]
    if leaf_write is not None:
        writes.append(leaf_write(appended.leaf_index))
    await conn.execute(*one_statement(writes, notify))
    return appended


#: The witness cosignature lines of checkpoint row `c` (migrations/010), in witness order.
_COSIGNATURE_LINES = (
    "coalesce((SELECT string_agg(s.line, '' ORDER BY s.witness) FROM ledger_cosignatures s"
    " WHERE s.tree_size = c.tree_size), '') AS cosignatures"
)


def _stored_checkpoint(row: asyncpg.Record) -> StoredCheckpoint:
    """A checkpoint row as served: the ledger's note followed by its cosignature lines."""
    lines = row["cosignatures"]
    note = with_lines(row["note"], [lines]) if lines else row["note"]
    return StoredCheckpoint(size=row["tree_size"], root=bytes(row["root"]), note=note)


def _b64(raw: bytes) -> str:
    """Salt and entry bytes in a bundle (hashes go through merkle.hash_b64)."""
    return base64.b64encode(raw).decode("ascii")


__all__ = [
    "AppendPlan",
    "AppendResult",
    "LedgerHead",
    "LedgerStore",
    "StoredCheckpoint",
    "StoredEntry",
    "record_entry",
]
