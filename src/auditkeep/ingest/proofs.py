"""Merkle inclusion and consistency proofs over an organization's stored chain hashes (issue #3).

The leaves are the stored `hash` of seq 1..tree_size (docs/integrity.md §3). After a retention purge the
leaves of the deleted prefix are replaced by the compact range its anchor kept: proofs still cover every
stored event and every tree size from the purge boundary on. A proof is only as good as
the root it is checked against, so each answer carries the root it was computed for and, when the
server signed one at that size, the checkpoint: a client checks the proof against a checkpoint it
trusts (saved earlier, or from this answer after checking its signature).

Perfect subtrees of 2^NODE_CACHE_HEIGHT leaves or more are cached in `merkle_nodes` the first time a proof
computes them (docs/integrity.md §9): a proof then reads O(log n) cached roots and the at most
2^NODE_CACHE_HEIGHT leaves of the blocks holding its leaf and its tree sizes' ends.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from auditkeep.errors import ChainBrokenError, InvalidRangeError
from auditkeep.ingest.checkpointing import start_anchor, to_checkpoint
from auditkeep.integrity.merkle import CompactRange, StoredLeaves, node_hash, root
from auditkeep.storage import Storage
from auditkeep.storage import integrity as records

# Subtrees of 2^10 = 1,024 leaves and up are cached: at 1,000,000 leaves that is ~2,000 rows per
# organization (two per 1,024 events), and a proof reads at most ~3 blocks of 1,024 leaf hashes.
NODE_CACHE_HEIGHT = 10


class CachedTree(StoredLeaves):
    """`StoredLeaves` up to `tree_size` that reads what a proof needs, lazily, on `conn` (one snapshot).

    A subtree of at most 2^NODE_CACHE_HEIGHT stored leaves is built from its aligned block of leaves (RFC
    9162's subtrees never straddle one). A larger perfect subtree comes from `merkle_nodes`, or, when it
    is not cached, from the cached subtrees inside it and the leaves of the blocks not covered by them;
    every perfect subtree of cache height or more built that way is listed in `new_nodes` for the caller
    to store. The purged prefix works as in `StoredLeaves`: its compact range, never the cache.
    """

    __slots__ = ("_blocks", "_conn", "_fetched", "_height", "_org_id", "_tree_size", "new_nodes")

    def __init__(self, conn: sa.Connection, org_id: int, prefix: CompactRange, tree_size: int) -> None:
        super().__init__(prefix, ())
        self._conn, self._org_id, self._tree_size = conn, org_id, tree_size
        self._height = NODE_CACHE_HEIGHT
        self._blocks: dict[int, tuple[int, list[bytes]]] = {}  # block index -> (first leaf, leaf hashes)
        self._fetched: list[tuple[int, int]] = []  # (start, end) of cached subtrees read by range, sorted
        self.new_nodes: list[tuple[int, int, str]] = []  # (height, index, hex root) built here

    @property
    def size(self) -> int:
        return self._tree_size

    def subtree_root(self, start: int, end: int) -> bytes:
        found = self._nodes.get((start, end))
        if found is not None:
            return found
        n = end - start
        if start >= self.prefix_size:
            if n <= 1 << self._height:
                first, leaves = self._block(start)
                return root(leaves[start - first:end - first])
            if n & (n - 1) == 0 and start % n == 0:
                return self._perfect(start, end)
        if n == 1:
            raise ValueError(f"leaves {start}..{end - 1} were purged: no proof can use them")
        split = start + (1 << ((n - 1).bit_length() - 1))  # RFC 9162's k: largest power of two < n
        found = node_hash(self.subtree_root(start, split), self.subtree_root(split, end))
        self._nodes[(start, end)] = found
        return found

    def _perfect(self, start: int, end: int) -> bytes:
        """A stored perfect subtree above cache height: cached, else built (`_fill`)."""
        height = (end - start).bit_length() - 1
        cached = records.merkle_node(self._conn, self._org_id, height, start >> height)
        if cached is not None:
            found = self._nodes[(start, end)] = bytes.fromhex(cached)
            return found
        for h, index, digest in records.merkle_nodes_within(self._conn, self._org_id, start, end,
                                                            min_height=self._height, max_height=height - 1):
            self._nodes[(index << h, (index + 1) << h)] = bytes.fromhex(digest)
            self._fetched.append((index << h, (index + 1) << h))
        self._fetched.sort()
        return self._fill(start, end)

    def _fill(self, start: int, end: int) -> bytes:
        found = self._nodes.get((start, end))
        if found is not None:
            return found
        if end - start == 1 << self._height or not self._holds_cached(start, end):
            return self._build(start, end)
        half = (start + end) // 2
        found = node_hash(self._fill(start, half), self._fill(half, end))
        self._remember(start, end, found)
        return found

    def _holds_cached(self, start: int, end: int) -> bool:
        """Was a cached subtree inside [start, end) read?"""
        fetched = self._fetched
        i = bisect_left(fetched, (start, 0))
        while i < len(fetched) and fetched[i][0] < end:
            if fetched[i][1] <= end:
                return True
            i += 1
        return False

    def _build(self, start: int, end: int) -> bytes:
        """A perfect subtree of cache height or more from its leaves, streamed block by block."""
        size = 1 << self._height
        if end - start == size:
            level = [root(self._block(start)[1])]
        else:
            level, pending = [], []
            for chunk in self._leaf_chunks(start, end):
                pending += chunk
                whole = len(pending) - len(pending) % size
                level += [root(pending[i:i + size]) for i in range(0, whole, size)]
                del pending[:whole]
        height, first = self._height, start >> self._height
        while True:
            for i, digest in enumerate(level):
                self._remember((first + i) << height, (first + i + 1) << height, digest)
            if len(level) == 1:
                return level[0]
            pairs = iter(level)
            level = [node_hash(left, right) for left, right in zip(pairs, pairs, strict=True)]
            height, first = height + 1, first >> 1

    def _remember(self, start: int, end: int, digest: bytes) -> None:
        height = (end - start).bit_length() - 1
        self._nodes[(start, end)] = digest
        self.new_nodes.append((height, start >> height, digest.hex()))

    def _block(self, leaf: int) -> tuple[int, list[bytes]]:
        """The stored leaf hashes of the aligned block of 2^NODE_CACHE_HEIGHT leaves holding `leaf`, cut to
        the tree and the purge boundary: (index of the first, the hashes)."""
        block = leaf >> self._height
        found = self._blocks.get(block)
        if found is None:
            first = max(block << self._height, self.prefix_size)
            leaves: list[bytes] = []
            for chunk in self._leaf_chunks(first, min((block + 1) << self._height, self._tree_size)):
                leaves += chunk
            found = self._blocks[block] = (first, leaves)
        return found

    def _leaf_chunks(self, start: int, end: int) -> Iterator[list[bytes]]:
        """Leaf hashes of leaves [start, end) (seq start + 1..end) in chunks; ChainBrokenError if one is missing."""
        sha, fromhex = hashlib.sha256, bytes.fromhex
        count = 0
        for chunk in records.iter_hash_chunks(self._conn, self._org_id, start, end):
            count += len(chunk)
            yield [sha(b"\x00" + fromhex(digest)).digest() for digest in chunk]  # merkle.leaf_hash
        if count != end - start:  # some seq is missing: find the first
            expected = start + 1
            for seq, _digest in records.iter_hashes(self._conn, self._org_id, start, end):
                if seq != expected:
                    break
                expected += 1
            raise ChainBrokenError(expected, "missing: no proof can cover it")


def _tree(conn: sa.Connection, org_id: int, head: records.HeadState, tree_size: int, param: str) -> CachedTree:
    """The tree up to `tree_size` as stored: the purge anchor's compact range of seq 1..first_seq - 1 (empty
    without a purge), then the stored hashes, read on `conn` as the proof needs them."""
    _prev, prefix = start_anchor(conn, org_id, head.first_seq)
    if prefix is None:
        raise InvalidRangeError(f"events before seq {head.first_seq} were purged without an anchor: "
                                "their compact range was not kept, so no proof can be computed",
                                param=param, value=tree_size)
    return CachedTree(conn, org_id, prefix, tree_size)


def _keep(storage: Storage, org_id: int, tree: CachedTree) -> None:
    """Store the subtrees `tree` built, in a short write transaction of their own."""
    if tree.new_nodes:
        with storage.write() as conn:
            records.insert_merkle_nodes(conn, org_id, tree.new_nodes)


def _checkpoint_at(storage: Storage, org_id: int, tree_size: int) -> dict[str, Any] | None:
    with storage.read() as conn:
        found = records.list_checkpoints(conn, org_id, min_size=tree_size, max_size=tree_size, limit=1)
    return to_checkpoint(found[0]).model_dump() if found else None


def _check_size(head: records.HeadState, size: int, name: str) -> None:
    if size > head.seq:
        raise InvalidRangeError(f"{name} {size} is beyond the log's {head.seq} events", param=name, value=size)
    if 0 < size < head.first_seq - 1:
        raise InvalidRangeError(
            f"{name} {size} is before the retention purge boundary: events 1..{head.first_seq - 1} were deleted, "
            f"so proofs cover tree sizes 0 and {head.first_seq - 1} or more", param=name, value=size,
        )


def inclusion(storage: Storage, org_id: int, event_uuid: str, tree_size: int | None = None, *,
              reader: Storage | None = None) -> dict[str, Any]:
    """RFC 9162 inclusion proof of the event `event_uuid` in the tree of `tree_size` (default: the latest
    checkpoint's size). `{"event_uuid", "seq", "hash", "leaf_index", "tree_size", "root_hash",
    "audit_path", "checkpoint"}`, hashes as lowercase hex.

    Everything is read on `reader` (a read replica from `storage.for_read()`, issue #14; default `storage`);
    the subtrees a proof builds are stored on `storage`, the primary."""
    reader = reader or storage
    with reader.read() as conn:
        head = records.read_head(conn, org_id)
        seq, digest = records.event_seq(conn, org_id, event_uuid)
        if tree_size is None:
            latest = records.latest_checkpoint(conn, org_id)
            if latest is None or latest["tree_size"] < seq:
                raise InvalidRangeError(
                    f"event seq {seq} is not covered by a checkpoint yet: pass tree_size or make a checkpoint",
                    param="tree_size",
                )
            tree_size = int(latest["tree_size"])
    if tree_size < seq:
        raise InvalidRangeError(f"tree_size {tree_size} does not cover the event (seq {seq})",
                                param="tree_size", value=tree_size)
    _check_size(head, tree_size, "tree_size")
    with reader.read() as conn:
        tree = _tree(conn, org_id, head, tree_size, "tree_size")
        root_hash = tree.root(tree_size).hex()
        audit_path = [h.hex() for h in tree.inclusion_proof(seq - 1, tree_size)]
    _keep(storage, org_id, tree)
    return {
        "event_uuid": event_uuid,
        "seq": seq,
        "hash": digest,
        "leaf_index": seq - 1,
        "tree_size": tree_size,
        "root_hash": root_hash,
        "audit_path": audit_path,
        "checkpoint": _checkpoint_at(reader, org_id, tree_size),
    }


def consistency(storage: Storage, org_id: int, first: int, second: int, *,
                reader: Storage | None = None) -> dict[str, Any]:
    """RFC 9162 consistency proof between the trees of sizes `first` <= `second`.
    `{"first", "second", "first_root", "second_root", "proof", "first_checkpoint", "second_checkpoint"}`.
    Read on `reader` as `inclusion` is; new subtrees stored on `storage`."""
    reader = reader or storage
    if not 0 <= first <= second:
        raise InvalidRangeError(f"need 0 <= first <= second, got first={first}, second={second}",
                                param="first", value=first)
    with reader.read() as conn:
        head = records.read_head(conn, org_id)
    _check_size(head, first, "first")
    _check_size(head, second, "second")
    with reader.read() as conn:
        tree = _tree(conn, org_id, head, second, "second")
        first_root, second_root = tree.root(first).hex(), tree.root(second).hex()
        proof = [h.hex() for h in tree.consistency_proof(first, second)]
    _keep(storage, org_id, tree)
    return {
        "first": first,
        "second": second,
        "first_root": first_root,
        "second_root": second_root,
        "proof": proof,
        "first_checkpoint": _checkpoint_at(reader, org_id, first),
        "second_checkpoint": _checkpoint_at(reader, org_id, second),
    }
