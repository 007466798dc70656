"""GOLDEN_API_PROCESSES=N: N API processes on one port (SO_REUSEPORT), no process left behind."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.api.convert import error_reason
from service.api.pb import golden_pb2, golden_pb2_grpc
from service.devstack.servers import free_port, pid_alive
from tests.helpers.stack import Stack
from tests.helpers.worker import settings_env

pytestmark = pytest.mark.asyncio(loop_scope="session")

REPO = Path(__file__).resolve().parents[2]


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


async def wait_gone(pids: list[int], within_s: float = 15.0) -> None:
    deadline = time.monotonic() + within_s
    while any(pid_alive(p) for p in pids):
        assert time.monotonic() < deadline, [p for p in pids if pid_alive(p)]
        await asyncio.sleep(0.1)


async def start_supervisor(
    stack: Stack, log: Path, **extra_env: str
) -> tuple[subprocess.Popen[bytes], str, str]:
    token = f"t-{uuid.uuid4().hex}"
    stack.settings.api_tokens_file.parent.mkdir(parents=True, exist_ok=True)
    stack.settings.api_tokens_file.write_text(f"{token}\n")
    os.chmod(stack.settings.api_tokens_file, 0o600)
    address = f"127.0.0.1:{free_port()}"
    env = settings_env(
        stack.settings, GOLDEN_API_PROCESSES="2", GOLDEN_GRPC_ADDR=address, **extra_env
    )
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.api.server"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while log.read_text(errors="replace").count("gRPC API listening") < 2:
        assert "restarting it" not in log.read_text(errors="replace"), log.read_text()[-3000:]
        assert proc.poll() is None, log.read_text(errors="replace")[-2000:]
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-2000:]
        await asyncio.sleep(0.1)
    return proc, address, token


async def test_two_processes_share_one_port_and_leave_nothing_behind(
    stack: Stack, tmp_path: Path
) -> None:
    proc, address, token = await start_supervisor(stack, tmp_path / "api.log")
    try:
        children = children_of(proc.pid)
        assert len(children) == 2
        # Several connections (SO_REUSEPORT spreads connections): every one is served, and the
        # cap holds across the processes' separate snapshots.
        await stack.pool.execute("UPDATE golden_config SET cap = 1")
        channels = [
            grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(6)
        ]
        try:
            for ch in channels:
                health = await health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=10
                )
                assert health.status == health_pb2.HealthCheckResponse.SERVING

            async def issue(ch: grpc.aio.Channel) -> str:
                try:
                    await golden_pb2_grpc.GoldenPressStub(ch).IssueTicket(
                        golden_pb2.IssueTicketRequest(user_id=f"p-{uuid.uuid4().hex[:8]}"),
                        metadata=[("authorization", f"Bearer {token}")],
                        timeout=60,
                    )
                except grpc.aio.AioRpcError as err:
                    return error_reason(err)
                return "ok"

            outcomes = await asyncio.gather(*(issue(ch) for ch in channels * 3))
        finally:
            for ch in channels:
                await ch.close()
        assert outcomes.count("ok") == 1, outcomes
        assert set(outcomes) == {"ok", "CapReached"}, outcomes

        # A child that dies is replaced.
        os.kill(children[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while len([c for c in children_of(proc.pid) if c not in children]) < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        # SIGKILL runs no handler in the supervisor: PR_SET_PDEATHSIG still stops every child.
        everyone = children_of(proc.pid)
        proc.kill()
        proc.wait(10)
        await wait_gone(everyone)
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_every_process_serves_the_tiles_on_one_http_port(
    stack: Stack, tmp_path: Path
) -> None:
    """GOLDEN_HTTP_ADDR is shared like GOLDEN_GRPC_ADDR: no child dies binding it."""
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    note = "example.com/log\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
    (tiles / "checkpoint").write_text(note)
    http = f"127.0.0.1:{free_port()}"
    log = tmp_path / "api.log"
    proc, _, _ = await start_supervisor(
        stack, log, GOLDEN_HTTP_ADDR=http, GOLDEN_TILES_DIR=str(tiles)
    )
    try:
        children = children_of(proc.pid)
        assert len(children) == 2

        # Several fresh connections (the kernel spreads them over both children).
        def fetch() -> str:
            with urllib.request.urlopen(f"http://{http}/checkpoint", timeout=10) as answer:
                return str(answer.read().decode())

        for _ in range(8):
            assert await asyncio.to_thread(fetch) == note
        await asyncio.sleep(2)  # a child that failed to bind would have been restarted by now
        text = log.read_text(errors="replace")
        assert "restarting it" not in text, text[-3000:]
        assert text.count("tiles over HTTP") == 2, text[-3000:]
        assert sorted(children_of(proc.pid)) == sorted(children)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
