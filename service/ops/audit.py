"""`golden-press audit`: reconcile tickets, the Merkle ledger, the outbox and the event stream.

Every check reads; the only write is the state file remembering the last checkpoint seen, so a
later audit can prove the ledger only ever grew (a consistency proof from that checkpoint to the
current head). Run it on a quiet system: an in-flight saga may show up as a pending outbox row.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import asyncpg
from nacl.signing import SigningKey
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from pydantic import BaseModel, ConfigDict, Field

from golden_press.checkpoint import open_checkpoint
from golden_press.errors import GoldenError, Reason, Unreachable
from golden_press.ledger_entry import (
    EntryKind,
    decode_entry,
    signature_digest,
    user_commitment,
)
from golden_press.merkle import HASH_SIZE, hash_b64, leaf_hash, verify_consistency
from golden_press.models import CapScope, TicketState
from golden_press.monitor import SupplyState, Violation
from golden_press.settings import Settings
from golden_press.tiles import TreeBuilder
from service.store.config import cap_history
from service.store.db import create_pool
from service.store.key_files import load_key_file
from service.store.keys import trust_roots
from service.store.ledger import LedgerStore
from service.store.nats_client import connect_nats
from service.store.outbox import EVENT_TYPES, event_id_for, events_pb2, outbox_states
from service.store.tickets import all_tickets, expired_reservations

#: Ledger entry kinds each ticket state implies (exactly these, nothing more).
EXPECTED_KINDS: dict[TicketState, frozenset[EntryKind]] = {
    TicketState.RESERVED: frozenset(),
    TicketState.ISSUED: frozenset({EntryKind.ISSUED}),
    TicketState.REDEEMED: frozenset({EntryKind.ISSUED, EntryKind.REDEEMED}),
    TicketState.VOIDED: frozenset({EntryKind.VOIDED}),
    TicketState.REVOKED: frozenset({EntryKind.ISSUED, EntryKind.REVOKED}),
}
STATE_FILE_NAME = "audit-state.json"
_PAGE = 1000


class Finding(BaseModel):
    """One thing that does not reconcile: which check, and the details to find it."""

    model_config = ConfigDict(frozen=True)

    check: str
    detail: str


class AuditReport(BaseModel):
    """All findings of one audit run plus the counts it looked at."""

    findings: list[Finding] = Field(default_factory=list)
    tickets: int = 0
    ledger_size: int = 0
    stream_events: int = 0
    checkpoint_size: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing failed to reconcile."""
        return not self.findings

    def add(self, check: str, detail: str) -> None:
        """Record a finding."""
        self.findings.append(Finding(check=check, detail=detail))


class StreamEvent(BaseModel):
    """One golden-ticket message as read back from JetStream."""

    seq: int
    subject: str
    msg_id: str
    leaf_index: int | None
    data: bytes


class SeenCheckpoint(BaseModel):
    """What the state file keeps: the last checkpoint an audit verified."""

    size: int
    root: str  # base64, as in the note (state files before it kept hex: still read)
    note: str = ""
    audited_at: datetime | None = None

    @property
    def root_bytes(self) -> bytes:
        """The root hash, from base64 or (an older state file) 64 hex digits."""
        if len(self.root) == 2 * HASH_SIZE:
            return bytes.fromhex(self.root)
        return base64.b64decode(self.root, validate=True)


def load_seen(path: Path) -> SeenCheckpoint | None:
    """The last audited checkpoint, or None before the first audit."""
    if not path.exists():
        return None
    return SeenCheckpoint.model_validate_json(path.read_text())


def save_seen(path: Path, seen: SeenCheckpoint) -> None:
    """Atomically replace the state file (a crash never leaves half a JSON document)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(seen.model_dump_json(indent=2))
    tmp.replace(path)


async def read_stream(js: JetStreamContext, settings: Settings) -> list[StreamEvent] | None:
    """Every golden_ticket message on the stream in stream order; None when the stream is gone."""
    subject = f"{settings.subject_prefix}.golden_ticket.>"
    try:
        await js.stream_info(settings.stream_name)
    except NotFoundError:
        return None
    sub = await js.pull_subscribe(
        subject,
        stream=settings.stream_name,
        config=ConsumerConfig(
            ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=60.0
        ),
    )
    out: list[StreamEvent] = []
    try:
        remaining = (await sub.consumer_info()).num_pending or 0
        while remaining > 0:
            msgs = await sub.fetch(min(remaining, 256), timeout=10)
            for msg in msgs:
                headers = msg.headers or {}
                leaf = headers.get("Golden-Leaf-Index")
                out.append(
                    StreamEvent(
                        seq=msg.metadata.sequence.stream,
                        subject=msg.subject,
                        msg_id=headers.get("Nats-Msg-Id", ""),
                        leaf_index=int(leaf) if leaf and leaf.isdigit() else None,
                        data=msg.data,
                    )
                )
            remaining -= len(msgs)
    finally:
        await sub.unsubscribe()
    return out


def _check_rows_vs_ledger(
    report: AuditReport, tickets: list[asyncpg.Record], by_ticket: dict[UUID, dict[EntryKind, int]]
) -> None:
    """Each ticket's state implies exactly its set of ledger entries, and the reverse."""
    known = set()
    for t in tickets:
        tid = t["ticket_id"]
        known.add(tid)
        state = TicketState(t["state"])
        have = set(by_ticket.get(tid, {}))
        want = EXPECTED_KINDS[state]
        if state is TicketState.ISSUED and t["issued_leaf"] is None and not have:
            # Finalised but short of the ledger: still a reservation (see the lease check).
            want = frozenset()
        if have != want:
            report.add(
                "ticket_ledger",
                f"ticket {tid} (serial {t['serial']}) is {state.value} but the ledger holds "
                f"{sorted(k.value for k in have)}, expected {sorted(k.value for k in want)}",
            )
        leaves = by_ticket.get(tid, {})
        for column, kind in (
            ("issued_leaf", EntryKind.ISSUED),
            ("redeemed_leaf", EntryKind.REDEEMED),
        ):
            if kind in leaves and t[column] != leaves[kind]:
                report.add(
                    "ticket_ledger",
                    f"ticket {tid} {column} is {t[column]}, its {kind.value} entry is leaf "
                    f"{leaves[kind]}",
                )
    for tid in by_ticket.keys() - known:
        report.add(
            "ticket_ledger", f"ledger entries {sorted(by_ticket[tid])} for unknown ticket {tid}"
        )


def _check_entry_content(
    report: AuditReport, leaf: int, kind: EntryKind, data: bytes, t: asyncpg.Record | None
) -> None:
    """The canonical entry bytes say what the ticket row says (kind, id, serial, commitment)."""
    try:
        entry = decode_entry(data)
    except GoldenError as err:
        report.add("ledger_entry", f"leaf {leaf} does not decode: {err.message}")
        return
    if entry.kind != kind:
        report.add(
            "ledger_entry", f"leaf {leaf} row says {kind.value}, bytes say {entry.kind.value}"
        )
    if t is None:
        return
    try:
        wanted: dict[str, tuple[object, object]] = {
            "ticket_id": (entry.ticket_id, t["ticket_id"]),
            "serial": (entry.serial, t["serial"]),
            "user_commitment": (
                entry.user_commitment,
                user_commitment(bytes(t["user_salt"]), t["user_id"]),
            ),
        }
        if kind is EntryKind.ISSUED:
            wanted["signature_digest"] = (
                entry.signature_digest,
                signature_digest(t["signature"]),
            )
            wanted["key_id"] = (entry.key_id, t["key_id"])
    except (GoldenError, ValueError) as exc:
        report.add("ledger_entry", f"leaf {leaf}: ticket {t['ticket_id']} row is malformed: {exc}")
        return
    for name, (actual, expected) in wanted.items():
        if actual != expected:
            report.add("ledger_entry", f"leaf {leaf} {name} is {actual}, the ticket has {expected}")


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _check_ledger_rules(report: AuditReport, rules: SupplyState, leaf: int, data: bytes) -> bool:
    """The monitor's own checks on one entry (golden_press.monitor: entries decode, lifecycles
    are legal, the supply invariant holds at this prefix); False once one fails.

    One implementation for both: the audit judges the database's ledger exactly as a monitor
    judges the published one, and names a failure by the monitor's violation kind. Like the
    monitor, the replay stops at the first violation (what follows it has no defined state).
    """
    try:
        rules.apply(leaf, data)
    except Violation as found:
        report.add(found.kind.value, str(found))
        return False
    return True


