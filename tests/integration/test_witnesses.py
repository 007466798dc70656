"""A real log with a real witness: cosigned checkpoints, redemption under quorum 1 end to end, and
a witness outage that delays cosignatures but never issuance (docs/witnesses.md)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import grpc
import pytest
from temporalio.client import Client

from golden_press.bundle import load_bundle, load_trust_roots, verify_bundle
from golden_press.checkpoint import CheckpointError, NoteVerifier, parse_note
from golden_press.cosignature import WitnessPolicy, verify_cosignatures
from golden_press.errors import Reason
from service.api.pb import golden_pb2
from service.cli import app as cli
from service.cli.client import Api, Endpoint
from service.cli.keys import public_keys_json
from service.store.cosignatures import latest_cosigned_size
from service.store.ledger import LedgerStore
from service.store.tile_files import TilePublisher
from service.witness.submitter import Submitter
from tests.helpers.api import ServedApi as ApiHandle
from tests.helpers.api import expect_error as expect
from tests.helpers.api import served_api
from tests.helpers.envelope import run_monitor
from tests.helpers.servers import Servers
from tests.helpers.witness import WITNESS_NAME, stack_with_witness

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def cosigned_checkpoint(api: ApiHandle, size: int, timeout: float = 30.0) -> str:
    """Wait until GetCheckpoint serves a checkpoint of >= size carrying the witness's line."""
    deadline = asyncio.get_running_loop().time() + timeout
    last = ""
    while asyncio.get_running_loop().time() < deadline:
        cp = await api.stub.GetCheckpoint(golden_pb2.GetCheckpointRequest())
        last = cp.checkpoint
        if cp.tree_size >= size and any(
            s.name == WITNESS_NAME for s in parse_note(cp.checkpoint).signatures
        ):
            return str(cp.checkpoint)
        await asyncio.sleep(0.1)
    raise AssertionError(f"no cosigned checkpoint of size >= {size}; last:\n{last}")


async def test_redemption_under_quorum_one_end_to_end(
    servers: Servers, session_dir: Path, client: Client
) -> None:
    """Issue, the witness cosigns, the holder's bundle carries the cosignature and redeems."""
    async with stack_with_witness(servers, session_dir, client, "1") as (stack, witness):
        witness.start()
        async with served_api(stack) as api:
            issued = await api.issue("charlie")
            ticket = issued.ticket
            note = await cosigned_checkpoint(api, ticket.leaf_index + 1)
            assert verify_cosignatures(note, [witness.verifier]).keys() == {WITNESS_NAME}

            bundle_json = await api.bundle(ticket.ticket_id)
            bundle = load_bundle(bundle_json)
            policy = WitnessPolicy((witness.verifier,), 1)
            opened = policy.open(bundle.checkpoint, [NoteVerifier.from_vkey(witness.ledger.vkey)])
            assert WITNESS_NAME in opened.cosigned_by

            # Offline: public-keys.json carries the witness vkey and the quorum.
            roots = load_trust_roots(
                await public_keys_json(Api(Endpoint(address=api.address, token="", dsn="")))
            )
            assert roots.witnesses == [witness.verifier.vkey] and roots.witness_quorum == 1
            assert roots.ledger[0].name == roots.ledger[0].origin == "golden-press.test/ledger"
            verify_bundle(bundle, roots)

            resp = await api.stub.RedeemTicket(
                golden_pb2.RedeemTicketRequest(
                    ticket_id=ticket.ticket_id, user_id="charlie", bundle_json=bundle_json
                ),
                metadata=api.auth,
            )
            assert resp.HasField("leaf_index")
            # The state file the witness fsynced follows the log.
            record = json.loads(witness.state.read_text())["logs"]["golden-press.test/ledger"]
            assert record["size"] >= ticket.leaf_index + 1


