"""Settings from the environment that do not parse: a usage error naming the variable.

Never a traceback, and never the value: pydantic's own message quotes it, and a variable may
hold a secret.
"""

from __future__ import annotations

import argparse
import json

import pytest

from service.cli import app as cli
from starter import consume_events, issue_ticket, issue_via_api, redeem_ticket

SECRET = "hunter2-not-a-number"


def assert_names_the_variable(code: int, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI's --json answer to GOLDEN_API_NICE=SECRET: usage, naming it, never its value."""
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert (code, doc["error"]["reason"]) == (2, "InvalidRequest"), doc
    assert "GOLDEN_API_NICE" in doc["error"]["message"]
    assert SECRET not in out + err


async def test_the_cli_names_the_variable_not_its_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GOLDEN_API_NICE", SECRET)
    capsys.readouterr()
    code = await cli.run(["get", "00000000-0000-0000-0000-000000000000", "--json"])
    assert_names_the_variable(code, capsys)


async def test_the_api_starter_names_the_variable_not_its_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GOLDEN_API_NICE", SECRET)
    capsys.readouterr()
    code = await issue_via_api.run(["--user", "alice"])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("error: InvalidRequest: GOLDEN_API_NICE"), err
    assert SECRET not in out + err


@pytest.mark.parametrize(
    "argv",
    [["dev", "status"], ["dev", "up", "--detach"], ["demo"], ["witness", "serve"]],
    ids=lambda argv: " ".join(argv),
)
def test_the_stack_verbs_name_the_variable_not_its_value(
    argv: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: object,
) -> None:
    """dev, demo and witness check the settings before they start or look for anything."""
    monkeypatch.setenv("GOLDEN_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("GOLDEN_API_NICE", SECRET)
    capsys.readouterr()
    code = cli.run_local(cli.parse([*argv, "--json"]), as_json=True)
    assert_names_the_variable(code, capsys)


async def test_the_saga_starters_name_the_variable_not_its_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Temporal starters and the event consumer: exit 2 naming it, never a traceback."""
    monkeypatch.setenv("GOLDEN_API_NICE", SECRET)
    calls = [
        issue_ticket.issue("alice", "req-1"),
        redeem_ticket.redeem("00000000-0000-0000-0000-000000000000", "alice", ""),
        consume_events.main_async(argparse.Namespace(sink="unused.jsonl")),
    ]
    for call in calls:
        capsys.readouterr()
        code = await call
        out, err = capsys.readouterr()
        assert code == 2
        assert err.startswith("error: InvalidRequest: GOLDEN_API_NICE"), err
        assert SECRET not in out + err
