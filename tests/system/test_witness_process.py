"""The witness as a real process: SIGKILL right after a cosignature, restart, nothing forgotten."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

from nacl.signing import SigningKey

from golden_press.checkpoint import Checkpoint, NoteVerifier, sign_checkpoint
from golden_press.merkle import consistency_proof, leaf_hash, root_hash
from golden_press.witness import add_checkpoint_body
from service.devstack.servers import free_port
from service.witness.client import post

ORIGIN = "golden-press.test/ledger"
LEDGER = SigningKey(b"\x73" * 32)
LEAVES = [leaf_hash(f"entry {i}".encode()) for i in range(32)]


def _note(size: int) -> str:
    cp = Checkpoint(origin=ORIGIN, size=size, root=root_hash(LEAVES[:size]))
    return sign_checkpoint(cp, LEDGER, ORIGIN)


def _start(tmp_path: Path, port: int) -> tuple[subprocess.Popen[str], dict[str, object]]:
    vkey = NoteVerifier(ORIGIN, bytes(LEDGER.verify_key)).vkey
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "service.witness", "serve", f"--addr=127.0.0.1:{port}"),
            *("--key", str(tmp_path / "w.key"), "--state", str(tmp_path / "w.json")),
            *("--log", vkey),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "GOLDEN_STATE_DIR": str(tmp_path)},
    )
    assert proc.stdout is not None
    info = json.loads(proc.stdout.readline())
    return proc, info


def test_sigkill_then_restart_keeps_the_cosigned_size(tmp_path: Path) -> None:
    port = free_port()
    proc, info = _start(tmp_path, port)
    try:
        url = f"{info['url']}/add-checkpoint"
        assert info["logs"] == [ORIGIN] and str(info["vkey"]).startswith("witness.")
        assert post(url, add_checkpoint_body(0, [], _note(20))).status == 200
    finally:
        proc.send_signal(signal.SIGKILL)  # no clean shutdown: only what was fsynced survives
        proc.wait(10)
    assert stat.S_IMODE(os.stat(tmp_path / "w.key").st_mode) == 0o600

    proc, again = _start(tmp_path, port)
    try:
        assert again["vkey"] == info["vkey"]  # same key file, same identity
        url = f"{again['url']}/add-checkpoint"
        rollback = post(url, add_checkpoint_body(0, [], _note(10)))
        assert (rollback.status, rollback.body) == (409, "20\n")
        grow = add_checkpoint_body(20, consistency_proof(LEAVES, 20, 30), _note(30))
        assert post(url, grow).status == 200
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_refuses_to_start_without_a_log(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service.witness", "serve", "--key", str(tmp_path / "k")],
        capture_output=True,
        text=True,
        env={**os.environ, "GOLDEN_STATE_DIR": str(tmp_path)},
        timeout=30,
    )
    assert result.returncode == 2 and "--log" in result.stderr
    assert "Traceback" not in result.stderr


def test_refuses_a_key_file_others_can_read(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_text("AAAA\n")
    key.chmod(0o644)
    vkey = NoteVerifier(ORIGIN, bytes(LEDGER.verify_key)).vkey
    result = subprocess.run(
        [sys.executable, "-m", "service.witness", "serve", "--key", str(key), "--log", vkey],
        capture_output=True,
        text=True,
        env={**os.environ, "GOLDEN_STATE_DIR": str(tmp_path)},
        timeout=30,
    )
    assert result.returncode == 2 and "0644" in result.stderr


def test_golden_press_witness_serve_is_the_same_server(tmp_path: Path) -> None:
    """The CLI verb runs the same witness (one JSON line when it listens, SIGTERM stops it)."""
    vkey = NoteVerifier(ORIGIN, bytes(LEDGER.verify_key)).vkey
    exe = Path(sys.executable).with_name("golden-press")
    proc = subprocess.Popen(
        [str(exe), "witness", "serve", f"--addr=127.0.0.1:{free_port()}", "--log", vkey],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "GOLDEN_STATE_DIR": str(tmp_path)},
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["logs"] == [ORIGIN]
        assert (
            post(f"{info['url']}/add-checkpoint", add_checkpoint_body(0, [], _note(3))).status
            == 200
        )
        assert (tmp_path / "witness" / "state.json").is_file()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
