"""Verify an organization's stored log (`auditkeep verify`, GET /api/v1/integrity/verify; issue #3).

The walk starts at chain_heads.first_seq (after a retention purge, from the anchor stored there),
checks every event's hash and link, rebuilds the Merkle tree, compares every checkpoint this server
signed (and one the customer kept, if given) at its tree size, and finally the chain head row itself.

Large logs are split by seq range across processes: an event's hash needs only its own stored
prev_hash, so each range is checked on its own, the links between ranges are checked at the
boundaries, and the Merkle tree is then built here from the ranges' leaf hashes in order. On the
2-core reference machine 1,000,000 events take ~8 s CPU in one process (docs/benchmarks.md,
"Verification (issue #3)"), hence the split.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing import get_context
from typing import Any

import orjson

from auditkeep.auth.principals import Principal
from auditkeep.errors import CheckpointError
from auditkeep.ingest import checkpointing
from auditkeep.integrity.checkpoints import Checkpoint, public_key_id, verify_checkpoint
from auditkeep.integrity.merkle import CompactRange
from auditkeep.integrity.verify import BreakKind, ChainBreak, ChainReport, ChainVerifier, TreeHead
from auditkeep.schemas.audit_logs import LOG_FIELDS
from auditkeep.settings import Settings
from auditkeep.storage import Storage
from auditkeep.storage import integrity as records
from auditkeep.storage.base import Storage as _Storage
from auditkeep.storage.events import iter_chain, row_to_log
from auditkeep.storage.integrity import iter_chain_rows
from auditkeep.storage.types import format_timestamp

# Below this many events one process is quicker than starting others (~0.5 s to spawn and import).
PARALLEL_MIN_EVENTS = 100_000
_sha256 = hashlib.sha256


@dataclass(frozen=True, slots=True)
class OrgReport:
    """The outcome of verifying one organization's stored log."""

    org: str
    report: ChainReport
    first_seq: int  # where the walk began (1 unless events were purged)
    checkpoints_checked: int  # signed checkpoints compared (stored ones and the one given)
    checkpoints_ignored: int = 0  # stored checkpoints signed by another (older) key
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.report.ok

    def as_dict(self) -> dict[str, Any]:
        """The JSON form GET /api/v1/integrity/verify returns."""
        broken = self.report.broken
        head = self.report.head
        return {
            "ok": self.ok,
            "org": self.org,
            "first_seq": self.first_seq,
            "events": self.report.events,
            "tree_size": head.tree_size,
            "root_hash": head.root_hash,
            "chain_head": head.chain_head,
            "checkpoints_checked": self.checkpoints_checked,
            "checkpoints_ignored": self.checkpoints_ignored,
            "broken": None if broken is None else {"seq": broken.seq, "kind": broken.kind.value,
                                                   "reason": broken.reason},
        }

    def summary(self) -> list[str]:
        """Human-readable lines for the CLI, the verdict first."""
        head = self.report.head
        broken = self.report.broken
        lines = [f"FAILED: {broken} ({broken.kind.value})" if broken else "OK: the log verifies"]
        span = f"seq {self.first_seq}..{self.first_seq + self.report.events - 1}" if self.report.events else "none"
        lines.append(f"organization: {self.org}; events verified: {self.report.events} ({span})")
        if head.root_hash is not None:
            lines.append(f"tree size {head.tree_size}: root {head.root_hash}, chain head {head.chain_head}")
        lines.append(f"checkpoints compared: {self.checkpoints_checked}"
                     + (f" ({self.checkpoints_ignored} by another key ignored)" if self.checkpoints_ignored else ""))
        lines.extend(self.notes)
        return lines


