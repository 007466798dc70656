"""Every ticket a monitor has seen, in about 17 bytes a serial (pure: no I/O).

A monitor must remember each ticket for the whole log (a ticket issued at leaf 10 may be
redeemed, or illegally issued again, at leaf 10,000,000), so this state is what its memory grows
with. Serials are issuance ordinals taken from one sequence (gaps only where a reservation never
reached the log), so the table is two byte arrays indexed by serial: the ticket's state (one
byte) and its id (16 bytes), instead of a dict entry and Python objects per ticket (about 300
bytes each). What arrays cannot do cheaply is the reverse question, "was this ticket id already
used under another serial?": an open-addressing table of the ids' 64-bit hashes (8 bytes a slot,
at most half full) answers it, and a hit is confirmed by searching the id array (C speed), so a
hash collision costs time, never a wrong verdict. Hashes are Python's (SipHash, seeded per
process), so a log cannot aim collisions at a monitor.

A hostile log may carry huge serials. The arrays therefore only grow up to twice the number of
tickets seen (plus a margin); serials beyond that live in a dict, so memory stays linear in the
log's size whatever serials it claims.
"""

from __future__ import annotations

import heapq
from array import array
from dataclasses import dataclass, field

ISSUED, REDEEMED, REVOKED, VOIDED = 1, 2, 3, 4
STATE_NAME = {ISSUED: "issued", REDEEMED: "redeemed", REVOKED: "revoked", VOIDED: "voided"}
ID_SIZE = 16
_GROW = 4096  # the arrays grow by at least this many serials at a time
_ISSUED_BYTE = bytes([ISSUED])
_HASH_MASK = (1 << 64) - 1


class HashSet:
    """A set of 64-bit hashes in one array: open addressing, linear probing, never over half full.

    A Python set of ints costs about 60 bytes an element; this costs 16 to 32.
    """

    def __init__(self, capacity: int = 1024) -> None:
        self._slots = array("Q", bytes(8 * max(capacity, 8)))  # a power of two; 0 marks empty
        self._used = 0

    def __len__(self) -> int:
        return self._used

    def _find(self, h: int) -> int:
        slots, mask = self._slots, len(self._slots) - 1
        i = h & mask
        while (held := slots[i]) and held != h:
            i = (i + 1) & mask
        return i

    def __contains__(self, h: int) -> bool:
        return bool(self._slots[self._find(h)])

    def add(self, h: int) -> bool:
        """Add a nonzero hash; False when it was there already."""
        slots, mask = self._slots, len(self._slots) - 1
        i = h & mask
        while held := slots[i]:
            if held == h:
                return False
            i = (i + 1) & mask
        slots[i] = h
        self._used += 1
        if 2 * self._used > len(self._slots):
            old, self._slots = self._slots, array("Q", bytes(16 * len(self._slots)))
            for held in old:
                if held:
                    self._slots[self._find(held)] = held
        return True


def _hash64(key: bytes) -> int:
    """A nonzero 64-bit hash of a ticket id."""
    return (hash(key) & _HASH_MASK) or 1


def ticket_key(ticket_id: str) -> bytes:
    """A canonical ticket id (`8-4-4-4-12` lowercase hex) as its 16 bytes."""
    return bytes.fromhex(ticket_id.replace("-", ""))


class SerialMismatch(Exception):
    """A ticket id seen before under another serial (`serial`): a serial is for ever."""

    def __init__(self, serial: int) -> None:
        super().__init__(f"issued as {serial}")
        self.serial = serial


