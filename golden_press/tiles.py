"""C2SP tlog-tiles: tile coordinates, paths, contents and the root they hash to (pure: no I/O).

c2sp.org/tlog-tiles, with tile height 8 (256 hashes per full tile, 8,192 bytes):

- the n-th tile at level l holds, for i in 0..255, MTH(D[(n*256 + i) * 256**l :
  (n*256 + i + 1) * 256**l]): level 0 holds leaf hashes, level l+1 the roots of full level-l
  tiles ("Merkle Tree" section);
- it is served at `tile/<L>/<N>[.p/<W>]`: N as zero-padded 3-digit path elements, all but the
  last prefixed with `x` (1234067 -> `x001/x234/067`); `.p/<W>` (1 <= W <= 255) only for a
  partial tile;
- the partial tile at level l of a tree of size s has floor(s / 256**l) mod 256 hashes, and
  empty tiles do not exist ("Partial Tiles");
- entry bundles `tile/entries/<N>[.p/<W>]` are the level-0 entries, each a big-endian uint16
  length followed by the entry bytes ("Log entries").

The Merkle math itself (RFC 6962 / RFC 9162 section 2.1) is golden_press.merkle's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from golden_press.errors import GoldenError, Reason
from golden_press.merkle import EMPTY_ROOT, HASH_SIZE, fold_nodes, leaf_hash, node_hash

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT  # 256 hashes in a full tile
MAX_LEVEL = 63
MAX_ENTRY_LEN = 0xFFFF  # an entry's length is a big-endian uint16
_INDEX_ELEMENT = re.compile(r"^[0-9]{3}$")
_LEVEL = re.compile(r"^(0|[1-9][0-9]?)$")
_WIDTH = re.compile(r"^[1-9][0-9]{0,2}$")


class TileError(GoldenError):
    """A tile, entry bundle or tile path that is malformed or does not match the tree."""

    def __init__(self, message: str) -> None:
        super().__init__(Reason.BAD_PROOF, message)


@dataclass(frozen=True, order=True)
class Tile:
    """A tile coordinate: `level` 0..63, `index` within the level, `width` 1..256 hashes.

    Level -1 is not a hash tile but the entry bundle of the level-0 tile with the same index.
    """

    level: int
    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        if not -1 <= self.level <= MAX_LEVEL:
            raise TileError(f"tile level must be in [0, {MAX_LEVEL}], got {self.level}")
        if self.index < 0:
            raise TileError(f"tile index must be >= 0, got {self.index}")
        if not 1 <= self.width <= TILE_WIDTH:
            raise TileError(f"tile width must be in [1, {TILE_WIDTH}], got {self.width}")

    @property
    def is_bundle(self) -> bool:
        """True for an entry bundle (tile/entries/...), False for a hash tile."""
        return self.level == -1

    @property
    def is_partial(self) -> bool:
        """True when the tile has fewer than 256 hashes (or entries)."""
        return self.width < TILE_WIDTH

    @property
    def path(self) -> str:
        """The resource path under the log prefix, e.g. `tile/0/x001/x234/067.p/5`."""
        level = "entries" if self.is_bundle else str(self.level)
        suffix = f".p/{self.width}" if self.is_partial else ""
        return f"tile/{level}/{encode_index(self.index)}{suffix}"

    def bundle(self) -> Tile:
        """The entry bundle that matches this level-0 tile."""
        if self.level != 0:
            raise TileError(f"only level-0 tiles have entry bundles, not level {self.level}")
        return Tile(-1, self.index, self.width)


def encode_index(n: int) -> str:
    """N as zero-padded 3-digit path elements, all but the last prefixed with `x`."""
    if n < 0:
        raise TileError(f"tile index must be >= 0, got {n}")
    groups = [f"{n % 1000:03d}"]
    n //= 1000
    while n:
        groups.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(groups))


def parse_tile_path(path: str) -> Tile:
    """The tile a resource path names; anything not in the spec's exact form raises TileError.

    Used by the HTTP server before touching the filesystem, so only canonical tile paths (no
    `..`, no extra slashes, no leading zeros) can ever reach a file.
    """
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "tile":
        raise TileError(f"not a tile path: {path[:80]!r}")
    level_s = parts[1]
    rest = parts[2:]
    width = TILE_WIDTH
    if len(rest) >= 2 and rest[-2].endswith(".p"):
        width_s = rest[-1]
        if not _WIDTH.fullmatch(width_s) or not 1 <= int(width_s) < TILE_WIDTH:
            raise TileError(f"bad partial width {width_s[:8]!r} in {path[:80]!r}")
        width = int(width_s)
        rest = [*rest[:-2], rest[-2][: -len(".p")]]
    if level_s == "entries":
        level = -1
    elif _LEVEL.fullmatch(level_s) and int(level_s) <= MAX_LEVEL:
        level = int(level_s)
    else:
        raise TileError(f"bad tile level {level_s[:8]!r} in {path[:80]!r}")
    index = 0
    for i, element in enumerate(rest):
        last = i == len(rest) - 1
        digits = element if last else element.removeprefix("x")
        if (not last and not element.startswith("x")) or not _INDEX_ELEMENT.fullmatch(digits):
            raise TileError(f"bad index element {element[:8]!r} in {path[:80]!r}")
        index = index * 1000 + int(digits)
    if len(rest) > 1 and rest[0] == "x000":
        raise TileError(f"index has a leading zero element in {path[:80]!r}")
    return Tile(level, index, width)


# ---- which tiles a tree has ----------------------------------------------------------------


def tile_width_at(level: int, index: int, size: int) -> int:
    """Width of tile (level, index) in a tree of `size` leaves; 0 when it does not exist yet."""
    full = size >> (TILE_HEIGHT * (level + 1))
    if index < full:
        return TILE_WIDTH
    if index == full:
        return (size >> (TILE_HEIGHT * level)) % TILE_WIDTH
    return 0


def tiles_for_size(size: int) -> list[Tile]:
    """Every hash tile of a tree of `size` leaves: full ones, then each level's partial one."""
    return tiles_to_write(0, size)


