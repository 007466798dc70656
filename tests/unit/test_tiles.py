"""C2SP tlog-tiles: paths, tile sets, contents and roots, against the RFC reference recursion."""

from __future__ import annotations

import hashlib

import pytest

from golden_press.merkle import EMPTY_ROOT, leaf_hash, root_hash
from golden_press.tiles import (
    TILE_WIDTH,
    Tile,
    TileError,
    TreeBuilder,
    bundles_to_write,
    decode_bundle,
    decode_tile,
    encode_bundle,
    encode_index,
    encode_tile,
    parse_tile_path,
    root_from_tiles,
    tile_root,
    tile_width_at,
    tiles_for_size,
    tiles_to_write,
)


def _leaves(n: int) -> list[bytes]:
    return [leaf_hash(f"entry {i}\n".encode()) for i in range(n)]


# ---- paths (the spec's own examples) --------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "encoded"),
    [(0, "000"), (7, "007"), (999, "999"), (1000, "x001/000"), (1234067, "x001/x234/067")],
)
def test_index_encoding(n: int, encoded: str) -> None:
    assert encode_index(n) == encoded


def test_paths_of_full_partial_and_bundle_tiles() -> None:
    assert Tile(0, 1234067).path == "tile/0/x001/x234/067"
    assert Tile(2, 5, 17).path == "tile/2/005.p/17"
    assert Tile(0, 3, 9).bundle().path == "tile/entries/003.p/9"
    assert Tile(0, 1000).bundle().path == "tile/entries/x001/000"


@pytest.mark.parametrize(
    "tile", [Tile(0, 0), Tile(63, 1234067, 255), Tile(-1, 1000, 1), Tile(1, 999_999_999)]
)
def test_parse_is_the_inverse_of_path(tile: Tile) -> None:
    assert parse_tile_path(tile.path) == tile


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/1",  # not zero-padded
        "tile/0/0001",  # four digits
        "tile/00/000",  # level with a leading zero
        "tile/64/000",  # level above 63
        "tile/-1/000",  # entries are spelled "entries"
        "tile/0/001/234",  # non-final element without x
        "tile/0/x001",  # final element with x
        "tile/0/x000/001",  # leading zero element
        "tile/0/000.p/0",  # width 0
        "tile/0/000.p/256",  # a full tile has no .p
        "tile/0/000.p/07",  # width with a leading zero
        "tile/0/../000",  # traversal
        "tile/0//000",  # empty element
        "tile/0/000/",  # trailing slash
        "tiles/0/000",  # wrong root
        "tile/entries",  # no index
        "checkpoint",
    ],
)
def test_parse_rejects_non_canonical_path(path: str) -> None:
    with pytest.raises(TileError):
        parse_tile_path(path)


@pytest.mark.parametrize(
    ("level", "index", "width"), [(64, 0, 1), (0, -1, 1), (0, 0, 0), (0, 0, 257)]
)
def test_tile_rejects_out_of_range_coordinates(level: int, index: int, width: int) -> None:
    with pytest.raises(TileError):
        Tile(level, index, width)


# ---- which tiles a tree has -----------------------------------------------------------------


def test_the_specs_tree_of_70000() -> None:
    # "273 full level 0 tiles, one partial level 0 tile of width 112, one full level 1 tile, one
    # partial level 1 tile of width 17, and one partial level 2 tile of width 1."
    tiles = tiles_for_size(70_000)
    level0 = [t for t in tiles if t.level == 0]
    assert [t for t in level0 if not t.is_partial] == [Tile(0, n) for n in range(273)]
    assert [t for t in level0 if t.is_partial] == [Tile(0, 273, 112)]
    assert [t for t in tiles if t.level == 1] == [Tile(1, 0), Tile(1, 1, 17)]
    assert [t for t in tiles if t.level == 2] == [Tile(2, 0, 1)]


def test_a_tree_of_256_is_one_full_tile_and_a_partial_of_width_one() -> None:
    assert tiles_for_size(256) == [Tile(0, 0), Tile(1, 0, 1)]
    assert tiles_for_size(0) == []


def test_growth_writes_only_new_tiles() -> None:
    assert tiles_to_write(255, 256) == [Tile(0, 0), Tile(1, 0, 1)]
    assert tiles_to_write(256, 257) == [Tile(0, 1, 1)]  # the level-1 tile did not change
    assert tiles_to_write(300, 300) == []
    assert bundles_to_write(255, 513) == [Tile(-1, 0), Tile(-1, 1), Tile(-1, 2, 1)]
    with pytest.raises(ValueError, match="old_size"):
        tiles_to_write(5, 4)