def verify_org(
    storage: Storage,
    org_id: int,
    *,
    checkpoint: Checkpoint | None = None,
    workers: int | None = None,
    origin: Any = None,
    actor: Principal | None = None,
) -> OrgReport:
    """Verify `org_id`'s stored events, its stored checkpoints and, if given, a customer's `checkpoint`.

    `workers`: processes for the hash check (default: CPU count for large logs, else 1). With `origin`
    (an ingest.selfaudit.Origin) the run is self-audited as `integrity.verify`. CheckpointError when the
    given checkpoint is not signed by this server's key for this organization.

        result = verify_org(storage, org.id, checkpoint=load_checkpoint(saved))
        if not result.ok: print(result.report.broken)
    """
    key = checkpointing.public_key(storage)
    with storage.read() as conn:
        head = records.read_head(conn, org_id)
        stored = [checkpointing.to_checkpoint(r) for r in records.list_checkpoints(conn, org_id)]
        prev_hash, frontier = checkpointing.start_anchor(conn, org_id, head.first_seq)
        anchor = records.get_anchor(conn, org_id, head.first_seq - 1) if head.first_seq > 1 else None
    if checkpoint is not None:
        if checkpoint.org != head.org_name:
            raise CheckpointError(f"the checkpoint is for organization {checkpoint.org!r}, not {head.org_name!r}")
        if not verify_checkpoint(checkpoint, key):
            raise CheckpointError("the checkpoint's signature does not verify with this server's public key")
    notes: list[str] = []
    mine = [c for c in stored if c.key_id == public_key_id(key)]
    forged = next((c for c in mine if not verify_checkpoint(c, key)), None)
    if anchor is not None and not verify_checkpoint(checkpointing.to_checkpoint(anchor[0]), key):
        forged = checkpointing.to_checkpoint(anchor[0])
    elif head.first_seq > 1 and anchor is None:
        notes.append(f"events before seq {head.first_seq} were purged without an anchor: no Merkle roots")
    compared = [c for c in mine if c is not forged] + ([checkpoint] if checkpoint is not None else [])
    if forged is not None:
        broken = ChainBreak(forged.tree_size, BreakKind.CHECKPOINT_MISMATCH,
                            f"a stored checkpoint at tree size {forged.tree_size} has an invalid signature")
        report = ChainReport(broken, 0, TreeHead(head.first_seq - 1, None, prev_hash))
    else:
        count = head.seq - head.first_seq + 1
        n = workers or ((os.cpu_count() or 1) if count >= PARALLEL_MIN_EVENTS else 1)
        plan = _Plan(org_id, head.first_seq, head.seq, prev_hash, frontier, compared)
        report = _walk_parallel(storage, plan, n) if n > 1 and count >= 2 * n else _walk(storage, plan)
        report = _check_head_row(report, head)
    result = OrgReport(head.org_name, report, head.first_seq, len(compared), len(stored) - len(mine), notes)
    if origin is not None:
        _audit(storage, org_id, origin, actor, result)
    return result


def _check_head_row(report: ChainReport, head: records.HeadState) -> ChainReport:
    """The chain_heads row is an unsigned checkpoint of its own: events deleted at the end show here."""
    if report.broken is not None:
        return report
    last = report.head.tree_size
    if last < head.seq:
        reason = f"the log ends at seq {last} but the chain head records seq {head.seq}"
        return ChainReport(ChainBreak(last + 1, BreakKind.TRUNCATED, reason), report.events, report.head)
    if report.head.chain_head is not None and report.head.chain_head != head.hash:
        reason = f"hash of seq {last} differs from the stored chain head"
        return ChainReport(ChainBreak(last, BreakKind.CHECKPOINT_MISMATCH, reason), report.events, report.head)
    return report


@dataclass(frozen=True, slots=True)
class _Plan:
    """What to walk: seq first..last of one organization, starting from this chain head and tree."""

    org_id: int
    first: int
    last: int
    prev_hash: str | None
    frontier: CompactRange | None
    checkpoints: list[Checkpoint]


def _walk(storage: Storage, plan: _Plan) -> ChainReport:
    verifier = ChainVerifier(
        start_seq=plan.first, prev_hash=plan.prev_hash, frontier=plan.frontier, checkpoints=plan.checkpoints
    )
    if verifier.broken is None:
        # closing(): a walk that stops early must still close the (server-side) cursor before the connection.
        with records.closing_iter(iter_chain(storage, plan.org_id, plan.first - 1, upto_seq=plan.last,
                                payload_fragment=True)) as stream:
            for event in stream:
                if verifier.feed(event) is not None:
                    break
    return verifier.finish()


@dataclass(frozen=True, slots=True)
class _Segment:
    start: int
    events: int  # that verified, from `start`
    first_prev: str | None  # prev_hash of the first stored event of the range
    broken: ChainBreak | None
    leaves: bytes  # leaf hashes of the verified events, 32 bytes each
    heads: dict[int, str]  # chain hash at the requested checkpoint sizes
    last_hash: str | None  # of the last event that verified


@dataclass(frozen=True, slots=True)
class _Task:
    url: str
    settings: Settings
    org_id: int
    start: int
    end: int
    sizes: frozenset[int]  # checkpoint sizes whose chain hash to report


