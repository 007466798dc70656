"""Logs in memory, published the tlog-tiles way, for monitor tests (pure: no server)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

from nacl.signing import SigningKey

from golden_press.checkpoint import Checkpoint, NoteVerifier, sign_checkpoint
from golden_press.ledger_entry import (
    CapEntry,
    EntryKind,
    LedgerEntry,
    encode_cap_entry,
    encode_entry,
)
from golden_press.models import CapScope
from golden_press.tiles import Tile, TreeBuilder, encode_bundle, encode_tile

ORIGIN = "test.example/ledger"
AT = datetime(2026, 1, 1, tzinfo=UTC)
KEY = SigningKey(b"\x07" * 32)
VERIFIER = NoteVerifier(ORIGIN, bytes(KEY.verify_key))


def ticket_entry(kind: EntryKind, tid: uuid.UUID, serial: int) -> bytes:
    """The v1 bytes of a ticket event."""
    return encode_entry(
        LedgerEntry(
            kind=kind,
            ticket_id=tid,
            serial=serial,
            key_id="ab" if kind is EntryKind.ISSUED else "",
            signature_digest="0" * 64 if kind is EntryKind.ISSUED else "",
            user_commitment="1" * 64,
            at=AT,
            reason="" if kind is EntryKind.ISSUED else "why",
        )
    )


def cap_entry(cap: int, scope: CapScope, serial: int) -> bytes:
    """The v2 bytes of a cap change."""
    return encode_cap_entry(CapEntry(cap=cap, scope=scope, serial=serial, at=AT))


class MemLog:
    """A log in memory, published the tlog-tiles way (paths -> bytes) with a signed checkpoint."""

    def __init__(self, entries: list[bytes], key: SigningKey = KEY) -> None:
        self.entries = entries
        self.files: dict[str, bytes] = {}
        builder = TreeBuilder()
        for e in entries:
            for tile, hashes in builder.add_entry(e):
                self._put(tile, hashes)
        for tile, hashes in builder.partial_tiles():
            self._put(tile, hashes)
        self.root = builder.root()
        self.note = sign_checkpoint(
            Checkpoint(origin=ORIGIN, size=len(entries), root=self.root), key, ORIGIN
        )

    def _put(self, tile: Tile, hashes: list[bytes]) -> None:
        self.files[tile.path] = encode_tile(hashes)
        if tile.level == 0:
            start = tile.index << 8
            self.files[tile.bundle().path] = encode_bundle(self.entries[start : start + tile.width])

    def checkpoint(self) -> str:
        return self.note

    def read(self, tile: Tile) -> bytes | None:
        return self.files.get(tile.path)

    def write_to(self, directory: Path) -> Path:
        """Publish into a tiles directory as the tile publisher does: tiles, then checkpoint,
        each file replaced atomically (a monitor reading meanwhile sees old or new, never half)."""
        for path, data in [*self.files.items(), ("checkpoint", self.note.encode())]:
            target = directory / path
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(target)
        return directory

    def flip(self, path: str, offset: int = 40) -> None:
        data = bytearray(self.files[path])
        data[offset] ^= 0x01
        self.files[path] = bytes(data)
