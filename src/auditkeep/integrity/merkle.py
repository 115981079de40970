"""RFC 9162 Merkle tree over an organization's events: roots, compact ranges, proofs and their checks.

Leaf `n - 1` of an organization's tree is event seq `n`, and its leaf data is the raw 32 bytes of that
event's chain hash, so tree size `n` covers seq 1..n (docs/integrity.md). Functions here take *leaf
hashes* (`leaf_hash(chain_hash)`), not leaf data.

Everything is iterative: building the root over 1,000,000 leaf hashes costs about 0.6 s here (one
SHA-256 per inner node, ~0.6 µs each), where a recursive MTH would add a Python call per node.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

HASH_SIZE = 32
# RFC 9162 §2.1.1: "The hash of an empty list is the hash of an empty string".
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 leaf hash: SHA-256(0x00 ‖ data). For auditkeep, data is an event's raw chain hash."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash: SHA-256(0x01 ‖ left ‖ right)."""
    return _sha256(b"\x01" + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """The k of RFC 9162 §2.1.1: the largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def _subtree_root(leaves: Sequence[bytes], start: int, end: int) -> bytes:
    """MTH(D[start:end]) for end > start, built level by level.

    Pairing neighbours and carrying an odd last node up unchanged builds exactly RFC 9162's tree (the
    left subtree always holds the largest power of two of leaves), without recursion.
    """
    level = list(leaves[start:end])
    sha = _sha256
    while len(level) > 1:
        pairs = iter(level)
        upper = [sha(b"\x01" + left + right).digest() for left, right in zip(pairs, pairs, strict=False)]
        if len(level) & 1:
            upper.append(level[-1])
        level = upper
    return level[0]


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over all the given leaf hashes; `EMPTY_ROOT` for none."""
    if not leaf_hashes:
        return EMPTY_ROOT
    return _subtree_root(leaf_hashes, 0, len(leaf_hashes))


class CompactRange:
    """The roots of the perfect subtrees that make up a tree of `size` leaves, largest first.

    One hash per set bit of `size`, so appending a leaf and computing the root cost O(log size). This is
    what `chain_heads.merkle_frontier` stores (`to_text`): ingest appends each new event's leaf hash and
    reads the root for checkpoints without touching older events.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        hashes = list(hashes)
        if size < 0:
            raise ValueError(f"size must be >= 0, not {size}")
        if len(hashes) != size.bit_count():
            raise ValueError(f"size {size} needs {size.bit_count()} compact range hashes, not {len(hashes)}")
        if any(len(h) != HASH_SIZE for h in hashes):
            raise ValueError("every hash of a compact range must be 32 bytes")
        self._size = size
        self._hashes = hashes

    @property
    def size(self) -> int:
        """Number of leaves covered."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The subtree roots, largest subtree first."""
        return tuple(self._hashes)

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash (`leaf_hash(chain_hash)`) at index `size`."""
        if len(leaf) != HASH_SIZE:
            raise ValueError("a leaf hash must be 32 bytes")
        hashes = self._hashes
        node = leaf
        # Each trailing 1 bit of size is a perfect subtree the same height as `node`: merge them.
        size = self._size
        while size & 1:
            node = _sha256(b"\x01" + hashes.pop() + node).digest()
            size >>= 1
        hashes.append(node)
        self._size += 1

    def extend(self, leaves: Iterable[bytes]) -> None:
        """Append several leaf hashes in order."""
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        """MTH of the covered leaves: the subtree roots folded from the smallest (rightmost) up."""
        if not self._hashes:
            return EMPTY_ROOT
        node = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            node = _sha256(b"\x01" + left + node).digest()
        return node

    def extend_span(self, end: int, hashes: Sequence[bytes]) -> None:
        """Append leaves `size`..`end - 1` given as their `MerkleSpan(begin=size).hashes`: O(log) hashes.

        This is how ranges built in separate processes join into one tree (ingest/verification.py).
        """
        nodes = cover(self._size, end)
        if len(nodes) != len(hashes):
            raise ValueError(f"leaves {self._size}..{end - 1} are covered by {len(nodes)} hashes, not {len(hashes)}")
        size = self._size
        stack = [(height, digest) for height, digest in
                 zip(_heights(size), self._hashes, strict=True)]
        for (height, _index), digest in zip(nodes, hashes, strict=True):
            _push(stack, size, height, digest)
            size += 1 << height
        self._hashes = [digest for _height, digest in stack]
        self._size = end

    def copy(self) -> CompactRange:
        """An independent copy (appending to it leaves this one unchanged)."""
        return CompactRange(self._size, self._hashes)

    def to_text(self) -> str:
        """The `chain_heads.merkle_frontier` form: lowercase hex hashes, comma-separated, largest first."""
        return ",".join(h.hex() for h in self._hashes)

    @classmethod
    def from_text(cls, size: int, text: str) -> CompactRange:
        """Parse `to_text` output for a tree of `size` leaves; ValueError if it cannot be that."""
        parts = text.split(",") if text else []
        if any(len(part) != 2 * HASH_SIZE for part in parts):
            raise ValueError("merkle frontier hashes must be 64 hex digits")
        return cls(size, [bytes.fromhex(part) for part in parts])

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size}, root={self.root().hex()})"


def cover(begin: int, end: int) -> list[tuple[int, int]]:
    """The perfect subtrees that exactly cover leaves [begin, end), left to right, as (height, index).

    Subtree (h, i) holds leaves i·2^h .. (i+1)·2^h - 1. For begin = 0 these are the subtrees of a
    compact range; in general they are the nodes a range's own leaves determine.
    """
    if not 0 <= begin <= end:
        raise ValueError(f"need 0 <= begin <= end; got {begin}, {end}")
    left: list[tuple[int, int]] = []
    right: list[tuple[int, int]] = []
    height = 0
    while begin < end:
        if begin & 1:
            left.append((height, begin))
            begin += 1
        if end & 1:
            end -= 1
            right.append((height, end))
        begin >>= 1
        end >>= 1
        height += 1
    right.reverse()
    return left + right


def _heights(size: int) -> list[int]:
    """Heights of a compact range's subtrees for a tree of `size` leaves, largest first."""
    return [h for h in range(size.bit_length() - 1, -1, -1) if size >> h & 1]


