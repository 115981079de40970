"""Merkle inclusion and consistency proofs over an organization's stored chain hashes (issue #3).

The leaves are the stored `hash` of seq 1..tree_size (docs/integrity.md §3). After a retention purge the
leaves of the deleted prefix are replaced by the compact range its anchor kept: proofs still cover every
stored event and every tree size from the purge boundary on. A proof is only as good as
the root it is checked against, so each answer carries the root it was computed for and, when the
server signed one at that size, the checkpoint: a client checks the proof against a checkpoint it
trusts (saved earlier, or from this answer after checking its signature).
"""

from __future__ import annotations

import hashlib
from typing import Any

from auditkeep.errors import ChainBrokenError, InvalidRangeError
from auditkeep.ingest.checkpointing import start_anchor, to_checkpoint
from auditkeep.integrity.merkle import StoredLeaves
from auditkeep.storage import Storage
from auditkeep.storage import integrity as records


def _stored(storage: Storage, org_id: int, head: records.HeadState, tree_size: int) -> StoredLeaves:
    """The tree up to `tree_size` as stored: the purge anchor's compact range of seq 1..first_seq - 1 (empty
    without a purge), then the hashes of first_seq..tree_size read in one snapshot. Reading and hashing them
    is the cost of a proof, nothing is cached (docs/integrity.md §9)."""
    leaves: list[bytes] = []
    sha, fromhex = hashlib.sha256, bytes.fromhex
    with storage.read() as conn:
        _prev, prefix = start_anchor(conn, org_id, head.first_seq)
        if prefix is None:
            raise InvalidRangeError(f"events before seq {head.first_seq} were purged without an anchor: "
                                    "their compact range was not kept, so no proof can be computed")
        for chunk in records.iter_hash_chunks(conn, org_id, prefix.size, tree_size):
            leaves += [sha(b"\x00" + fromhex(digest)).digest() for digest in chunk]  # merkle.leaf_hash
        if len(leaves) != tree_size - prefix.size:  # some seq is missing: find the first
            expected = prefix.size + 1
            for seq, _digest in records.iter_hashes(conn, org_id, prefix.size, tree_size):
                if seq != expected:
                    break
                expected += 1
            raise ChainBrokenError(expected, "missing: no proof can cover it")
    return StoredLeaves(prefix, leaves)


def _checkpoint_at(storage: Storage, org_id: int, tree_size: int) -> dict[str, Any] | None:
    with storage.read() as conn:
        found = records.list_checkpoints(conn, org_id, min_size=tree_size, max_size=tree_size, limit=1)
    return to_checkpoint(found[0]).model_dump() if found else None


def _check_size(head: records.HeadState, size: int, name: str) -> None:
    if size > head.seq:
        raise InvalidRangeError(f"{name} {size} is beyond the log's {head.seq} events")
    if 0 < size < head.first_seq - 1:
        raise InvalidRangeError(
            f"{name} {size} is before the retention purge boundary: events 1..{head.first_seq - 1} were deleted, "
            f"so proofs cover tree sizes 0 and {head.first_seq - 1} or more"
        )


def inclusion(storage: Storage, org_id: int, event_uuid: str, tree_size: int | None = None) -> dict[str, Any]:
    """RFC 9162 inclusion proof of the event `event_uuid` in the tree of `tree_size` (default: the latest
    checkpoint's size). `{"event_uuid", "seq", "hash", "leaf_index", "tree_size", "root_hash",
    "audit_path", "checkpoint"}`, hashes as lowercase hex."""
    with storage.read() as conn:
        head = records.read_head(conn, org_id)
        seq, digest = records.event_seq(conn, org_id, event_uuid)
        if tree_size is None:
            latest = records.latest_checkpoint(conn, org_id)
            if latest is None or latest["tree_size"] < seq:
                raise InvalidRangeError(
                    f"event seq {seq} is not covered by a checkpoint yet: pass tree_size or make a checkpoint"
                )
            tree_size = int(latest["tree_size"])
    if tree_size < seq:
        raise InvalidRangeError(f"tree_size {tree_size} does not cover the event (seq {seq})")
    _check_size(head, tree_size, "tree_size")
    stored = _stored(storage, org_id, head, tree_size)
    return {
        "event_uuid": event_uuid,
        "seq": seq,
        "hash": digest,
        "leaf_index": seq - 1,
        "tree_size": tree_size,
        "root_hash": stored.root(tree_size).hex(),
        "audit_path": [h.hex() for h in stored.inclusion_proof(seq - 1, tree_size)],
        "checkpoint": _checkpoint_at(storage, org_id, tree_size),
    }


def consistency(storage: Storage, org_id: int, first: int, second: int) -> dict[str, Any]:
    """RFC 9162 consistency proof between the trees of sizes `first` <= `second`.
    `{"first", "second", "first_root", "second_root", "proof", "first_checkpoint", "second_checkpoint"}`."""
    if not 0 <= first <= second:
        raise InvalidRangeError(f"need 0 <= first <= second, got first={first}, second={second}")
    with storage.read() as conn:
        head = records.read_head(conn, org_id)
    _check_size(head, first, "first")
    _check_size(head, second, "second")
    stored = _stored(storage, org_id, head, second)
    return {
        "first": first,
        "second": second,
        "first_root": stored.root(first).hex(),
        "second_root": stored.root(second).hex(),
        "proof": [h.hex() for h in stored.consistency_proof(first, second)],
        "first_checkpoint": _checkpoint_at(storage, org_id, first),
        "second_checkpoint": _checkpoint_at(storage, org_id, second),
    }
