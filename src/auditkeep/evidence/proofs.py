"""The Merkle proofs an evidence bundle carries (docs/integrity.md §12): a range proof for contiguous events,
else one inclusion proof per event, and the consistency proof between its two checkpoints.

A *range proof* of leaves [first - 1, last) in a tree of `tree_size` is the roots of the perfect subtrees that
cover the leaves left of the range, [0, first - 1), and right of it, [last, tree_size) (merkle.cover: aligned,
maximal, left to right). With the range's own leaves, every node of the RFC 9162 tree is then known or
computable, so the root follows; one proof of about 2·log2(n) hashes stands for a million inclusion proofs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from auditkeep.ingest.checkpointing import start_anchor
from auditkeep.ingest.proofs import CachedTree
from auditkeep.integrity.merkle import EMPTY_ROOT, MerkleSpan, cover, node_hash
from auditkeep.storage import Storage
from auditkeep.storage import integrity as records


class ProofError(ValueError):
    """A range proof that lacks a node its root needs."""


def open_tree(conn: sa.Connection, org_id: int, tree_size: int) -> CachedTree:
    """The organization's tree of `tree_size` leaves as stored (the proofs' node cache; ingest/proofs.py)."""
    head = records.read_head(conn, org_id)
    _prev, prefix = start_anchor(conn, org_id, head.first_seq)
    if prefix is None:
        raise ProofError(f"events before seq {head.first_seq} were purged without an anchor: no proof possible")
    return CachedTree(conn, org_id, prefix, tree_size)


def keep_nodes(storage: Storage, org_id: int, tree: CachedTree) -> None:
    """Store the subtrees `tree` computed, for later proofs (as ingest/proofs.py does)."""
    if tree.new_nodes:
        with storage.write() as conn:
            records.insert_merkle_nodes(conn, org_id, tree.new_nodes)


def range_nodes(tree: CachedTree, first_seq: int, last_seq: int, tree_size: int) -> tuple[list[str], list[str]]:
    """(left, right) of the range proof of seq first_seq..last_seq, as lowercase hex."""
    def roots(begin: int, end: int) -> list[str]:
        return [tree.subtree_root(i << h, (i + 1) << h).hex() for h, i in cover(begin, end)]

    return roots(0, first_seq - 1), roots(last_seq, tree_size)


def range_root(left: Sequence[bytes], leaves: Iterable[Sequence[bytes]], right: Sequence[bytes], *,
               first_seq: int, count: int, tree_size: int) -> bytes:
    """The root of the tree of `tree_size` leaves from a range proof: the `count` leaf hashes of seq
    first_seq.. (in seq order, streamed in batches) between the left and right covers. ProofError if they
    do not make it.

    The range's leaves are built into perfect subtrees batch by batch, level by level (merkle.MerkleSpan:
    about one SHA-256 a leaf in a list comprehension, where pushing leaves one at a time cost a Python merge
    loop each, ~3 s for 1,000,000), so memory stays one batch plus O(log n). The covers' roots and the
    span's are then merged left to right and folded from the right, like a compact range.
    """
    begin, end = first_seq - 1, first_seq - 1 + count
    if not 0 <= begin <= end <= tree_size:
        raise ProofError(f"leaves {begin}..{end - 1} are outside a tree of {tree_size}")
    for (begin_, end_), given in (((0, begin), left), ((end, tree_size), right)):
        if len(cover(begin_, end_)) != len(given):
            raise ProofError(f"the proof gives {len(given)} subtree root(s) for leaves {begin_}..{end_ - 1}, "
                             f"which need {len(cover(begin_, end_))}")
    span = MerkleSpan(begin)
    for batch in leaves:
        if span.end + len(batch) > end:
            raise ProofError(f"more leaves given than the range's {count}")
        span.extend(batch)
    if span.end != end:
        raise ProofError(f"{span.end - begin} leaves given for a range of {count}")
    stack: list[tuple[int, bytes]] = []
    for (h, i), digest in zip(cover(0, begin), left, strict=True):
        _push(stack, i << h, h, digest)
    for (h, i), digest in zip(cover(begin, end), span.hashes, strict=True):
        _push(stack, i << h, h, digest)
    for (h, i), digest in zip(cover(end, tree_size), right, strict=True):
        _push(stack, i << h, h, digest)
    if not stack:
        return EMPTY_ROOT
    digest = stack[-1][1]
    for _h, left_digest in reversed(stack[:-1]):
        digest = node_hash(left_digest, digest)
    return digest


def _push(stack: list[tuple[int, bytes]], start: int, height: int, digest: bytes) -> None:
    """Append the perfect subtree of 2^height leaves at `start`, merging it with equal-sized left siblings."""
    while stack and stack[-1][0] == height and start >> height & 1:
        digest = node_hash(stack.pop()[1], digest)
        start -= 1 << height
        height += 1
    stack.append((height, digest))


@dataclass(frozen=True, slots=True)
class InclusionProof:
    seq: int
    audit_path: list[str]


def inclusion_proofs(tree: CachedTree, seqs: Sequence[int], tree_size: int) -> Iterator[InclusionProof]:
    """One RFC 9162 inclusion proof per seq, in the order given."""
    for seq in seqs:
        yield InclusionProof(seq, [h.hex() for h in tree.inclusion_proof(seq - 1, tree_size)])
