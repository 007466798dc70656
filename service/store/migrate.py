"""`python -m service.store.migrate`: create the database if needed and apply pending migrations."""

from __future__ import annotations

import asyncio
import os
import sys

import asyncpg

from golden_press.settings import Settings
from service.store.db import apply_migrations, ensure_database


async def migrate(dsn: str) -> list[str]:
    """Apply migrations to dsn (safe to run from several containers at once)."""
    await ensure_database(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        return await apply_migrations(conn)
    finally:
        await conn.close()


def main() -> None:
    """Entry point used by docker-compose's one-shot migrate service."""
    dsn = Settings().pg_dsn  # read from GOLDEN_PG_DSN
    try:
        applied = asyncio.run(migrate(dsn))
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"golden-press migrate: {exc}", file=sys.stderr)
        os._exit(1)
    print(f"applied {len(applied)} migration(s){': ' + ', '.join(applied) if applied else ''}")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
