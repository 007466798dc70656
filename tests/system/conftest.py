"""Fixtures of the tests that run the dev stack or the CLI as processes."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.cli_process import unconfigured_env


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A fresh state dir the `postgres` user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="golden-state-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def stack_env(state_dir: Path) -> dict[str, str]:
    """The environment of a user with nothing configured but the state dir: the stack starts
    every server itself."""
    return unconfigured_env(GOLDEN_STATE_DIR=str(state_dir))
