"""The public ledger: tiles over HTTP mirror the log, and the monitor judges real and tampered logs.

The mirror test reads the log with code written here from c2sp.org/tlog-tiles, signed-note and
RFC 6962 alone (hashlib, nacl, urllib): none of the project's ledger, tiles or checkpoint code.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import shutil
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from nacl.signing import SigningKey, VerifyKey
from temporalio.client import Client

from activities.faults import Faults
from golden_press.checkpoint import Checkpoint, NoteVerifier, sign_checkpoint
from golden_press.errors import Reason
from golden_press.ledger_entry import EntryKind, LedgerEntry, decode_any_entry
from golden_press.merkle import MerkleError, verify_consistency
from golden_press.models import Outcome, RevokeTicketInput
from golden_press.tiles import Tile, TreeBuilder, encode_bundle, encode_tile
from service.api.pb import golden_pb2, golden_pb2_grpc
from service.api.server import serve, shutdown, tiles_url
from service.api.servicer import MAX_ENTRIES_PAGE
from service.store.config import set_cap
from service.store.tile_files import TilePublisher, published_size
from tests.helpers.api import expect_error
from tests.helpers.cli_process import unconfigured_env
from tests.helpers.envelope import run_monitor
from tests.helpers.ledger import populated
from tests.helpers.servers import Servers
from tests.helpers.stack import Stack, golden_stack
from tests.helpers.waiting import wait_until
from workflows.revoke_ticket import RevokeTicketWorkflow

pytestmark = pytest.mark.asyncio(loop_scope="session")


# ---- a reader written from the specs ----------------------------------------------------------


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return bytes(resp.read())


def _headers(url: str) -> dict[str, str]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return dict(resp.headers)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _mth(hashes: list[bytes]) -> bytes:
    """RFC 6962 2.1: MTH over leaf hashes, split at the largest power of two below n."""
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return hashlib.sha256(b"\x01" + _mth(hashes[:k]) + _mth(hashes[k:])).digest()


def _index_path(n: int) -> str:
    """tlog-tiles: zero-padded 3-digit elements, all but the last prefixed with x."""
    parts = [f"{n % 1000:03d}"]
    while n >= 1000:
        n //= 1000
        parts.insert(0, f"x{n % 1000:03d}")
    return "/".join(parts)


def mirror(base: str, origin: str, public_key: bytes) -> tuple[int, bytes, list[bytes]]:
    """Fetch checkpoint, verify its Ed25519 line, fetch every entry bundle and every hash tile
    (all levels), rebuild the root from the entries; return (size, root, entries)."""
    note = _get(base + "checkpoint").decode()
    body, _, sigs = note.partition("\n\n")
    body += "\n"
    key_id = hashlib.sha256(origin.encode() + b"\n\x01" + public_key).digest()[:4]
    verified = False
    for line in sigs.splitlines():
        name, blob = line.removeprefix("\u2014 ").split(" ")
        raw = base64.b64decode(blob)
        if name == origin and raw[:4] == key_id:
            VerifyKey(public_key).verify(body.encode(), raw[4:])
            verified = True
    assert verified, "no signature by the ledger key"
    origin_line, size_line, root_line = body.splitlines()[:3]
    assert origin_line == origin
    size, root = int(size_line), base64.b64decode(root_line)
    entries: list[bytes] = []
    leaves: list[bytes] = []
    for n in range((size + 255) // 256):
        width = min(256, size - 256 * n)
        suffix = "" if width == 256 else f".p/{width}"
        bundle = _get(f"{base}tile/entries/{_index_path(n)}{suffix}")
        tile = _get(f"{base}tile/0/{_index_path(n)}{suffix}")
        pos = 0
        while pos < len(bundle):
            length = int.from_bytes(bundle[pos : pos + 2], "big")
            entries.append(bundle[pos + 2 : pos + 2 + length])
            pos += 2 + length
        hashes = [hashlib.sha256(b"\x00" + e).digest() for e in entries[256 * n :]]
        assert tile == b"".join(hashes)
        leaves += hashes
    assert len(entries) == size
    # Levels 1 and up: hash i of tile n at level l is the MTH of the 256 level l-1 hashes of
    # level l-1 tile (256n + i), i.e. of leaves [(256n + i) 256^l, (256n + i + 1) 256^l).
    below, level = leaves, 1
    while size >> (8 * level):
        here = [_mth(below[256 * j : 256 * (j + 1)]) for j in range(size >> (8 * level))]
        for n in range((len(here) + 255) // 256):
            width = min(256, len(here) - 256 * n)
            suffix = "" if width == 256 else f".p/{width}"
            tile = _get(f"{base}tile/{level}/{_index_path(n)}{suffix}")
            assert tile == b"".join(here[256 * n : 256 * n + width]), f"level {level} tile {n}"
        below, level = here, level + 1
    rebuilt = _mth(leaves) if leaves else hashlib.sha256(b"").digest()
    assert rebuilt == root, f"tiles give root {rebuilt.hex()}, the checkpoint says {root.hex()}"
    return size, rebuilt, entries


# ---- a real stack with tiles ---------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def tiles_stack(
    servers: Servers, session_dir: Path, client: Client
) -> AsyncIterator[tuple[Stack, Faults]]:
    """A stack whose worker publishes tiles (and whose API, when served, serves them)."""
    tiles = session_dir / f"tiles-{uuid.uuid4().hex[:8]}"
    faults = Faults()
    async with golden_stack(
        servers, session_dir, client, faults=faults, tiles_dir=tiles, http_addr="127.0.0.1:0"
    ) as stack:
        yield stack, faults


async def wait_published(stack: Stack, timeout: float = 20.0) -> int:
    """Until the tiles directory shows the ledger's full size (the publisher runs async)."""
    assert stack.settings.tiles_dir is not None
    want = await stack.pool.fetchval("SELECT count(*) FROM ledger_entries")
    for _ in range(int(timeout * 20)):
        if published_size(stack.settings.tiles_dir) == want:
            return int(want)
        await asyncio.sleep(0.05)
    raise AssertionError(f"tiles stuck at {published_size(stack.settings.tiles_dir)} of {want}")