def _check_segment(task: _Task) -> _Segment:
    """Check seq start..end on their own (each hash from its own prev_hash): runs in a worker process."""
    storage = _Storage(task.url, task.settings)
    try:
        return _scan(storage, task)
    finally:
        storage.dispose()


_NAMES = (*LOG_FIELDS, "seq")  # a row's first 18 columns: the canonical form's members
_PREV = len(LOG_FIELDS) + 1  # then prev_hash, hash


def _scan(storage: Storage, task: _Task) -> _Segment:
    """The hot loop: canonical form straight from the row (orjson, sorted keys), hashed and compared.

    Exactly what integrity.canonical's fast path does for plain values, minus its per-key checks (the
    keys here are fixed ASCII names): ~2x faster per event. At the first event that is not plain or
    does not verify, the rest of the range goes through the reference `ChainVerifier`, which names the
    break exactly (or carries on, if only the fast path declined the event).
    """
    sha, dumps, sort_keys, fragment = _sha256, orjson.dumps, orjson.OPT_SORT_KEYS, orjson.Fragment
    sizes, expected = task.sizes, task.start
    leaves: list[bytes] = []
    heads: dict[int, str] = {}
    prev_hex: str | None = None
    prev = b""
    first_prev: str | None = None
    declined: Sequence[Any] | None = None
    chunks = iter_chain_rows(storage, task.org_id, task.start - 1, task.end)
    with records.closing_iter(chunks):
        rows = (row for chunk in chunks for row in chunk)
        for row in rows:
            fields = dict(zip(_NAMES, row))  # noqa: B905 - the row also holds prev_hash and hash
            stored_prev = row[_PREV]
            if first_prev is None:
                first_prev = stored_prev
                prev = _hash_bytes(stored_prev)
                prev_hex = stored_prev if prev else None
            if fields["seq"] != expected or stored_prev != prev_hex or not _plain(fields, fragment):
                declined = row
                break
            try:
                canonical = dumps(fields, option=sort_keys)
            except (TypeError, orjson.JSONEncodeError):  # bytes, integers beyond 64 bits: not JSON at all
                declined = row
                break
            digest = sha(prev + canonical).digest()
            digest_hex = digest.hex()
            if digest_hex != row[_PREV + 1]:
                declined = row
                break
            leaves.append(sha(b"\x00" + digest).digest())
            if expected in sizes:
                heads[expected] = digest_hex
            prev, prev_hex = digest, digest_hex
            expected += 1
        broken = None
        if declined is not None:
            verifier = ChainVerifier(start_seq=expected, prev_hash=prev_hex, frontier=None)
            for row in itertools.chain([declined], rows):
                event = row_to_log(row[: len(LOG_FIELDS)], payload_fragment=True)
                event["seq"], event["prev_hash"], event["hash"] = row[_PREV - 1], row[_PREV], row[_PREV + 1]
                if verifier.feed(event) is not None:
                    break
                leaves.append(sha(b"\x00" + bytes.fromhex(event["hash"])).digest())
                if expected in sizes:
                    heads[expected] = event["hash"]
                prev_hex = event["hash"]
                expected += 1
            broken = verifier.finish().broken
    return _Segment(task.start, expected - task.start, first_prev, broken, b"".join(leaves), heads, prev_hex)


def _hash_bytes(value: object) -> bytes:
    """32 bytes from 64 lowercase hex digits; b"" for anything else."""
    if type(value) is not str or len(value) != 64 or value != value.lower():
        return b""
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return b""
    return raw if len(raw) == 32 else b""


def _plain(fields: dict[str, Any], fragment: type) -> bool:
    """Normalize a row's values in place as the API returns them; False if that is not possible.

    Other values are not type-checked here: orjson writes any value that is not plain JSON (a float,
    an integer beyond 2**53) differently from every plain value, so such an event fails the hash
    comparison below and goes to the reference verifier, which judges it exactly.
    """
    ts = fields["timestamp"]
    if type(ts) is not str:
        if not isinstance(ts, datetime):
            return False
        fields["timestamp"] = format_timestamp(ts)
    support = fields["is_support_user"]
    if type(support) is int:  # SQLite stores booleans as 0/1
        if support not in (0, 1):
            return False
        fields["is_support_user"] = bool(support)
    payload = fields["payload"]
    if type(payload) is str:
        fields["payload"] = fragment(payload)
    return True


