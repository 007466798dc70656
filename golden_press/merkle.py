"""RFC 9162 Merkle tree hashing, proofs and their verification (pure: no I/O).

Everything follows RFC 9162 section 2.1 (the same tree as RFC 6962 section 2.1):

- leaf hash  = SHA-256(0x00 || entry bytes)                                  (2.1.1)
- node hash  = SHA-256(0x01 || left || right)                                (2.1.1)
- MTH({})    = SHA-256("") and a tree of n > 1 leaves splits at k, the largest power of two
  smaller than n                                                              (2.1.1)
- PATH / PROOF / SUBPROOF for inclusion and consistency proofs                (2.1.3.1, 2.1.4.1)
- the verification algorithms of 2.1.3.2 and 2.1.4.2, with the extra rules of this project: every
  hash is exactly 32 bytes, a consistency proof from size 0 is rejected, and equal sizes need an
  empty proof and equal roots.

Three independent codings of the same tree live here on purpose: the slice recursion of the RFC
(`root_hash`, `inclusion_proof`, `consistency_proof`: the test reference), the bit-walking
verifiers, and the "plans" (`inclusion_ranges`, `consistency_ranges`, `range_nodes`) that let the
ledger store answer proofs from stored complete-subtree hashes in O(log n) reads.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence

from golden_press.errors import GoldenError, Reason

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
#: MTH({}) = SHA-256 of the empty string (RFC 9162 2.1.1).
EMPTY_ROOT = hashlib.sha256(b"").digest()


def hash_b64(digest: bytes) -> str:
    """A hash as golden-press writes it everywhere (checkpoint notes, CLI, API, messages):
    standard base64, so a root in a message can be compared with the one in a note."""
    return base64.b64encode(bytes(digest)).decode("ascii")


#: A complete subtree: (level, index) covers leaves [index * 2**level, (index + 1) * 2**level).
Node = tuple[int, int]


class MerkleError(GoldenError):
    """A proof or hash that does not verify; the message gives expected and actual values."""

    def __init__(self, message: str, reason: Reason = Reason.BAD_PROOF) -> None:
        super().__init__(reason, message)


def leaf_hash(entry: bytes) -> bytes:
    """MTH({d0}) = SHA-256(0x00 || d0) (RFC 9162 2.1.1): the prefix keeps leaves and nodes apart."""
    return hashlib.sha256(LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right) (RFC 9162 2.1.1)."""
    _check_hash("left child", left)
    _check_hash("right child", right)
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two smaller than n (n > 1): where RFC 9162 splits D[n]."""
    if n < 2:
        raise ValueError(f"split_point needs n > 1, got {n}")
    return 1 << ((n - 1).bit_length() - 1)


def _check_hash(what: str, value: bytes, reason: Reason = Reason.BAD_PROOF) -> None:
    """Every hash in this module is exactly 32 bytes; anything else is rejected up front."""
    if not isinstance(value, bytes | bytearray) or len(value) != HASH_SIZE:
        got = len(value) if isinstance(value, bytes | bytearray) else type(value).__name__
        raise MerkleError(f"{what} must be {HASH_SIZE} bytes, got {got}", reason)


# ---- reference generators: the RFC's recursion over slices (tests, small trees) ---------------


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) from leaf hashes (RFC 9162 2.1.1); O(n), meant for tests and small trees."""
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        _check_hash("leaf hash", leaf_hashes[0])
        return bytes(leaf_hashes[0])
    k = split_point(n)
    return node_hash(root_hash(leaf_hashes[:k]), root_hash(leaf_hashes[k:]))


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """PATH(m, D[n]) of RFC 9162 2.1.3.1 over the first `size` leaves, leaf to root."""
    if not 0 <= index < size <= len(leaf_hashes):
        raise ValueError(f"need 0 <= index < size <= {len(leaf_hashes)}, got {index}, {size}")
    return _path(index, leaf_hashes[:size])


