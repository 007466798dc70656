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
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.devstack.servers import find_postgres_bin_dir, pid_alive, process_start_time
from tests.helpers.cli_process import CLI, ROOT, run_cli
from tests.helpers.devstack_stubs import STUB_API, STUB_RUNNER, STUB_WORKER
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


@pytest.mark.skipif(find_postgres_bin_dir() is None, reason="no initdb/pg_ctl on this machine")
def test_dev_up_restarts_only_the_missing_part(
    stack_env: dict[str, str], state_dir: Path, tmp_path: Path
) -> None:
    state_dir.chmod(0o755)  # the postgres user must reach the data dir
    worker, api, runner = tmp_path / "worker.py", tmp_path / "api.py", tmp_path / "run.py"
    worker.write_text(STUB_WORKER)
    api.write_text(STUB_API)
    runner.write_text(STUB_RUNNER)

    def stub(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(runner), str(worker), str(api), *args],
            capture_output=True,
            text=True,
            env=stack_env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            timeout=240,
        )

    up = stub("up", "--detach")
    assert up.returncode == 0, up.stderr
    try:
        before = {
            p["name"]: p["pid"]
            for p in json.loads((state_dir / "stack.json").read_text())["processes"]
        }
        os.kill(before["api"], signal.SIGKILL)
        assert wait_gone(before["api"])
        status = json.loads(run_cli(stack_env, "dev", "status", "--json").stdout)
        assert {p["name"]: p["alive"] for p in status["parts"]}["api"] is False
        again = stub("up", "--detach")
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout) == json.loads(up.stdout)  # same addresses
        after = {
            p["name"]: p["pid"]
            for p in json.loads((state_dir / "stack.json").read_text())["processes"]
        }
        assert after["api"] != before["api"] and pid_alive(after["api"])
        assert {k: v for k, v in after.items() if k != "api"} == {
            k: v for k, v in before.items() if k != "api"
        }
        assert run_cli(stack_env, "dev", "status").returncode == 0
    finally:
        down = stub("down")
        assert down.returncode == 0, down.stderr


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether pid is gone within timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


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
