"""C2SP checkpoints and signed notes: round trip, then one test per malformed input."""

from __future__ import annotations

import base64
import hashlib

import pytest
from nacl.signing import SigningKey

from golden_press.checkpoint import (
    Checkpoint,
    CheckpointError,
    NoteVerifier,
    ledger_key_id,
    open_checkpoint,
    sign_checkpoint,
)
from golden_press.errors import Reason
from golden_press.merkle import EMPTY_ROOT, leaf_hash

ORIGIN = "golden-press.test/ledger"
KEY = SigningKey(b"\x07" * 32)
OTHER = SigningKey(b"\x08" * 32)
VERIFIER = NoteVerifier(ORIGIN, bytes(KEY.verify_key))
ROOT = leaf_hash(b"root")
CP = Checkpoint(origin=ORIGIN, size=12345, root=ROOT)


def _signed(body: str, key: SigningKey = KEY, name: str = ORIGIN) -> str:
    """A note with a valid signature over an arbitrary (possibly malformed) body."""
    kid = hashlib.sha256(name.encode() + b"\n\x01" + bytes(key.verify_key)).digest()[:4]
    sig = base64.b64encode(kid + key.sign(body.encode()).signature).decode()
    return f"{body}\n\u2014 {name} {sig}\n"


def _rejects(note: str, match: str, origin: str | None = ORIGIN) -> None:
    with pytest.raises(CheckpointError, match=match) as info:
        open_checkpoint(note, [VERIFIER], origin)
    assert info.value.reason is Reason.BAD_CHECKPOINT


def test_round_trip() -> None:
    note = sign_checkpoint(CP, KEY, ORIGIN)
    body = f"{ORIGIN}\n12345\n{base64.b64encode(ROOT).decode()}\n"
    assert note.startswith(body + "\n\u2014 " + ORIGIN + " ")
    assert open_checkpoint(note, [VERIFIER], ORIGIN) == CP
    assert open_checkpoint(note, [VERIFIER], None) == CP


def test_key_id_is_c2sp() -> None:
    pub = bytes(KEY.verify_key)
    expected = hashlib.sha256(ORIGIN.encode() + b"\x0a" + b"\x01" + pub).digest()[:4]
    assert VERIFIER.key_id == expected
    assert ledger_key_id(ORIGIN, pub) == expected.hex()
    blob = base64.b64decode(sign_checkpoint(CP, KEY, ORIGIN).rstrip("\n").rsplit(" ", 1)[1])
    assert blob[:4] == expected and len(blob) == 68


def test_go_note_example_key_id() -> None:
    # golang.org/x/mod/sumdb/note: PeterNeumann's verifier key string and its key id.
    vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    verifier = NoteVerifier.from_vkey(vkey)
    assert verifier.key_id.hex() == "c74f20a3"
    assert verifier.vkey == vkey


def test_empty_tree_checkpoint() -> None:
    cp = Checkpoint(origin=ORIGIN, size=0, root=EMPTY_ROOT)
    assert open_checkpoint(sign_checkpoint(cp, KEY, ORIGIN), [VERIFIER], ORIGIN) == cp


def test_extra_unknown_signature_is_ignored() -> None:
    note = sign_checkpoint(CP, KEY, ORIGIN)
    witness = _signed(CP.body(), OTHER, "witness.example").split("\n\n", 1)[1]
    assert open_checkpoint(note + witness, [VERIFIER], ORIGIN) == CP


def test_extension_lines_are_accepted() -> None:
    assert open_checkpoint(_signed(CP.body() + "ext line\n"), [VERIFIER], ORIGIN) == CP


@pytest.mark.parametrize(
    "size_line", ["", "-1", "01", "1.0", " 1", "1 ", "0x10", "١٢", "18446744073709551616", "abc"]
)
def test_bad_size_line(size_line: str) -> None:
    body = f"{ORIGIN}\n{size_line}\n{base64.b64encode(ROOT).decode()}\n"
    _rejects(_signed(body), "tree size|empty line")


@pytest.mark.parametrize(
    "root_line",
    [
        "not base64!",
        base64.b64encode(ROOT).decode().rstrip("="),  # unpadded
        base64.urlsafe_b64encode(b"\xfb" * 32).decode(),  # URL alphabet
        base64.b64encode(ROOT).decode() + "==",
    ],
)
def test_bad_base64_root(root_line: str) -> None:
    _rejects(_signed(f"{ORIGIN}\n5\n{root_line}\n"), "base64")


def test_bad_base64_signature() -> None:
    note = sign_checkpoint(CP, KEY, ORIGIN)
    _rejects(note.rstrip("\n") + "*\n", "base64")


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_root_not_32_bytes(length: int) -> None:
    body = f"{ORIGIN}\n5\n{base64.b64encode(b'r' * length).decode()}\n"
    _rejects(_signed(body), "32 bytes|empty line")


def test_unknown_key() -> None:
    _rejects(sign_checkpoint(CP, OTHER, ORIGIN), "no signature from a known key")


def test_known_name_other_key_id_is_unknown() -> None:
    _rejects(sign_checkpoint(CP, KEY, "someone.else/log"), "no signature from a known key")


def test_bad_signature() -> None:
    note = sign_checkpoint(CP, KEY, ORIGIN)
    body, sig_line = note.split("\n\n")
    blob = bytearray(base64.b64decode(sig_line.rstrip("\n").rsplit(" ", 1)[1]))
    blob[10] ^= 1
    forged = f"{body}\n\n\u2014 {ORIGIN} {base64.b64encode(bytes(blob)).decode()}\n"
    _rejects(forged, "does not verify")


def test_tampered_body() -> None:
    note = sign_checkpoint(CP, KEY, ORIGIN)
    _rejects(note.replace("\n12345\n", "\n12346\n"), "does not verify")


def test_truncated_signature() -> None:
    note = sign_checkpoint(CP, KEY, ORIGIN)
    body, sig_line = note.split("\n\n")
    blob = base64.b64decode(sig_line.rstrip("\n").rsplit(" ", 1)[1])[:40]
    _rejects(f"{body}\n\n\u2014 {ORIGIN} {base64.b64encode(blob).decode()}\n", "does not verify")


def test_missing_blank_line() -> None:
    note = sign_checkpoint(CP, KEY, ORIGIN)
    _rejects(note.replace("\n\n", "\n"), "no blank line")


def test_missing_final_newline() -> None:
    _rejects(sign_checkpoint(CP, KEY, ORIGIN).rstrip("\n"), "end with a newline")


def test_signature_line_without_em_dash() -> None:
    note = sign_checkpoint(CP, KEY, ORIGIN)
    _rejects(note.replace("\u2014 ", "- "), "malformed signature line")


def test_no_signatures() -> None:
    _rejects(CP.body() + "\n", "signature block must end with a newline")


def test_wrong_origin() -> None:
    _rejects(sign_checkpoint(CP, KEY, ORIGIN), "origin", origin="another.example/log")


def test_too_few_lines() -> None:
    _rejects(_signed(f"{ORIGIN}\n5\n"), "3 lines")


def test_empty_line_in_body() -> None:
    _rejects(_signed(f"{ORIGIN}\n5\n{base64.b64encode(ROOT).decode()}\n\next\n"), "empty line")


def test_control_character() -> None:
    _rejects(_signed(f"{ORIGIN}\r\n5\n{base64.b64encode(ROOT).decode()}\n"), "control")


def test_error_is_a_golden_error_with_stable_type() -> None:
    with pytest.raises(CheckpointError) as info:
        open_checkpoint("garbage", [VERIFIER], ORIGIN)
    assert str(info.value).startswith("BadCheckpoint: ")
