"""The long-running processes and the starters, started wrong: one line, never a traceback.

An API or worker started before its database or Temporal, or with a setting that does not
parse, says which server or variable and why, and exits (3: unavailable, 2: unusable setting):
a supervisor restarts it, an operator reads one line. A password in the DSN never shows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.store.key_files import ensure_key_file
from tests.helpers.cli_process import unconfigured_env

ROOT = Path(__file__).resolve().parents[2]
CLOSED = "127.0.0.1:1"  # nothing listens on port 1
SECRET = "hunter2-" + os.urandom(4).hex()
DEAD_DSN = f"postgresql://golden:{SECRET}@{CLOSED}/golden"


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        env=unconfigured_env(**env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one error the process reported (JSON log record or `error: ...` line)."""
    output = done.stdout + done.stderr
    assert "Traceback" not in output and SECRET not in output, output
    errors = []
    for line in done.stderr.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record["level"] == "error":
                assert "exc" not in record, record
                errors.append(record["msg"])
        elif line.startswith("error: "):
            errors.append(line)
    assert len(errors) == 1, output
    return errors[0]


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, str]:
    signing, ledger = tmp_path / "issuer.key", tmp_path / "ledger.key"
    ensure_key_file(signing)
    ensure_key_file(ledger)
    return {"GOLDEN_SIGNING_KEY_FILE": str(signing), "GOLDEN_LEDGER_KEY_FILE": str(ledger)}


API = ["-m", "service.api.server"]
WORKER = ["worker.py"]


def test_api_without_its_database(tmp_path: Path) -> None:
    done = run(API, {"GOLDEN_PG_DSN": DEAD_DSN, "GOLDEN_API_TOKENS_FILE": str(tmp_path / "t")})
    assert done.returncode == 3
    assert error_line(done).startswith(
        f"cannot connect to PostgreSQL at postgresql://golden:***@{CLOSED}/golden: "
    )


def test_api_without_temporal(tmp_path: Path, pg_admin_dsn: str) -> None:
    done = run(
        API,
        {
            "GOLDEN_PG_DSN": pg_admin_dsn,
            "TEMPORAL_ADDRESS": CLOSED,
            "GOLDEN_API_TOKENS_FILE": str(tmp_path / "t"),
        },
    )
    assert done.returncode == 3
    assert error_line(done).startswith(f"cannot connect to Temporal at {CLOSED}: ")


def test_worker_without_temporal(keys: dict[str, str]) -> None:
    done = run(WORKER, {**keys, "TEMPORAL_ADDRESS": CLOSED, "GOLDEN_PG_DSN": DEAD_DSN})
    assert done.returncode == 3
    assert error_line(done).startswith(f"cannot connect to Temporal at {CLOSED}: ")


@pytest.mark.parametrize("program", [API, WORKER], ids=["api", "worker"])
def test_a_setting_that_does_not_parse(program: list[str], keys: dict[str, str]) -> None:
    done = run(program, {**keys, "GOLDEN_METRICS_PORT": SECRET})
    assert done.returncode == 2
    assert error_line(done) == "invalid settings: GOLDEN_METRICS_PORT: " + (
        "Input should be a valid integer, unable to parse string as an integer"
    )


def test_a_starter_without_temporal() -> None:
    done = run(
        ["-m", "starter.issue_ticket", "--user", "u-1"],
        {"TEMPORAL_ADDRESS": CLOSED, "GOLDEN_PG_DSN": DEAD_DSN},
    )
    assert done.returncode == 3
    assert error_line(done).startswith(
        f"error: Unavailable: cannot connect to Temporal at {CLOSED}: "
    )


def test_the_consumer_example_without_nats() -> None:
    """It gives up after a bounded number of attempts: one warning line for all of them (not
    nats-py's traceback twice a second, forever), then Unavailable, exit 3."""
    done = run(
        ["-m", "starter.consume_events", "--durable", "never", "--sink", os.devnull],
        {"GOLDEN_NATS_URL": f"nats://golden:{SECRET}@{CLOSED}"},
    )
    assert done.returncode == 3, done.stderr
    assert error_line(done) == (
        f"error: Unavailable: cannot connect to NATS at nats://{CLOSED}: "
        "nats: no servers available for connection"
    )
    warnings = [line for line in done.stderr.splitlines() if line.startswith("NATS: ")]
    assert len(warnings) == 1 and len(done.stderr.splitlines()) == 2, done.stderr


def test_a_cli_verb_names_the_server_it_could_not_reach(pg_admin_dsn: str, tmp_path: Path) -> None:
    """`admin revoke` reaches PostgreSQL, then Temporal: an unreachable Temporal is named as
    such (it said `cannot use PostgreSQL (... Temporal ...)`)."""
    revoke = ["admin", "revoke", "00000000-0000-0000-0000-000000000001", "--reason", "x"]
    done = run(
        ["-m", "service.cli.app", *revoke],
        {
            "GOLDEN_PG_DSN": pg_admin_dsn,
            "TEMPORAL_ADDRESS": CLOSED,
            "GOLDEN_STATE_DIR": str(tmp_path),
        },
    )
    assert done.returncode == 3
    assert error_line(done).startswith(
        f"error: Unavailable: cannot connect to Temporal at {CLOSED}: "
    )