def tiles_to_write(old_size: int, new_size: int) -> list[Tile]:
    """Hash tiles a log growing from old_size to new_size must publish (level by level).

    Full tiles that were already full at old_size are immutable and never rewritten; a full tile
    that was partial at old_size is new; every non-empty partial tile of new_size is new.
    """
    if not 0 <= old_size <= new_size:
        raise ValueError(f"need 0 <= old_size <= new_size, got {old_size}, {new_size}")
    out: list[Tile] = []
    level = 0
    while new_size >> (TILE_HEIGHT * level):
        old_full = old_size >> (TILE_HEIGHT * (level + 1))
        new_full = new_size >> (TILE_HEIGHT * (level + 1))
        out.extend(Tile(level, n) for n in range(old_full, new_full))
        width = tile_width_at(level, new_full, new_size)
        if width and (new_full != old_full or width != tile_width_at(level, new_full, old_size)):
            out.append(Tile(level, new_full, width))
        level += 1
    return out


def bundles_to_write(old_size: int, new_size: int) -> list[Tile]:
    """Entry bundles a log growing from old_size to new_size must publish."""
    return [t.bundle() for t in tiles_to_write(old_size, new_size) if t.level == 0]


# ---- tile and bundle contents --------------------------------------------------------------


def encode_tile(hashes: Sequence[bytes]) -> bytes:
    """A tile's bytes: its hashes concatenated (1..256 of them, 32 bytes each)."""
    if not 1 <= len(hashes) <= TILE_WIDTH:
        raise TileError(f"a tile holds 1..{TILE_WIDTH} hashes, got {len(hashes)}")
    for i, h in enumerate(hashes):
        if len(h) != HASH_SIZE:
            raise TileError(f"tile hash {i} must be {HASH_SIZE} bytes, got {len(h)}")
    return b"".join(hashes)


def decode_tile(data: bytes, width: int) -> list[bytes]:
    """The hashes of a tile of `width`; the byte length must be exactly width * 32."""
    if len(data) != width * HASH_SIZE:
        raise TileError(f"tile of width {width} must be {width * HASH_SIZE} bytes, got {len(data)}")
    return [bytes(data[i : i + HASH_SIZE]) for i in range(0, len(data), HASH_SIZE)]


def encode_bundle(entries: Iterable[bytes]) -> bytes:
    """An entry bundle: each entry as a big-endian uint16 length, then its bytes."""
    out = bytearray()
    for i, entry in enumerate(entries):
        if not entry or len(entry) > MAX_ENTRY_LEN:
            raise TileError(f"entry {i} is {len(entry)} bytes, must be 1..{MAX_ENTRY_LEN}")
        out += len(entry).to_bytes(2, "big") + entry
    return bytes(out)


def decode_bundle(data: bytes, width: int) -> list[bytes]:
    """Exactly `width` entries from a bundle; truncation, trailing bytes or a miscount raise."""
    entries: list[bytes] = []
    pos, end = 0, len(data)
    while pos < end:
        if pos + 2 > end:
            raise TileError(f"entry bundle truncated in the length of entry {len(entries)}")
        length = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        if length == 0:
            raise TileError(f"entry {len(entries)} of the bundle is empty")
        if pos + length > end:
            raise TileError(
                f"entry {len(entries)} of the bundle needs {length} bytes, {end - pos} left"
            )
        entries.append(bytes(data[pos : pos + length]))
        pos += length
        if len(entries) > width:
            raise TileError(f"entry bundle has more than {width} entries")
    if len(entries) != width:
        raise TileError(f"entry bundle has {len(entries)} entries, expected {width}")
    return entries


