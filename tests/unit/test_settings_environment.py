"""Settings.environment(): the variables a child process is started with read back as the same
settings (the dev stack, tests and benches start worker and API processes this way)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from golden_press.settings import Settings


def test_environment_reads_back_as_the_same_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in list(os.environ):
        if name.startswith(("GOLDEN_", "TEMPORAL_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GOLDEN_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("GOLDEN_PG_DSN", "postgresql://someone@db.example:5432/golden")
    monkeypatch.setenv("GOLDEN_API_PROCESSES", "3")
    monkeypatch.setenv("GOLDEN_LOG_LEVEL", "debug")
    original = Settings()
    env = original.environment()
    assert all(name.startswith(("GOLDEN_", "TEMPORAL_")) for name in env)
    assert env["GOLDEN_API_PROCESSES"] == "3" and env["GOLDEN_LOG_LEVEL"] == "DEBUG"
    assert "GOLDEN_TLS_CERT_FILE" not in env  # unset optional files stay unset

    for name in list(os.environ):
        if name.startswith(("GOLDEN_", "TEMPORAL_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings() == original