def _check_cap_history(
    report: AuditReport,
    tickets: list[asyncpg.Record],
    issued: set[UUID],
    rules: SupplyState,
    history: list[tuple[datetime, int, CapScope]],
) -> None:
    """The cap each issuance was decided under (cap_history at its reserve, under the lock)
    is the one the ledger's `cap` entries put in force for its serial.

    The supply invariant itself is judged on the ledger (`_check_ledger_rules`); this check
    reconciles the private record with the public one, so an operator's direct SQL change, or
    a cap entry that lost its place in lock order, shows up.
    """
    if not history:
        return
    for t in tickets:
        if t["ticket_id"] not in issued or t["issued_at"] is None:
            continue
        when = _aware(t["issued_at"])
        in_force = [h for h in history if h[0] <= when] or history[:1]
        _, cap, scope = in_force[-1]
        public = rules.cap_for(t["serial"])
        if (cap, scope) != public:
            report.add(
                "cap_history",
                f"ticket {t['ticket_id']} (serial {t['serial']}) was reserved under cap {cap} "
                f"{scope.value} (cap_history), the ledger's cap entries say {public[0]} "
                f"{public[1].value}",
            )


def _check_stream(
    report: AuditReport,
    events: list[StreamEvent] | None,
    entries: list[tuple[int, UUID, EntryKind]],
    published: set[int],
    settings: Settings,
) -> None:
    """Every published ledger entry is on the stream exactly once, and in leaf order."""
    if events is None:
        if entries:
            report.add("stream", f"stream {settings.stream_name} does not exist")
        return
    report.stream_events = len(events)
    prefix = f"{settings.subject_prefix}.golden_ticket."
    by_leaf: dict[int, list[StreamEvent]] = defaultdict(list)
    ids = Counter(e.msg_id for e in events)
    for msg_id, n in ids.items():
        if n > 1:
            report.add("stream", f"event {msg_id} is on the stream {n} times")
    last = -1
    for e in events:
        if e.leaf_index is None:
            report.add("stream", f"stream seq {e.seq} has no Golden-Leaf-Index header")
            continue
        by_leaf[e.leaf_index].append(e)
        if e.leaf_index <= last:
            report.add(
                "stream_order",
                f"stream seq {e.seq} carries leaf {e.leaf_index} after leaf {last}",
            )
        last = max(last, e.leaf_index)
    ledger_leaves = set()
    for leaf, tid, kind in entries:
        ledger_leaves.add(leaf)
        found = by_leaf.get(leaf, [])
        if not found:
            if leaf in published:
                report.add(
                    "stream",
                    f"leaf {leaf} ({kind.value} {tid}) is marked published but "
                    "is not on the stream",
                )
            continue  # unpublished: reported by the outbox check
        if len(found) > 1:
            report.add("stream", f"leaf {leaf} is on the stream {len(found)} times")
        e = found[0]
        want_id = str(event_id_for(tid, kind.value))
        if e.msg_id != want_id:
            report.add("stream", f"leaf {leaf} event id is {e.msg_id}, expected {want_id}")
        if e.subject != prefix + kind.value:
            report.add("stream", f"leaf {leaf} is on subject {e.subject}, expected {kind.value}")
            continue
        message = getattr(events_pb2, EVENT_TYPES[kind.value])()
        try:
            message.ParseFromString(e.data)
        except Exception as exc:  # protobuf raises DecodeError; any failure is a finding
            report.add("stream", f"leaf {leaf} event does not parse: {exc}")
            continue
        if message.leaf_index != leaf or message.ticket_id != str(tid):
            report.add(
                "stream",
                f"leaf {leaf} event body says leaf {message.leaf_index} ticket "
                f"{message.ticket_id}, expected {tid}",
            )
    for leaf in sorted(by_leaf.keys() - ledger_leaves):
        report.add("stream", f"stream carries leaf {leaf}, which the ledger does not have")


