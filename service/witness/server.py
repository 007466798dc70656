"""`golden-press witness serve`: a c2sp.org/tlog-witness witness over HTTP (stdlib server).

    POST <prefix>/add-checkpoint   body: old <size>, proof lines, empty line, signed checkpoint

The witness keeps, per log origin, the latest checkpoint it cosigned in a JSON state file. A
request is checked and the new record written (temporary file, fsync, rename, fsync of the
directory) under one lock, *before* the answer leaves: a crash after answering can never forget
a cosigned size, so a restarted witness still refuses rollbacks and forks. The decision itself is
golden_press.witness.add_checkpoint (pure).

Its key file is private (0600, refused otherwise); the state file holds only public data but is
written 0600 too.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from golden_press.checkpoint import NoteVerifier
from golden_press.cosignature import CosignatureVerifier
from golden_press.witness import (
    MAX_REQUEST_BYTES,
    WitnessAnswer,
    WitnessRecord,
    WitnessRequestError,
    add_checkpoint,
    parse_add_checkpoint,
    request_origin,
)

log = logging.getLogger("golden_press.witness")

STATE_VERSION = 1


class WitnessStateError(Exception):
    """The state file exists but cannot be trusted; the witness refuses to start on it."""


class WitnessState:
    """Latest cosigned checkpoint per origin, persisted to one JSON file with fsync."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._records: dict[str, WitnessRecord] = {}
        if path.exists():
            try:
                data = json.loads(path.read_text())
                if data.get("version") != STATE_VERSION:
                    raise ValueError(f"version {data.get('version')!r}")
                self._records = {
                    origin: WitnessRecord.model_validate(record)
                    for origin, record in data["logs"].items()
                }
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                # Starting from empty would let the log roll the witness back: refuse instead.
                raise WitnessStateError(f"witness state {path} is unreadable: {exc}") from exc

    def get(self, origin: str) -> WitnessRecord | None:
        """The latest record for `origin`, if this witness ever cosigned it."""
        return self._records.get(origin)

    def put(self, record: WitnessRecord) -> None:
        """Store a record durably: the file is replaced atomically and fsynced before return."""
        records = {**self._records, record.origin: record}
        data = {
            "version": STATE_VERSION,
            "logs": {origin: r.model_dump() for origin, r in sorted(records.items())},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, (json.dumps(data, indent=2) + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._records = records


class Witness:
    """One witness identity: its key and name, the logs it follows and its persisted state."""

    def __init__(
        self,
        signing_key: SigningKey,
        name: str,
        logs: Mapping[str, Sequence[NoteVerifier]],
        state: WitnessState,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = signing_key
        self.name = name
        self._logs = {origin: list(keys) for origin, keys in logs.items()}
        self._state = state
        self._clock = clock
        self._lock = threading.Lock()
        self.verifier = CosignatureVerifier(name, bytes(signing_key.verify_key))

    @property
    def origins(self) -> list[str]:
        """The log origins this witness follows."""
        return sorted(self._logs)

    def add_checkpoint(self, body: bytes) -> WitnessAnswer:
        """Decide one request; on success the new record is on disk before this returns."""
        try:
            request = parse_add_checkpoint(body)
            origin = request_origin(request)
        except WitnessRequestError as exc:
            return WitnessAnswer(exc.status, exc.message + "\n")
        # Check and persist atomically (c2sp.org/tlog-witness): two racing requests must not
        # both pass against the same stored size and roll the record back.
        with self._lock:
            latest = self._state.get(origin)
            answer = add_checkpoint(
                request, self._logs, latest, self._key, self.name, int(self._clock())
            )
            if answer.record is not None:
                self._state.put(answer.record)
        return answer


class _Handler(BaseHTTPRequestHandler):
    """POST <prefix>/add-checkpoint; everything else is 404 (or 405 for the wrong method)."""

    server: WitnessHTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive, as the spec recommends

    def do_POST(self) -> None:
        if self.path != self.server.prefix + "/add-checkpoint":
            self._send(WitnessAnswer(404, "not found\n"))
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._send(WitnessAnswer(411, "Content-Length required\n"))
            return
        if not 0 <= length <= MAX_REQUEST_BYTES:
            self._send(WitnessAnswer(413, f"body larger than {MAX_REQUEST_BYTES} bytes\n"))
            return
        body = self.rfile.read(length)
        started = time.perf_counter()
        answer = self.server.witness.add_checkpoint(body)
        log.info(
            "add-checkpoint",
            extra={
                "status": answer.status,
                "size": answer.record.size if answer.record else None,
                "ms": round((time.perf_counter() - started) * 1e3, 2),
            },
        )
        self._send(answer)

    def do_GET(self) -> None:
        if self.path in ("/", "/healthz", self.server.prefix + "/"):
            self._send(WitnessAnswer(200, self.server.witness.verifier.vkey + "\n"))
        else:
            self._send(WitnessAnswer(404, "not found\n"))

    def _send(self, answer: WitnessAnswer) -> None:
        payload = answer.body.encode("utf-8")
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are logged once, structured, by do_POST."""


class WitnessHTTPServer(ThreadingHTTPServer):
    """The HTTP front of a Witness; `prefix` is the submission prefix (default: none)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], witness: Witness, prefix: str = "") -> None:
        super().__init__(address, _Handler)
        self.witness = witness
        self.prefix = prefix.rstrip("/")

    @property
    def url(self) -> str:
        """Base URL a log puts in GOLDEN_WITNESSES."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}{self.prefix}"


def start_in_thread(server: WitnessHTTPServer) -> threading.Thread:
    """Serve in a daemon thread (tests, embedding); stop with server.shutdown()."""
    thread = threading.Thread(target=server.serve_forever, name="witness-http", daemon=True)
    thread.start()
    return thread


__all__ = [
    "Witness",
    "WitnessHTTPServer",
    "WitnessState",
    "WitnessStateError",
    "start_in_thread",
]
