"""golden-press processes of their own, the worker and the API (a SIGKILL there is a real crash,
not a cancelled task)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from golden_press.settings import Settings
from service.devstack.servers import free_port
from tests.helpers.api import write_tokens

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
        if self.proc is not None:
            stop_process(self.proc)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`; never leaves the process behind."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


async def start_api_process(
    settings: Settings, log: Path, *, processes: int = 1, **extra_env: str
) -> tuple[subprocess.Popen[bytes], str, str]:
    """`python -m service.api.server` on a free port with a fresh bearer token, once its
    `processes` API processes listen (GOLDEN_API_PROCESSES; a child restarted meanwhile fails
    the caller). Returns the process, its gRPC address and the token; stop it with
    stop_process."""
    token = f"t-{uuid.uuid4().hex}"
    write_tokens(settings, token)
    address = f"127.0.0.1:{free_port()}"
    env = settings_env(
        settings, GOLDEN_API_PROCESSES=str(processes), GOLDEN_GRPC_ADDR=address, **extra_env
    )
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.api.server"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while (text := log.read_text(errors="replace")).count("gRPC API listening") < processes:
        assert "restarting it" not in text, text[-3000:]
        assert proc.poll() is None, text[-2000:]
        assert time.monotonic() < deadline, text[-2000:]
        await asyncio.sleep(0.1)
    return proc, address, token


# ---- reliability helpers (reliability helper; appended) ----------------------------------------
