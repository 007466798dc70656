"""The witness's decision (c2sp.org/tlog-witness `add-checkpoint`), pure: no I/O, no clock.

Request body: `old <size>\\n`, zero to 63 base64 consistency-proof lines, an empty line, then the
signed checkpoint note. The witness answers (status, body, content type) and, on success, the new
record it must persist *before* sending the answer:

| condition                                                   | status |
|-------------------------------------------------------------|--------|
| malformed body, old size > checkpoint size                  | 400    |
| checkpoint origin is not a log this witness knows           | 404    |
| no trusted log signature verifies                           | 403    |
| old size != size of the latest checkpoint cosigned (body: that size, text/x.tlog.size) | 409 |
| same size as the latest cosigned, different root            | 409    |
| consistency proof does not verify (or is not empty at 0)    | 422    |
| otherwise: cosignature line(s)                              | 200    |

Because the old size must equal the stored size and the proof must lead from the stored root to
the new one, the witness never cosigns a smaller tree (a rollback) or a tree that does not extend
the one it cosigned (a fork), and that holds across restarts as long as its record persists.
The caller serialises requests per origin: check and persist are one atomic step.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nacl.signing import SigningKey
from pydantic import BaseModel, ConfigDict, Field

from golden_press.checkpoint import (
    Checkpoint,
    CheckpointError,
    NoteVerifier,
    open_checkpoint,
    parse_note,
)
from golden_press.cosignature import cosign
from golden_press.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    MerkleError,
    hash_b64,
    verify_consistency,
)

MAX_PROOF_LINES = 63
MAX_REQUEST_BYTES = 1 << 20
SIZE_CONTENT_TYPE = "text/x.tlog.size"
_OLD_LINE = re.compile(r"^old (0|[1-9][0-9]{0,19})$")


class WitnessRecord(BaseModel):
    """The latest checkpoint a witness cosigned for one log (what its state file keeps)."""

    model_config = ConfigDict(frozen=True)

    origin: str
    size: int = Field(ge=0)
    root: str  # base64 root hash
    note: str  # the log-signed checkpoint note as submitted (evidence)

    @property
    def root_bytes(self) -> bytes:
        """The root hash as bytes."""
        return base64.b64decode(self.root)


@dataclass(frozen=True)
class AddCheckpointRequest:
    """A parsed add-checkpoint body."""

    old_size: int
    proof: tuple[bytes, ...]
    note: str


@dataclass(frozen=True)
class WitnessAnswer:
    """What to answer; `record` is set only on success and must be persisted before answering."""

    status: int
    body: str
    content_type: str = "text/plain; charset=utf-8"
    record: WitnessRecord | None = None


class WitnessRequestError(Exception):
    """A request the witness refuses; `status` is the HTTP status the spec assigns."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_add_checkpoint(body: bytes) -> AddCheckpointRequest:
    """Parse an add-checkpoint request body; WitnessRequestError(400) names what is wrong."""
    if len(body) > MAX_REQUEST_BYTES:
        raise WitnessRequestError(400, f"request body is larger than {MAX_REQUEST_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WitnessRequestError(400, "request body is not UTF-8") from exc
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise WitnessRequestError(400, "request has no empty line before the checkpoint")
    lines = head.split("\n")
    match = _OLD_LINE.fullmatch(lines[0])
    if match is None:
        raise WitnessRequestError(400, f"first line must be 'old <size>', got {lines[0][:40]!r}")
    old_size = int(match.group(1))
    if old_size >= 1 << 64:
        raise WitnessRequestError(400, f"old size {old_size} does not fit in 64 bits")
    proof_lines = lines[1:]
    if len(proof_lines) > MAX_PROOF_LINES:
        raise WitnessRequestError(
            400, f"{len(proof_lines)} consistency proof lines, at most {MAX_PROOF_LINES}"
        )
    proof = []
    for i, line in enumerate(proof_lines):
        try:
            raw = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise WitnessRequestError(400, f"proof line {i} is not base64") from exc
        if len(raw) != HASH_SIZE or base64.b64encode(raw).decode("ascii") != line:
            raise WitnessRequestError(400, f"proof line {i} is not one base64 SHA-256 hash")
        proof.append(raw)
    return AddCheckpointRequest(old_size, tuple(proof), note)


def request_origin(request: AddCheckpointRequest) -> str:
    """The checkpoint's origin line, before any signature is checked (to pick the log's record).

    Raises WitnessRequestError(400) when the checkpoint is not a signed note.
    """
    try:
        text = parse_note(request.note).text
    except CheckpointError as exc:
        raise WitnessRequestError(400, f"not a signed note: {exc.message}") from exc
    return text.split("\n", 1)[0]


def add_checkpoint(
    request: AddCheckpointRequest,
    logs: Mapping[str, Sequence[NoteVerifier]],
    latest: WitnessRecord | None,
    signing_key: SigningKey,
    name: str,
    now: int,
) -> WitnessAnswer:
    """Decide one add-checkpoint request against the stored record of the checkpoint's log.

    `logs` maps each known origin to its trusted keys; `latest` is the stored record for the
    request's origin (None: never cosigned); `now` is the POSIX time of the cosignature.
    """
    origin = request_origin(request)
    verifiers = logs.get(origin)
    if not verifiers:
        return WitnessAnswer(404, f"unknown log origin {origin[:100]!r}\n")
    try:
        checkpoint = open_checkpoint(request.note, verifiers, origin)
    except CheckpointError as exc:
        return WitnessAnswer(403, f"checkpoint not signed by a trusted key: {exc.message}\n")
    if latest is not None and latest.origin != origin:
        raise ValueError(f"record of {latest.origin!r} given for origin {origin!r}")
    if request.old_size > checkpoint.size:
        return WitnessAnswer(
            400, f"old size {request.old_size} is larger than checkpoint size {checkpoint.size}\n"
        )
    stored_size = latest.size if latest is not None else 0
    if request.old_size != stored_size:
        return WitnessAnswer(409, f"{stored_size}\n", SIZE_CONTENT_TYPE)
    problem = _consistency_problem(request, checkpoint, latest)
    if problem is not None:
        return problem
    body = parse_note(request.note).text
    line = cosign(body, signing_key, name, now).line
    record = WitnessRecord(
        origin=origin,
        size=checkpoint.size,
        root=hash_b64(checkpoint.root),
        note=request.note,
    )
    return WitnessAnswer(200, line, record=record)


def _consistency_problem(
    request: AddCheckpointRequest, checkpoint: Checkpoint, latest: WitnessRecord | None
) -> WitnessAnswer | None:
    """None when the checkpoint extends the stored one; else the 409/422 answer."""
    old = request.old_size
    if old == checkpoint.size:
        stored_root = latest.root_bytes if latest is not None else EMPTY_ROOT
        if request.proof:
            return WitnessAnswer(422, "equal sizes need an empty consistency proof\n")
        if checkpoint.root != stored_root:
            return WitnessAnswer(409, f"tree size {old} was cosigned with another root: a fork\n")
        return None
    if old == 0:
        if request.proof:
            return WitnessAnswer(422, "the consistency proof must be empty when old size is 0\n")
        return None
    assert latest is not None  # old == stored size > 0
    try:
        verify_consistency(old, checkpoint.size, latest.root_bytes, checkpoint.root, request.proof)
    except MerkleError as exc:
        return WitnessAnswer(422, f"consistency proof does not verify: {exc.message}\n")
    return None


def add_checkpoint_body(old_size: int, proof: Sequence[bytes], note: str) -> bytes:
    """The request body a log sends (the client side of add-checkpoint)."""
    lines = [f"old {old_size}", *(hash_b64(h) for h in proof)]
    return ("\n".join(lines) + "\n\n" + note).encode("utf-8")


__all__ = [
    "SIZE_CONTENT_TYPE",
    "AddCheckpointRequest",
    "WitnessAnswer",
    "WitnessRecord",
    "WitnessRequestError",
    "add_checkpoint",
    "add_checkpoint_body",
    "parse_add_checkpoint",
    "request_origin",
]
