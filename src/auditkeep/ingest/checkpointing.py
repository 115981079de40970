"""Signed checkpoints over the database (issue #3): on demand, automatically, and at purge boundaries.

A checkpoint reads the chain head row (seq, hash, compact range), so it costs O(log n) and one Ed25519
signature whatever the log's size. Automatic checkpoints are decided after an ingest commit, outside
its transaction (`maybe_checkpoint`), from a per-process memory of each organization's last
checkpoint: the common case is a dict lookup and two comparisons. Several workers may both decide to
make one at about the same moment; a second checkpoint at the same size is skipped, one at a slightly
larger size is harmless.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from auditkeep.auth.principals import Principal
from auditkeep.errors import ChainBrokenError, InvalidRangeError
from auditkeep.integrity.checkpoints import Checkpoint, load_or_create_signing_key, public_key_id, sign_checkpoint
from auditkeep.integrity.keyring import (
    RetiredKey,
    export_key_ring,
    read_retired_cursor_secrets,
    read_retired_keys,
    retired_cursor_secrets_path,
    retired_keys_path,
    verify_with_ring,
)
from auditkeep.integrity.merkle import CompactRange
from auditkeep.integrity.verify import ChainVerifier
from auditkeep.storage import Storage
from auditkeep.storage import integrity as records
from auditkeep.storage.events import iter_chain

log = logging.getLogger("auditkeep.integrity")

# (database url, org_id) -> (tree size, time.time() of issue) of the last checkpoint this process knows.
_last: dict[tuple[str, int], tuple[int, float]] = {}
_state = threading.local()  # `making`: this thread is inside make_checkpoint (its self-audit ingests too)


def _stamp(path: Path) -> tuple[int, int] | None:
    """What changes when `auditkeep signing-key rotate` replaces a file: its inode and mtime."""
    try:
        found = path.stat()
    except FileNotFoundError:
        return None
    return found.st_ino, found.st_mtime_ns


# Keyed by the file's stamp as well as its path: a rotated key is picked up by running workers at their
# next checkpoint (one stat() each) instead of at their next restart.
@lru_cache(maxsize=4)
def _signing_key(path: Path, stamp: tuple[int, int] | None) -> Ed25519PrivateKey:
    return load_or_create_signing_key(path)


@lru_cache(maxsize=4)
def _retired(path: Path, stamp: tuple[int, int] | None) -> list[RetiredKey]:
    return read_retired_keys(path)


def signing_key(storage: Storage) -> Ed25519PrivateKey:
    """The server's checkpoint signing key (settings.signing_key_path), created on first use."""
    path = Path(storage.settings.signing_key_path)
    return _signing_key(path, _stamp(path))


def public_key(storage: Storage) -> Ed25519PublicKey:
    """The key that verifies the checkpoints this server signs now."""
    return signing_key(storage).public_key()


def retired_keys(storage: Storage) -> list[RetiredKey]:
    """Public keys that signed this server's earlier checkpoints (`auditkeep signing-key rotate`)."""
    path = retired_keys_path(Path(storage.settings.signing_key_path))
    return _retired(path, _stamp(path))


@lru_cache(maxsize=4)
def _retired_cursor_secrets(path: Path, stamp: tuple[int, int] | None) -> tuple[bytes, ...]:
    return tuple(read_retired_cursor_secrets(path))


def retired_cursor_secrets(storage: Storage) -> tuple[bytes, ...]:
    """Cursor secrets of the keys `auditkeep signing-key rotate` retired, newest first (integrity/keyring)."""
    path = retired_cursor_secrets_path(Path(storage.settings.signing_key_path))
    return _retired_cursor_secrets(path, _stamp(path))


def public_keys(storage: Storage) -> dict[str, Ed25519PublicKey]:
    """Every key that verifies this server's checkpoints, current and retired, by key_id."""
    current = public_key(storage)
    keys = {public_key_id(current): current}
    for retired in retired_keys(storage):
        keys.setdefault(retired.key_id, retired.public_key)
    return keys


def public_key_document(storage: Storage) -> bytes:
    """What GET /api/v1/integrity/public_key serves: the current key and any retired ones."""
    return export_key_ring(public_key(storage), retired_keys(storage))


def to_checkpoint(record: dict[str, Any]) -> Checkpoint:
    """A stored checkpoint row as the signed model."""
    return Checkpoint.model_validate(record)