def _push(stack: list[tuple[int, bytes]], start: int, height: int, digest: bytes) -> None:
    """Append subtree (height, start >> height) to contiguous subtrees, merging it with its left sibling."""
    while stack and stack[-1][0] == height and start >> height & 1:
        digest = _sha256(b"\x01" + stack.pop()[1] + digest).digest()
        start -= 1 << height
        height += 1
    stack.append((height, digest))


def _levels(leaves: Sequence[bytes], begin: int) -> list[tuple[int, list[bytes]]]:
    """Every node whose subtree lies inside leaves [begin, begin + len(leaves)), level by level from the
    leaves up, as (index of the level's first node, node hashes): one SHA-256 per node, no recursion."""
    levels: list[tuple[int, list[bytes]]] = []
    first, nodes = begin, list(leaves)
    sha = _sha256
    while nodes:
        levels.append((first, nodes))
        skip = first & 1  # a right child whose left sibling lies before the range
        pairs = iter(nodes[skip:])
        nodes = [sha(b"\x01" + left + right).digest() for left, right in zip(pairs, pairs, strict=False)]
        first = (first + skip) >> 1
    return levels


class MerkleSpan:
    """The roots of the perfect subtrees covering leaves [begin, end) of a larger tree, left to right.

    RFC 9162's compact range generalized to a range that need not start at leaf 0 (for begin = 0 it is
    a `CompactRange`). A process that holds only leaves begin..end - 1 builds this; joining it onto the
    compact range of the leaves before `begin` (`CompactRange.extend_span`) costs O(log n) hashes, so
    several processes can build one tree without any of them hashing all the leaves (issue #3).
    """

    __slots__ = ("_nodes", "begin", "end")

    def __init__(self, begin: int = 0) -> None:
        if begin < 0:
            raise ValueError(f"begin must be >= 0, not {begin}")
        self.begin = begin
        self.end = begin
        self._nodes: list[tuple[int, bytes]] = []  # (height, root), left to right

    @property
    def hashes(self) -> list[bytes]:
        """The subtree roots, left to right (`cover(begin, end)` gives their positions)."""
        return [digest for _height, digest in self._nodes]

    def extend(self, leaves: Sequence[bytes], cuts: Iterable[int] = ()) -> dict[int, list[bytes]]:
        """Append leaf hashes at `end`; for each cut with end < cut <= the new end, also return the
        span's hashes as they are after leaf cut - 1 (a checkpoint inside the range needs its root).

        Each batch is built level by level (`_levels`), then joined in O(log n): per leaf this costs
        about one SHA-256 in a list comprehension, where appending leaves one at a time costs a
        Python-level merge loop per leaf.
        """
        start, end = self.end, self.end + len(leaves)
        levels = _levels(leaves, start)
        found = {cut: [digest for _height, digest in self._joined(levels, start, cut)]
                 for cut in sorted(set(cuts)) if start < cut <= end}
        self._nodes = self._joined(levels, start, end)
        self.end = end
        return found

    def _joined(self, levels: list[tuple[int, list[bytes]]], start: int, cut: int) -> list[tuple[int, bytes]]:
        """This span's nodes followed by leaves start..cut - 1 (whose nodes `levels` holds), merged."""
        stack = list(self._nodes)
        for height, index in cover(start, cut):
            first, nodes = levels[height]
            _push(stack, index << height, height, nodes[index - first])
        return stack

    def __repr__(self) -> str:
        return f"MerkleSpan(begin={self.begin}, end={self.end})"


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, tree_size: int) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(index, D[0:tree_size]): sibling hashes from the leaf up to the root.

    Needs `leaf_hashes[:tree_size]`; the work is one hash per leaf, done level by level per sibling.
    """
    if not 0 <= index < tree_size <= len(leaf_hashes):
        raise ValueError(f"need 0 <= index < tree_size <= {len(leaf_hashes)}; got {index}, {tree_size}")
    return _inclusion(lambda start, end: _subtree_root(leaf_hashes, start, end), index, tree_size)


def _inclusion(subtree: Callable[[int, int], bytes], index: int, tree_size: int) -> list[bytes]:
    siblings: list[bytes] = []  # collected root-first, returned leaf-first
    start, end = 0, tree_size
    while end - start > 1:
        split = start + _largest_power_of_two_below(end - start)
        if index < split:
            siblings.append(subtree(split, end))
            end = split
        else:
            siblings.append(subtree(start, split))
            start = split
    siblings.reverse()
    return siblings


def consistency_proof(leaf_hashes: Sequence[bytes], first: int, second: int) -> list[bytes]:
    """RFC 9162 §2.1.4.1 PROOF(first, D[0:second]); empty when first is 0 or equals second."""
    if not 0 <= first <= second <= len(leaf_hashes):
        raise ValueError(f"need 0 <= first <= second <= {len(leaf_hashes)}; got {first}, {second}")
    return _consistency(lambda start, end: _subtree_root(leaf_hashes, start, end), first, second)


def _consistency(subtree: Callable[[int, int], bytes], first: int, second: int) -> list[bytes]:
    if first in (0, second):
        return []
    proof: list[bytes] = []  # collected root-first, returned in RFC order
    start, end, m = 0, second, first
    complete = True  # the `b` flag of SUBPROOF: the old tree is a complete subtree seen so far
    while m != end - start:
        k = _largest_power_of_two_below(end - start)
        if m <= k:
            proof.append(subtree(start + k, end))
            end = start + k
        else:
            proof.append(subtree(start, start + k))
            start += k
            m -= k
            complete = False
    if not complete:
        proof.append(subtree(start, end))
    proof.reverse()
    return proof


# Subtrees of at most this many stored leaves are built level by level, without remembering them.
_DIRECT = 1024


class StoredLeaves:
    """The leaves a log still holds after a retention purge: the compact range of the purged prefix
    (leaves 0..prefix.size - 1, kept in the purge anchor) followed by the stored leaf hashes.

    Every subtree a proof needs for a leaf at or after `prefix.size`, or between tree sizes both at
    least `prefix.size`, is either a subtree of the compact range or built from stored leaves (a
    sibling left of such a leaf is a perfect subtree whose parent holds the leaf, so it cannot lie
    strictly inside one of the prefix's subtrees). Anything else needs deleted leaves: ValueError.
    With an empty prefix this is simply the whole log.
    """

    __slots__ = ("_leaves", "_nodes", "prefix_size")

    def __init__(self, prefix: CompactRange, leaves: Sequence[bytes]) -> None:
        self.prefix_size = prefix.size
        self._leaves = leaves
        self._nodes: dict[tuple[int, int], bytes] = {}  # (start, end) -> root: the prefix's, and large ones built
        start = 0
        for height, digest in zip(_heights(prefix.size), prefix.hashes, strict=True):
            self._nodes[(start, start + (1 << height))] = digest
            start += 1 << height

    @property
    def size(self) -> int:
        return self.prefix_size + len(self._leaves)

    def subtree_root(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for 0 <= start < end <= size; ValueError if it needs purged leaves.

        Large subtrees are split as RFC 9162 splits them and remembered, so a proof's siblings, its root
        and a second root share their work: a consistency proof at 1,000,000 leaves hashed ~3.5M times
        when each was built from the leaves, ~2M now (one leaf hash and about one node hash per leaf).
        """
        found = self._nodes.get((start, end))
        if found is not None:
            return found
        cut = self.prefix_size
        if start >= cut and end - start <= _DIRECT:
            return _subtree_root(self._leaves, start - cut, end - cut)
        if end - start == 1:
            raise ValueError(f"leaves {start}..{end - 1} were purged: no proof can use them")
        split = start + _largest_power_of_two_below(end - start)
        found = node_hash(self.subtree_root(start, split), self.subtree_root(split, end))
        self._nodes[(start, end)] = found
        return found

    def root(self, tree_size: int) -> bytes:
        """MTH(D[0:tree_size]) for tree_size 0 or at least `prefix_size`."""
        if not (tree_size == 0 or self.prefix_size <= tree_size <= self.size):
            raise ValueError(f"need tree_size 0 or {self.prefix_size}..{self.size}; got {tree_size}")
        return EMPTY_ROOT if tree_size == 0 else self.subtree_root(0, tree_size)

    def inclusion_proof(self, index: int, tree_size: int) -> list[bytes]:
        """`inclusion_proof` for a leaf that is still stored."""
        if not self.prefix_size <= index < tree_size <= self.size:
            raise ValueError(f"need {self.prefix_size} <= index < tree_size <= {self.size}; got {index}, {tree_size}")
        return _inclusion(self.subtree_root, index, tree_size)

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """`consistency_proof` between tree sizes that are 0 or at least `prefix_size`."""
        if not (0 <= first <= second <= self.size and (first == 0 or first >= self.prefix_size)):
            raise ValueError(f"need first 0 or {self.prefix_size} <= first <= second <= {self.size}; "
                             f"got {first}, {second}")
        return _consistency(self.subtree_root, first, second)


def verify_inclusion(
    leaf: bytes, index: int, tree_size: int, audit_path: Sequence[bytes], root_hash: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: does `audit_path` prove leaf hash `leaf` at `index` in the tree `root_hash`?"""
    if not 0 <= index < tree_size:
        return False
    fn, sn = index, tree_size - 1
    node = leaf
    for sibling in audit_path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            node = node_hash(sibling, node)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            node = node_hash(node, sibling)
        fn >>= 1
        sn >>= 1
    return sn == 0 and node == root_hash


def verify_consistency(
    first: int, second: int, proof: Sequence[bytes], first_root: bytes, second_root: bytes
) -> bool:
    """RFC 9162 §2.1.4.2: does `proof` show the tree `first_root` is a prefix of the tree `second_root`?

    Beyond the RFC's 0 < first < second: equal sizes need an empty proof and equal roots, and every
    tree extends the empty one (first = 0, empty proof, `first_root` the empty root).
    """
    if not 0 <= first <= second:
        return False
    if first == 0:
        return not proof and first_root == EMPTY_ROOT
    if first == second:
        return not proof and first_root == second_root
    if not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:  # an exact power of 2: the old root is itself a node of the new tree
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
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
    return fr == first_root and sr == second_root and sn == 0
