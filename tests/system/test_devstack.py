"""`golden-press dev up --detach` / `dev down`: everything it starts is stopped again, and a missing
binary or a port in use is a one-line error, not a traceback."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from service.devstack import servers
from service.devstack import stack as devstack
from service.devstack.servers import pid_alive, port_in_use
from tests.helpers.cli_process import run_cli
from tests.helpers.devstack_stubs import StubStack, gone, needs_postgres, processes_mentioning
from tests.helpers.envelope import envelope

ROOT = Path(__file__).resolve().parents[2]
KEYS = (
    "temporal",
    "ui",
    "postgres",
    "nats",
    "grpc",
    "namespace",
    "task_queue",
    "token",
    "tls",
    "tiles",
    "witness",
)


@pytest.fixture
def stack(stack_env: dict[str, str], state_dir: Path, tmp_path: Path) -> StubStack:
    return StubStack(stack_env, state_dir, tmp_path)


def assert_all_gone(state_dir: Path, recorded: dict, *needles: str) -> None:
    for proc in recorded["processes"]:
        assert gone(proc["pid"]), proc
    assert processes_mentioning(str(state_dir), *needles) == {}
    info = recorded["info"]
    for addr in (info["temporal"], info["grpc"], info["nats"].removeprefix("nats://")):
        host, port = addr.rsplit(":", 1)
        assert not port_in_use(host, int(port)), addr


def recorded_stack(state_dir: Path, started: subprocess.CompletedProcess[str]) -> dict:
    """stack.json of the stack `started` brought up; when there is none, fail with what the command
    printed and the end of each server's log, so a start that failed says why."""
    try:
        return json.loads((state_dir / "stack.json").read_text())
    except FileNotFoundError:
        logs = sorted((state_dir / "logs").glob("*.log")) if (state_dir / "logs").is_dir() else []
        tails = "".join(
            f"\n--- {log.name} ---\n"
            + "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            for log in logs
        )
        pytest.fail(
            f"no stack.json (exit {started.returncode})\nstdout:\n{started.stdout}\n"
            f"stderr:\n{started.stderr}{tails}"
        )


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr
    return lines[0]


@needs_postgres
def test_up_detach_then_down_leaves_no_process(stack: StubStack, state_dir: Path) -> None:
    began = time.monotonic()
    up = stack.run("up", "--detach")
    startup = time.monotonic() - began
    assert up.returncode == 0, up.stderr
    lines = up.stdout.splitlines()
    assert len(lines) == 1, up.stdout
    info = json.loads(lines[0])
    assert tuple(info) == KEYS
    assert info["tiles"].startswith("http://127.0.0.1:") and info["tiles"].endswith("/")
    assert info["ui"].startswith("http://127.0.0.1:")
    assert info["postgres"].startswith("postgresql://postgres@127.0.0.1:")
    assert info["task_queue"] == "golden-press" and info["token"]
    recorded = json.loads((state_dir / "stack.json").read_text())
    names = [p["name"] for p in recorded["processes"]]
    assert names == ["postgres", "nats", "temporal", "witness", "worker", "api"]
    assert all(pid_alive(p["pid"]) for p in recorded["processes"])
    assert info["witness"].startswith("http://127.0.0.1:")
    assert recorded["env"]["GOLDEN_WITNESSES"].endswith(" " + info["witness"])
    for key in ("keys/issuer.key", "keys/ledger.key", "api-tokens", "witness/witness.key"):
        assert (state_dir / key).stat().st_mode & 0o077 == 0, key

    again = stack.run("up", "--detach")  # idempotent: the same stack
    assert again.returncode == 0 and json.loads(again.stdout) == info

    down = stack.run("down")
    assert down.returncode == 0, down.stderr
    assert not (state_dir / "stack.json").exists()
    assert_all_gone(state_dir, recorded, str(stack.script_dir))
    print(f"dev up --detach (stub worker/api): {startup:.1f} s")