async def every_kind(stack: Stack, faults: Faults) -> None:
    """issue, redeem, revoke, a compensated issuance (void) and cap changes."""
    faults.plan["sign"] = "fail"
    assert (await stack.issue("unlucky")).outcome == Outcome.COMPENSATED  # a `voided` entry
    faults.plan.clear()
    ids = await populated(stack)
    await stack.client.execute_workflow(
        RevokeTicketWorkflow.run,
        RevokeTicketInput(ticket_id=ids[1], reason="fraud"),
        id=f"revoke-{ids[1]}",
        task_queue=stack.settings.task_queue,
    )
    await set_cap(stack.settings.pg_dsn, 2, "live")  # below nothing: 1 live ticket
    await set_cap(stack.settings.pg_dsn, 4, "lifetime")  # 3 issued ever: one more allowed
    assert (await stack.issue("dee")).outcome == Outcome.ISSUED
    assert (await stack.issue("eve")).outcome == Outcome.REJECTED  # CapReached
    await set_cap(stack.settings.pg_dsn, 5, "live")


@asynccontextmanager
async def mirrored(
    stack: Stack, size: int
) -> AsyncIterator[tuple[object, str, bytes, list[bytes]]]:
    """Serve the stack's tiles over HTTP and mirror them with the spec-written reader.

    Yields (server, base URL, root, entries) once the mirrored tree matches the stack's latest
    checkpoint at `size`; the server is shut down after the block.
    """
    server = await serve(
        stack.settings, pool=stack.pool, client=stack.client, address="127.0.0.1:0"
    )
    try:
        base = tiles_url(server)
        assert base is not None
        got_size, root, entries = await asyncio.to_thread(
            mirror, base, stack.settings.ledger_origin, bytes(stack.keys.ledger.verify_key)
        )
        async with stack.pool.acquire() as conn:
            head = await stack.ledger.latest_checkpoint(conn)
        assert (got_size, root) == (size, head.root) == (head.size, head.root)
        yield server, base, root, entries
    finally:
        await shutdown(server)


