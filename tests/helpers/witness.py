"""A real witness (C2SP tlog-witness over HTTP) that follows a test stack's ledger key."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from nacl.signing import SigningKey
from temporalio.client import Client

from golden_press.checkpoint import NoteVerifier
from golden_press.cosignature import CosignatureVerifier
from service.devstack.servers import free_port
from service.store.key_files import generate_key_file, load_key_file
from service.witness.server import Witness, WitnessHTTPServer, WitnessState, start_in_thread
from tests.helpers.servers import Servers
from tests.helpers.stack import Stack, golden_stack

WITNESS_NAME = "witness.test/w1"


class RunningWitness:
    """A witness on a fixed port that can be stopped and started again (an outage)."""

    def __init__(self, state_dir: Path, ledger_vkey: str, port: int) -> None:
        self.key = SigningKey.generate()
        self.state = state_dir / "witness-state.json"
        self.ledger = NoteVerifier.from_vkey(ledger_vkey)
        self.port = port
        self.server: WitnessHTTPServer | None = None

    @property
    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(WITNESS_NAME, bytes(self.key.verify_key))

    @property
    def setting(self) -> str:
        """This witness's GOLDEN_WITNESSES entry."""
        return f"{self.verifier.vkey} http://127.0.0.1:{self.port}"

    def start(self) -> None:
        logs = {self.ledger.name: [self.ledger]}
        witness = Witness(self.key, WITNESS_NAME, logs, WitnessState(self.state))
        self.server = WitnessHTTPServer(("127.0.0.1", self.port), witness)
        start_in_thread(self.server)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@contextmanager
def witness_for(
    state_dir: Path, settings_ledger_key: Path, origin: str
) -> Iterator[RunningWitness]:
    """A witness that follows this stack's ledger key (not started yet)."""
    ledger_key = load_key_file(settings_ledger_key)
    vkey = NoteVerifier(origin, bytes(ledger_key.verify_key)).vkey
    witness = RunningWitness(state_dir, vkey, free_port())
    try:
        yield witness
    finally:
        witness.stop()


@asynccontextmanager
async def stack_with_witness(
    servers: Servers,
    session_dir: Path,
    client: Client,
    quorum: str,
    *,
    run_worker: bool = True,
    metrics_port: int = 0,
) -> AsyncIterator[tuple[Stack, RunningWitness]]:
    """A stack whose settings name a witness that follows its ledger key (not started yet);
    run_worker=False and a metrics port: for a worker process (tests.helpers.worker)."""
    base = session_dir / f"w-{uuid.uuid4().hex[:8]}"
    key_path = base / "keys" / "ledger.key"
    generate_key_file(key_path)
    origin = "golden-press.test/ledger"
    with witness_for(base, key_path, origin) as witness:
        async with golden_stack(
            servers,
            base,
            client,
            ledger_key_file=key_path,
            ledger_origin=origin,
            witnesses=witness.setting,
            witness_quorum=quorum,
            run_worker=run_worker,
            metrics_port=metrics_port,
        ) as stack:
            yield stack, witness
