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


def emit_json(value: dict[str, Any]) -> None:
    """The one JSON document of a successful verb: {"ok": true, <noun>: ...} on stdout.

    Every verb's document has the same envelope (README, "JSON output"): `ok` first, then the
    verb's nouns; errors are {"ok": false, "error": {...}} (service.cli.client.report).
    """
    print(json.dumps({"ok": True, **value}, indent=2, sort_keys=False, default=str))


def verification(
    *,
    valid: bool,
    signature_valid: bool | None,
    proof_valid: bool | None,
    state: str | None,
    redeemable: bool | None,
    reason: str,
    message: str,
    ticket: dict[str, Any] | None,
    checkpoint: dict[str, Any] | None,
    leaf_index: int | None,
    offline: bool,
) -> dict[str, Any]:
    """One shape for `verify ID`, `verify BUNDLE` and `ledger verify`: null where not checked."""
    return {
        "valid": valid,
        "offline": offline,
        "signature_valid": signature_valid,
        "proof_valid": proof_valid,
        "state": state,
        "redeemable": redeemable,
        "reason": reason,
        "message": message,
        "leaf_index": leaf_index,
        "checkpoint": checkpoint,
        "ticket": ticket,
    }


def bundle_checkpoint(bundle_json: str, tree_size: int) -> dict[str, Any] | None:
    """Origin, size and root hash of the checkpoint a bundle carries (None without a bundle)."""
    if not bundle_json:
        return None
    note = str(json.loads(bundle_json).get("checkpoint", ""))
    lines = note.split("\n")
    return {
        "origin": lines[0] if lines else "",
        "tree_size": tree_size,
        "root_hash": lines[2] if len(lines) > 2 else "",
    }


def ticket_dict(pb: Any) -> dict[str, Any]:
    """A protobuf Ticket as plain JSON-able fields (state as its lowercase name)."""
    from service.api.convert import ticket_from_pb

    return ticket_from_pb(pb).model_dump(mode="json")


def show_ticket(t: dict[str, Any]) -> str:
    """Key/value lines of one ticket."""
    rows = [
        ("ticket", t["ticket_id"]),
        ("serial", t["serial"]),
        ("user", t["user_id"] or "(not public: needs the API token)"),
        ("state", colour(t["state"], t["state"])),
        ("issued at", t["issued_at"]),
        ("key id", t["key_id"]),
        ("signature", t["signature"] or "-"),
        ("request id", t["request_id"]),
        ("ledger leaf", "-" if t["leaf_index"] is None else t["leaf_index"]),
    ]
    return "\n".join(f"{k:<12} {v}" for k, v in rows)


def sagas_view_url(ui: str, namespace: str = "default") -> str:
    """The Web UI's workflow list filtered to the golden sagas, without the reconciler's runs.

    The reconciler's Schedule starts a run every 30 s; this visibility query hides them, so the
    list shows the issuance, redemption and revocation sagas (bookmark it as a saved view).
    """
    from urllib.parse import quote

    from golden_press.sagas import SAGAS_VIEW_QUERY

    query = quote(SAGAS_VIEW_QUERY)
    return f"{ui.rstrip('/')}/namespaces/{quote(namespace)}/workflows?query={query}"