async def _check_checkpoint(
    report: AuditReport,
    conn: asyncpg.Connection,
    ledger: LedgerStore,
    settings: Settings,
    size: int,
    computed: bytes,
    state_file: Path | None,
) -> None:
    """Head = recomputed root, signed by a known ledger key, consistent with the last one seen."""
    head = await ledger.latest_checkpoint(conn)
    report.checkpoint_size = head.size
    if head.size != size:
        report.add("checkpoint", f"latest checkpoint covers {head.size} leaves, ledger has {size}")
        return
    if computed != head.root:
        report.add(
            "checkpoint",
            f"checkpoint root {hash_b64(head.root)} differs from the recomputed"
            f" {hash_b64(computed)}",
        )
        return
    if head.size:
        try:
            roots = await trust_roots(conn, settings.ledger_origin)
            cp = open_checkpoint(head.note, roots.ledger_verifiers(), settings.ledger_origin)
        except GoldenError as err:
            report.add("checkpoint", f"latest checkpoint note does not verify: {err.message}")
            return
        if (cp.size, cp.root) != (head.size, head.root):
            report.add("checkpoint", "latest checkpoint note differs from its stored size/root")
            return
    if state_file is None:
        return
    try:
        seen = load_seen(state_file)
    except ValueError as exc:
        report.add("checkpoint", f"audit state file {state_file} is unreadable: {exc}")
        return
    if seen is not None and seen.size > 0:
        try:
            if head.size < seen.size:
                raise GoldenError(
                    Reason.INCONSISTENT_CHECKPOINT,
                    f"ledger shrank from {seen.size} to {head.size} leaves",
                )
            proof = (
                await ledger.consistency_proof(conn, seen.size, head.size)
                if head.size > seen.size
                else []
            )
            verify_consistency(seen.size, head.size, seen.root_bytes, head.root, proof)
        except GoldenError as err:
            report.add(
                "checkpoint_consistency",
                f"checkpoint {head.size} is not an extension of the audited {seen.size}: "
                f"{err.message}",
            )
            return
    save_seen(
        state_file,
        SeenCheckpoint(
            size=head.size, root=hash_b64(head.root), note=head.note, audited_at=datetime.now(UTC)
        ),
    )