def subtree_root(hashes: Sequence[bytes]) -> bytes:
    """MTH of a perfect subtree whose 2**k leaves are `hashes` (a full tile, or a slice of one)."""
    n = len(hashes)
    if n == 0 or n & (n - 1):
        raise ValueError(f"a perfect subtree has a power-of-two width, got {n}")
    level = list(hashes)
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def tile_root(hashes: Sequence[bytes]) -> bytes:
    """The hash a full tile contributes to the level above."""
    if len(hashes) != TILE_WIDTH:
        raise TileError(f"only a full tile ({TILE_WIDTH} hashes) has a root, got {len(hashes)}")
    return subtree_root(hashes)


def _partial_nodes(hashes: Sequence[bytes]) -> list[bytes]:
    """The perfect subtrees of a partial run of hashes, largest first (its binary digits)."""
    out: list[bytes] = []
    pos, width = 0, len(hashes)
    for bit in range(TILE_HEIGHT, -1, -1):
        if width >> bit & 1:
            out.append(subtree_root(hashes[pos : pos + (1 << bit)]))
            pos += 1 << bit
    return out


def root_from_levels(levels: Sequence[Sequence[bytes]]) -> bytes:
    """MTH(D[size]) from the rightmost partial run of every level (levels[0] = leaf hashes).

    levels[l] holds the floor(size / 256**l) mod 256 hashes of the partial tile at level l (the
    hashes of tree level 8*l right of the last full tile above); the RFC split puts the larger
    subtrees left, so the root folds the perfect subtrees from the top level down.
    """
    nodes: list[bytes] = []
    for hashes in reversed(levels):
        nodes.extend(_partial_nodes(hashes))
    return fold_nodes(nodes) if nodes else EMPTY_ROOT


def root_from_tiles(size: int, read_tile: Callable[[Tile], bytes]) -> bytes:
    """MTH(D[size]) from the partial tiles of `size` only (and no full tile at all).

    A full tile at a level is already summarised by the level above, so only the partial tile
    of each level is read: at most ceil(log256(size)) + 1 reads.
    """
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    levels: list[list[bytes]] = []
    level = 0
    while size >> (TILE_HEIGHT * level):
        full = size >> (TILE_HEIGHT * (level + 1))
        width = tile_width_at(level, full, size)
        levels.append(decode_tile(read_tile(Tile(level, full, width)), width) if width else [])
        level += 1
    return root_from_levels(levels)


class TreeBuilder:
    """Leaf hashes in, tiles and roots out, in O(256 * levels) memory (a tile-sized frontier).

    `add` returns the full tiles it completes as (Tile, hashes), so a writer can publish them
    and a monitor can compare them with what a log serves; `partial_tiles` lists the rest.
    """

    def __init__(self) -> None:
        self.size = 0
        self._levels: list[list[bytes]] = [[]]
        self._full: list[int] = [0]  # full tiles so far per level

    def add(self, h: bytes) -> list[tuple[Tile, list[bytes]]]:
        """Append one leaf hash; the full tiles this completes, lowest level first."""
        if len(h) != HASH_SIZE:
            raise TileError(f"leaf hash must be {HASH_SIZE} bytes, got {len(h)}")
        self.size += 1
        done: list[tuple[Tile, list[bytes]]] = []
        level, value = 0, h
        while True:
            run = self._levels[level]
            run.append(value)
            if len(run) < TILE_WIDTH:
                return done
            done.append((Tile(level, self._full[level]), run))
            self._full[level] += 1
            value = tile_root(run)
            self._levels[level] = []
            level += 1
            if level == len(self._levels):
                self._levels.append([])
                self._full.append(0)

    def add_entry(self, entry: bytes) -> list[tuple[Tile, list[bytes]]]:
        """Append one entry by its RFC 6962 leaf hash."""
        return self.add(leaf_hash(entry))

    def partial_tiles(self) -> list[tuple[Tile, list[bytes]]]:
        """The non-empty partial tile of every level at the current size."""
        return [
            (Tile(level, self._full[level], len(run)), list(run))
            for level, run in enumerate(self._levels)
            if run
        ]

    def tail(self, level: int) -> list[bytes]:
        """The hashes of the partial tile at `level` (empty when there is none)."""
        return list(self._levels[level]) if level < len(self._levels) else []

    def root(self) -> bytes:
        """MTH(D[size]) of everything added so far."""
        return root_from_levels(self._levels)


__all__ = [
    "MAX_ENTRY_LEN",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "Tile",
    "TileError",
    "TreeBuilder",
    "bundles_to_write",
    "decode_bundle",
    "decode_tile",
    "encode_bundle",
    "encode_index",
    "encode_tile",
    "parse_tile_path",
    "root_from_levels",
    "root_from_tiles",
    "subtree_root",
    "tile_root",
    "tile_width_at",
    "tiles_for_size",
    "tiles_to_write",
]
