"""Stand-ins for worker.py and service.api.server, so the dev stack's own machinery (start, record,
health-check, stop, restart) is tested on its own: a worker that polls the task queue, a server
with gRPC health, a runner that points the stack at them, and `StubStack`, which runs it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from service.devstack import servers
from service.devstack.servers import pid_alive
from tests.helpers.cli_process import ROOT, run_cli

needs_postgres = pytest.mark.skipif(
    servers.find_postgres_bin_dir() is None, reason="no initdb/pg_ctl on this machine"
)

STUB_WORKER = """
import asyncio, os
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Worker

@workflow.defn
class Noop:
    @workflow.run
    async def run(self) -> None:
        return None

async def main() -> None:
    client = await Client.connect(os.environ["TEMPORAL_ADDRESS"])
    await Worker(client, task_queue=os.environ["GOLDEN_TASK_QUEUE"], workflows=[Noop]).run()

if __name__ == "__main__":
    asyncio.run(main())
"""
STUB_API = """
import os
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2_grpc

server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
server.add_insecure_port(os.environ["GOLDEN_GRPC_ADDR"])
server.start()
server.wait_for_termination()
"""
STUB_RUNNER = """
import os, sys
import service.devstack.stack as d
d.WORKER_CMD = [sys.executable, sys.argv[1]]
d.API_CMD = [sys.executable, sys.argv[2]]
code = d.main(sys.argv[3:])
sys.stdout.flush(); sys.stderr.flush()
os._exit(code)
"""


class StubStack:
    """`dev up` / `dev down` of a real stack (postgres, NATS, Temporal, witness) whose worker and
    API are stand-ins (`api`: the API stand-in's source), in the given state dir; the stand-ins'
    scripts are written to `script_dir`."""

    def __init__(
        self, env: dict[str, str], state_dir: Path, script_dir: Path, api: str = STUB_API
    ) -> None:
        self.env, self.state_dir, self.script_dir = env, state_dir, script_dir
        self.scripts = [script_dir / "run.py", script_dir / "worker.py", script_dir / "api.py"]
        for path, text in zip(self.scripts, (STUB_RUNNER, STUB_WORKER, api), strict=True):
            path.write_text(text)

    def command(self, *args: str) -> list[str]:
        """The command line of `golden-press dev ARGS` with the stand-ins."""
        return [sys.executable, *map(str, self.scripts), *args]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args),
            capture_output=True,
            text=True,
            env=self.env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            timeout=240,
        )

    def recorded(self) -> dict[str, dict[str, Any]]:
        """The processes stack.json records, by name."""
        doc = json.loads((self.state_dir / "stack.json").read_text())
        return {p["name"]: p for p in doc["processes"]}

    def kill(self, name: str) -> None:
        """SIGKILL one recorded part of this stack (only if that pid is still the one recorded:
        never a process of another stack or a reused pid)."""
        proc = self.recorded()[name]
        assert pid_alive(proc["pid"], proc["start_time"]), f"{name} is not running"
        os.kill(proc["pid"], signal.SIGKILL)
        assert gone(proc["pid"])

    def alive(self) -> dict[str, bool]:
        status = json.loads(run_cli(self.env, "dev", "status", "--json").stdout)
        return {p["name"]: p["alive"] for p in status["parts"]}

    def down_leaves_nothing(self) -> None:
        """`dev down` succeeds and no process of this state dir is left (those still there are
        killed, so a failing test leaks nothing). The parts of its stack name the state dir: the
        servers' data dirs are in it, the worker and API get GOLDEN_STATE_DIR."""
        down = self.run("down")
        left = processes_mentioning(str(self.state_dir.resolve()), environ=True)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert down.returncode == 0, down.stderr
        assert not left, f"left running after dev down: {left}"


def processes_mentioning(*needles: str, environ: bool = False) -> dict[int, str]:
    """Live processes (but this one) whose command line mentions any needle, or with `environ`
    whose environment does: their command lines by pid."""
    wanted = [n.encode() for n in needles]
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            env = (entry / "environ").read_bytes() if environ else b""
        except OSError:
            continue
        if any(n in cmdline or n in env for n in wanted) and pid_alive(int(entry.name)):
            found[int(entry.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return found


def gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether pid is gone within timeout (polled)."""
    return servers._poll(lambda: not pid_alive(pid), timeout)
