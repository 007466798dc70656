"""The witness over real HTTP: cosigns extensions, refuses forks and rollbacks, survives restarts.

A fake log (leaves in memory, real ledger key, RFC 9162 proofs from golden_press.merkle) talks to
the witness the way the log's submitter does.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from golden_press.checkpoint import Checkpoint, NoteVerifier, parse_signature_lines, sign_checkpoint
from golden_press.cosignature import add_signature_lines, verify_cosignatures
from golden_press.merkle import EMPTY_ROOT, consistency_proof, leaf_hash, root_hash
from golden_press.witness import add_checkpoint_body
from service.witness.client import HttpAnswer, post
from service.witness.server import (
    Witness,
    WitnessHTTPServer,
    WitnessState,
    WitnessStateError,
    start_in_thread,
)

ORIGIN = "golden-press.test/ledger"
LEDGER = SigningKey(b"\x71" * 32)
WITNESS_KEY = SigningKey(b"\x72" * 32)
NAME = "witness.test/w1"
LOGS = {ORIGIN: [NoteVerifier(ORIGIN, bytes(LEDGER.verify_key))]}
LEAVES = [leaf_hash(f"entry {i}".encode()) for i in range(64)]
FORK = [*LEAVES[:5], leaf_hash(b"the other history"), *LEAVES[6:]]


def note(size: int, leaves: list[bytes] = LEAVES) -> str:
    root = root_hash(leaves[:size]) if size else EMPTY_ROOT
    return sign_checkpoint(Checkpoint(origin=ORIGIN, size=size, root=root), LEDGER, ORIGIN)


class Served:
    """A witness on a free port over a state file; restart() is a new process's view."""

    def __init__(self, state_path: Path) -> None:
        self.state_path = state_path
        self.server: WitnessHTTPServer | None = None
        self.start()

    def start(self) -> None:
        witness = Witness(WITNESS_KEY, NAME, LOGS, WitnessState(self.state_path))
        self.server = WitnessHTTPServer(("127.0.0.1", 0), witness)
        start_in_thread(self.server)

    def stop(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def add(
        self, old: int, new: int, leaves: list[bytes] = LEAVES, proof: list[bytes] | None = None
    ) -> HttpAnswer:
        assert self.server is not None
        if proof is None:
            proof = consistency_proof(leaves, old, new) if 0 < old < new else []
        body = add_checkpoint_body(old, proof, note(new, leaves))
        return post(self.server.url + "/add-checkpoint", body)


@pytest.fixture
def witness(tmp_path: Path) -> Iterator[Served]:
    served = Served(tmp_path / "state.json")
    yield served
    served.stop()


def test_cosigns_a_new_log_and_its_extensions(witness: Served) -> None:
    answer = witness.add(0, 10)
    assert answer.status == 200, answer.body
    cosigned = add_signature_lines(note(10), parse_signature_lines(answer.body))
    assert NAME in verify_cosignatures(cosigned, [witness.server.witness.verifier])  # type: ignore[union-attr]
    assert witness.add(10, 17).status == 200
    assert witness.add(17, 17).status == 200  # the same head again: cosigned again


def test_refuses_a_rollback(witness: Served) -> None:
    assert witness.add(0, 20).status == 200
    answer = witness.add(0, 12)  # the log pretends the witness never saw size 20
    assert (answer.status, answer.body) == (409, "20\n")
    assert answer.content_type.startswith("text/x.tlog.size")
    assert witness.add(20, 12, proof=[]).status == 400  # old size beyond the checkpoint


def test_refuses_a_fork_at_the_same_size(witness: Served) -> None:
    assert witness.add(0, 20).status == 200
    answer = witness.add(20, 20, leaves=FORK)
    assert answer.status == 409 and "fork" in answer.body


def test_refuses_a_fork_that_grows(witness: Served) -> None:
    assert witness.add(0, 20).status == 200
    assert witness.add(20, 30, leaves=FORK).status == 422
    # A forged proof made to look right for the fork's root fails too.
    assert witness.add(20, 30, leaves=FORK, proof=consistency_proof(LEAVES, 20, 30)).status == 422
    assert witness.add(20, 30).status == 200  # the real history still extends


def test_state_survives_a_restart(witness: Served) -> None:
    assert witness.add(0, 20).status == 200
    witness.restart()
    assert witness.add(0, 12).status == 409  # still remembers 20
    assert witness.add(20, 20, leaves=FORK).status == 409
    assert witness.add(20, 25).status == 200
    witness.restart()
    assert witness.add(20, 25).body == "25\n"


def test_state_is_on_disk_before_the_answer(witness: Served) -> None:
    assert witness.add(0, 20).status == 200
    # No shutdown, no flush: a fresh reader (a restarted process) already sees the record.
    record = WitnessState(witness.state_path).get(ORIGIN)
    assert record is not None and record.size == 20
    assert stat.S_IMODE(os.stat(witness.state_path).st_mode) == 0o600


def test_persist_happens_before_the_cosignature_is_returned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = WitnessState(tmp_path / "state.json")
    events: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    answer = Witness(WITNESS_KEY, NAME, LOGS, state).add_checkpoint(
        add_checkpoint_body(0, [], note(3))
    )
    events.append("answer")
    assert answer.status == 200
    assert events == ["fsync", "fsync", "answer"]  # the file, then its directory


def test_a_failed_persist_gives_no_cosignature(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    witness = Witness(WITNESS_KEY, NAME, LOGS, WitnessState(tmp_path / "state.json"))

    def broken(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError):
        witness.add_checkpoint(add_checkpoint_body(0, [], note(3)))
    monkeypatch.undo()
    assert WitnessState(tmp_path / "state.json").get(ORIGIN) is None


def test_unreadable_state_refuses_to_start(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{not json")
    with pytest.raises(WitnessStateError):
        WitnessState(path)
    path.write_text(json.dumps({"version": 99, "logs": {}}))
    with pytest.raises(WitnessStateError):
        WitnessState(path)


def test_unknown_log_and_bad_signature(witness: Served) -> None:
    assert witness.server is not None
    other = sign_checkpoint(Checkpoint(origin="x.test/log", size=1, root=LEAVES[0]), LEDGER, "x")
    url = witness.server.url + "/add-checkpoint"
    assert post(url, add_checkpoint_body(0, [], other)).status == 404
    forged = sign_checkpoint(Checkpoint(origin=ORIGIN, size=1, root=LEAVES[0]), WITNESS_KEY, ORIGIN)
    assert post(url, add_checkpoint_body(0, [], forged)).status == 403
    assert post(url, b"garbage").status == 400
    assert post(witness.server.url + "/elsewhere", b"").status == 404


def test_unreachable_witness_is_status_zero() -> None:
    assert post("http://127.0.0.1:9/add-checkpoint", b"x", timeout=2).status == 0


def test_racing_submissions_never_roll_back(witness: Served) -> None:
    # Every request claims old size 0: exactly one may win, the others learn its size (409).
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda n: (n, witness.add(0, n)), range(10, 42)))
    winners = [n for n, a in answers if a.status == 200]
    assert len(winners) == 1, [(n, a.status) for n, a in answers]
    assert {a.body for _, a in answers if a.status == 409} == {f"{winners[0]}\n"}
    record = WitnessState(witness.state_path).get(ORIGIN)
    assert record is not None and record.size == winners[0]
