"""RFC 9162 Merkle tree: reference vectors, random trees, and every way a proof can be wrong."""

from __future__ import annotations

import random

import pytest

from golden_press.errors import GoldenError, Reason
from golden_press.merkle import (
    EMPTY_ROOT,
    MerkleError,
    consistency_proof,
    consistency_ranges,
    fold_nodes,
    hash_b64,
    inclusion_proof,
    inclusion_ranges,
    leaf_hash,
    node_hash,
    range_nodes,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

# The 8-leaf reference tree of RFC 6962 / certificate-transparency, as used by
# transparency-dev/merkle proof/verify_test.go: leaf inputs, the root of every size 1..8, and
# known inclusion and consistency proofs.
LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = [
    bytes.fromhex(h)
    for h in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]


def _hx(*hashes: str) -> list[bytes]:
    return [bytes.fromhex(h) for h in hashes]


# (leaf index (0-based), tree size, proof)
INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        _hx(
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        5,
        8,
        _hx(
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (2, 3, _hx("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")),
    (
        1,
        5,
        _hx(
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
]

# (size1, size2, proof)
CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        _hx(
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        6,
        8,
        _hx(
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (
        2,
        5,
        _hx(
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
    (
        6,
        7,
        _hx(
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
]

REF_HASHES = [leaf_hash(d) for d in LEAVES]


def _flip(b: bytes, bit: int = 0) -> bytes:
    return bytes([b[0] ^ (1 << bit), *b[1:]])


# ---- reference tree ---------------------------------------------------------------------------


def test_hash_primitives_match_rfc() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert root_hash([]) == EMPTY_ROOT
    assert leaf_hash(b"") == ROOTS[0]
    assert node_hash(REF_HASHES[0], REF_HASHES[1]) == ROOTS[1]


@pytest.mark.parametrize("size", range(1, 9))
def test_reference_roots(size: int) -> None:
    assert root_hash(REF_HASHES[:size]) == ROOTS[size - 1]
    assert fold_nodes([_subtree(node) for node in range_nodes(0, size)]) == ROOTS[size - 1]


def _subtree(node: tuple[int, int]) -> bytes:
    level, idx = node
    return root_hash(REF_HASHES[idx << level : (idx + 1) << level])


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_reference_inclusion_proofs(index: int, size: int, proof: list[bytes]) -> None:
    assert inclusion_proof(REF_HASHES, index, size) == proof
    verify_inclusion(REF_HASHES[index], index, size, proof, ROOTS[size - 1])


@pytest.mark.parametrize(("size1", "size2", "proof"), CONSISTENCY)
def test_reference_consistency_proofs(size1: int, size2: int, proof: list[bytes]) -> None:
    assert consistency_proof(REF_HASHES, size1, size2) == proof
    verify_consistency(size1, size2, ROOTS[size1 - 1], ROOTS[size2 - 1], proof)


def test_every_proof_of_the_reference_tree_verifies() -> None:
    for size in range(1, 9):
        for index in range(size):
            proof = inclusion_proof(REF_HASHES, index, size)
            verify_inclusion(REF_HASHES[index], index, size, proof, ROOTS[size - 1])
        for size1 in range(1, size + 1):
            proof = consistency_proof(REF_HASHES, size1, size)
            verify_consistency(size1, size, ROOTS[size1 - 1], ROOTS[size - 1], proof)


# ---- random trees -----------------------------------------------------------------------------


def _random_tree(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [leaf_hash(rng.randbytes(rng.randrange(0, 40))) for _ in range(n)]


def _prefix_roots(hashes: list[bytes]) -> list[bytes]:
    """Roots of every prefix via the binary-counter frontier (a fourth, incremental coding)."""
    roots = [EMPTY_ROOT]
    frontier: dict[int, bytes] = {}
    for n, h in enumerate(hashes):
        level, i = 0, n
        while i & 1:
            h = node_hash(frontier.pop(level), h)
            level, i = level + 1, i >> 1
        frontier[level] = h
        roots.append(fold_nodes([frontier[lv] for lv in sorted(frontier, reverse=True)]))
    return roots


@pytest.mark.parametrize(("n", "seed"), [(1, 1), (2, 2), (3, 3), (17, 4), (100, 5), (2049, 6)])
def test_random_tree_every_inclusion_proof_verifies(n: int, seed: int) -> None:
    hashes = _random_tree(n, seed)
    roots = _prefix_roots(hashes)
    assert roots[n] == root_hash(hashes)
    sizes = sorted({n, max(1, n // 2), max(1, n - 1), 1})
    for size in sizes:
        for index in range(size):
            proof = inclusion_proof(hashes, index, size)
            verify_inclusion(hashes[index], index, size, proof, roots[size])


def test_random_tree_all_sizes_roots_and_sampled_proofs() -> None:
    n = 3000
    hashes = _random_tree(n, 7)
    roots = _prefix_roots(hashes)
    rng = random.Random(8)
    for size in [*rng.sample(range(1, n + 1), 60), n, 1024, 1025, 2048]:
        assert roots[size] == root_hash(hashes[:size])
        for index in [0, size - 1, *rng.sample(range(size), min(size, 10))]:
            verify_inclusion(
                hashes[index], index, size, inclusion_proof(hashes, index, size), roots[size]
            )
    for _ in range(300):
        size2 = rng.randrange(1, n + 1)
        size1 = rng.randrange(1, size2 + 1)
        proof = consistency_proof(hashes, size1, size2)
        verify_consistency(size1, size2, roots[size1], roots[size2], proof)


def test_plans_match_reference_recursion() -> None:
    hashes = _random_tree(300, 9)

    def mth(start: int, end: int) -> bytes:
        by_nodes = fold_nodes(
            [root_hash(hashes[i << lv : (i + 1) << lv]) for lv, i in range_nodes(start, end)]
        )
        assert by_nodes == root_hash(hashes[start:end])
        return by_nodes

    for size in range(1, 300, 7):
        for index in range(0, size, 5):
            ranges = inclusion_ranges(index, size)
            assert [mth(a, b) for a, b in ranges] == inclusion_proof(hashes, index, size)
        for size1 in range(1, size + 1, 3):
            ranges = consistency_ranges(size1, size)
            assert [mth(a, b) for a, b in ranges] == consistency_proof(hashes, size1, size)


# ---- every mutation fails ---------------------------------------------------------------------


def _inclusion_mutations(index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes):
    yield "index - 1", (leaf, index - 1, size, proof, root)
    yield "index + 1", (leaf, index + 1, size, proof, root)
    yield "index ^ 2", (leaf, index ^ 2, size, proof, root)
    yield "size * 2", (leaf, index, size * 2, proof, root)
    yield "size / 2", (leaf, index, size // 2, proof, root)
    yield "size + 1", (leaf, index, size + 1, proof, root)
    yield "wrong leaf", (_flip(leaf), index, size, proof, root)
    yield "short leaf", (leaf[:31], index, size, proof, root)
    yield "empty root", (leaf, index, size, proof, EMPTY_ROOT)
    yield "trailing garbage", (leaf, index, size, [*proof, b""], root)
    yield "trailing root", (leaf, index, size, [*proof, root], root)
    yield "preceding root", (leaf, index, size, [root, *proof], root)
    for bit in range(8):
        yield f"root bit {bit}", (leaf, index, size, proof, _flip(root, bit))
    for i in range(len(proof)):
        for bit in (0, 3, 7):
            wrong = list(proof)
            wrong[i] = _flip(wrong[i], bit)
            yield f"proof[{i}] bit {bit}", (leaf, index, size, wrong, root)
        yield (
            f"proof[{i}] truncated",
            (leaf, index, size, [*proof[:i], proof[i][:31], *proof[i + 1 :]], root),
        )
    if proof:
        yield "removed component", (leaf, index, size, proof[:-1], root)
    if len(proof) > 1:
        yield "swapped components", (leaf, index, size, [proof[1], proof[0], *proof[2:]], root)
    for bit in range(5):
        if index ^ (1 << bit) != index:
            yield f"index bit {bit}", (leaf, index ^ (1 << bit), size, proof, root)
        yield f"size bit {bit}", (leaf, index, size ^ (1 << bit), proof, root)


def _directions(index: int, size: int) -> list[bool] | None:
    """Which side each proof hash joins on: all the verifier's fold depends on besides hashes."""
    if not 0 <= index < size:
        return None
    return [end <= index for _, end in inclusion_ranges(index, size)]


def _assert_inclusion_mutations_fail(
    index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes
) -> None:
    for desc, args in _inclusion_mutations(index, size, proof, root, leaf):
        if args[2] != size and _directions(index, args[2]) == _directions(index, size):
            # A different size with the same path shape folds to the same root: no hash chain can
            # tell them apart. The size is bound by the signed checkpoint (see test_bundle).
            verify_inclusion(*args)
            continue
        with pytest.raises(MerkleError) as info:
            verify_inclusion(*args)
        assert info.value.reason is Reason.BAD_PROOF, desc


def _assert_consistency_mutations_fail(
    hashes: list[bytes], roots: list[bytes], size1: int, size2: int, proof: list[bytes]
) -> None:
    root1, root2 = roots[size1], roots[size2]
    cases = [
        # Sizes changed, roots kept (transparency-dev's probes).
        ("size1 - 1", (size1 - 1, size2, root1, root2, proof)),
        ("size1 + 1", (size1 + 1, size2, root1, root2, proof)),
        ("size1 ^ 2", (size1 ^ 2, size2, root1, root2, proof)),
        ("size2 * 2", (size1, size2 * 2, root1, root2, proof)),
        ("size2 / 2", (size1, size2 // 2, root1, root2, proof)),
        ("swapped roots", (size1, size2, root2, root1, proof)),
        ("empty proof", (size1, size2, root1, root2, [])),
        ("trailing root1", (size1, size2, root1, root2, [*proof, root1])),
        ("trailing root2", (size1, size2, root1, root2, [*proof, root2])),
        ("preceding root2", (size1, size2, root1, root2, [root2, *proof])),
        ("preceding proof[0]", (size1, size2, root1, root2, [proof[0], *proof])),
        ("truncated", (size1, size2, root1, root2, proof[:-1])),
    ]
    for bit in range(8):
        cases.append((f"root1 bit {bit}", (size1, size2, _flip(root1, bit), root2, proof)))
        cases.append((f"root2 bit {bit}", (size1, size2, root1, _flip(root2, bit), proof)))
    for i in range(len(proof)):
        for bit in (0, 4, 7):
            wrong = list(proof)
            wrong[i] = _flip(wrong[i], bit)
            cases.append((f"proof[{i}] bit {bit}", (size1, size2, root1, root2, wrong)))
    for desc, args in cases:
        if args[0] == args[1] and args[2] == args[3] and not args[4]:
            continue  # a mutation that happens to be a valid trivial proof
        with pytest.raises(MerkleError) as info:
            verify_consistency(*args)
        assert info.value.reason is Reason.INCONSISTENT_CHECKPOINT, desc
    # A size bit flipped together with the true root of the flipped size (what a checkpoint
    # binds): the old proof must fail unless it happens to be the right proof for those sizes.
    n = len(hashes)
    for bit in range(12):
        for s1, s2 in ((size1 ^ (1 << bit), size2), (size1, size2 ^ (1 << bit))):
            if not 0 < s1 <= s2 <= n:
                continue
            if consistency_proof(hashes, s1, s2) == proof:
                verify_consistency(s1, s2, roots[s1], roots[s2], proof)
                continue
            with pytest.raises(MerkleError):
                verify_consistency(s1, s2, roots[s1], roots[s2], proof)


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_reference_inclusion_mutations_fail(index: int, size: int, proof: list[bytes]) -> None:
    _assert_inclusion_mutations_fail(index, size, proof, ROOTS[size - 1], REF_HASHES[index])


@pytest.mark.parametrize(("size1", "size2", "proof"), [c for c in CONSISTENCY if c[2]])
def test_reference_consistency_mutations_fail(size1: int, size2: int, proof: list[bytes]) -> None:
    _assert_consistency_mutations_fail(REF_HASHES, [EMPTY_ROOT, *ROOTS], size1, size2, proof)


def test_random_tree_mutations_fail() -> None:
    n = 1500
    hashes = _random_tree(n, 10)
    roots = _prefix_roots(hashes)
    rng = random.Random(11)
    for _ in range(25):
        size = rng.randrange(2, n + 1)
        index = rng.randrange(size)
        proof = inclusion_proof(hashes, index, size)
        _assert_inclusion_mutations_fail(index, size, proof, roots[size], hashes[index])
    for _ in range(25):
        size2 = rng.randrange(3, n + 1)
        size1 = rng.randrange(1, size2)
        proof = consistency_proof(hashes, size1, size2)
        _assert_consistency_mutations_fail(hashes, roots, size1, size2, proof)


# ---- edge rules -------------------------------------------------------------------------------


def test_consistency_from_size_zero_is_rejected() -> None:
    with pytest.raises(MerkleError, match="size 0"):
        verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    with pytest.raises(MerkleError, match="size 0"):
        verify_consistency(0, 1, EMPTY_ROOT, ROOTS[0], [])


def test_equal_sizes_need_empty_proof_and_equal_roots() -> None:
    verify_consistency(3, 3, ROOTS[2], ROOTS[2], [])
    with pytest.raises(MerkleError, match="empty proof"):
        verify_consistency(3, 3, ROOTS[2], ROOTS[2], [ROOTS[2]])
    with pytest.raises(MerkleError, match="different roots"):
        verify_consistency(3, 3, ROOTS[2], ROOTS[3], [])


def test_time_travel_is_rejected() -> None:
    with pytest.raises(MerkleError, match="smaller"):
        verify_consistency(5, 4, ROOTS[4], ROOTS[3], [])


@pytest.mark.parametrize("bad", [b"", b"x" * 31, b"x" * 33])
def test_every_hash_must_be_32_bytes(bad: bytes) -> None:
    with pytest.raises(MerkleError, match="32 bytes"):
        verify_inclusion(bad, 0, 1, [], ROOTS[0])
    with pytest.raises(MerkleError, match="32 bytes"):
        verify_inclusion(ROOTS[0], 0, 1, [], bad)
    with pytest.raises(MerkleError, match="32 bytes"):
        verify_inclusion(REF_HASHES[0], 0, 2, [bad], ROOTS[1])
    with pytest.raises(MerkleError, match="32 bytes"):
        verify_consistency(1, 2, bad, ROOTS[1], [REF_HASHES[1]])
    with pytest.raises(MerkleError, match="32 bytes"):
        verify_consistency(1, 2, ROOTS[0], ROOTS[1], [bad])


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 0), (1, 1), (2, 1), (-1, 4)])
def test_index_outside_tree_is_rejected(index: int, size: int) -> None:
    with pytest.raises(MerkleError, match="leaf index"):
        verify_inclusion(REF_HASHES[0], index, size, [], ROOTS[0])


def test_errors_name_expected_and_actual() -> None:
    proof = inclusion_proof(REF_HASHES, 5, 8)
    with pytest.raises(MerkleError) as info:
        verify_inclusion(REF_HASHES[5], 5, 8, proof, ROOTS[6])
    assert hash_b64(ROOTS[6]) in info.value.message and hash_b64(ROOTS[7]) in info.value.message
    with pytest.raises(MerkleError, match="must have 3 hashes, got 2"):
        verify_inclusion(REF_HASHES[5], 5, 8, proof[:2], ROOTS[7])
    assert isinstance(info.value, GoldenError)
