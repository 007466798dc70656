"""The NOTIFY payloads on golden_slots and which of them may free a slot (issue 13.3 / 15).

API processes hold their sold-out refusals after a notice that may have freed a slot, until
the re-read it triggered. A launch only ever sends notices that take slots, so the herd never
waits; a void, a redeem, a revoke or a cap change must hold them.
"""

from __future__ import annotations

from service.store.db import NEVER_FREES_A_SLOT, SlotNotice


def test_only_the_notices_that_take_or_deny_never_free_a_slot() -> None:
    assert NEVER_FREES_A_SLOT == {SlotNotice.RESERVED, SlotNotice.ISSUED, SlotNotice.DENIED}
    freeing = set(SlotNotice) - NEVER_FREES_A_SLOT
    assert freeing == {
        SlotNotice.VOIDED,
        SlotNotice.REDEEMED,
        SlotNotice.REVOKED,
        SlotNotice.SET_CAP,
    }


def test_the_payload_on_the_wire_is_the_plain_string() -> None:
    """asyncpg hands listeners the payload as str: the set must match plain strings."""
    assert "reserved" in NEVER_FREES_A_SLOT and "issued" in NEVER_FREES_A_SLOT
    assert "voided" not in NEVER_FREES_A_SLOT and "set-cap" not in NEVER_FREES_A_SLOT
    assert "something new" not in NEVER_FREES_A_SLOT  # unknown: treated as freeing