def _path(m: int, d: Sequence[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = split_point(n)
    if m < k:
        return [*_path(m, d[:k]), root_hash(d[k:])]
    return [*_path(m - k, d[k:]), root_hash(d[:k])]


def consistency_proof(leaf_hashes: Sequence[bytes], size1: int, size2: int) -> list[bytes]:
    """PROOF(m, D[n]) = SUBPROOF(m, D[n], true) of RFC 9162 2.1.4.1."""
    if not 0 < size1 <= size2 <= len(leaf_hashes):
        raise ValueError(f"need 0 < size1 <= size2 <= {len(leaf_hashes)}, got {size1}, {size2}")
    return _subproof(size1, leaf_hashes[:size2], True)


def _subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [root_hash(d)]
    k = split_point(n)
    if m <= k:
        return [*_subproof(m, d[:k], b), root_hash(d[k:])]
    return [*_subproof(m - k, d[k:], False), root_hash(d[:k])]


# ---- plans: which subtree ranges a proof needs, and which stored nodes make each range ---------


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Leaf ranges [start, end) whose MTH form PATH(index, D[size]), leaf to root."""
    if not 0 <= index < size:
        raise ValueError(f"need 0 <= index < size, got {index}, {size}")
    out: list[tuple[int, int]] = []
    start, end, m = 0, size, index
    while end - start > 1:
        k = split_point(end - start)
        if m < k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start, m = start + k, m - k
    out.reverse()  # collected root to leaf
    return out


def consistency_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """Leaf ranges [start, end) whose MTH form PROOF(size1, D[size2]), in proof order."""
    if not 0 < size1 <= size2:
        raise ValueError(f"need 0 < size1 <= size2, got {size1}, {size2}")
    out: list[tuple[int, int]] = []
    start, end, m, b = 0, size2, size1, True
    while True:
        n = end - start
        if m == n:
            if not b:
                out.append((start, end))
            break
        k = split_point(n)
        if m <= k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start, m, b = start + k, m - k, False
    out.reverse()
    return out


def range_nodes(start: int, end: int) -> list[Node]:
    """Complete subtrees covering [start, end), largest first, for a range the RFC recursion makes.

    Such a range is either a complete subtree or a right edge whose start is a multiple of a power
    of two at least its length, so its binary digits name aligned subtrees, left to right.
    """
    length = end - start
    if length <= 0:
        raise ValueError(f"empty range [{start}, {end})")
    if start % (1 << (length.bit_length() - 1)):
        raise ValueError(f"range [{start}, {end}) does not start on its largest subtree boundary")
    nodes: list[Node] = []
    pos = start
    for level in range(length.bit_length() - 1, -1, -1):
        if length >> level & 1:
            nodes.append((level, pos >> level))
            pos += 1 << level
    return nodes


def fold_nodes(hashes: Sequence[bytes]) -> bytes:
    """MTH of a range from its `range_nodes` hashes: the RFC split puts the largest subtree left."""
    if not hashes:
        raise ValueError("no hashes to fold")
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def frontier_nodes(size: int) -> list[Node]:
    """The complete subtrees of a tree of `size` leaves (its compact range), largest first."""
    return range_nodes(0, size) if size else []


# ---- verification (RFC 9162 2.1.3.2 and 2.1.4.2) ----------------------------------------------


def inclusion_proof_length(index: int, size: int) -> int:
    """How many hashes PATH(index, D[size]) has: inner levels plus right-border levels."""
    inner = (index ^ (size - 1)).bit_length()
    return inner + bin(index >> inner).count("1")


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes]
) -> bytes:
    """The root a proof implies, by the algorithm of RFC 9162 2.1.3.2 steps 1-4."""
    if not 0 <= index < tree_size:
        raise MerkleError(f"leaf index must be in [0, {tree_size}), got {index}")
    _check_hash("leaf hash", leaf_hash)
    expected_len = inclusion_proof_length(index, tree_size)
    if len(proof) != expected_len:
        raise MerkleError(
            f"inclusion proof for leaf {index} of {tree_size} must have {expected_len} hashes, "
            f"got {len(proof)}"
        )
    fn, sn, r = index, tree_size - 1, bytes(leaf_hash)
    for i, p in enumerate(proof):
        _check_hash(f"inclusion proof[{i}]", p)
        if sn == 0:
            raise MerkleError(f"inclusion proof is longer than the path: {len(proof)} hashes")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MerkleError(f"inclusion proof is shorter than the path: {len(proof)} hashes")
    return r


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise MerkleError(BadProof) unless `proof` shows leaf `index` of `tree_size` under `root`."""
    _check_hash("root", root)
    computed = root_from_inclusion_proof(leaf_hash, index, tree_size, proof)
    if computed != root:
        raise MerkleError(
            f"inclusion proof for leaf {index} of {tree_size} gives root {hash_b64(computed)}, "
            f"expected {hash_b64(root)}"
        )


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """Raise MerkleError(InconsistentCheckpoint) unless tree size1/root1 is a prefix of size2."""
    bad = Reason.INCONSISTENT_CHECKPOINT
    _check_hash("root1", root1, bad)
    _check_hash("root2", root2, bad)
    for i, p in enumerate(proof):
        _check_hash(f"consistency proof[{i}]", p, bad)
    if size1 <= 0:
        raise MerkleError(f"consistency from size {size1} is not allowed (need size1 >= 1)", bad)
    if size2 < size1:
        raise MerkleError(f"size2 {size2} is smaller than size1 {size1}", bad)
    if size1 == size2:
        if proof:
            raise MerkleError(f"equal sizes need an empty proof, got {len(proof)} hashes", bad)
        if root1 != root2:
            raise MerkleError(
                f"equal sizes {size1} have different roots: {hash_b64(root1)} "
                f"and {hash_b64(root2)}",
                bad,
            )
        return
    expected_len = len(consistency_ranges(size1, size2))
    if len(proof) != expected_len:
        raise MerkleError(
            f"consistency proof {size1} -> {size2} must have {expected_len} hashes, "
            f"got {len(proof)}",
            bad,
        )
    # RFC 9162 2.1.4.2, steps 2-7.
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, bytes(root1))
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = bytes(path[0])
    for c in path[1:]:
        if sn == 0:
            raise MerkleError("consistency proof is longer than the path", bad)
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MerkleError("consistency proof is shorter than the path", bad)
    if fr != root1:
        raise MerkleError(
            f"consistency proof gives root1 {hash_b64(fr)}, expected {hash_b64(root1)}", bad
        )
    if sr != root2:
        raise MerkleError(
            f"consistency proof gives root2 {hash_b64(sr)}, expected {hash_b64(root2)}", bad
        )


__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MerkleError",
    "consistency_proof",
    "consistency_ranges",
    "fold_nodes",
    "frontier_nodes",
    "inclusion_proof",
    "inclusion_ranges",
    "leaf_hash",
    "node_hash",
    "range_nodes",
    "root_hash",
    "verify_consistency",
    "verify_inclusion",
]
