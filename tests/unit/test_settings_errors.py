"""Settings from the environment that do not parse: a usage error naming the variable.

Never a traceback, and never the value: pydantic's own message quotes it, and a variable may
hold a secret.
"""

from __future__ import annotations

import json

import pytest

from service.cli import app as cli
from starter import issue_via_api

SECRET = "hunter2-not-a-number"


async def test_the_cli_names_the_variable_not_its_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GOLDEN_API_NICE", SECRET)
    capsys.readouterr()
    code = await cli.run(["get", "00000000-0000-0000-0000-000000000000", "--json"])
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert (code, doc["error"]["reason"]) == (2, "InvalidRequest"), doc
    assert "GOLDEN_API_NICE" in doc["error"]["message"]
    assert SECRET not in out + err


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