async def run_audit(
    pool: asyncpg.Pool,
    js: JetStreamContext,
    settings: Settings,
    ledger_store: LedgerStore,
    state_file: Path | None,
) -> AuditReport:
    """Run every reconciliation check; the state file (if given) is updated when consistent."""
    report = AuditReport()
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        # One snapshot: tickets, ledger and outbox are read as of the same instant.
        tickets = await all_tickets(conn)
        report.tickets = len(tickets)
        entries: list[tuple[int, UUID, EntryKind]] = []
        tree = TreeBuilder()
        rules: SupplyState | None = SupplyState()
        by_ticket: dict[UUID, dict[EntryKind, int]] = defaultdict(dict)
        by_id = {t["ticket_id"]: t for t in tickets}
        start = 0
        while True:
            page = await ledger_store.entries(conn, start, start + _PAGE)
            for e in page:
                if e.leaf_index != tree.size:
                    report.add("ledger_gap", f"expected leaf {tree.size}, found {e.leaf_index}")
                if leaf_hash(e.entry) != e.leaf_hash:
                    report.add("ledger_entry", f"leaf {e.leaf_index} stored hash is wrong")
                tree.add(leaf_hash(e.entry))
                if rules is not None and not _check_ledger_rules(
                    report, rules, e.leaf_index, e.entry
                ):
                    rules = None
                if not isinstance(e.kind, EntryKind):  # a `cap` entry names no ticket
                    continue
                by_ticket[e.ticket_id][e.kind] = e.leaf_index
                _check_entry_content(report, e.leaf_index, e.kind, e.entry, by_id.get(e.ticket_id))
                entries.append((e.leaf_index, e.ticket_id, e.kind))
            if len(page) < _PAGE:
                break
            start += _PAGE
        by_ticket = {k: v for k, v in by_ticket.items() if v}
        report.ledger_size = tree.size
        _check_rows_vs_ledger(report, tickets, by_ticket)
        history = [
            # asyncpg gives '-infinity' as a naive datetime.min
            (_aware(r["changed_at"]), r["cap"], CapScope(r["scope"]))
            for r in await cap_history(conn)
        ]
        if rules is not None:  # a stopped replay knows only part of the cap entries
            issued = {tid for tid, kinds in by_ticket.items() if EntryKind.ISSUED in kinds}
            _check_cap_history(report, tickets, issued, rules, history)
        stale = await expired_reservations(conn)
        for row in stale:
            report.add(
                "stale_reservation",
                f"ticket {row['ticket_id']} (serial {row['serial']}) is {row['state']} without a "
                f"ledger entry; its lease ended {row['reserved_until'].isoformat()}",
            )
        outbox = await outbox_states(conn)
        outbox_leaves = {r["leaf_index"] for r in outbox}
        for r in outbox:
            if r["dead_lettered_at"] is not None:
                report.add(
                    "dead_letter",
                    f"event of leaf {r['leaf_index']} ({r['kind']}) was parked as a dead letter"
                    f" at {r['dead_lettered_at'].isoformat()}: {r['last_error']}",
                )
            elif r["published_at"] is None:
                report.add(
                    "outbox", f"event of leaf {r['leaf_index']} ({r['kind']}) is unpublished"
                )
        for leaf, tid, kind in entries:
            if leaf not in outbox_leaves:
                report.add("outbox", f"leaf {leaf} ({kind.value} {tid}) has no outbox event")
        published = {r["leaf_index"] for r in outbox if r["published_at"] is not None}
        await _check_checkpoint(
            report, conn, ledger_store, settings, tree.size, tree.root(), state_file
        )
    _check_stream(report, await read_stream(js, settings), entries, published, settings)
    return report


def _ledger_store(settings: Settings) -> LedgerStore:
    """Read-only use: the private key only signs the empty tree, so any key will do without one."""
    try:
        key = load_key_file(settings.ledger_key_file)
    except Exception:
        key = SigningKey.generate()
    return LedgerStore(key, settings.ledger_origin)


async def audit_main(settings: Settings, *, json_output: bool = False) -> int:
    """CLI body: connect, audit, print the findings; 1 on any finding, 0 when clean.

    Raises Unreachable (a ConnectionError) when PostgreSQL or NATS cannot be reached.
    """
    pool = await create_pool(settings.pg_dsn, max_size=2)
    try:
        nc = await connect_nats(settings, max_reconnect_attempts=2)
    except Unreachable:
        await pool.close()
        raise
    try:
        report = await run_audit(
            pool,
            nc.jetstream(),
            settings,
            _ledger_store(settings),
            settings.state_dir / STATE_FILE_NAME,
        )
    finally:
        await nc.close()
        await pool.close()
    if json_output:
        # The CLI's envelope: {"ok", "audit": report} plus an error when there are findings.
        doc: dict[str, object] = {"ok": report.ok, "audit": report.model_dump(mode="json")}
        if not report.ok:
            doc["error"] = {
                "reason": "AuditFinding",
                "message": f"{len(report.findings)} finding(s): "
                + "; ".join(f"{f.check}: {f.detail}" for f in report.findings[:3]),
                "exit_code": 1,
            }
        print(json.dumps(doc))
    else:
        print(
            f"audited {report.tickets} tickets, {report.ledger_size} ledger entries, "
            f"{report.stream_events} stream events, checkpoint {report.checkpoint_size}"
        )
        for f in report.findings:
            print(f"FINDING {f.check}: {f.detail}")
        print("audit clean" if report.ok else f"{len(report.findings)} finding(s)")
    return 0 if report.ok else 1


def main() -> None:
    """`python -m service.ops.audit` (settings from the environment)."""
    import os

    code = asyncio.run(audit_main(Settings(), json_output="--json" in sys.argv[1:]))
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
