"""A worker in its own process (a SIGKILL there is a real crash, not a cancelled task)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

from golden_press.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a worker process needs to join this stack (names from the settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOLDEN_", "TEMPORAL_"))}
    return env | settings.environment() | extra


class WorkerProcess:
    """`python worker.py` as a separate OS process (for races across processes and SIGKILLs)."""

    def __init__(self, settings: Settings, log_dir: Path, **extra_env: str) -> None:
        self.settings = settings
        log_dir.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex[:8]
        self.ready_file = log_dir / f"worker-{name}.ready"
        self.log_path = log_dir / f"worker-{name}.log"
        self.env = settings_env(
            settings, GOLDEN_WORKER_READY_FILE=str(self.ready_file), **extra_env
        )
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self, timeout: float = 90.0) -> WorkerProcess:
        """Start and wait until the worker has registered and polls its task queue."""
        self.ready_file.unlink(missing_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(REPO_ROOT / "worker.py")],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.ready_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"worker exited {self.proc.returncode}: {self.log_path.read_text()[-2000:]}"
                )
            if loop.time() > deadline:
                raise TimeoutError(f"worker not ready in {timeout}s: {self.log_path}")
            await asyncio.sleep(0.05)
        return self

    async def wait_exit(self, timeout: float = 60.0) -> int:
        """Wait for the process to end by itself (e.g. an injected SIGKILL)."""
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.proc.poll() is None:
            if loop.time() > deadline:
                raise TimeoutError("worker did not exit")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def stop(self) -> None:
        """SIGTERM, then SIGKILL; never leaves the process behind."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


# ---- reliability helpers (reliability helper; appended) ----------------------------------------
