"""Witness cosignatures, vkeys and the quorum policy: happy paths, then one test per bad input."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest
from nacl.signing import SigningKey

from golden_press.checkpoint import (
    Checkpoint,
    CheckpointError,
    NoteSignature,
    NoteVerifier,
    format_vkey,
    parse_note,
    parse_vkey,
    sign_checkpoint,
)
from golden_press.cosignature import (
    CosignatureVerifier,
    WitnessPolicy,
    add_signature_lines,
    cosign,
    cosigned_message,
    cosigner_key_id,
    format_witnesses,
    parse_quorum,
    parse_witnesses,
    verify_cosignatures,
)
from golden_press.errors import Reason
from golden_press.merkle import leaf_hash

ORIGIN = "golden-press.test/ledger"
LEDGER = SigningKey(b"\x41" * 32)
W1 = SigningKey(b"\x42" * 32)
W2 = SigningKey(b"\x43" * 32)
LEDGER_V = NoteVerifier(ORIGIN, bytes(LEDGER.verify_key))
W1_V = CosignatureVerifier("w1.test/witness", bytes(W1.verify_key))
W2_V = CosignatureVerifier("w2.test/witness", bytes(W2.verify_key))
CP = Checkpoint(origin=ORIGIN, size=20852163, root=leaf_hash(b"r"))
NOTE = sign_checkpoint(CP, LEDGER, ORIGIN)
T = 1679315147


def _cosigned(*witnesses: tuple[SigningKey, str], note: str = NOTE) -> str:
    lines = [cosign(CP.body(), key, name, T) for key, name in witnesses]
    return add_signature_lines(note, lines)


BOTH = _cosigned((W1, W1_V.name), (W2, W2_V.name))


# ---- the format, byte for byte ------------------------------------------------------------------


def test_signed_message_is_the_spec_example() -> None:
    body = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    assert cosigned_message(body, T) == (
        b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
        b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    )


def test_key_id_uses_type_byte_0x04() -> None:
    pub = bytes(W1.verify_key)
    expected = hashlib.sha256(b"w1.test/witness\n\x04" + pub).digest()[:4]
    assert cosigner_key_id("w1.test/witness", pub) == expected == W1_V.key_id


def test_cosignature_line_layout() -> None:
    sig = cosign(CP.body(), W1, W1_V.name, T)
    blob = base64.b64decode(sig.line.rstrip("\n").rsplit(" ", 1)[1])
    assert sig.line.startswith("\u2014 w1.test/witness ")
    assert len(blob) == 4 + 8 + 64
    assert blob[:4] == W1_V.key_id
    assert struct.unpack(">Q", blob[4:12]) == (T,)
    W1.verify_key.verify(cosigned_message(CP.body(), T), blob[12:])


def test_spec_example_note_parses_with_cosignature() -> None:
    # c2sp.org/tlog-cosignature's example: a log signature and a witness cosignature line.
    note = (
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n"
        "\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4"
        "URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
        "\u2014 witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9"
        "dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
    )
    parsed = parse_note(note)
    assert [s.name for s in parsed.signatures] == [
        "example.com/behind-the-sofa",
        "witness.example.com/w1",
    ]
    (timestamp,) = struct.unpack(">Q", parsed.signatures[1].signature[:8])
    assert timestamp == T
    assert parsed.render() == note


# ---- vkeys ------------------------------------------------------------------------------------


def test_vkeys_round_trip() -> None:
    assert CosignatureVerifier.from_vkey(W1_V.vkey) == W1_V
    assert NoteVerifier.from_vkey(LEDGER_V.vkey) == LEDGER_V
    assert parse_vkey(W1_V.vkey).key_type == b"\x04"
    assert W1_V.vkey.split("+", 2)[1] == W1_V.key_id.hex()


def test_ledger_vkey_is_not_a_witness_vkey() -> None:
    with pytest.raises(ValueError, match="expected 0x04"):
        CosignatureVerifier.from_vkey(LEDGER_V.vkey)
    with pytest.raises(ValueError, match="expected 0x01"):
        NoteVerifier.from_vkey(W1_V.vkey)


def _vkey_parts() -> tuple[str, str, str]:
    name, key_id, key = W1_V.vkey.split("+", 2)
    return name, key_id, key


@pytest.mark.parametrize(
    ("vkey", "match"),
    [
        ("", "3 parts"),
        ("w1.test/witness+abcd", "3 parts"),
        ("a+b+c+d", "8 lowercase hex"),
        (" " + W1_V.vkey, "whitespace"),
        ("+{1}+{2}", "non-empty"),
        ("w 1+{1}+{2}", "no spaces"),
        ("{0}+{1}0+{2}", "8 lowercase hex"),
        ("{0}+ABCDEF01+{2}", "8 lowercase hex"),
        ("{0}+{1}+{2}x", "base64"),
        ("{0}+{1}+" + base64.b64encode(b"\x04" + b"k" * 31).decode(), "32-byte key"),
        ("{0}+00000000+{2}", "does not match"),
        ("other.name+{1}+{2}", "does not match"),
    ],
)
def test_malformed_vkey(vkey: str, match: str) -> None:
    name, key_id, key = _vkey_parts()
    with pytest.raises(ValueError, match=match):
        parse_vkey(vkey.replace("{0}", name).replace("{1}", key_id).replace("{2}", key))


def test_format_vkey_checks_the_name() -> None:
    with pytest.raises(ValueError):
        format_vkey("a+b", b"\x04", bytes(W1.verify_key))


# ---- verifying cosignatures ---------------------------------------------------------------------


def test_both_cosignatures_verify() -> None:
    assert verify_cosignatures(BOTH, [W1_V, W2_V]) == {W1_V.name: T, W2_V.name: T}


def test_unknown_witness_lines_are_ignored() -> None:
    assert verify_cosignatures(BOTH, [W1_V]) == {W1_V.name: T}
    assert verify_cosignatures(NOTE, [W1_V]) == {}


def test_same_name_other_key_is_unknown() -> None:
    impostor = CosignatureVerifier(W1_V.name, bytes(W2.verify_key))
    assert verify_cosignatures(_cosigned((W1, W1_V.name)), [impostor]) == {}


def _replace_blob(note: str, name: str, change: bytes | None = None, cut: int = 0) -> str:
    parsed = parse_note(note)
    out = []
    for sig in parsed.signatures:
        if sig.name == name:
            raw = bytearray(sig.signature)
            if change is not None:
                raw[: len(change)] = change
            if cut:
                raw = raw[:-cut]
            sig = NoteSignature(sig.name, sig.key_id, bytes(raw))
        out.append(sig)
    return type(parsed)(parsed.text, tuple(out)).render()


def _rejects(note: str, match: str, witnesses: list[CosignatureVerifier] | None = None) -> None:
    with pytest.raises(CheckpointError, match=match) as info:
        verify_cosignatures(note, witnesses if witnesses is not None else [W1_V])
    assert info.value.reason is Reason.BAD_CHECKPOINT


def test_flipped_signature_byte() -> None:
    note = _cosigned((W1, W1_V.name))
    sig = parse_note(note).signatures[1].signature
    _rejects(_replace_blob(note, W1_V.name, sig[:20] + bytes([sig[20] ^ 1])), "does not verify")


def test_changed_timestamp() -> None:
    note = _cosigned((W1, W1_V.name))
    _rejects(_replace_blob(note, W1_V.name, struct.pack(">Q", T + 1)), "does not verify")


def test_timestamp_beyond_2_63() -> None:
    note = _cosigned((W1, W1_V.name))
    _rejects(_replace_blob(note, W1_V.name, b"\x80"), "2\\^63")


def test_truncated_cosignature() -> None:
    _rejects(_replace_blob(_cosigned((W1, W1_V.name)), W1_V.name, cut=1), "expected 72")


def test_plain_ed25519_note_signature_is_not_a_cosignature() -> None:
    # A witness key signing the note text as a 0x01 note signature, under the 0x04 key id.
    plain = W1.sign(CP.body().encode()).signature
    line = NoteSignature(W1_V.name, W1_V.key_id, b"\x00" * 8 + plain)
    _rejects(add_signature_lines(NOTE, [line]), "does not verify")


def test_cosignature_over_another_checkpoint() -> None:
    other = Checkpoint(origin=ORIGIN, size=CP.size + 1, root=CP.root)
    line = cosign(other.body(), W1, W1_V.name, T)
    _rejects(add_signature_lines(NOTE, [line]), "does not verify")


def test_body_that_is_not_a_checkpoint() -> None:
    _rejects("hello\n\n\u2014 a AAAAAAA=\n", "3 lines")


def test_cosigned_message_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        cosigned_message(CP.body(), -1)
    with pytest.raises(ValueError):
        cosigned_message(CP.body(), 1 << 63)
    with pytest.raises(ValueError):
        cosigned_message("no newline", T)


def test_add_signature_lines_replaces_a_witness_line() -> None:
    newer = cosign(CP.body(), W1, W1_V.name, T + 5)
    note = add_signature_lines(_cosigned((W1, W1_V.name)), [newer])
    assert len(parse_note(note).signatures) == 2
    assert verify_cosignatures(note, [W1_V]) == {W1_V.name: T + 5}
    assert note.startswith(NOTE)  # the ledger's own line stays first


# ---- the policy -------------------------------------------------------------------------------


def test_policy_all_of_two() -> None:
    policy = WitnessPolicy((W1_V, W2_V), 2)
    opened = policy.open(BOTH, [LEDGER_V], ORIGIN)
    assert opened.checkpoint == CP and set(opened.cosigned_by) == {W1_V.name, W2_V.name}
    with pytest.raises(CheckpointError, match=r"1 witness cosignature.*needs 2"):
        policy.open(_cosigned((W1, W1_V.name)), [LEDGER_V], ORIGIN)


def test_policy_quorum_one_of_two() -> None:
    policy = WitnessPolicy((W1_V, W2_V), 1)
    assert policy.open(_cosigned((W2, W2_V.name)), [LEDGER_V], ORIGIN).checkpoint == CP
    with pytest.raises(CheckpointError, match="0 witness cosignature"):
        policy.open(NOTE, [LEDGER_V], ORIGIN)


def test_policy_quorum_zero_trusts_the_ledger_alone() -> None:
    assert WitnessPolicy((W1_V,), 0).open(NOTE, [LEDGER_V], ORIGIN).cosigned_by == {}
    assert WitnessPolicy().open(NOTE, [LEDGER_V], ORIGIN).checkpoint == CP


def test_policy_still_needs_the_ledger_signature() -> None:
    witness_only = parse_note(BOTH)
    note = type(witness_only)(witness_only.text, witness_only.signatures[1:]).render()
    with pytest.raises(CheckpointError, match="no signature from a known key"):
        WitnessPolicy((W1_V, W2_V), 2).open(note, [LEDGER_V], ORIGIN)


def test_policy_rejects_a_known_witness_whose_line_fails() -> None:
    sig = parse_note(BOTH).signatures[2].signature
    forged = _replace_blob(BOTH, W2_V.name, sig[:30] + bytes([sig[30] ^ 1]))
    with pytest.raises(CheckpointError, match=r"w2\.test/witness does not verify"):
        WitnessPolicy((W1_V, W2_V), 1).open(forged, [LEDGER_V], ORIGIN)


def test_policy_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        WitnessPolicy((W1_V,), 2)
    with pytest.raises(ValueError):
        WitnessPolicy((W1_V, W1_V), 1)


# ---- settings ---------------------------------------------------------------------------------


def test_parse_witnesses_and_format_round_trip() -> None:
    value = f"{W1_V.vkey} http://127.0.0.1:7380/, \n{W2_V.vkey} https://w2.example/w"
    witnesses = parse_witnesses(value)
    assert [(w.name, w.url) for w in witnesses] == [
        (W1_V.name, "http://127.0.0.1:7380"),
        (W2_V.name, "https://w2.example/w"),
    ]
    assert parse_witnesses(format_witnesses(witnesses)) == witnesses
    assert parse_witnesses(None) == [] and parse_witnesses("  ") == []


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("http://127.0.0.1:1", "'<vkey> <url>'"),
        (f"{W1_V.vkey}", "'<vkey> <url>'"),
        (f"{W1_V.vkey} 127.0.0.1:7380", "http"),
        (f"{LEDGER_V.vkey} http://x", "expected 0x04"),
        (f"{W1_V.vkey} http://a, {W1_V.vkey} http://b", "twice"),
        (f"{W1_V.vkey} http://a extra", "'<vkey> <url>'"),
    ],
)
def test_parse_witnesses_rejects(value: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_witnesses(value)


@pytest.mark.parametrize(
    ("value", "count", "quorum"),
    [(None, 2, 2), ("", 2, 2), ("all", 3, 3), ("ALL", 0, 0), ("1", 2, 1), ("0", 2, 0), (1, 1, 1)],
)
def test_parse_quorum(value: str | int | None, count: int, quorum: int) -> None:
    assert parse_quorum(value, count) == quorum


@pytest.mark.parametrize(("value", "count"), [("3", 2), ("-1", 2), ("one", 2), ("1.5", 2)])
def test_parse_quorum_rejects(value: str, count: int) -> None:
    with pytest.raises(ValueError, match="GOLDEN_WITNESS_QUORUM"):
        parse_quorum(value, count)


def test_policy_from_settings() -> None:
    policy = WitnessPolicy.from_settings(f"{W1_V.vkey} http://a, {W2_V.vkey} http://b", "1")
    assert policy.quorum == 1 and policy.witnesses == (W1_V, W2_V)
    assert WitnessPolicy.from_settings(None, None) == WitnessPolicy()


def test_settings_read_witnesses_and_fail_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    from golden_press.settings import Settings

    monkeypatch.setenv("GOLDEN_WITNESSES", f"{W1_V.vkey} http://127.0.0.1:1")
    monkeypatch.setenv("GOLDEN_WITNESS_QUORUM", "1")
    assert Settings().witness_policy() == WitnessPolicy((W1_V,), 1)
    assert [w.url for w in Settings().witness_list()] == ["http://127.0.0.1:1"]
    monkeypatch.setenv("GOLDEN_WITNESS_QUORUM", "2")
    with pytest.raises(ValueError, match="GOLDEN_WITNESS_QUORUM"):
        Settings()