def test_incremental_tiles_cover_every_final_tile() -> None:
    written: set[Tile] = set()
    for old, new in [(0, 1), (1, 300), (300, 65_536), (65_536, 70_000)]:
        written.update(tiles_to_write(old, new))
    assert set(tiles_for_size(70_000)) <= written


@pytest.mark.parametrize(
    ("size", "level", "index", "width"),
    [
        (0, 0, 0, 0),
        (257, 0, 1, 1),
        (257, 0, 0, 256),
        (257, 0, 2, 0),
        (65_536, 1, 0, 256),
        (65_536, 2, 0, 1),
    ],
)
def test_tile_width_at(size: int, level: int, index: int, width: int) -> None:
    assert tile_width_at(level, index, size) == width


# ---- contents ----------------------------------------------------------------------------------


def test_tile_round_trip_and_malformed_tiles() -> None:
    hashes = _leaves(3)
    assert decode_tile(encode_tile(hashes), 3) == hashes
    with pytest.raises(TileError, match="96 bytes, got 95"):
        decode_tile(encode_tile(hashes)[:-1], 3)
    with pytest.raises(TileError, match="96 bytes, got 128"):
        decode_tile(encode_tile([*hashes, hashes[0]]), 3)
    with pytest.raises(TileError, match=r"1\.\.256 hashes"):
        encode_tile([])
    with pytest.raises(TileError, match="32 bytes"):
        encode_tile([b"short"])


def test_bundle_round_trip() -> None:
    entries = [b"a", b"bb" * 300, b"\x00" * 4096]
    data = encode_bundle(entries)
    assert data[:3] == b"\x00\x01a"  # big-endian uint16 length, then the bytes
    assert decode_bundle(data, 3) == entries


@pytest.mark.parametrize(
    ("data", "width", "message"),
    [
        (b"\x00", 1, "truncated in the length"),
        (b"\x00\x05abc", 1, "needs 5 bytes, 3 left"),
        (b"\x00\x00", 1, "is empty"),
        (b"\x00\x01a\x00\x01b", 1, "more than 1 entries"),
        (b"\x00\x01a", 2, "has 1 entries, expected 2"),
        (b"", 1, "has 0 entries, expected 1"),
    ],
)
def test_decode_bundle_rejects_malformed(data: bytes, width: int, message: str) -> None:
    with pytest.raises(TileError, match=message):
        decode_bundle(data, width)


def test_encode_bundle_rejects_unencodable_entries() -> None:
    with pytest.raises(TileError, match=r"must be 1\.\.65535"):
        encode_bundle([b""])
    with pytest.raises(TileError, match=r"must be 1\.\.65535"):
        encode_bundle([b"x" * 65_536])


def test_tile_root_is_the_subtree_hash() -> None:
    hashes = _leaves(TILE_WIDTH)
    assert tile_root(hashes) == root_hash(hashes)
    with pytest.raises(TileError, match="full tile"):
        tile_root(hashes[:-1])


# ---- roots from tiles ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 2, 3, 255, 256, 257, 511, 512, 700, 65_537])
def test_tree_builder_root_and_tiles_match_the_rfc(size: int) -> None:
    leaves = _leaves(size)
    builder = TreeBuilder()
    tiles: dict[Tile, list[bytes]] = {}
    for h in leaves:
        tiles.update(builder.add(h))
    tiles.update(builder.partial_tiles())
    expected = root_hash(leaves) if size else EMPTY_ROOT
    assert builder.root() == expected
    assert set(tiles) == set(tiles_for_size(size))
    # Level-0 tiles are the leaf hashes; level l+1 holds the roots of full level-l tiles.
    for tile, hashes in tiles.items():
        start = tile.index << 8
        if tile.level == 0:
            assert hashes == leaves[start : start + tile.width]
        else:
            assert hashes == [
                tile_root(tiles[Tile(tile.level - 1, start + i)]) for i in range(tile.width)
            ]
    assert root_from_tiles(size, lambda t: encode_tile(tiles[t])) == expected


def test_root_from_tiles_rejects_a_short_tile() -> None:
    builder = TreeBuilder()
    for h in _leaves(5):
        builder.add(h)
    tiles = dict(builder.partial_tiles())
    with pytest.raises(TileError, match="160 bytes, got 128"):
        root_from_tiles(5, lambda t: encode_tile(tiles[t][:4]))


def test_builder_rejects_a_bad_hash() -> None:
    with pytest.raises(TileError, match="32 bytes"):
        TreeBuilder().add(hashlib.sha256(b"x").digest()[:31])