async def test_a_witness_outage_leaves_issuance_working(
    servers: Servers, session_dir: Path, client: Client
) -> None:
    """Witness down: tickets issue, checkpoints go uncosigned and redemption waits for the quorum;
    witness back: the submitter catches up and the same bundle redeems."""
    async with stack_with_witness(servers, session_dir, client, "1") as (stack, witness):
        async with served_api(stack) as api:  # the witness is not running
            issued = [await api.issue(f"user-{i}") for i in range(3)]
            assert all(r.ticket.state == golden_pb2.TICKET_STATE_ISSUED for r in issued)
            cp = await api.stub.GetCheckpoint(golden_pb2.GetCheckpointRequest())
            assert cp.tree_size >= 3
            assert not any(s.name == WITNESS_NAME for s in parse_note(cp.checkpoint).signatures)

            ticket = issued[0].ticket
            bundle_json = await api.bundle(ticket.ticket_id)
            redeem = golden_pb2.RedeemTicketRequest(
                ticket_id=ticket.ticket_id, user_id="user-0", bundle_json=bundle_json
            )
            # Not trusted yet: no witness has seen this checkpoint. Nothing is written.
            await expect(
                api.stub.RedeemTicket(redeem, metadata=api.auth),
                grpc.StatusCode.INVALID_ARGUMENT,
                Reason.BAD_CHECKPOINT,
            )

            witness.start()  # the outage ends: cosignatures arrive within the backoff
            await cosigned_checkpoint(api, cp.tree_size, timeout=60)
            # The old bundle (fetched before the cosignature existed) now redeems: the proof
            # step adds the cosignatures the log stored for that very checkpoint.
            retry = golden_pb2.RedeemTicketRequest(
                ticket_id=ticket.ticket_id, user_id="user-0", bundle_json=bundle_json
            )
            resp = await api.stub.RedeemTicket(retry, metadata=api.auth)
            assert resp.HasField("leaf_index")


async def test_bundle_without_quorum_is_refused_offline(
    servers: Servers, session_dir: Path, client: Client
) -> None:
    """A ledger-signed checkpoint without the witness's cosignature is not trusted offline."""
    async with stack_with_witness(servers, session_dir, client, "1") as (stack, _witness):
        async with served_api(stack) as api:
            issued = await api.issue("dana")
            bundle = load_bundle(await api.bundle(issued.ticket.ticket_id))
            roots = load_trust_roots(
                await public_keys_json(Api(Endpoint(address=api.address, token="", dsn="")))
            )
            with pytest.raises(CheckpointError, match="needs 1"):
                verify_bundle(bundle, roots)


