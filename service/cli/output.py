"""What the CLI prints: colours on a terminal only, aligned tables, JSON, ticket views."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

STATES = ("reserved", "issued", "redeemed", "voided", "revoked")
_COLOURS = {
    "issued": "32",
    "redeemed": "36",
    "reserved": "33",
    "voided": "90",
    "revoked": "31",
    "ok": "32",
    "error": "31",
    "dim": "90",
    "bold": "1",
}


def colour(text: str, name: str, stream: Any = None) -> str:
    """ANSI colour only on a terminal (and never with NO_COLOR)."""
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR") or not getattr(stream, "isatty", lambda: False)():
        return text
    code = _COLOURS.get(name)
    return f"\x1b[{code}m{text}\x1b[0m" if code else text


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain aligned table (colour applied after alignment so widths stay right)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    header = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
    lines = [colour(header, "bold")]
    for row in cells:
        padded = []
        for header, value, width in zip(headers, row, widths, strict=True):
            text = value.ljust(width)
            padded.append(colour(text, value) if header == "state" else text)
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def emit_json(value: Any) -> None:
    """One JSON document on stdout."""
    print(json.dumps(value, indent=2, sort_keys=False, default=str))


def ticket_dict(pb: Any) -> dict[str, Any]:
    """A protobuf Ticket as plain JSON-able fields (state as its lowercase name)."""
    from service.api.convert import ticket_from_pb

    return ticket_from_pb(pb).model_dump(mode="json")


def show_ticket(t: dict[str, Any]) -> str:
    """Key/value lines of one ticket."""
    rows = [
        ("ticket", t["ticket_id"]),
        ("serial", t["serial"]),
        ("user", t["user_id"]),
        ("state", colour(t["state"], t["state"])),
        ("issued at", t["issued_at"]),
        ("key id", t["key_id"]),
        ("signature", t["signature"] or "-"),
        ("request id", t["request_id"]),
        ("ledger leaf", "-" if t["leaf_index"] is None else t["leaf_index"]),
    ]
    return "\n".join(f"{k:<12} {v}" for k, v in rows)
