"""Verify an organization's stored log (`auditkeep verify`, GET /api/v1/integrity/verify; issue #3).

The walk starts at chain_heads.first_seq (after a retention purge, from the anchor stored there),
checks every event's hash and link, rebuilds the Merkle tree, compares every checkpoint this server
signed (and one the customer kept, if given) at its tree size, and finally the chain head row itself.

Large logs are split by seq range across processes (ingest/segments.py): an event's hash needs only
its own stored prev_hash, so each range is checked on its own and builds the Merkle span of its own
leaves; here the links between ranges are checked at the boundaries and the spans joined in O(log n)
hashes each. 1,000,000 events take ~7 CPU s in all (docs/benchmarks.md, "Verification (issue #3)"),
hence the split.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from auditkeep.auth.principals import Principal
from auditkeep.errors import CheckpointError
from auditkeep.ingest import checkpointing
from auditkeep.integrity.checkpoints import Checkpoint
from auditkeep.integrity.keyring import verify_with_ring
from auditkeep.integrity.merkle import CompactRange
from auditkeep.integrity.verify import (
    BreakKind,
    ChainBreak,
    ChainReport,
    ChainVerifier,
    TreeHead,
    is_hash_hex,
    sequence_break,
)
from auditkeep.schemas.audit_logs import LOG_FIELDS
from auditkeep.storage import Storage
from auditkeep.storage import integrity as records
from auditkeep.storage.events import iter_chain

# Below this many events one process takes about a second or less (~12 us an event through the reference
# verifier); a worker costs ~0.1 s to start (ingest/segments.py), so splitting pays only above this.
PARALLEL_MIN_EVENTS = 100_000


@dataclass(frozen=True, slots=True)
class OrgReport:
    """The outcome of verifying one organization's stored log."""

    org: str
    report: ChainReport
    first_seq: int  # where the walk began (1 unless events were purged)
    checkpoints_checked: int  # signed checkpoints compared (stored ones and the one given)
    checkpoints_ignored: int = 0  # stored checkpoints signed by a key neither current nor retired
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
                     + (f" ({self.checkpoints_ignored} by an unknown key ignored)" if self.checkpoints_ignored else ""))
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
    given checkpoint is not signed by this server's current or a retired key for this organization.

        result = verify_org(storage, org.id, checkpoint=load_checkpoint(saved))
        if not result.ok: print(result.report.broken)
    """
    keys = checkpointing.public_keys(storage)  # current and retired: each checkpoint names its key
    with storage.read() as conn:
        head = records.read_head(conn, org_id)
        stored = [checkpointing.to_checkpoint(r) for r in records.list_checkpoints(conn, org_id)]
        prev_hash, frontier = checkpointing.start_anchor(conn, org_id, head.first_seq)
        anchor = records.get_anchor(conn, org_id, head.first_seq - 1) if head.first_seq > 1 else None
    if checkpoint is not None:
        if checkpoint.org != head.org_name:
            raise CheckpointError(f"the checkpoint is for organization {checkpoint.org!r}, not {head.org_name!r}")
        if not verify_with_ring(checkpoint, keys):
            raise CheckpointError("the checkpoint's signature does not verify with this server's public key")
    notes: list[str] = []
    mine = [c for c in stored if c.key_id in keys]
    forged = next((c for c in mine if not verify_with_ring(c, keys)), None)
    if anchor is not None and not verify_with_ring(checkpointing.to_checkpoint(anchor[0]), keys):
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
        # A worker needs its own connection to the same data: not possible for an in-memory SQLite database.
        target = records.dbapi_target(storage)
        if n > 1 and count >= 2 * n and target is not None:
            report = _walk_parallel(storage, plan, n, target)
        else:
            report = _walk(storage, plan)
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


def verify_span(storage: Storage, org_id: int, first: int, last: int, *, prev_hash: str | None,
                frontier: CompactRange | None,
                checkpoints: list[Checkpoint]) -> tuple[ChainReport, CompactRange | None]:
    """Verify seq first..last of `org_id` in this process on the workers' fast path (ingest/segments.py
    `check`), from the chain head `prev_hash` and the compact range `frontier` before `first`, comparing
    `checkpoints` at their sizes: the report and the compact range after the last event that verified.

    For the self-watch's incremental steps (selfwatch/watcher.py): ~3x less CPU an event than feeding
    ChainVerifier, which matters because it shares the GIL with ingest (docs/benchmarks.md, "Self-watch").
    A range that ends short of `last` reports no break for it; the caller knows whether rows were due.
    """
    from auditkeep.ingest import segments

    pending: dict[int, list[Checkpoint]] = {}
    for c in checkpoints:
        pending.setdefault(c.tree_size, []).append(c)
    task = {"start": first, "end": last, "names": [*LOG_FIELDS, "seq"], "merkle": frontier is not None,
            "sizes": [s for s in pending if first <= s <= last]}
    with storage.read() as conn:
        # The driver's own cursor: plain tuples, as a worker reads them, without SQLAlchemy's row layer.
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(records.chain_rows_sql(storage.dialect), (org_id, first - 1, last))
            result = segments.check(task, cursor)
        finally:
            cursor.close()
    merge = _Merge(first, prev_hash, frontier, pending)
    merge.add(_Segment.from_json(orjson.dumps(result)), first, last)
    return merge.finish(), merge.tree


@dataclass(frozen=True, slots=True)
class _Segment:
    """What a worker reports for its range (ingest/segments.py `check`), hashes back to bytes."""

    events: int  # that verified, from the range's start
    first_seq: Any  # seq and prev_hash of the first stored row of the range (None: no rows)
    first_prev: Any
    broken: ChainBreak | None
    span: list[bytes]  # Merkle span of the verified events
    cuts: dict[int, list[bytes]]  # Merkle span from the range's start up to each checkpoint size in it
    heads: dict[int, str]  # chain hash at each checkpoint size in the range
    last_hash: str | None  # of the last event that verified

    @classmethod
    def from_json(cls, data: bytes) -> _Segment:
        raw = orjson.loads(data)
        broken = raw["broken"]
        return cls(
            raw["events"], raw["first_seq"], raw["first_prev"],
            None if broken is None else ChainBreak(broken[0], BreakKind(broken[1]), broken[2]),
            [bytes.fromhex(h) for h in raw["span"]],
            {int(size): [bytes.fromhex(h) for h in hashes] for size, hashes in raw["cuts"].items()},
            {int(size): digest for size, digest in raw["heads"].items()},
            raw["last_hash"],
        )


def _walk_parallel(storage: Storage, plan: _Plan, workers: int, target: str) -> ChainReport:
    """One `python -m auditkeep.ingest.segments` per range; the ranges are joined here in seq order."""
    first, last = plan.first, plan.last
    pending: dict[int, list[Checkpoint]] = {}
    for c in plan.checkpoints:
        pending.setdefault(c.tree_size, []).append(c)
    step = -(-(last - first + 1) // workers)
    bounds = [(s, min(s + step - 1, last)) for s in range(first, last + 1, step)]
    base = {"dialect": storage.dialect, "target": target, "sql": records.chain_rows_sql(storage.dialect),
            "busy_timeout_ms": storage.settings.sqlite_busy_timeout_ms, "org_id": plan.org_id,
            "names": [*LOG_FIELDS, "seq"], "merkle": plan.frontier is not None}
    # A plain subprocess, not multiprocessing: spawn re-runs the parent's main script (the whole CLI) in
    # every worker, and fork is unsafe in a threaded server (held locks, open connections).
    with contextlib.ExitStack() as stack:
        procs: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []  # each worker, its stderr
        for a, b in bounds:
            errors: IO[bytes] = stack.enter_context(tempfile.TemporaryFile())
            proc = subprocess.Popen([sys.executable, "-m", "auditkeep.ingest.segments"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors)
            stack.callback(_stop, proc)
            procs.append((proc, errors))
            assert proc.stdin is not None
            task = {**base, "start": a, "end": b, "sizes": [s for s in pending if a <= s <= b]}
            proc.stdin.write(orjson.dumps(task))
            proc.stdin.close()
        merge = _Merge(first, plan.prev_hash, plan.frontier, pending)
        for (a, b), (proc, errors) in zip(bounds, procs, strict=True):
            assert proc.stdout is not None
            out = proc.stdout.read()
            if proc.wait() != 0:
                errors.seek(0)
                tail = errors.read().decode(errors="replace").strip().splitlines()[-1:]
                raise RuntimeError(f"the verification worker for seq {a}..{b} failed (exit {proc.returncode}): "
                                   + "".join(tail))
            if merge.add(_Segment.from_json(out), a, b):
                break
    return merge.finish()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a worker whose range no longer matters (an earlier one broke) or that outlived an error."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _link_break(seq: int, prev_hash: object) -> ChainBreak:
    """A range's first prev_hash is not the previous range's last hash (the worker took it as given):
    judged as ChainVerifier judges it."""
    if not is_hash_hex(prev_hash):
        return ChainBreak(seq, BreakKind.MALFORMED, "prev_hash must be 64 lowercase hex digits")
    what = "64 zeros" if seq == 1 else f"the hash of seq {seq - 1}"
    return ChainBreak(seq, BreakKind.PREV_HASH_MISMATCH, f"prev_hash is not {what}")


class _Merge:
    """Joins the ranges in seq order: boundary links, the Merkle tree, checkpoints at their sizes."""

    def __init__(self, first: int, prev_hash: str | None, frontier: CompactRange | None,
                 pending: dict[int, list[Checkpoint]]) -> None:
        self.next = first
        self.prev = prev_hash
        self.tree = None if frontier is None else frontier.copy()
        # As ChainVerifier: of the sizes before the walk's start only the one at its very start is checkable.
        self.pending = {size: found for size, found in pending.items() if size >= first - 1}
        self.events = 0
        self.broken: ChainBreak | None = None
        self.short: int | None = None  # a range ended early here: a gap if anything follows, else truncation
        self._check(first - 1, self.prev, None if self.tree is None else self.tree.root().hex())

    def _check(self, size: int, chain_head: str | None, root: str | None) -> None:
        for c in self.pending.pop(size, ()):
            if self.broken is not None:
                return
            if chain_head is not None and c.chain_head != chain_head:
                self.broken = ChainBreak(size, BreakKind.CHECKPOINT_MISMATCH,
                                         f"hash of seq {size} differs from the chain head of the checkpoint "
                                         f"issued {c.issued_at}")
            elif root is not None and c.root_hash != root:
                self.broken = ChainBreak(size, BreakKind.CHECKPOINT_MISMATCH,
                                         f"Merkle root at tree size {size} differs from the checkpoint "
                                         f"issued {c.issued_at}")

    def add(self, seg: _Segment, start: int, end: int) -> bool:
        """Take the next range; True once broken (later ranges no longer matter)."""
        if self.broken is not None:
            return True
        if self.short is not None:
            if seg.events or seg.broken is not None:
                self.broken = sequence_break(seg.first_seq, self.short)
            return self.broken is not None
        if seg.first_seq == start and self.prev is not None and seg.first_prev != self.prev:
            self.broken = _link_break(start, seg.first_prev)
            return True
        done = start + seg.events  # the first seq this range did not verify
        for size in sorted(s for s in self.pending if start <= s < done):
            root = None
            if self.tree is not None:
                tree = self.tree.copy()
                tree.extend_span(size, seg.cuts[size])
                root = tree.root().hex()
            self._check(size, seg.heads[size], root)
            if self.broken is not None:
                return True
        if self.tree is not None:
            self.tree.extend_span(done - 1, seg.span)
        if seg.events:
            self.prev = seg.last_hash
        self.events += seg.events
        self.next = done
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