class _FlakyLedger:
    """A read-only ledger store whose first reads fail (a stack still starting up)."""

    def __init__(self, real: LedgerStore, failures: int) -> None:
        self._real = real
        self.failures = failures

    async def latest_checkpoint(self, conn: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("not ready yet")
        return await self._real.latest_checkpoint(conn)

    async def consistency_proof(self, conn: Any, size1: int, size2: int) -> list[bytes]:
        return await self._real.consistency_proof(conn, size1, size2)


async def test_the_submitter_survives_its_own_errors(
    servers: Servers, session_dir: Path, client: Client
) -> None:
    """An unexpected error in a submission pass is logged and retried, never the end of
    cosigning (it once killed the background task silently on a stack still starting)."""
    async with stack_with_witness(servers, session_dir, client, "1") as (stack, witness):
        witness.start()
        await stack.issue("erin")
        flaky = _FlakyLedger(LedgerStore.read_only(stack.settings.ledger_origin), failures=1)
        submitter = Submitter(flaky, stack.settings.witness_list(), poll_s=0.05)  # type: ignore[arg-type]
        stop = asyncio.Event()
        task = asyncio.create_task(submitter.run(stack.settings.pg_dsn, stop, retry_s=0.1))
        try:
            for _ in range(200):
                if await latest_cosigned_size(stack.pool, WITNESS_NAME):
                    break
                await asyncio.sleep(0.05)
            assert flaky.failures == 0 and not task.done()
            assert await latest_cosigned_size(stack.pool, WITNESS_NAME) == 1
        finally:
            stop.set()
            await task


async def test_published_tiles_checkpoint_gains_the_cosignature(
    servers: Servers, session_dir: Path, client: Client, tmp_path: Path
) -> None:
    """The tiles `checkpoint` file written before the witness answered is republished with the
    cosignature line (same body: the published checkpoint never moves)."""
    async with stack_with_witness(servers, session_dir, client, "1") as (stack, witness):
        await stack.issue("frank")
        publisher = TilePublisher(tmp_path / "tiles", stack.ledger)
        size = await publisher.catch_up(stack.pool)
        first = (tmp_path / "tiles" / "checkpoint").read_text()
        assert size >= 1 and WITNESS_NAME not in first
        witness.start()
        submitter = Submitter(
            LedgerStore.read_only(stack.settings.ledger_origin), stack.settings.witness_list()
        )
        async with stack.pool.acquire() as conn:
            assert await submitter.step(conn) == 1
        assert await publisher.catch_up(stack.pool) == size
        second = (tmp_path / "tiles" / "checkpoint").read_text()
        assert second.startswith(first) and WITNESS_NAME in second
        assert verify_cosignatures(second, [witness.verifier]).keys() == {WITNESS_NAME}


async def test_the_submitter_wakes_on_a_new_checkpoint_not_on_its_poll(
    servers: Servers, session_dir: Path, client: Client
) -> None:
    """A new checkpoint NOTIFYs `golden_ledger`: the submitter sends it to the witness at once,
    although its safety poll (here a minute) is far away."""
    async with stack_with_witness(servers, session_dir, client, "1") as (stack, witness):
        witness.start()
        submitter = Submitter(
            LedgerStore.read_only(stack.settings.ledger_origin),
            stack.settings.witness_list(),
            poll_s=60.0,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(submitter.run(stack.settings.pg_dsn, stop))
        try:
            await asyncio.sleep(0.5)  # elected, listening, first pass done
            assert (await stack.issue("gail")).outcome == "issued"
            for _ in range(100):  # 10 s: only a wake-up, never the 60 s poll, gets there
                if await latest_cosigned_size(stack.pool, WITNESS_NAME) == 1:
                    break
                await asyncio.sleep(0.1)
            assert await latest_cosigned_size(stack.pool, WITNESS_NAME) == 1
            assert not task.done()
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)


async def test_the_monitor_holds_a_real_log_to_its_witness_quorum(
    servers: Servers,
    session_dir: Path,
    client: Client,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`golden-press monitor --keys public-keys.json` (witness vkey, quorum 1, from the API)
    passes the cosigned published checkpoint and exits 1 when the cosignature is stripped
    (witness-quorum) or altered (bad-cosignature)."""
    async with stack_with_witness(servers, session_dir, client, "1") as (stack, witness):
        witness.start()
        async with served_api(stack) as api:
            issued = await api.issue("ivy")
            await cosigned_checkpoint(api, issued.ticket.leaf_index + 1)
            keys = tmp_path / "public-keys.json"
            keys.write_text(
                await public_keys_json(Api(Endpoint(address=api.address, token="", dsn="")))
            )
        tiles = tmp_path / "tiles"
        await TilePublisher(tiles, stack.ledger).catch_up(stack.pool)
        published = (tiles / "checkpoint").read_text()
        line = next(x for x in published.splitlines() if x.startswith(f"\u2014 {WITNESS_NAME} "))

        def monitor() -> Awaitable[tuple[int, dict[str, Any]]]:
            return run_monitor(capsys, str(tiles), "--keys", str(keys))

        code, doc = await monitor()
        assert (code, doc["cosigned_by"]) == (0, [WITNESS_NAME]), doc
        (tiles / "checkpoint").write_text(published.replace(line + "\n", ""))
        code, doc = await monitor()
        assert code == 1 and doc["violation"]["kind"] == "witness-quorum", doc
        blob = bytearray(base64.b64decode(line.split()[-1]))
        blob[-1] ^= 0x01
        altered = line.replace(line.split()[-1], base64.b64encode(bytes(blob)).decode())
        (tiles / "checkpoint").write_text(published.replace(line, altered))
        code, doc = await monitor()
        assert code == 1 and doc["violation"]["kind"] == "bad-cosignature", doc


async def test_the_monitor_takes_the_vkeys_file_keys_export_writes(
    servers: Servers,
    session_dir: Path,
    client: Client,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`keys export` writes `<output>.vkeys`: the ledger's and the witness's C2SP vkeys, one a
    line. That file given to `monitor --vkey` (and to `--witness`) is all the monitor needs."""
    async with stack_with_witness(servers, session_dir, client, "1") as (stack, witness):
        witness.start()
        async with served_api(stack) as api:
            issued = await api.issue("joy")
            await cosigned_checkpoint(api, issued.ticket.leaf_index + 1)
            keys = tmp_path / "public-keys.json"
            export = ["keys", "export", "-o", str(keys), "--addr", api.address]
            assert await cli.run(export) == 0
        vkeys = keys.with_suffix(".vkeys")
        lines = vkeys.read_text().splitlines()
        ledger = NoteVerifier(stack.settings.ledger_origin, bytes(stack.keys.ledger.verify_key))
        assert lines == [ledger.vkey, witness.verifier.vkey]
        tiles = tmp_path / "tiles"
        size = await TilePublisher(tiles, stack.ledger).catch_up(stack.pool)

        def monitor(*flags: str) -> Awaitable[tuple[int, dict[str, Any]]]:
            return run_monitor(capsys, str(tiles), *flags)

        code, doc = await monitor("--vkey", str(vkeys))
        assert (code, doc["tree_size"], doc["violation"]) == (0, size, None), doc
        code, doc = await monitor("--vkey", str(vkeys), "--witness", str(vkeys))
        assert (code, doc["cosigned_by"]) == (0, [WITNESS_NAME]), doc
        code, doc = await monitor("--vkey", lines[0], "--witness", lines[1])  # inline, as before
        assert (code, doc["cosigned_by"]) == (0, [WITNESS_NAME]), doc
