"""The CLI never harms a dev stack and never guesses a database (issue 13: 13).

A read-only verb run against a half-dead stack leaves every live part running and the stack's
record in place (an operator debugging an incident keeps it); `dev status` says which part is
alive; no verb falls back silently to a database the stack did not name; none prints a
traceback.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.devstack.servers import HOST, pid_alive, port_in_use, process_start_time
from tests.helpers.cli_process import CLI, ROOT, run_cli
from tests.helpers.devstack_stubs import StubStack, needs_postgres
from tests.helpers.envelope import envelope


@pytest.fixture
def half_dead_stack(state_dir: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """A recorded stack whose `worker` and `postgres` stand-ins live and whose `api` is gone."""
    live = {
        name: subprocess.Popen(["sleep", "300"], start_new_session=True)
        for name in ("postgres", "worker")
    }
    dead = subprocess.Popen(["true"])
    dead.wait()
    procs = [
        {
            "name": name,
            "pid": p.pid,
            "start_time": process_start_time(p.pid),
            "pgid": p.pid,
            "first_signal": int(signal.SIGTERM),
        }
        for name, p in live.items()
    ]
    procs.append(
        {"name": "api", "pid": dead.pid, "start_time": 1, "pgid": None, "first_signal": 15}
    )
    info = {
        "temporal": "127.0.0.1:1",
        "ui": None,
        "postgres": "postgresql://postgres@127.0.0.1:1/golden",
        "nats": "nats://127.0.0.1:1",
        "grpc": "127.0.0.1:1",
        "namespace": "default",
        "task_queue": "golden-press",
        "token": "t",
    }
    record = {"version": 1, "info": info, "env": {}, "processes": procs, "supervisor": None}
    (state_dir / "stack.json").write_text(json.dumps(record))
    try:
        yield live
    finally:
        for p in live.values():
            p.kill()
            p.wait()


@pytest.mark.parametrize("verb", [["list"], ["get", "6f1d5a4e-1111-4222-8333-444455556666"]])
def test_a_read_only_verb_leaves_a_half_dead_stack_alone(
    half_dead_stack: dict[str, subprocess.Popen[bytes]],
    stack_env: dict[str, str],
    state_dir: Path,
    verb: list[str],
) -> None:
    done = run_cli(stack_env, *verb)
    for name, proc in half_dead_stack.items():
        assert pid_alive(proc.pid), f"{name} was stopped by `golden-press {verb[0]}`"
    assert (state_dir / "stack.json").exists()
    assert done.returncode == 3, done
    assert "Traceback" not in done.stderr
    assert "dev status" in done.stderr, done.stderr


def test_dev_status_names_each_part(
    half_dead_stack: dict[str, subprocess.Popen[bytes]], stack_env: dict[str, str]
) -> None:
    done = run_cli(stack_env, "dev", "status", "--json")
    assert "Traceback" not in done.stderr
    assert done.returncode == 3  # not all of it runs
    doc = envelope(done.stdout, done.returncode)  # the envelope of every verb
    assert doc["error"]["reason"] == "Unavailable" and "api" in doc["error"]["message"]
    parts = {p["name"]: p["alive"] for p in doc["parts"]}
    assert parts == {"postgres": True, "worker": True, "api": False}
    human = run_cli(stack_env, "dev", "status")
    assert "api" in human.stdout and "worker" in human.stdout
    for proc in half_dead_stack.values():
        assert pid_alive(proc.pid)


def test_dev_status_without_a_stack(stack_env: dict[str, str]) -> None:
    done = run_cli(stack_env, "dev", "status")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "no dev stack" in (done.stdout + done.stderr)
    done = run_cli(stack_env, "dev", "status", "--json")
    doc = envelope(done.stdout, done.returncode)
    assert (doc["error"]["reason"], doc["parts"]) == ("Unavailable", [])
    assert "no dev stack" in doc["error"]["message"]


def test_dev_down_without_a_stack(stack_env: dict[str, str], state_dir: Path) -> None:
    done = run_cli(stack_env, "dev", "down", "--json")
    doc = envelope(done.stdout, done.returncode)
    assert doc == {"ok": True, "stopped": False, "state_dir": str(state_dir.resolve())}


@pytest.mark.parametrize(
    "verb",
    [
        ["admin", "set-cap", "--cap", "3", "--scope", "live"],
        ["admin", "deny", "mallory"],
        ["audit"],
    ],
)
def test_no_verb_falls_back_to_a_database_nobody_named(
    stack_env: dict[str, str], verb: list[str]
) -> None:
    done = run_cli(stack_env, *verb)
    assert done.returncode == 3, done
    assert "Traceback" not in done.stderr
    assert "GOLDEN_PG_DSN" in done.stderr, done.stderr


@needs_postgres
@pytest.mark.parametrize("killed", [("api",), ("nats", "witness")])
def test_dev_up_restarts_only_the_missing_part(
    stack_env: dict[str, str], state_dir: Path, tmp_path: Path, killed: tuple[str, ...]
) -> None:
    """A part killed (the API; a server and the witness, which the dev stack always runs) is
    started again by `dev up` on its recorded address, every other part is left as it was, and
    `dev down` then stops all of it."""
    stack = StubStack(stack_env, state_dir, tmp_path)
    up = stack.run("up", "--detach")
    assert up.returncode == 0, up.stderr
    try:
        before = {name: p["pid"] for name, p in stack.recorded().items()}
        assert set(killed) <= set(before), before
        for name in killed:
            stack.kill(name)
        assert {n for n, alive in stack.alive().items() if not alive} == set(killed)
        again = stack.run("up", "--detach")
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout) == json.loads(up.stdout)  # same addresses
        after = {name: p["pid"] for name, p in stack.recorded().items()}
        assert after.keys() == before.keys()
        for name in killed:
            assert after[name] != before[name] and pid_alive(after[name]), name
        assert {k: v for k, v in after.items() if k not in killed} == {
            k: v for k, v in before.items() if k not in killed
        }
        assert run_cli(stack_env, "dev", "status").returncode == 0
        info = json.loads(again.stdout)
        for name in killed:  # serving again where the stack's clients were told to look
            address = {"nats": info["nats"], "witness": info["witness"], "api": info["grpc"]}
            port = int(address[name].rsplit(":", 1)[1].strip("/"))
            assert port_in_use(HOST, port), f"{name} does not listen on {address[name]}"
    finally:
        stack.down_leaves_nothing()


@needs_postgres
def test_a_failed_restart_leaves_nothing_untracked(
    stack_env: dict[str, str], state_dir: Path, tmp_path: Path
) -> None:
    """`dev up` restarts NATS, then cannot restart the witness (its port is taken): the NATS it
    did restart is recorded all the same, so a later `dev up` restarts only the witness and
    `dev down` stops everything (before, stack.json was written only after every restart)."""
    stack = StubStack(stack_env, state_dir, tmp_path)
    up = stack.run("up", "--detach")
    assert up.returncode == 0, up.stderr
    try:
        witness_port = int(json.loads(up.stdout)["witness"].rsplit(":", 1)[1].strip("/"))
        nats_before = stack.recorded()["nats"]["pid"]
        stack.kill("nats")
        stack.kill("witness")
        with socket.socket() as squatter:
            squatter.bind((HOST, witness_port))
            squatter.listen()
            failed = stack.run("up", "--detach")
            assert failed.returncode == 1, failed.stderr
            assert "witness" in failed.stderr and "in use" in failed.stderr, failed.stderr
            assert "Traceback" not in failed.stderr
            nats = stack.recorded()["nats"]
            assert nats["pid"] != nats_before and pid_alive(nats["pid"], nats["start_time"])
            assert stack.alive()["witness"] is False
        again = stack.run("up", "--detach")
        assert again.returncode == 0, again.stderr
        assert "restarted witness" in again.stderr, again.stderr
        assert stack.recorded()["nats"]["pid"] == nats["pid"]
        assert all(stack.alive().values())
    finally:
        stack.down_leaves_nothing()


@needs_postgres
def test_a_restart_never_generates_the_witness_key_again(
    stack_env: dict[str, str], state_dir: Path, tmp_path: Path
) -> None:
    """The witness is killed and its key file deleted: `dev up` exits 1 naming the missing file
    instead of restarting it with a fresh key that the stack's GOLDEN_WITNESSES does not name
    (its cosignatures would be dropped without a word); `dev down` still stops everything."""
    stack = StubStack(stack_env, state_dir, tmp_path)
    up = stack.run("up", "--detach")
    assert up.returncode == 0, up.stderr
    try:
        key_file = state_dir.resolve() / "witness" / "witness.key"
        assert key_file.exists()
        stack.kill("witness")
        key_file.unlink()
        failed = stack.run("up", "--detach")
        assert failed.returncode == 1, failed.stderr
        assert "witness" in failed.stderr and f"key file {key_file} is missing" in failed.stderr
        assert "Traceback" not in failed.stderr
        assert not key_file.exists()
        assert stack.alive() == {name: name != "witness" for name in stack.recorded()}
    finally:
        stack.down_leaves_nothing()


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--version"], 141),
        (["dev", "status", "--json"], 141),
        (["--help"], 0),  # argparse itself ignores a failed write of the help
        (["list", "--bogus"], 2),  # the usage error goes to stderr, which is still there
    ],
)
def test_a_reader_that_left_gets_no_traceback(
    stack_env: dict[str, str], args: list[str], code: int
) -> None:
    """`golden-press ... | head -1`: when the reader closes the pipe first, the CLI ends quietly
    with the shell's SIGPIPE code, not a BrokenPipeError traceback on stderr."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the CLI writes a byte
    try:
        done = subprocess.run(
            [CLI, *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=stack_env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.returncode == code, done.stderr
