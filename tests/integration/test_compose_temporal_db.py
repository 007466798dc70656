"""docker-compose's temporal-schema step, run for real: Temporal's own role and databases.

The psql part of the one-shot (what runs before temporal-sql-tool) runs twice against the test
PostgreSQL under fresh names: it must create the role and both databases owned by it, and a
second run (every `docker compose up`) must succeed and change nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def _libpq_env(dsn: str) -> dict[str, str]:
    """PG* variables for psql from a postgresql:// DSN."""
    url = urlsplit(dsn)
    env = {"PGHOST": url.hostname or "127.0.0.1", "PGPORT": str(url.port or 5432)}
    env["PGUSER"] = unquote(url.username or "postgres")
    if url.password:
        env["PGPASSWORD"] = unquote(url.password)
    return env


def test_temporal_role_and_databases_setup_is_idempotent(pg_admin_dsn: str) -> None:
    """The psql part of temporal-schema, run twice: the role and both databases, owned by it."""
    if shutil.which("psql") is None:
        pytest.skip("no psql on this machine")
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    script = compose["services"]["temporal-schema"]["command"][0]
    sql_part = script.split("\nschema=")[0].replace("$$", "$")
    tag = uuid.uuid4().hex[:8]
    names = {"role": f"t_role_{tag}", "db": f"t_db_{tag}", "vis": f"t_vis_{tag}"}
    env = {
        **os.environ,
        **_libpq_env(pg_admin_dsn),
        "PGDATABASE": "postgres",
        "POSTGRES_USER": names["role"],
        "POSTGRES_PWD": 'it\'s "quoted"',
        "DBNAME": names["db"],
        "VISIBILITY_DBNAME": names["vis"],
    }

    def psql(sql: str) -> str:
        done = subprocess.run(
            ["psql", "-Atc", sql], env=env, capture_output=True, text=True, check=True, timeout=60
        )
        return done.stdout

    try:
        for _ in range(2):
            done = subprocess.run(
                ["sh", "-c", sql_part], env=env, capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, done.stderr
        owners = psql(
            "SELECT datname || '=' || pg_get_userbyid(datdba) FROM pg_database"
            f" WHERE datname IN ('{names['db']}', '{names['vis']}') ORDER BY 1"
        ).split()
        assert owners == [f"{names['db']}={names['role']}", f"{names['vis']}={names['role']}"]
        assert psql(f"SELECT rolcanlogin FROM pg_roles WHERE rolname = '{names['role']}'") == "t\n"
    finally:
        psql(f"DROP DATABASE IF EXISTS {names['db']}")
        psql(f"DROP DATABASE IF EXISTS {names['vis']}")
        psql(f"DROP ROLE IF EXISTS {names['role']}")
