"""Issue 12's homes, checked over the source: every SQL statement is in service/store, and every
saga's workflow id is made by golden_press.sagas.

The dev stack (service/devstack) is left out: it runs `psql` against the private cluster it
starts (is the database there yet?), dev tooling rather than golden-press's database access.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("service", "activities", "workflows", "starter", "worker.py")
SQL_HOME = ROOT / "service" / "store"
EXEMPT = (SQL_HOME, ROOT / "service" / "devstack")
#: The start of a statement (prose such as "LISTEN connection lost" is not one).
SQL = re.compile(
    r"^\s*(SELECT\s|INSERT\s+INTO\s|UPDATE\s+\w+\s+SET\s|DELETE\s+FROM\s|WITH\s+\w+\s+AS\b"
    r"|(CREATE|DROP|ALTER|TRUNCATE)\s+(TABLE|INDEX|DATABASE|TRIGGER|FUNCTION)\b"
    r"|(BEGIN|COMMIT|ROLLBACK)\b[^a-z]*$|(LISTEN|UNLISTEN|NOTIFY)\s+\w+\s*;?\s*$)"
)
WORKFLOW_ID = re.compile(r"^(issue|redeem|revoke|reconcile)-")


def sources() -> Iterator[Path]:
    for name in SOURCES:
        path = ROOT / name
        yield from sorted(path.rglob("*.py")) if path.is_dir() else [path]


def strings(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of every string literal, and of the leading text of every f-string."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def test_sql_statements_live_in_the_store() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: {text.strip()[:60]}"
        for path in sources()
        if not any(path.is_relative_to(home) for home in EXEMPT)
        for line, text in strings(path)
        if SQL.match(text)
    ]
    assert not found, "SQL outside service/store:\n" + "\n".join(found)


def test_workflow_ids_come_from_the_saga_identity_module() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: {text!r}"
        for path in sources()
        for line, text in strings(path)
        if WORKFLOW_ID.match(text)
    ]
    assert not found, "workflow ids written by hand (use golden_press.sagas):\n" + "\n".join(found)