@dataclass
class TicketTable:
    """Serial -> (ticket id, state), id -> serial, and the highest serial still issued."""

    _states: bytearray = field(default_factory=bytearray)
    _ids: bytearray = field(default_factory=bytearray)
    _far: dict[int, tuple[bytes, int]] = field(default_factory=dict)  # serials beyond the arrays
    _far_issued: list[int] = field(default_factory=list)  # -serial of far issued ones (lazy heap)
    _hashes: HashSet = field(default_factory=HashSet)
    _count: int = 0
    _top: int = 0  # highest serial in the arrays whose state is ISSUED (0: none)

    def __len__(self) -> int:
        return self._count

    def at(self, serial: int) -> tuple[bytes, int]:
        """(ticket id, state) of the ticket holding `serial`; (b"", 0) when none does."""
        if serial < len(self._states):
            state = self._states[serial]
            if not state:
                return b"", 0
            start = serial * ID_SIZE
            return bytes(self._ids[start : start + ID_SIZE]), state
        return self._far.get(serial, (b"", 0))

    def state_of(self, serial: int, key: bytes) -> int:
        """The state of ticket `key` at `serial`, the monitor's one lookup per entry.

        0: a new ticket (its id is now remembered as seen); -state: `serial` is another
        ticket's, in that state. Raises SerialMismatch when the id was seen under another serial.
        """
        states = self._states
        if serial < len(states):
            state = states[serial]
            if state:
                start = serial * ID_SIZE
                if self._ids[start : start + ID_SIZE] == key:
                    return state
        else:
            held = self._far.get(serial)
            state = 0 if held is None else held[1]
            if held is not None and held[0] == key:
                return state
        if not self._hashes.add((hash(key) & _HASH_MASK) or 1):
            known = self.serial_of(key)  # seen before, or a hash collision: look
            if known is not None:
                raise SerialMismatch(known)
        return -state

    def serial_of(self, key: bytes) -> int | None:
        """The serial a ticket id holds, or None when it was never seen."""
        if _hash64(key) not in self._hashes:
            return None
        ids, pos = self._ids, 0
        while (pos := ids.find(key, pos)) >= 0:
            if pos % ID_SIZE == 0 and self._states[pos // ID_SIZE]:
                return pos // ID_SIZE
            pos += 1
        return next((s for s, (k, _) in self._far.items() if k == key), None)

    def claim(self, serial: int, key: bytes, state: int) -> None:
        """Record a new ticket, after state_of(serial, key) said 0 (and remembered the id)."""
        self._count += 1
        if serial >= len(self._states) and serial < 2 * self._count + _GROW:
            self._extend(serial)
        if serial < len(self._states):
            start = serial * ID_SIZE
            self._ids[start : start + ID_SIZE] = key
            self._states[serial] = state
            if state == ISSUED and serial > self._top:
                self._top = serial
            return
        self._far[serial] = (key, 0)
        self.set_state(serial, state)

    def set_state(self, serial: int, state: int) -> None:
        """Move the ticket holding `serial` to `state`."""
        if serial < len(self._states):
            self._states[serial] = state
            if state == ISSUED:
                self._top = max(self._top, serial)
            elif serial == self._top:
                # memrchr over one byte a serial: the next live ticket below, at C speed.
                self._top = max(self._states.rfind(_ISSUED_BYTE, 0, serial), 0)
            return
        self._far[serial] = (self._far[serial][0], state)
        if state == ISSUED:
            heapq.heappush(self._far_issued, -serial)

    def top_issued(self) -> int:
        """The highest serial whose ticket is issued (neither redeemed nor revoked); 0: none."""
        heap = self._far_issued
        if not heap:
            return self._top
        while heap and self._far.get(-heap[0], (b"", 0))[1] != ISSUED:
            heapq.heappop(heap)  # redeemed, revoked, or moved into the arrays (counted there)
        return max(-heap[0] if heap else 0, self._top)

    def _extend(self, serial: int) -> None:
        """Grow the arrays past `serial`, moving far tickets that now fit into them."""
        size = max(serial + 1, len(self._states) + _GROW)
        self._states.extend(bytes(size - len(self._states)))
        self._ids.extend(bytes(size * ID_SIZE - len(self._ids)))
        for moved in [s for s in self._far if s < size]:
            key, state = self._far.pop(moved)
            start = moved * ID_SIZE
            self._ids[start : start + ID_SIZE] = key
            self._states[moved] = state
            if state == ISSUED:
                self._top = max(self._top, moved)


__all__ = [
    "ID_SIZE",
    "ISSUED",
    "REDEEMED",
    "REVOKED",
    "STATE_NAME",
    "VOIDED",
    "HashSet",
    "SerialMismatch",
    "TicketTable",
    "ticket_key",
]
