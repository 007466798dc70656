"""What an on-call engineer watches, read from PostgreSQL in a few indexed aggregates.

Each value describes the whole deployment (every worker reports the same numbers: dashboards take
max()). Parts of the schema that other features add (parked events: `event_outbox.
dead_lettered_at`; witness cosignatures: `ledger_cosignatures`) are read only when they exist,
so this works on every schema version.
"""

from __future__ import annotations

import asyncpg
from pydantic import BaseModel

from golden_press.models import CapScope
from service.store.tickets import count_counted


class OpsGauges(BaseModel):
    """One reading of the deployment's gauges (None: that feature is not in this schema)."""

    outbox_backlog: int
    outbox_oldest_age_seconds: float
    parked_events: int | None
    tickets_counted: int
    ticket_cap: int
    reservations_past_lease: int
    checkpoint_age_seconds: float | None
    witness_cosignature_age_seconds: float | None


_SCHEMA = """
SELECT
  EXISTS (SELECT 1 FROM information_schema.columns
          WHERE table_schema = current_schema() AND table_name = 'event_outbox'
            AND column_name = 'dead_lettered_at') AS has_parking,
  to_regclass('ledger_cosignatures') IS NOT NULL AS has_cosignatures
"""


def _read_sql(has_parking: bool, has_cosignatures: bool) -> str:
    pending = "published_at IS NULL" + (" AND dead_lettered_at IS NULL" if has_parking else "")
    parked = (
        "(SELECT count(*) FROM event_outbox WHERE dead_lettered_at IS NOT NULL)"
        if has_parking
        else "NULL::bigint"
    )
    cosigned = (
        "(SELECT extract(epoch FROM now() - max(cosigned_at))::float8 FROM ledger_cosignatures)"
        if has_cosignatures
        else "NULL::float8"
    )
    return f"""
SELECT
  (SELECT count(*) FROM event_outbox WHERE {pending}) AS backlog,
  (SELECT extract(epoch FROM now() - min(created_at))::float8
     FROM event_outbox WHERE {pending}) AS oldest,
  {parked} AS parked,
  (SELECT count(*) FROM tickets
     WHERE state = 'reserved' AND reserved_until < now()) AS past_lease,
  (SELECT cap FROM golden_config) AS cap,
  (SELECT scope FROM golden_config) AS scope,
  (SELECT extract(epoch FROM now() - max(created_at))::float8 FROM ledger_checkpoints)
     AS checkpoint_age,
  {cosigned} AS cosignature_age
"""


async def read_gauges(pool: asyncpg.Pool) -> OpsGauges:
    """Read every gauge (cheap enough for a scrape interval: indexes cover each aggregate)."""
    async with pool.acquire() as conn:
        schema = await conn.fetchrow(_SCHEMA)
        row = await conn.fetchrow(_read_sql(schema["has_parking"], schema["has_cosignatures"]))
        scope = CapScope(row["scope"])
        counted = await count_counted(conn, scope)
    return OpsGauges(
        outbox_backlog=row["backlog"],
        outbox_oldest_age_seconds=row["oldest"] or 0.0,
        parked_events=row["parked"],
        tickets_counted=counted,
        ticket_cap=row["cap"],
        reservations_past_lease=row["past_lease"],
        checkpoint_age_seconds=row["checkpoint_age"],
        witness_cosignature_age_seconds=row["cosignature_age"],
    )


__all__ = ["OpsGauges", "read_gauges"]