@needs_postgres
def test_foreground_up_stops_everything_when_dev_down_signals_it(
    stack: StubStack, stack_env: dict[str, str], state_dir: Path
) -> None:
    proc = subprocess.Popen(
        stack.command("up"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=stack_env,
        cwd=ROOT,
    )
    try:
        assert servers._poll(lambda: (state_dir / "stack.json").exists(), 120), proc.poll()
        recorded = json.loads((state_dir / "stack.json").read_text())
        assert recorded["supervisor"]["pid"] == proc.pid
        down = stack.run("down")
        assert down.returncode == 0, down.stderr
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "Ctrl-C stops it" in out and recorded["info"]["token"] in out
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
    assert_all_gone(state_dir, recorded, str(stack.script_dir))


def test_grpc_port_in_use_is_one_line_and_starts_nothing(
    stack_env: dict[str, str], state_dir: Path, tmp_path: Path
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**stack_env, "GOLDEN_GRPC_ADDR": f"127.0.0.1:{port}"}
        up = StubStack(env, state_dir, tmp_path).run("up", "--detach")
        as_json = run_cli(env, "dev", "up", "--detach", "--json")
    assert up.returncode == 1
    line = one_line_error(up.stderr)
    assert line.startswith("error: DevStackFailed: api: ") and "in use" in line, line
    assert str(port) in line
    error = envelope(as_json.stdout, as_json.returncode)["error"]  # the same, as JSON
    assert error["reason"] == "DevStackFailed" and error["exit_code"] == 1
    assert "in use" in error["message"] and str(port) in error["message"]
    assert not (state_dir / "stack.json").exists()
    assert processes_mentioning(str(state_dir)) == {}


@needs_postgres
def test_missing_binary_is_one_line_and_stops_what_started(
    stack_env: dict[str, str],
    state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key in [k for k in os.environ if k.startswith(("GOLDEN_", "TEMPORAL_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("GOLDEN_STATE_DIR", str(state_dir))
    monkeypatch.setattr(devstack, "WORKER_CMD", [sys.executable, "-c", "pass"])
    monkeypatch.setattr(devstack, "API_CMD", [sys.executable, "-c", "pass"])
    monkeypatch.setattr(servers, "find_binary", lambda name, extra_dirs=(): None)

    assert devstack.dev_up(detach=True) == 1  # postgres starts, then nats-server is missing

    err = capsys.readouterr().err
    line = one_line_error(err)
    assert line.startswith("error: DevStackFailed: nats: nats-server not found"), line
    assert not (state_dir / "postgres" / "postmaster.pid").exists()
    assert processes_mentioning(str(state_dir)) == {}


@pytest.mark.skipif(
    not (ROOT / "worker.py").exists() or importlib.util.find_spec("service.api.server") is None,
    reason="worker.py or service.api.server not written yet",
)
@needs_postgres
def test_real_stack_up_detach_then_down(stack_env: dict[str, str], state_dir: Path) -> None:
    """The real worker and API: `golden-press dev up --detach`, then `dev down`."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(stack_env, "dev", *args)

    began = time.monotonic()
    up = run("up", "--detach")
    startup = time.monotonic() - began
    try:
        assert up.returncode == 0, up.stderr
        recorded = recorded_stack(state_dir, up)
        info = json.loads(up.stdout.strip().splitlines()[-1])
        assert tuple(info) == KEYS
        # The worker publishes the (empty) log's checkpoint; the API serves it over HTTP.
        note = ""
        for _ in range(100):
            try:
                with urllib.request.urlopen(info["tiles"] + "checkpoint", timeout=5) as resp:
                    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
                    note = resp.read().decode()
                    break
            except urllib.error.HTTPError:
                time.sleep(0.1)
        assert note.split("\n")[1] == "0" and "\n\n\u2014 " in note, note
        # --json: one document in the envelope of every verb, the line's keys as its `stack`.
        again = run("up", "--detach", "--json")
        doc = envelope(again.stdout, again.returncode)
        assert doc["stack"] == info and doc["restarted"] is None
        status = run("status", "--json")
        doc = envelope(status.stdout, status.returncode)
        assert {p["name"] for p in doc["parts"]} >= {"postgres", "nats", "temporal", "api"}
        assert doc["stack"]["grpc"] == info["grpc"] and "token" not in doc["stack"]
    finally:
        down = run("down", "--json")
    assert envelope(down.stdout, down.returncode) == {
        "ok": True,
        "stopped": True,
        "state_dir": str(state_dir.resolve()),
    }, down.stderr
    assert_all_gone(state_dir, recorded)
    print(f"dev up --detach (real worker/api): {startup:.1f} s")


@needs_postgres
def test_demo_from_nothing_then_down(stack_env: dict[str, str], state_dir: Path) -> None:
    """The README's main job: `golden-press demo` starts the whole stack and walks the story."""
    demo = run_cli(stack_env, "demo")
    try:
        recorded = recorded_stack(state_dir, demo)
        out = demo.stdout
        assert demo.returncode == 0, demo.stderr + out
        assert len(re.findall(r"^\s+issued\s+#\d", out, re.M)) == 5, out
        assert "CapReached" in out
        assert "bundle verifies offline" in out or "ok  leaf" in out, out
        assert re.search(r"redeemed [0-9a-f-]{36}", out), out
        assert "AlreadyRedeemed" in out
        assert re.search(r"Temporal Web UI: http://127\.0\.0\.1:\d+", out), out
        # Again with --json (the walk-through on stderr): one document, what each step did.
        again = run_cli(stack_env, "demo", "--json")
        doc = envelope(again.stdout, again.returncode)["demo"]
        assert doc["redeemed"]["ticket_id"] == doc["verified"]["ticket_id"]
        assert doc["second_redemption"] == {"reason": "AlreadyRedeemed"}
        assert doc["proof"]["leaf_index"] < doc["proof"]["tree_size"]
        assert doc["sagas_view"].startswith(doc["ui"]) and doc["tickets"]
        assert "Verify ticket" in again.stderr
    finally:
        down = run_cli(stack_env, "dev", "down")
    assert down.returncode == 0, down.stderr
    assert_all_gone(state_dir, recorded)