def vkey_of(stack: Stack) -> str:
    return NoteVerifier(stack.settings.ledger_origin, bytes(stack.keys.ledger.verify_key)).vkey


async def test_tiles_over_http_mirror_the_log_and_the_monitor_passes(
    tiles_stack: tuple[Stack, Faults], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    stack, faults = tiles_stack
    await every_kind(stack, faults)
    size = await wait_published(stack)
    async with mirrored(stack, size) as (server, base, root, entries):
        kinds = [decode_any_entry(e).kind for e in entries]
        assert set(kinds) == {
            "cap",
            EntryKind.ISSUED,
            EntryKind.REDEEMED,
            EntryKind.REVOKED,
            EntryKind.VOIDED,
        }

        # Headers: immutable tiles, a mutable checkpoint, no traversal.
        bundle_headers = await asyncio.to_thread(_headers, f"{base}tile/entries/000.p/{size}")
        assert bundle_headers["Content-Type"] == "application/octet-stream"
        assert "immutable" in bundle_headers["Cache-Control"]
        checkpoint_headers = await asyncio.to_thread(_headers, base + "checkpoint")
        assert checkpoint_headers["Content-Type"] == "text/plain; charset=utf-8"
        assert "immutable" not in checkpoint_headers["Cache-Control"]
        for bad in ("tile/0/../../checkpoint", "tile/0/%2e%2e/000", "../etc/passwd", "tile/0/1"):
            assert await asyncio.to_thread(_status, base + bad) == 404, bad

        state = tmp_path / "monitor-state.json"
        vkey = vkey_of(stack)
        code, doc = await run_monitor(capsys, base, "--vkey", vkey, "--state", str(state))
        assert (code, doc["violation"], doc["tree_size"]) == (0, None, size), doc
        code, doc = await run_monitor(
            capsys, str(stack.settings.tiles_dir), "--vkey", vkey, "--state", str(state)
        )
        assert code == 0, doc
        addr = f"127.0.0.1:{server.golden_port}"  # type: ignore[attr-defined]
        code, doc = await run_monitor(capsys, f"grpc://{addr}", "--vkey", vkey)
        assert code == 0, doc

        # gRPC: entries pages and consistency proofs.
        from grpc import aio

        async with aio.insecure_channel(addr) as channel:
            stub = golden_pb2_grpc.GoldenPressStub(channel)
            page = await stub.GetEntries(golden_pb2.GetEntriesRequest(start=0, end=size))
            assert list(page.entries) == entries
            # Every (first, second) pair: the proof verifies (RFC 9162 2.1.4.2, the project's
            # verifier) from the first root, which the spec-written reader rebuilds from the
            # mirrored entries, to the checkpoint's root.
            leaves = [hashlib.sha256(b"\x00" + e).digest() for e in entries]
            for first in range(1, size + 1):
                for second in (first, (first + size) // 2, size):
                    proof = await stub.GetConsistencyProof(
                        golden_pb2.GetConsistencyProofRequest(first=first, second=second)
                    )
                    assert proof.first_root == _mth(leaves[:first])
                    assert proof.second_root == _mth(leaves[:second])
                    verify_consistency(
                        first, second, proof.first_root, proof.second_root, list(proof.proof)
                    )
            proof = await stub.GetConsistencyProof(
                golden_pb2.GetConsistencyProofRequest(first=2, second=size)
            )
            assert proof.second_root == root and len(proof.proof) > 0
            forged = [bytes([proof.proof[0][0] ^ 1]) + proof.proof[0][1:], *proof.proof[1:]]
            with pytest.raises(MerkleError):  # the check has teeth: a flipped hash fails it
                verify_consistency(2, size, proof.first_root, root, forged)

            # Bad arguments: INVALID_ARGUMENT with an ErrorInfo, never a partial answer.
            bad_proofs = {
                "first > second": (3, 2),
                "first 0": (0, size),
                "negative first": (-1, 2),
                "second beyond the tree": (1, size + 1),
                "both beyond the tree": (size + 1, size + 2),
            }
            for first, second in bad_proofs.values():
                await expect_error(
                    stub.GetConsistencyProof(
                        golden_pb2.GetConsistencyProofRequest(first=first, second=second)
                    ),
                    grpc.StatusCode.INVALID_ARGUMENT,
                    Reason.INVALID_REQUEST,
                )
            bad_pages = {
                "start > end": (3, 2),
                "empty": (0, 0),
                "negative start": (-1, 2),
                "end beyond the checkpoint": (size - 1, size + 1),
                "over-long page": (0, MAX_ENTRIES_PAGE + 1),
                "over-long page past the tree": (size, size + MAX_ENTRIES_PAGE + 1),
            }
            for start, end in bad_pages.values():
                await expect_error(
                    stub.GetEntries(golden_pb2.GetEntriesRequest(start=start, end=end)),
                    grpc.StatusCode.INVALID_ARGUMENT,
                    Reason.INVALID_REQUEST,
                )


def voided_entries(count: int) -> list[LedgerEntry]:
    """`count` VOIDED entries (serials 1..count) to append straight to the ledger: a log of
    hundreds of entries without as many issuances through the sagas."""
    return [
        LedgerEntry(
            kind=EntryKind.VOIDED,
            ticket_id=uuid.uuid4(),
            serial=i,
            user_commitment="ab" * 32,
            at=datetime.now(UTC),
            reason="test",
        )
        for i in range(1, count + 1)
    ]


async def test_tiles_over_http_mirror_a_log_past_one_full_tile(
    tiles_stack: tuple[Stack, Faults],
) -> None:
    """The spec-written mirror over a log of 300+ entries: a full level-0 tile and bundle, a
    partial one, and a level-1 partial tile. The entries are appended straight to the ledger
    (300 issuances through the sagas would be slow), then published by the stack's worker."""
    stack, _ = tiles_stack
    assert (await stack.issue("ivy")).outcome == Outcome.ISSUED
    async with stack.pool.acquire() as conn, conn.transaction():
        await stack.ledger.append_many(conn, voided_entries(300))
    assert (await stack.issue("jon")).outcome == Outcome.ISSUED  # a checkpoint past the batch
    size = await wait_published(stack)
    assert size >= 302
    async with mirrored(stack, size) as (_, base, _, entries):
        assert len(await asyncio.to_thread(_get, f"{base}tile/0/000")) == 256 * 32
        assert len(await asyncio.to_thread(_get, f"{base}tile/1/000.p/1")) == 32
        kinds = [decode_any_entry(e).kind for e in entries]
        assert kinds.count(EntryKind.VOIDED) == 300 and kinds.count(EntryKind.ISSUED) == 2


# ---- tampered copies -------------------------------------------------------------------------


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def write_log(directory: Path, entries: list[bytes], key: SigningKey, origin: str) -> None:
    """A test-only log (tiles and a checkpoint signed by `key`)."""
    builder = TreeBuilder()

    def put(tile: Tile, hashes: list[bytes]) -> None:
        for path, data in [(tile.path, encode_tile(hashes))] + (
            [(tile.bundle().path, encode_bundle(entries[tile.index * 256 :][: tile.width]))]
            if tile.level == 0
            else []
        ):
            (directory / path).parent.mkdir(parents=True, exist_ok=True)
            (directory / path).write_bytes(data)

    for e in entries:
        for tile, hashes in builder.add_entry(e):
            put(tile, hashes)
    for tile, hashes in builder.partial_tiles():
        put(tile, hashes)
    cp = Checkpoint(origin=origin, size=len(entries), root=builder.root())
    (directory / "checkpoint").write_text(sign_checkpoint(cp, key, origin))


async def test_monitor_fails_on_each_tampered_copy(
    tiles_stack: tuple[Stack, Faults], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    stack, faults = tiles_stack
    await every_kind(stack, faults)
    size = await wait_published(stack)
    assert stack.settings.tiles_dir is not None
    origin, key, vkey = stack.settings.ledger_origin, stack.keys.ledger, vkey_of(stack)
    state = tmp_path / "state.json"
    assert (
        await run_monitor(
            capsys, str(stack.settings.tiles_dir), "--vkey", vkey, "--state", str(state)
        )
    )[0] == 0
    _, _, entries = await asyncio.to_thread(mirror_dir, stack.settings.tiles_dir)

    published = stack.settings.tiles_dir

    def copy(name: str) -> Path:
        target = tmp_path / name
        shutil.copytree(published, target, ignore=shutil.ignore_patterns(".lock"))
        return target

    cases: dict[str, tuple[Path, str]] = {}
    tile = copy("tile")
    flip(tile / f"tile/0/000.p/{size}", 40)
    cases["tile"] = (tile, "tampered-tile")
    bundle = copy("bundle")
    flip(bundle / f"tile/entries/000.p/{size}", 60)
    cases["entry"] = (bundle, "tampered-entry-bundle")
    forged = copy("forged")
    write_log(forged, entries, SigningKey.generate(), origin)
    cases["forged checkpoint"] = (forged, "bad-checkpoint")
    fork = tmp_path / "fork"
    other = list(entries)
    other[1], other[2] = other[2], other[1]  # same size, same entries, another order
    write_log(fork, other, key, origin)
    cases["fork vs the state file"] = (fork, "fork")
    sixth = tmp_path / "sixth"
    issued = [e for e in entries if decode_any_entry(e).kind is EntryKind.ISSUED]
    write_log(sixth, forged_six(issued[0]), key, origin)
    cases["sixth live ticket"] = (sixth, "over-cap")
    for name, (directory, kind) in cases.items():
        # The test-only log is smaller than the real one: judged fresh, not as a rollback.
        with_state = [] if name == "sixth live ticket" else ["--state", str(state)]
        code, doc = await run_monitor(capsys, str(directory), "--vkey", vkey, *with_state)
        violation = doc.get("violation")
        assert code == 1 and isinstance(violation, dict), (name, doc)
        assert violation["kind"] == kind, (name, doc)


def forged_six(template: bytes) -> list[bytes]:
    """Six live tickets (fresh ids, serials 1..6) cut from one real `issued` entry's bytes."""
    text = template.decode()
    out = []
    for serial in range(1, 7):
        lines = [
            f"ticket_id={uuid.uuid4()}"
            if line.startswith("ticket_id=")
            else f"serial={serial}"
            if line.startswith("serial=")
            else line
            for line in text.split("\n")
        ]
        out.append("\n".join(lines).encode())
    return out


def mirror_dir(directory: Path) -> tuple[int, bytes, list[bytes]]:
    """The entries of a tiles directory (the project's decoder: only to build tampered copies)."""
    from service.cli.monitor import DirectorySource

    source = DirectorySource(directory)
    size = published_size(directory)
    entries: list[bytes] = []
    from golden_press.tiles import decode_bundle, tile_width_at

    for n in range((size + 255) // 256):
        width = tile_width_at(0, n, size)
        data = source.read(Tile(-1, n, width))
        assert data is not None
        entries += decode_bundle(data, width)
    return size, b"", entries


# ---- the publisher: catch-up, immutability, unsigned cap entries ------------------------------


async def test_publisher_catches_up_idempotently_and_never_rewrites_full_tiles(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """300 entries, a crash that lost the checkpoint and a partial tile, growth, a cap change."""
    directory = tmp_path / "tiles"
    publisher = TilePublisher(directory, stack.ledger)
    entries = voided_entries(300)
    async with stack.pool.acquire() as conn, conn.transaction():
        await stack.ledger.append_many(conn, entries[:290])
    assert await publisher.catch_up(stack.pool) == 290
    full = directory / "tile/0/000"
    stamp = full.stat().st_mtime_ns
    assert (directory / "tile/0/001.p/34").exists() and (directory / "tile/1/000.p/1").exists()

    # A crash after some tiles but before the checkpoint: the next catch-up repairs it.
    (directory / "checkpoint").unlink()
    (directory / "tile/0/001.p/34").unlink()
    async with stack.pool.acquire() as conn, conn.transaction():
        await stack.ledger.append_many(conn, entries[290:])
    assert await publisher.catch_up(stack.pool) == 300
    assert await publisher.catch_up(stack.pool) == 300  # idempotent
    assert full.stat().st_mtime_ns == stamp  # immutable: never rewritten
    assert (directory / "tile/0/001.p/44").exists()

    # set-cap appends without the ledger key; a publisher holding it signs the tail (this
    # one, or the stack's worker, whichever runs first).
    await set_cap(stack.settings.pg_dsn, 7, "live")
    async with stack.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM ledger_entries") == 301
    assert await publisher.catch_up(stack.pool) == 301
    vkey = vkey_of(stack)
    code, doc = await run_monitor(capsys, str(directory), "--vkey", vkey)
    assert (code, doc["tree_size"]) == (0, 301), doc


def _tiles_of(directory: Path, size: int, leaves: list[bytes], entries: list[bytes]) -> None:
    """Every tile and bundle of a tree of `size` is on disk and holds what the spec says: at
    level l, hash i of tile n is the MTH of leaves [(256n + i) 256^l, (256n + i + 1) 256^l)."""
    level = 0
    while size >> (8 * level):
        span = 256**level
        count = size >> (8 * level)  # hashes at this level
        for n in range((count + 255) // 256):
            width = min(256, count - 256 * n)
            suffix = "" if width == 256 else f".p/{width}"
            path = directory / f"tile/{level}/{_index_path(n)}{suffix}"
            assert path.exists(), f"size {size}: no {path.relative_to(directory)}"
            want = [
                _mth(leaves[(256 * n + i) * span : (256 * n + i + 1) * span]) for i in range(width)
            ]
            assert path.read_bytes() == b"".join(want), f"size {size}: {path} hashes wrong"
            if level == 0:
                bundle = directory / f"tile/entries/{_index_path(n)}{suffix}"
                assert bundle.exists(), f"size {size}: no {bundle.relative_to(directory)}"
                assert bundle.read_bytes() == b"".join(
                    len(e).to_bytes(2, "big") + e for e in entries[256 * n :][:width]
                )
        level += 1


async def test_publisher_writes_the_partial_tiles_of_every_checkpointed_size(
    stack: Stack, tmp_path: Path
) -> None:
    """tlog-tiles: a log MUST serve the partial tiles of every tree size it made a checkpoint
    for, not only the newest. Several appends (each with its checkpoint) between two catch-ups:
    after the second, every checkpointed size's tiles and bundles exist and hash to its root."""
    directory = tmp_path / "tiles"
    publisher = TilePublisher(directory, stack.ledger)

    async def append(count: int) -> None:
        async with stack.pool.acquire() as conn, conn.transaction():
            await stack.ledger.append_many(conn, voided_entries(count))

    base = await stack.pool.fetchval("SELECT count(*) FROM ledger_entries")
    await append(3)
    assert await publisher.catch_up(stack.pool) == base + 3
    for count in (4, 250, 2, 261):  # crosses a full level-0 tile and grows level 1
        await append(count)
    size = await publisher.catch_up(stack.pool)
    assert size == base + 520
    rows = await stack.pool.fetch(
        "SELECT tree_size, root FROM ledger_checkpoints WHERE tree_size > 0 ORDER BY tree_size"
    )
    assert [r["tree_size"] - base for r in rows if r["tree_size"] > base] == [3, 7, 257, 259, 520]
    stored = await stack.pool.fetch("SELECT entry FROM ledger_entries ORDER BY leaf_index")
    entries = [bytes(r["entry"]) for r in stored]
    leaves = [hashlib.sha256(b"\x00" + e).digest() for e in entries]
    for row in rows:
        checkpointed = row["tree_size"]
        _tiles_of(directory, checkpointed, leaves[:checkpointed], entries[:checkpointed])
        assert _mth(leaves[:checkpointed]) == bytes(row["root"])
    assert published_size(directory) == size


# ---- monitor --follow on a live log --------------------------------------------------------------


def _documents(text: str) -> list[dict[str, object]]:
    """The JSON documents `monitor --follow --json` printed, in order."""
    decoder, docs, pos, text = json.JSONDecoder(), [], 0, text.strip()
    while pos < len(text):
        doc, pos = decoder.raw_decode(text, pos)
        docs.append(doc)
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return docs


async def test_monitor_follow_verifies_appends_over_http_then_exits_1_on_a_fork(
    tiles_stack: tuple[Stack, Faults], tmp_path: Path
) -> None:
    """A `golden-press monitor --follow` process over the API's tiles: it verifies entries
    appended while it follows, then a forked checkpoint (same size, another root, signed by the
    real ledger key) makes it exit 1 naming the fork."""
    stack, _ = tiles_stack
    assert stack.settings.tiles_dir is not None
    assert (await stack.issue("fay")).outcome == Outcome.ISSUED
    first = await wait_published(stack)
    server = await serve(
        stack.settings, pool=stack.pool, client=stack.client, address="127.0.0.1:0"
    )
    state = tmp_path / "follow-state.json"
    env = unconfigured_env(PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    argv = ["monitor", str(tiles_url(server)), "--vkey", vkey_of(stack), "--follow"]
    argv += ["--interval", "0.1", "--state", str(state), "--json"]
    follower = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli.app", *argv, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip

    async def verified(size: int) -> bool:
        if follower.returncode is not None:
            raise AssertionError(f"the follower exited early ({follower.returncode})")
        return state.exists() and json.loads(state.read_text())["size"] == size

    try:
        await wait_until(lambda: verified(first), timeout=60)
        # Appended while it follows: issue, redeem, issue.
        gus = await stack.issue("gus")
        assert gus.outcome == Outcome.ISSUED and gus.ticket_id
        assert await stack.redeem(gus.ticket_id, "gus", await stack.bundle_for(gus.ticket_id))
        assert (await stack.issue("hal")).outcome == Outcome.ISSUED
        grown = await wait_published(stack)
        assert grown == first + 3
        await wait_until(lambda: verified(grown), timeout=60)

        # The log now shows a fork of the size the follower verified, properly signed.
        forked = sign_checkpoint(
            Checkpoint(origin=stack.settings.ledger_origin, size=grown, root=b"\x42" * 32),
            stack.keys.ledger,
            stack.settings.ledger_origin,
        )
        tmp = stack.settings.tiles_dir / "checkpoint.forged"
        tmp.write_text(forked)
        tmp.replace(stack.settings.tiles_dir / "checkpoint")
        out, err = await asyncio.wait_for(follower.communicate(), timeout=60)
    finally:
        if follower.returncode is None:
            follower.kill()
            await follower.wait()
        await shutdown(server)
    assert follower.returncode == 1, err.decode()[-2000:]
    docs = _documents(out.decode())
    sizes = [d["monitor"]["tree_size"] for d in docs if d["ok"]]  # type: ignore[index]
    assert sizes[0] == first and sizes[-1] == grown, sizes
    assert sizes == sorted(sizes)
    violation = docs[-1]["monitor"]["violation"]  # type: ignore[index]
    assert violation["kind"] == "fork", docs[-1]
    assert json.loads(state.read_text())["size"] == grown  # the state keeps the good checkpoint
