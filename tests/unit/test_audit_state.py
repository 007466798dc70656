"""The audit state file keeps the root in base64, like the note; older files kept hex."""

from __future__ import annotations

import hashlib
from pathlib import Path

from golden_press.merkle import hash_b64
from service.ops.audit import SeenCheckpoint, load_seen, save_seen


def test_root_is_base64_and_a_hex_state_file_still_reads(tmp_path: Path) -> None:
    root = hashlib.sha256(b"some tree").digest()
    state = tmp_path / "audit-state.json"
    save_seen(state, SeenCheckpoint(size=3, root=hash_b64(root)))
    assert f'"root": "{hash_b64(root)}"' in state.read_text()
    seen = load_seen(state)
    assert seen is not None and seen.root_bytes == root
    assert SeenCheckpoint(size=3, root=root.hex()).root_bytes == root  # written before
