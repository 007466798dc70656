"""The CLI's --json contract: stdout is ONE JSON document in the envelope every verb uses."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.cli import app as cli


def envelope(stdout: str, code: int) -> dict[str, Any]:
    """The document stdout holds, checked: `ok` first; an error names reason, message and the
    exit code the process returned; a success has exit code 0 and no error."""
    doc = json.loads(stdout)  # fails on a second document or any stray line
    assert isinstance(doc, dict) and next(iter(doc)) == "ok", stdout
    if doc["ok"]:
        assert code == 0 and "error" not in doc, doc
    else:
        error = doc["error"]
        assert set(error) == {"reason", "message", "exit_code"}, doc
        assert error["exit_code"] == code != 0 and error["reason"] and error["message"], doc
    return doc


async def run_doc(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    """Run the CLI in this process with --json: the exit code and the ONE JSON document stdout
    holds (nothing else), checked as an envelope."""
    capsys.readouterr()
    code = await cli.run([*argv, "--json"])
    return code, envelope(capsys.readouterr().out, code)


async def run_monitor(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    """`golden-press monitor ARGV --json` in this process: its exit code and the report (the
    envelope's `monitor`; ok exactly when the code is 0, never a usage error)."""
    capsys.readouterr()
    code = await cli.run(["monitor", *argv, "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is (code == 0) and "monitor" in doc, doc
    return code, doc["monitor"]
