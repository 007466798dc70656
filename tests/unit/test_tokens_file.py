"""The token a client presents comes from the API's own tokens-file reader (one set of rules)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from golden_press.errors import InvalidRequest
from service.api.channel import first_token
from service.cli import app as cli


def test_first_token_follows_the_servers_rules(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    assert first_token(tokens) == ""  # missing: no token, the call goes unauthenticated
    tokens.write_text("# rotated 2026-12\n\n  new-token  \nold-token\n")
    assert first_token(tokens) == "new-token"


def test_a_tokens_file_that_cannot_be_read_is_said_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not an unauthenticated call answered Unauthenticated: the CLI names the file, exit 2."""
    with pytest.raises(InvalidRequest, match="cannot read the tokens file"):
        first_token(tmp_path)  # a directory
    monkeypatch.setenv("GOLDEN_API_TOKENS_FILE", str(tmp_path))
    monkeypatch.setenv("GOLDEN_GRPC_ADDR", "127.0.0.1:1")
    args = cli.parse(["get", "3a8bfed6-b6e5-5972-9580-52b95adfca95", "--json"])
    code = cli.run_local(args, as_json=True)
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert (code, doc["error"]["reason"], doc["error"]["exit_code"]) == (2, "InvalidRequest", 2)
    assert doc["error"]["message"] == f"cannot read the tokens file {tmp_path}: Is a directory"
    assert "Traceback" not in err
