"""VerifyTicket without I/O (issue 15): with a fresh admission snapshot, a public proof bundle and
an unknown ticket id are answered without a PostgreSQL statement, with the very answer the
database path gives; a stale snapshot still reads PostgreSQL.

Counted, not timed (bench/bench_verify.py shows the speed): the verifier's pool logs every
statement it sends. The admission's own pool (the snapshot re-reads) is not counted: it is the
one read per refresh, shared by every call. Fresh vs stale is the verifier's max age, so the
same snapshot serves both and the answers can be compared.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from temporalio.client import Client

from golden_press.bundle import TrustRoots, dump_bundle, redact_bundle
from golden_press.errors import GoldenError, Reason
from golden_press.snapshot import Snapshot
from service.api.pb import golden_pb2
from service.api.server import make_ledger_store
from service.api.verify import TicketVerifier
from service.sagas import admission as admission_module
from service.sagas.admission import Admission
from service.store import keys as key_store
from service.store.cosignatures import cosignature_lines
from service.witness.submitter import start_submitter
from tests.helpers.servers import Servers
from tests.helpers.stack import Stack
from tests.helpers.statements import Statements, counted_pool
from tests.helpers.waiting import wait_until
from tests.helpers.witness import stack_with_witness

pytestmark = pytest.mark.asyncio(loop_scope="session")

#: A max age no test outlives (fresh) and one every snapshot exceeds (stale: read PostgreSQL).
FRESH, STALE = 3600.0, 0.0


class Verifiers:
    """Verifiers over one admission snapshot, their statements counted."""

    def __init__(
        self, stack: Stack, admission: Admission, pool: asyncpg.Pool, statements: Statements
    ) -> None:
        self.stack = stack
        self.admission = admission
        self.pool = pool
        self.statements = statements
        self._roots: TrustRoots | None = None

    async def trust_roots(self, _key_id: str) -> TrustRoots:
        """Read once, as the servicer caches them (not what this test counts)."""
        if self._roots is None:
            self._roots = await key_store.trust_roots(
                self.stack.pool, self.stack.settings.ledger_origin
            )
        return self._roots

    def make(self, max_age_s: float) -> TicketVerifier:
        return TicketVerifier(
            self.admission,
            self.pool,
            self.trust_roots,
            max_age_s=max_age_s,
            policy=self.stack.settings.witness_policy(),  # as the servicer passes it
        )

    async def counted(self, call: Callable[[], Awaitable[Any]]) -> tuple[Any, list[str]]:
        """The call's answer (or the GoldenError it raised) and the statements it sent."""
        self.statements.sent.clear()
        try:
            answer = await call()
        except GoldenError as err:
            answer = (err.reason, str(err))
        return answer, list(self.statements.sent)


@asynccontextmanager
async def verifiers_over(stack: Stack) -> AsyncIterator[Verifiers]:
    """An admission over the stack's pool (re-read only when a test asks) and a counted pool."""
    admission = Admission.from_settings(
        stack.settings, stack.pool, stack.client, refresh_interval_s=3600
    )
    await admission.start()
    statements = Statements()
    try:
        async with counted_pool(stack.settings.pg_dsn, statements) as pool:
            yield Verifiers(stack, admission, pool, statements)
    finally:
        await admission.close()


@pytest_asyncio.fixture(loop_scope="session")
async def verifiers(stack: Stack) -> AsyncIterator[Verifiers]:
    """Verifiers over this test's own stack."""
    async with verifiers_over(stack) as handle:
        yield handle


async def _issued(v: Verifiers) -> uuid.UUID:
    """A ticket issued through admission, then a snapshot read that holds it in the ledger."""
    user = f"v-{uuid.uuid4().hex[:8]}"
    outcome = await v.admission.issue(user, f"r-{user}")
    snap = await v.admission.refresh()
    tid = outcome.ticket.ticket_id
    assert snap.by_id[tid].ticket.leaf_index is not None
    return tid


async def test_a_public_bundle_is_verified_without_a_statement(verifiers: Verifiers) -> None:
    """A public (redacted) bundle takes its stored ticket from a fresh snapshot: no statement, and
    the answer the database path gives (a stale snapshot still reads PostgreSQL)."""
    v = verifiers
    tid = await _issued(v)
    public = dump_bundle(redact_bundle(await v.stack.bundle_for(tid)))
    request = golden_pb2.VerifyTicketRequest(bundle_json=public)

    fresh = v.make(FRESH)
    for _ in range(2):  # the first call too: nothing to warm up
        from_memory, sent = await v.counted(lambda: fresh.verify(request))
        assert sent == []
    from_database, sent = await v.counted(lambda: v.make(STALE).verify(request))
    assert sent, "a stale snapshot must read PostgreSQL"
    assert from_memory == from_database
    assert from_memory.valid and from_memory.proof_valid and from_memory.signature_valid
    assert from_memory.ticket.ticket_id == str(tid) and from_memory.ticket.user_id == ""


