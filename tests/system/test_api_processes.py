"""GOLDEN_API_PROCESSES=N: N API processes on one port (SO_REUSEPORT), no process left behind."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request
import uuid
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.api.convert import error_reason
from service.api.pb import golden_pb2, golden_pb2_grpc
from service.devstack.servers import HOST, free_port, pid_alive, port_in_use
from tests.helpers.metrics import families, sample_values, scrape
from tests.helpers.stack import Stack
from tests.helpers.worker import start_api_process, stop_process

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


def free_port_pair() -> int:
    """A free port whose successor is free too: the children's metrics ports (port, port+1)."""
    for _ in range(50):
        port = free_port()
        if not port_in_use(HOST, port + 1):
            return port
    raise AssertionError("no two consecutive free ports")


def listener_pid(port: int, pids: list[int]) -> int | None:
    """Which of `pids` holds the TCP socket listening on `port` (/proc/net/tcp and fd links)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) in inodes:
                    return pid
            except OSError:
                continue
    return None


def issue_calls_served(metrics_port: int) -> int:
    """IssueTicket calls one child answered, by its golden_rpc_total (whatever the code)."""
    served = families(scrape(metrics_port))
    return int(
        sum(sample_values(served, "golden_rpc", "golden_rpc_total", method="IssueTicket").values())
    )


async def wait_gone(pids: list[int], within_s: float = 15.0) -> None:
    deadline = time.monotonic() + within_s
    while any(pid_alive(p) for p in pids):
        assert time.monotonic() < deadline, [p for p in pids if pid_alive(p)]
        await asyncio.sleep(0.1)


async def test_two_processes_share_one_port_and_leave_nothing_behind(
    stack: Stack, tmp_path: Path
) -> None:
    metrics = free_port_pair()  # child i serves its metrics on metrics + i
    proc, address, token = await start_api_process(
        stack.settings, tmp_path / "api.log", processes=2, GOLDEN_METRICS_PORT=str(metrics)
    )
    try:
        children = children_of(proc.pid)
        assert len(children) == 2
        by_port = {port: listener_pid(port, children) for port in (metrics, metrics + 1)}
        assert sorted(pid for pid in by_port.values() if pid) == sorted(children), by_port
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
            # Both children answered: each one's own counter (its metrics port, its pid). The
            # kernel picks a child per connection, so fresh connections until both did.
            for _ in range(40):
                served = {port: issue_calls_served(port) for port in by_port}
                if all(served.values()):
                    break
                fresh = grpc.aio.insecure_channel(
                    address, options=[("grpc.use_local_subchannel_pool", 1)]
                )
                channels.append(fresh)
                outcomes.append(await issue(fresh))
        finally:
            for ch in channels:
                await ch.close()
        assert all(served.values()), {by_port[port]: n for port, n in served.items()}
        assert sum(served.values()) == len(outcomes), (served, len(outcomes))
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
    proc, _, _ = await start_api_process(
        stack.settings, log, processes=2, GOLDEN_HTTP_ADDR=http, GOLDEN_TILES_DIR=str(tiles)
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
        stop_process(proc, timeout=15)
