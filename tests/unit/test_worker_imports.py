"""worker.py's place in the layers, which lint-imports cannot check (grimp takes packages only).

`worker -> workflows -> activities -> store -> golden_press`: the worker builds and registers; it
never imports the front ends, the dev stack, the tests or the benches, and only the tests import
it (pyproject.toml's contracts cover every package).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("service.api", "service.cli", "service.devstack", "starter", "tests", "bench")
PACKAGES = ("golden_press", "service", "activities", "workflows", "starter", "bench")


def imported(path: Path) -> set[str]:
    """Absolute module names a file imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_the_worker_imports_no_front_end_dev_stack_test_or_bench() -> None:
    bad = [
        m
        for m in imported(ROOT / "worker.py")
        if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)
    ]
    assert not bad, f"worker.py imports {bad}"


def test_no_package_imports_the_worker() -> None:
    bad = [
        str(path.relative_to(ROOT))
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "worker" in imported(path)
    ]
    assert not bad, f"only the tests import worker.py: {bad}"
