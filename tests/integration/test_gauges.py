"""The deployment gauges read what an on-call engineer needs from PostgreSQL."""

from __future__ import annotations

import pytest

from golden_press.models import Outcome
from service.store.gauges import read_gauges
from tests.helpers.ledger import insert_expired_reservation
from tests.helpers.stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_gauges_see_backlog_stale_reservations_and_the_cap(stack: Stack) -> None:
    assert (await stack.issue("gauged")).outcome == Outcome.ISSUED
    calm = await read_gauges(stack.pool)
    assert (calm.outbox_backlog, calm.outbox_oldest_age_seconds) == (0, 0.0)
    assert (calm.tickets_counted, calm.ticket_cap, calm.reservations_past_lease) == (1, 5, 0)
    assert calm.checkpoint_age_seconds is not None and calm.checkpoint_age_seconds >= 0

    # A reservation whose saga died (past its lease) and an event stuck for 90 s.
    await insert_expired_reservation(stack)
    await stack.pool.execute(
        "UPDATE event_outbox SET published_at = NULL, created_at = now() - interval '90 seconds'"
    )
    troubled = await read_gauges(stack.pool)
    assert troubled.outbox_backlog == 1
    assert 90 <= troubled.outbox_oldest_age_seconds < 120
    assert troubled.reservations_past_lease == 1
    assert troubled.tickets_counted == 2  # a reserved slot counts against the cap

    await stack.pool.execute("UPDATE golden_config SET cap = 3, scope = 'lifetime'")
    assert (await read_gauges(stack.pool)).ticket_cap == 3
