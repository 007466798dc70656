"""Round trips of the issuance steps that hold the cap's lock (issue 15: winners first).

A herd's five winners take the cap's advisory lock (and the ledger's) one after another, so every
statement a step sends while it holds them is a round trip the next winner waits for, and on a
loaded box each one waits for a CPU twice (the worker's and PostgreSQL's). Counted here, not
timed (bench/bench_herd.py shows the speed): the ledger append is BEGIN, one call that takes
both locks and reads the tree's head, one statement that writes the entry, its subtrees, the
signed checkpoint, the outbox row and the ticket's leaf, and COMMIT. The outcome is asserted
too: the same rows as a step of many statements wrote.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio
from temporalio.testing import ActivityEnvironment

from activities.issue_ticket import IssuanceActivities
from golden_press.checkpoint import open_checkpoint
from golden_press.ledger_entry import EntryKind
from golden_press.merkle import root_hash
from golden_press.models import (
    FinaliseInput,
    ReserveInput,
    TicketRef,
    TicketState,
    request_hash,
)
from golden_press.sagas import issue_workflow_id, ticket_id_for
from service.store.db import GOLDEN_KEY, cap_transaction, skip_pool_reset
from service.store.ledger import LedgerStore
from tests.helpers.stack import Stack
from tests.helpers.statements import Statements, counted_pool

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def counted(stack: Stack) -> AsyncIterator[tuple[IssuanceActivities, Statements]]:
    """The issuance activities over a one-connection pool whose statements are recorded."""
    statements = Statements()
    async with counted_pool(stack.settings.pg_dsn, statements) as pool:
        ledger = LedgerStore(stack.keys.ledger, stack.settings.ledger_origin)
        yield IssuanceActivities(pool, stack.keys.issuer, ledger, stack.settings), statements


async def finalised_ticket(acts: IssuanceActivities, statements: Statements) -> uuid.UUID:
    """Reserve, sign and finalise a fresh ticket: reserve is four round trips (BEGIN with the
    cap lock, one read, the insert, COMMIT), finalise one call in a transaction."""
    env = ActivityEnvironment()
    request_id = f"rt-{uuid.uuid4().hex[:8]}"
    ticket_id = ticket_id_for(request_id)
    user = f"user-{request_id}"
    statements.sent.clear()
    reserved = await env.run(
        acts.reserve_slot,
        ReserveInput(
            ticket_id=ticket_id,
            user_id=user,
            request_id=request_id,
            request_hash=request_hash(user),
            workflow_id=issue_workflow_id(request_id),
        ),
    )
    assert reserved.ticket is not None
    assert len(statements.sent) <= 4, statements.sent
    signed = await env.run(acts.sign_ticket, TicketRef(ticket_id=ticket_id))
    statements.sent.clear()
    finalised = await env.run(
        acts.finalise_ticket,
        FinaliseInput(ticket_id=ticket_id, signature=signed.signature, key_id=signed.key_id),
    )
    assert finalised.state == TicketState.ISSUED
    assert len(statements.sent) <= 3, statements.sent
    return ticket_id


async def test_reserve_and_ledger_append_are_four_round_trips(
    stack: Stack, counted: tuple[IssuanceActivities, Statements]
) -> None:
    acts, statements = counted
    env = ActivityEnvironment()
    # A fresh connection included: asyncpg learnt the array types when it opened (no lookup
    # inside a step, under the lock); a second ticket appends onto a non-empty tree.
    for _ in range(2):
        ticket_id = await finalised_ticket(*counted)
        statements.sent.clear()
        appended = await env.run(acts.append_issued_to_ledger, TicketRef(ticket_id=ticket_id))
        assert len(statements.sent) <= 4, "\n---\n".join(statements.sent)

    # The same rows as before: entry, ticket leaf, outbox event, a signed checkpoint over it.
    row = await stack.pool.fetchrow("SELECT * FROM tickets WHERE ticket_id = $1", ticket_id)
    assert row["issued_leaf"] == appended.leaf_index and row["reserved_until"] is None
    assert appended.ticket is not None and appended.ticket.leaf_index == appended.leaf_index
    kind = await stack.pool.fetchval(
        "SELECT kind FROM event_outbox WHERE leaf_index = $1", appended.leaf_index
    )
    assert kind == EntryKind.ISSUED.value
    hashes = [
        bytes(h)
        for (h,) in await stack.pool.fetch(
            "SELECT leaf_hash FROM ledger_entries ORDER BY leaf_index"
        )
    ]
    assert len(hashes) == appended.tree_size == appended.leaf_index + 1
    async with stack.pool.acquire() as conn:
        note = await stack.ledger.checkpoint_note(conn, appended.tree_size)
    assert note is not None
    checkpoint = open_checkpoint(note, [stack.ledger.verifier], stack.settings.ledger_origin)
    assert checkpoint.root == root_hash(hashes)

    # A retry finds its leaf and writes nothing new, in as few round trips.
    statements.sent.clear()
    again = await env.run(acts.append_issued_to_ledger, TicketRef(ticket_id=ticket_id))
    assert (again.leaf_index, again.tree_size) == (appended.leaf_index, appended.tree_size)
    assert len(statements.sent) <= 4, "\n---\n".join(statements.sent)
    assert await stack.pool.fetchval("SELECT count(*) FROM ledger_entries") == len(hashes)


async def test_a_cap_lock_timeout_leaves_no_transaction_behind(stack: Stack) -> None:
    """The cap lock is taken in BEGIN's own round trip: when its wait times out, the failed
    transaction is rolled back there, not left for the pool to find (asyncpg reports that as an
    error) or for the next user of the connection."""
    pool = await asyncpg.create_pool(
        stack.settings.pg_dsn,
        min_size=1,
        max_size=1,
        reset=skip_pool_reset,
        server_settings={"lock_timeout": "200ms"},
    )
    assert pool is not None
    reported: list[str] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context["message"]))
    holder = await asyncpg.connect(stack.settings.pg_dsn)
    try:
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock($1)", GOLDEN_KEY)
            with pytest.raises(asyncpg.LockNotAvailableError):
                async with cap_transaction(pool):
                    pass
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
        async with cap_transaction(pool) as conn:
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        loop.set_exception_handler(previous)
        await holder.close()
        await pool.close()
    assert reported == []