def _walk_parallel(storage: Storage, plan: _Plan, workers: int) -> ChainReport:
    first, last = plan.first, plan.last
    pending: dict[int, list[Checkpoint]] = {}
    for c in plan.checkpoints:
        pending.setdefault(c.tree_size, []).append(c)
    sizes = frozenset(s for s in pending if first <= s <= last)
    step = -(-(last - first + 1) // workers)
    bounds = [(s, min(s + step - 1, last)) for s in range(first, last + 1, step)]
    # spawn: the caller may be a threaded server, where fork would copy held locks and open connections.
    with ProcessPoolExecutor(len(bounds), mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_check_segment, _Task(storage.url, storage.settings, plan.org_id, a, b, sizes))
                   for a, b in bounds]
        merge = _Merge(first, plan.prev_hash, plan.frontier, pending)
        for (a, b), future in zip(bounds, futures, strict=True):
            if merge.add(future.result(), a, b):
                break
        for future in futures:
            future.cancel()
    return merge.finish()


class _Merge:
    """Joins the ranges in seq order: boundary links, the Merkle tree, checkpoints at their sizes."""

    def __init__(self, first: int, prev_hash: str | None, frontier: CompactRange | None,
                 pending: dict[int, list[Checkpoint]]) -> None:
        self.next = first
        self.prev = prev_hash
        self.tree = frontier
        self.pending = pending
        self.events = 0
        self.broken: ChainBreak | None = None
        self.short: int | None = None  # a range ended early here: a gap if anything follows, else truncation
        self._check(first - 1)

    def _check(self, size: int) -> None:
        for c in self.pending.pop(size, ()):
            if self.broken is not None:
                return
            if self.prev is not None and c.chain_head != self.prev:
                self.broken = ChainBreak(size, BreakKind.CHECKPOINT_MISMATCH,
                                         f"hash of seq {size} differs from the chain head of the checkpoint "
                                         f"issued {c.issued_at}")
            elif self.tree is not None and c.root_hash != self.tree.root().hex():
                self.broken = ChainBreak(size, BreakKind.CHECKPOINT_MISMATCH,
                                         f"Merkle root at tree size {size} differs from the checkpoint "
                                         f"issued {c.issued_at}")

    def add(self, seg: _Segment, start: int, end: int) -> bool:
        """Take the next range; True once broken (later ranges no longer matter)."""
        if self.broken is not None:
            return True
        if self.short is not None:
            if seg.events or seg.broken is not None:
                self.broken = ChainBreak(self.short, BreakKind.SEQ_GAP, f"seq {self.short} missing")
            return self.broken is not None
        if seg.events and self.prev is not None and seg.first_prev != self.prev:
            what = "64 zeros" if start == 1 else f"the hash of seq {start - 1}"
            self.broken = ChainBreak(start, BreakKind.PREV_HASH_MISMATCH, f"prev_hash is not {what}")
            return True
        tree, pending, leaves = self.tree, self.pending, seg.leaves
        for i in range(seg.events):
            seq = start + i
            if tree is not None:
                tree.append(leaves[32 * i : 32 * i + 32])
            if seq in pending:
                self.prev = seg.heads[seq]
                self._check(seq)
                if self.broken is not None:
                    return True
        if seg.events:
            self.prev = seg.last_hash
        self.events += seg.events
        self.next = start + seg.events
        if seg.broken is not None:
            self.broken = seg.broken
        elif self.next <= end:
            self.short = self.next
        return self.broken is not None

    def finish(self) -> ChainReport:
        if self.broken is None and self.pending:
            size = min(self.pending)
            self.broken = ChainBreak(self.next, BreakKind.TRUNCATED,
                                     f"the log ends at seq {self.next - 1} but a checkpoint covers {size} events")
        root = None if self.tree is None else self.tree.root().hex()
        return ChainReport(self.broken, self.events, TreeHead(self.next - 1, root, self.prev))


def _audit(storage: Storage, org_id: int, origin: Any, actor: Principal | None, result: OrgReport) -> None:
    from auditkeep.ingest.selfaudit import audit

    broken = result.report.broken
    audit(
        storage, org_id, "integrity.verify", origin, actor=actor,
        status="success" if broken is None else "failure", object_type="audit_log",
        log_entry=("Verified the audit log: intact" if broken is None
                   else f"Verified the audit log: broken at {broken}"),
        payload={"events": result.report.events, "tree_size": result.report.head.tree_size,
                 "checkpoints_checked": result.checkpoints_checked,
                 "broken_seq": None if broken is None else broken.seq,
                 "kind": None if broken is None else broken.kind.value},
    )