def _issued_epoch(checkpoint: Checkpoint) -> float:
    return datetime.strptime(checkpoint.issued_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def _remember(storage: Storage, org_id: int, checkpoint: Checkpoint) -> None:
    _last[(storage.url, org_id)] = (checkpoint.tree_size, _issued_epoch(checkpoint))


def make_checkpoint(
    storage: Storage,
    org_id: int,
    origin: Any = None,
    *,
    actor: Principal | None = None,
    skip_if_current: bool = False,
) -> Checkpoint:
    """Sign a checkpoint at the organization's current head, store it, and self-audit it.

    `origin` (an ingest.selfaudit.Origin) names who asked; None means the automatic schedule.
    With `skip_if_current`, a stored checkpoint already at the head's size is returned instead.

        checkpoint = make_checkpoint(storage, org.id, Origin.cli(sys.argv[1:]))
    """
    from auditkeep.ingest.selfaudit import Origin, audit  # selfaudit records through ingest.service

    with storage.read() as conn:
        head = records.read_head(conn, org_id)
        latest = records.latest_checkpoint(conn, org_id) if skip_if_current else None
    if latest is not None and latest["tree_size"] == head.seq:
        checkpoint = to_checkpoint(latest)
        _remember(storage, org_id, checkpoint)
        return checkpoint
    checkpoint = _sign_and_store(storage, org_id, head)
    automatic = origin is None
    _state.making = True
    try:
        audit(
            storage, org_id, "integrity.checkpoint",
            Origin(source="system", client_ip="127.0.0.1", url="auditkeep:checkpoint") if automatic else origin,
            actor=actor, object_type="checkpoint", object_id=checkpoint.tree_size,
            log_entry=f"{'Automatic c' if automatic else 'C'}heckpoint signed at tree size {checkpoint.tree_size}",
            payload={"tree_size": checkpoint.tree_size, "root_hash": checkpoint.root_hash,
                     "chain_head": checkpoint.chain_head, "key_id": checkpoint.key_id, "automatic": automatic},
        )
    finally:
        _state.making = False
    return checkpoint


def covering_checkpoint(storage: Storage, org_id: int, seq: int) -> Checkpoint:
    """The latest stored checkpoint whose tree covers `seq`; one signed at the head now if none does.

    For proofs that travel with copies of the log (an `s3` stream's manifests, issue #10). A checkpoint
    made here is stored but, like a purge anchor, not self-audited: its `integrity.checkpoint` record
    would be the next event to copy, needing a checkpoint of its own, and so on without end.
    """
    with storage.read() as conn:
        latest = records.latest_checkpoint(conn, org_id)
        if latest is not None and latest["tree_size"] >= seq:
            return to_checkpoint(latest)
        head = records.read_head(conn, org_id)
    if head.seq < seq:
        raise InvalidRangeError(f"seq {seq} is past the newest event (seq {head.seq})")
    return _sign_and_store(storage, org_id, head)


def _sign_and_store(storage: Storage, org_id: int, head: records.HeadState) -> Checkpoint:
    """Sign a checkpoint of the chain head `head`, store it and remember it."""
    tree = CompactRange.from_text(head.seq, head.merkle_frontier)
    checkpoint = sign_checkpoint(
        signing_key(storage), org=head.org_name, tree_size=head.seq, root_hash=tree.root().hex(),
        chain_head=head.hash,
    )
    with storage.write() as conn:
        records.insert_checkpoint(conn, org_id, checkpoint.model_dump())
    _remember(storage, org_id, checkpoint)
    return checkpoint


def _due(storage: Storage, seq: int, known: tuple[int, float]) -> bool:
    size, issued = known
    settings = storage.settings
    new = seq - size
    # The self-audit event of the last checkpoint (seq size + 1) alone does not make the next one due.
    return new >= settings.checkpoint_every_events or (
        new > 1 and time.time() - issued >= settings.checkpoint_every_seconds
    )


def maybe_checkpoint(storage: Storage, org_id: int, seq: int) -> None:
    """After an ingest commit that moved `org_id`'s head to `seq`: make a checkpoint if one is due.

    Due: settings.checkpoint_every_events new events, or settings.checkpoint_every_seconds since the last
    checkpoint and new events since. Failures are logged, never raised: the events are already committed.
    """
    if getattr(_state, "making", False):
        return
    key = (storage.url, org_id)
    known = _last.get(key)
    if known is not None and not _due(storage, seq, known):
        return
    try:
        with storage.read() as conn:
            latest = records.latest_checkpoint(conn, org_id)
        if latest is not None:
            _remember(storage, org_id, to_checkpoint(latest))
        elif known is None:
            _last[key] = (0, time.time())  # never checkpointed: count time from now
        if not _due(storage, seq, _last[key]):
            return
        make_checkpoint(storage, org_id, skip_if_current=True)
    except Exception:
        log.exception("automatic checkpoint failed", extra={"org_id": org_id})


def list_checkpoints(
    storage: Storage,
    org_id: int,
    *,
    min_size: int | None = None,
    max_size: int | None = None,
    issued_from: datetime | None = None,
    issued_before: datetime | None = None,
    limit: int = 100,
) -> list[Checkpoint]:
    """Stored checkpoints in a tree-size and issue-time range, by tree size; the latest alone without one."""
    ranged = any(v is not None for v in (min_size, max_size, issued_from, issued_before))
    with storage.read() as conn:
        if not ranged:
            latest = records.latest_checkpoint(conn, org_id)
            return [] if latest is None else [to_checkpoint(latest)]
        found = records.list_checkpoints(
            conn, org_id, min_size=min_size, max_size=max_size,
            issued_from=None if issued_from is None else _text(issued_from),
            issued_before=None if issued_before is None else _text(issued_before),
            limit=limit,
        )
    return [to_checkpoint(r) for r in found]


def _text(moment: datetime) -> str:
    from auditkeep.integrity.checkpoints import format_timestamp

    return format_timestamp(moment)


def anchor_before_purge(storage: Storage, org_id: int, upto_seq: int) -> Checkpoint:
    """Verify seq first_seq..upto_seq and store a signed anchor (checkpoint + compact range) at upto_seq.

    Retention (issue #4) calls this *before* deleting `org_id`'s events with seq <= upto_seq, then in its
    purge transaction deletes them and sets chain_heads.first_seq = upto_seq + 1. Verification resumes
    from the anchor (chain head and Merkle compact range), so roots stay checkable after the purge.
    Raises ChainBrokenError, and stores nothing, if the events about to be purged do not verify: purging
    would destroy the evidence.
    """
    with storage.read() as conn:
        head = records.read_head(conn, org_id)
        if not head.first_seq - 1 <= upto_seq <= head.seq:
            raise InvalidRangeError(
                f"upto_seq must be within {head.first_seq - 1}..{head.seq} (stored seqs), not {upto_seq}"
            )
        existing = records.get_anchor(conn, org_id, upto_seq)
        start = start_anchor(conn, org_id, head.first_seq)
        stored = [to_checkpoint(r) for r in records.list_checkpoints(
            conn, org_id, min_size=head.first_seq - 1, max_size=upto_seq)]
    if existing is not None:
        return to_checkpoint(existing[0])
    prev_hash, tree = start
    keys = public_keys(storage)
    verifier = ChainVerifier(
        start_seq=head.first_seq, prev_hash=prev_hash, frontier=tree,
        checkpoints=[c for c in stored if verify_with_ring(c, keys)],
    )
    events = iter_chain(storage, org_id, head.first_seq - 1, upto_seq=upto_seq, payload_fragment=True)
    with records.closing_iter(events) as stream:
        for event in stream:
            if verifier.feed(event) is not None:
                break
    report = verifier.finish()
    if report.broken is None and report.head.tree_size != upto_seq:
        raise ChainBrokenError(report.head.tree_size + 1, "missing (the log ends before upto_seq)")
    if report.broken is not None:
        raise ChainBrokenError(report.broken.seq, report.broken.reason)
    if tree is None or report.head.chain_head is None or tree.size != upto_seq:
        raise ChainBrokenError(head.first_seq, "no anchor for the events purged earlier: cannot compute roots")
    checkpoint = sign_checkpoint(
        signing_key(storage), org=head.org_name, tree_size=upto_seq, root_hash=tree.root().hex(),
        chain_head=report.head.chain_head,
    )
    with storage.write() as conn:
        records.insert_anchor(conn, org_id, checkpoint.model_dump(), tree.to_text())
        records.insert_checkpoint(conn, org_id, checkpoint.model_dump())
    return checkpoint


def start_anchor(conn: Any, org_id: int, first_seq: int) -> tuple[str | None, CompactRange | None]:
    """Where a walk from `first_seq` starts: the chain head and compact range before it.

    (64 zeros, empty tree) at seq 1; the anchor's (chain_head, compact range) after a purge; (None, None)
    after a purge without an anchor (the first event's prev_hash is then taken as given, no roots).
    """
    if first_seq <= 1:
        return "0" * 64, CompactRange()
    found = records.get_anchor(conn, org_id, first_seq - 1)
    if found is None:
        return None, None
    record, frontier = found
    return record["chain_head"], CompactRange.from_text(first_seq - 1, frontier)
