"""The `golden-press` command run as a user runs it: its own process, an environment that
configures nothing the test did not name, no stdin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "golden-press")


def unconfigured_env(**extra: str) -> dict[str, str]:
    """This process's environment without any GOLDEN_* or TEMPORAL_* variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOLDEN_", "TEMPORAL_"))}
    env.update(extra)
    return env


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`golden-press ARGS` from the repository root, output captured as text."""
    return subprocess.run(
        [CLI, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )
