"""The CLI's --json contract: stdout is ONE JSON document in the envelope every verb uses."""

from __future__ import annotations

import json
from typing import Any


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