async def test_an_unknown_ticket_id_is_not_found_without_a_statement(
    verifiers: Verifiers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """VerifyTicket needs no token: an id a fresh snapshot lacks costs no statement of its own.
    It is TicketNotFound from a snapshot read that started after the question (the row may be
    newer than the snapshot), and concurrent misses share those reads: 50 random ids, at most
    three snapshot reads. The same answer as the database path's."""
    v = verifiers
    await _issued(v)  # a snapshot with rows in it
    reads: list[float] = []
    original = admission_module.read_snapshot

    async def counting(pool: Any) -> Any:
        reads.append(time.monotonic())
        return await original(pool)

    monkeypatch.setattr(admission_module, "read_snapshot", counting)
    request = golden_pb2.VerifyTicketRequest(ticket_id=str(uuid.uuid4()))
    fresh = v.make(FRESH)
    from_memory, sent = await v.counted(lambda: fresh.verify(request))
    assert sent == [] and len(reads) == 1
    from_database, sent = await v.counted(lambda: v.make(STALE).verify(request))
    assert sent, "a stale snapshot must read PostgreSQL"
    assert from_memory == from_database
    assert from_memory[0] is Reason.TICKET_NOT_FOUND

    reads.clear()
    many = [golden_pb2.VerifyTicketRequest(ticket_id=str(uuid.uuid4())) for _ in range(50)]
    answers, sent = await v.counted(
        lambda: asyncio.gather(*(fresh.verify(r) for r in many), return_exceptions=True)
    )
    assert sent == [] and 1 <= len(reads) <= 3, len(reads)
    assert all(isinstance(a, GoldenError) for a in answers)


async def test_a_ticket_written_after_the_snapshot_is_found(verifiers: Verifiers) -> None:
    """A ticket newer than the snapshot (written by any process; here the snapshot is one that
    predates it, as when its NOTIFY is still on the way) is not "not found": the miss reads a
    snapshot that started after the question, and finds it valid."""
    v = verifiers
    tid = await _issued(v)
    current = v.admission.snapshot
    v.admission.snapshot = Snapshot.of(  # fresh by its age, but without the new row
        cap=current.cap,
        scope=current.scope,
        tickets=[t for t in current.tickets if t.ticket.ticket_id != tid],
        denied=current.denied,
        read_at=time.monotonic(),
    )
    fresh = v.make(FRESH)
    request = golden_pb2.VerifyTicketRequest(ticket_id=str(tid))
    answer, sent = await v.counted(lambda: fresh.verify(request))
    assert sent == []  # the snapshot read is the admission's, shared: not the verifier's
    assert answer.valid and answer.signature_valid and answer.ticket.ticket_id == str(tid)
    assert tid in v.admission.snapshot.by_id


async def test_stored_cosignatures_completing_a_bundle_are_read_once(
    servers: Servers, session_dir: Path, client: Client
) -> None:
    """A bundle fetched before its witness cosigned is completed with the cosignatures the log
    stored (quorum 1). Once that completion meets the quorum it is kept (checkpoints and
    cosignature lines are append-only): the next call sends no statement and answers the same.
    A completion still short of the quorum is not kept: the witness may yet cosign."""
    async with stack_with_witness(servers, session_dir, client, "1") as (stack, witness):
        async with verifiers_over(stack) as v:
            tid = await _issued(v)  # the witness is not running: nothing cosigned yet
            bundle = await stack.bundle_for(tid)
            public = dump_bundle(redact_bundle(bundle))
            request = golden_pb2.VerifyTicketRequest(bundle_json=public)
            fresh = v.make(FRESH)
            for _ in range(2):
                refused, sent = await v.counted(lambda: fresh.verify(request))
                assert refused[0] is Reason.BAD_CHECKPOINT and sent

            witness.start()

            async def cosigned() -> bool:
                return bool(await cosignature_lines(stack.pool, bundle.tree_size))

            # The API process collects cosignatures (service.api.server); here, its submitter.
            ledger = make_ledger_store(stack.settings)
            close = start_submitter(stack.settings.pg_dsn, ledger, stack.settings.witness_list())
            try:
                await wait_until(cosigned, 60)
            finally:
                await close()
            first, sent = await v.counted(lambda: fresh.verify(request))
            assert sent, "the stored cosignatures are read once"
            assert first.valid and first.proof_valid
            again, sent = await v.counted(lambda: fresh.verify(request))
            assert sent == []
            assert again == first


async def test_a_verified_bundle_is_not_verified_again_but_its_state_is_current(
    verifiers: Verifiers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proof of a bundle that verified is a pure function of its bytes and the keys: the
    same bundle again skips the proof (memoised by its digest) yet answers with the ticket's
    state now (a revocation shows at once); a tampered copy is not the same bytes: refused."""
    import service.api.verify as verify_module

    v = verifiers
    tid = await _issued(v)
    public = dump_bundle(redact_bundle(await v.stack.bundle_for(tid)))
    request = golden_pb2.VerifyTicketRequest(bundle_json=public)
    proofs: list[str] = []
    original = verify_module.verify_public_bundle

    def counting(*args: Any, **kwargs: Any) -> Any:
        proofs.append("checked")
        return original(*args, **kwargs)

    monkeypatch.setattr(verify_module, "verify_public_bundle", counting)
    verifier = v.make(FRESH)
    first = await verifier.verify(request)
    checked = len(proofs)
    again = await verifier.verify(request)
    assert len(proofs) == checked and again == first and first.valid

    await v.stack.pool.execute(
        "UPDATE tickets SET state = 'revoked', revoked_at = now(), revoke_reason = 'test'"
        " WHERE ticket_id = $1",
        tid,
    )
    await v.admission.refresh()
    revoked = await verifier.verify(request)
    assert len(proofs) == checked and revoked.proof_valid and not revoked.valid

    head, key, tail = public.rpartition('"leaf_index": ')  # the bundle's, after the ticket's
    tampered = f"{head}{key}9{tail}"
    with pytest.raises(GoldenError):
        await verifier.verify(golden_pb2.VerifyTicketRequest(bundle_json=tampered))
