"""`golden-press monitor` on a tiles directory: which witnesses it requires, and --follow.

Witness keys come from --witness/--quorum, else GOLDEN_WITNESSES/GOLDEN_WITNESS_QUORUM, else
the trust roots file; a checkpoint short of the quorum or with a bad cosignature exits 1.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from golden_press.cosignature import CosignatureVerifier, add_signature_lines, cosign
from golden_press.ledger_entry import EntryKind
from golden_press.models import CapScope
from golden_press.monitor import Monitor, Violation, ViolationKind
from golden_press.tiles import Tile
from service.api.tiles_http import start_tiles_server
from service.cli import app as cli
from service.cli.monitor import HttpSource
from tests.helpers.envelope import run_monitor
from tests.helpers.memlog import KEY, VERIFIER, MemLog, cap_entry, ticket_entry

W1 = SigningKey(b"\x0a" * 32)
W2 = SigningKey(b"\x0b" * 32)
KEY_PUB = bytes(KEY.verify_key)
W1_V = CosignatureVerifier("w1.example/witness", bytes(W1.verify_key))
W2_V = CosignatureVerifier("w2.example/witness", bytes(W2.verify_key))


def entries(n: int) -> list[bytes]:
    out = [cap_entry(5, CapScope.LIVE, 0)]
    out += [ticket_entry(EntryKind.VOIDED, uuid.uuid4(), s) for s in range(1, n)]
    return out


def cosigned(note: str, *keys: tuple[SigningKey, CosignatureVerifier]) -> str:
    body = note[: note.index("\n\n") + 1]
    return add_signature_lines(note, [cosign(body, k, v.name, 1_700_000_000) for k, v in keys])


def publish(directory: Path, log: MemLog, *keys: tuple[SigningKey, CosignatureVerifier]) -> Path:
    log.note = cosigned(log.note, *keys)
    return log.write_to(directory)


def json_documents(text: str) -> list[dict[str, Any]]:
    """The documents --follow --json printed, one per checkpoint (then the error envelope)."""
    decoder, docs, pos = json.JSONDecoder(), list[dict[str, Any]](), 0
    text = text.strip()
    while pos < len(text):
        doc, end = decoder.raw_decode(text, pos)
        docs.append(doc)
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return docs


async def test_witness_flags_require_their_quorum(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = publish(tmp_path, MemLog(entries(300)), (W1, W1_V))
    base = [str(directory), "--vkey", VERIFIER.vkey]
    code, doc = await run_monitor(capsys, *base, "--witness", W1_V.vkey)
    assert (code, doc["cosigned_by"], doc["tree_size"]) == (0, [W1_V.name], 300), doc
    code, doc = await run_monitor(capsys, *base, "--witness", W1_V.vkey, "--witness", W2_V.vkey)
    assert code == 1 and doc["violation"]["kind"] == "witness-quorum", doc  # type: ignore[index]
    assert W2_V.name in str(doc["violation"])
    code, doc = await run_monitor(
        capsys, *base, "--witness", W1_V.vkey, "--witness", W2_V.vkey, "--quorum", "1"
    )
    assert code == 0, doc


async def test_bad_cosignature_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = MemLog(entries(10))
    other = W2  # W1's name and key id, but signed with another key: it does not verify
    body = log.note[: log.note.index("\n\n") + 1]
    line = cosign(body, other, W1_V.name, 1_700_000_000)
    forged = type(line)(line.name, W1_V.key_id, line.signature)
    log.note = add_signature_lines(log.note, [forged])
    directory = log.write_to(tmp_path)
    code, doc = await run_monitor(capsys, str(directory), "--vkey", VERIFIER.vkey, "--quorum", "0")
    assert code == 0, doc  # no witnesses configured: the line is someone else's, ignored
    code, doc = await run_monitor(
        capsys, str(directory), "--vkey", VERIFIER.vkey, "--witness", W1_V.vkey, "--quorum", "0"
    )
    assert code == 1 and doc["violation"]["kind"] == "bad-cosignature", doc  # type: ignore[index]


async def test_witnesses_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = publish(tmp_path, MemLog(entries(20)), (W1, W1_V))
    monkeypatch.setenv(
        "GOLDEN_WITNESSES", f"{W1_V.vkey} http://127.0.0.1:1,{W2_V.vkey} http://127.0.0.1:2"
    )
    code, doc = await run_monitor(capsys, str(directory), "--vkey", VERIFIER.vkey)
    assert code == 1 and doc["violation"]["kind"] == "witness-quorum", doc  # type: ignore[index]
    monkeypatch.setenv("GOLDEN_WITNESS_QUORUM", "1")
    code, doc = await run_monitor(capsys, str(directory), "--vkey", VERIFIER.vkey)
    assert (code, doc["cosigned_by"]) == (0, [W1_V.name]), doc


def trust_roots_with_one_witness() -> dict[str, object]:
    """public-keys.json of the test log, naming witness W1 with a quorum of one."""
    return {
        "origin": VERIFIER.name,
        "ledger": [{"name": VERIFIER.name, "public_key": base64.b64encode(KEY_PUB).decode()}],
        "witnesses": [W1_V.vkey],
        "witness_quorum": 1,
    }


async def test_witnesses_from_the_trust_roots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = publish(tmp_path / "tiles", MemLog(entries(20)))
    roots = trust_roots_with_one_witness()
    keys = tmp_path / "public-keys.json"
    keys.write_text(json.dumps(roots))
    code, doc = await run_monitor(capsys, str(directory), "--keys", str(keys))
    assert code == 1 and doc["violation"]["kind"] == "witness-quorum", doc  # type: ignore[index]
    publish(directory, MemLog(entries(20)), (W1, W1_V))
    assert (await run_monitor(capsys, str(directory), "--keys", str(keys)))[0] == 0


async def test_trust_roots_default_to_the_state_dir_as_the_help_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --keys the monitor reads STATE_DIR/public-keys.json (where `keys export` writes),
    and its --help names that default (it said `public-keys.json`, i.e. the current directory)."""
    directory = publish(tmp_path / "tiles", MemLog(entries(20)), (W1, W1_V))
    roots = trust_roots_with_one_witness()
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / "public-keys.json").write_text(json.dumps(roots))
    monkeypatch.setenv("GOLDEN_STATE_DIR", str(state_dir))
    monkeypatch.chdir(tmp_path)
    assert (await run_monitor(capsys, str(directory)))[0] == 0
    with pytest.raises(SystemExit):
        cli.parse(["monitor", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--keys FILE trust roots from `keys export` (default: STATE_DIR/public-keys.json)" in (
        help_text
    ), help_text


async def test_follow_waits_for_cosignatures_then_catches_a_rollback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint published before its witness answered is looked at again, not failed."""
    all_entries = entries(300)
    directory = publish(tmp_path, MemLog(all_entries[:280]), (W1, W1_V))
    grown = MemLog(all_entries)

    def log_moves() -> None:
        time.sleep(0.4)
        grown.write_to(directory)  # the witness has not answered yet
        time.sleep(0.4)
        publish(directory, grown, (W1, W1_V))  # the witness answered: same body, cosigned
        time.sleep(0.4)
        publish(directory, MemLog(all_entries[:290]), (W1, W1_V))  # a rollback, cosigned

    mover = threading.Thread(target=log_moves)
    mover.start()
    args = [str(directory), "--vkey", VERIFIER.vkey, "--witness", W1_V.vkey, "--follow"]
    capsys.readouterr()
    code = await cli.run(["monitor", *args, "--interval", "0.05", "--json"])
    mover.join()
    out = capsys.readouterr()
    docs = json_documents(out.out)
    assert code == 1, out
    sizes = [d["monitor"]["tree_size"] for d in docs if d["ok"]]
    assert sizes[0] == 280 and sizes[-1] == 300, sizes
    assert docs[-1]["monitor"]["violation"]["kind"] == "rollback"
    assert "witness-quorum" in out.err  # the wait was said, not failed


async def test_follow_gives_up_on_a_quorum_that_never_comes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = publish(tmp_path, MemLog(entries(20)))
    args = [str(directory), "--vkey", VERIFIER.vkey, "--witness", W1_V.vkey, "--follow"]
    code = await cli.run([*["monitor", *args], "--interval", "0.05", "--quorum-wait", "0.2"])
    assert code == 1
    assert "witness-quorum" in capsys.readouterr().err


class SlowHttp(HttpSource):
    """HttpSource whose GETs read a MemLog after a short sleep, counting what is in flight."""

    def __init__(self, log: MemLog, parallel: int, missing: str = "") -> None:
        super().__init__("http://tiles.invalid/", parallel=parallel)
        self.log, self.missing = log, missing
        self.lock = threading.Lock()
        self.in_flight = self.most_in_flight = self.gets = 0

    def _get(self, path: str, limit: int) -> bytes:
        with self.lock:
            self.gets += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(0.002)
            if path == "checkpoint":
                return self.log.note.encode()
            data = self.log.files.get(path)
            if data is None or path == self.missing:
                raise OSError(f"HTTP 404 for {self.base + path}")
            return data
        finally:
            with self.lock:
                self.in_flight -= 1


def test_parallel_prefetch_is_ordered_bounded_and_verifies_the_same() -> None:
    log = MemLog(entries(256 * 9 + 17))
    sequential = Monitor(SlowHttp(log, parallel=1), [VERIFIER], VERIFIER.name)
    parallel_source = SlowHttp(log, parallel=4)
    parallel = Monitor(parallel_source, [VERIFIER], VERIFIER.name)
    assert parallel.check() == sequential.check()
    assert parallel.progress.fetches == sequential.progress.fetches == 2 * 10 + 1
    assert 1 < parallel_source.most_in_flight <= 4


def test_a_missing_tile_during_prefetch_names_that_tile_and_stops_fetching() -> None:
    log = MemLog(entries(256 * 40))
    missing = Tile(0, 3).path
    source = SlowHttp(log, parallel=4, missing=missing)
    with pytest.raises(Violation) as info:
        Monitor(source, [VERIFIER], VERIFIER.name).check()
    assert info.value.kind is ViolationKind.UNREADABLE and missing in info.value.message
    time.sleep(0.05)
    assert source.gets <= 1 + 2 * 4 + 2 * 4  # checkpoint, tiles 0..3, then at most a window


def test_over_the_tiles_server_connections_are_kept_alive(tmp_path: Path) -> None:
    """The API's tiles server speaks HTTP/1.1: a monitor reuses one connection per fetcher."""
    log = MemLog(entries(256 * 12 + 5))
    server = start_tiles_server(log.write_to(tmp_path), "127.0.0.1:0")
    connections = 0
    accept = server._server.process_request

    def counted(request: object, address: object) -> None:
        nonlocal connections
        connections += 1
        accept(request, address)  # type: ignore[arg-type]

    server._server.process_request = counted  # type: ignore[method-assign,assignment]
    try:
        source = HttpSource(f"http://127.0.0.1:{server.port}/", parallel=3)
        monitor = Monitor(source, [VERIFIER], VERIFIER.name)
        assert monitor.check().size == 256 * 12 + 5
        assert monitor.progress.fetches == 2 * 13 + 1
        assert connections <= 4  # the main thread's and at most three fetchers'
        with pytest.raises(OSError, match="HTTP 404"):
            source.read(Tile(0, 99))
        assert source.checkpoint() == log.note  # the connection survives a 404
    finally:
        server.stop()


@pytest.mark.timeout(20)  # the old code followed for ever on some of these
@pytest.mark.parametrize(
    "flags",
    [
        ["--follow", "--interval", "-1"],
        ["--follow", "--interval", "nan"],
        ["--parallel", "0"],
        ["--parallel", "-3"],
        ["--follow", "--quorum-wait", "-5"],
    ],
)
async def test_impossible_numbers_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    """A negative interval or wait, or no fetcher at all, exits 2 before reading anything (a
    negative --interval used to end a follower with time.sleep's ValueError)."""
    directory = publish(tmp_path, MemLog(entries(3)))
    capsys.readouterr()
    code = await cli.run(["monitor", str(directory), "--vkey", VERIFIER.vkey, *flags, "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert (code, doc["ok"], doc["error"]["reason"]) == (2, False, "Usage"), doc


async def test_bad_configuration_is_exit_2_never_the_violation_exit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 1 means "the log breaks a rule"; a key, witness, quorum, source or state file the
    monitor cannot use is the operator's mistake: exit 2, InvalidRequest, naming what is wrong."""
    directory = publish(tmp_path / "log", MemLog(entries(3)), (W1, W1_V))
    garbage = tmp_path / "state.json"
    garbage.write_text("not json")
    base = [str(directory), "--vkey", VERIFIER.vkey]
    cases = [
        ([str(directory), "--vkey", "not-a-vkey"], "--vkey"),
        ([*base, "--witness", "not-a-vkey"], "witnesses"),
        ([*base, "--witness", W1_V.vkey, "--quorum", "2"], "--quorum"),
        ([str(tmp_path / "missing"), "--vkey", VERIFIER.vkey], "monitor source"),
        ([*base, "--state", str(garbage)], "state file"),
    ]
    for argv, named in cases:
        capsys.readouterr()
        code = await cli.run(["monitor", *argv, "--json"])
        doc = json.loads(capsys.readouterr().out)
        assert (code, doc["error"]["reason"]) == (2, "InvalidRequest"), (argv, doc)
        assert named in doc["error"]["message"], (argv, doc)


async def test_the_source_is_closed_when_the_monitor_ends(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A source holding a connection (the gRPC channel) is closed, violation or not."""
    from service.cli import monitor as monitor_cli

    directory = publish(tmp_path, MemLog(entries(3)))
    closed: list[bool] = []

    class Closing(monitor_cli.DirectorySource):
        def close(self) -> None:
            closed.append(True)

    monkeypatch.setattr(monitor_cli, "open_source", lambda spec, parallel, tls: Closing(Path(spec)))
    code, _ = await run_monitor(capsys, str(directory), "--vkey", VERIFIER.vkey)
    assert code == 0 and closed == [True]


def _closed_port() -> int:
    """A loopback port nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(lambda: f"http://127.0.0.1:{_closed_port()}/", id="connection-refused"),
        pytest.param(lambda: "http://tiles.invalid/", id="dns"),
        pytest.param(lambda: f"grpc://127.0.0.1:{_closed_port()}", id="grpc-unavailable"),
    ],
)
@pytest.mark.usefixtures("invalid_names_fail_fast")
async def test_an_unreachable_source_is_exit_3_in_one_line_not_a_violation(
    capsys: pytest.CaptureFixture[str], source: Callable[[], str]
) -> None:
    """Exit 1 means the log breaks a rule. A source the monitor cannot reach at all says nothing
    about the log: the CLI's Unavailable (exit 3), one line, as every verb whose server is down."""
    url = source()
    capsys.readouterr()
    code = await cli.run(["monitor", url, "--vkey", VERIFIER.vkey, "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert (code, doc["ok"], doc["error"]["reason"]) == (3, False, "Unavailable"), doc
    assert "unreachable" in doc["error"]["message"], doc
    code = await cli.run(["monitor", url, "--vkey", VERIFIER.vkey])
    err = capsys.readouterr().err
    assert code == 3 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: Unavailable: ") and "Traceback" not in err, err


async def test_follow_waits_out_an_unreachable_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under --follow an unreachable source is polled again (it comes back), not an exit."""
    log = MemLog(entries(20))
    directory = publish(tmp_path / "log", log)
    state = tmp_path / "state.json"
    port = _closed_port()
    servers = []
    ended = threading.Event()

    def verified_20() -> bool:
        return state.exists() and json.loads(state.read_text())["size"] == 20

    def comes_back_then_rolls_back() -> None:
        time.sleep(0.5)
        servers.append(start_tiles_server(directory, f"127.0.0.1:{port}"))
        # Only a follower that verified size 20 sees a rollback: wait for its state file.
        deadline = time.monotonic() + 60
        while not verified_20():
            if ended.wait(0.02):
                return
            if time.monotonic() > deadline:  # ends the follower (exit 1, not a rollback)
                (directory / "checkpoint").write_text("not a checkpoint\n")
                return
        publish(directory, MemLog(log.entries[:10]))  # a rollback ends the follower

    mover = threading.Thread(target=comes_back_then_rolls_back)
    mover.start()
    args = [f"http://127.0.0.1:{port}/", "--vkey", VERIFIER.vkey, "--follow"]
    args += ["--state", str(state)]
    capsys.readouterr()
    try:
        code = await cli.run(["monitor", *args, "--interval", "0.05", "--json"])
    finally:
        ended.set()
        mover.join()
        for server in servers:
            server.stop()
    out = capsys.readouterr()
    docs = json_documents(out.out)
    assert code == 1, out
    assert next(d["monitor"]["tree_size"] for d in docs if d["ok"]) == 20, docs
    assert docs[-1]["monitor"]["violation"]["kind"] == "rollback", docs
    assert "unreachable" in out.err and "retrying" in out.err, out.err
