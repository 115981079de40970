"""The self-watch (issue #13): follows each organization's seq behind ingest and verifies every new event,
compares every new signed checkpoint, and runs a full verify on a schedule (docs/integrity.md §14).

*Incremental.* The durable position (`integrity_watch`: the last verified seq, the hash this watcher
recomputed for it and the Merkle compact range there) means each event is hashed once, from its stored
fields and its predecessor's hash, whatever the log's size: not a full walk each time.

*Checkpoints.* When a newer signed checkpoint appears, its signature is checked and its Merkle root is
compared with the tree the watcher rebuilt: at its size while walking, or, when the watcher is already past
it, through an RFC 9162 consistency proof from the checkpoint's root to the watcher's own root.

*Full verify* (`AUDITKEEP_VERIFY_INTERVAL`): `verify_org`, the walk `auditkeep verify` makes. It is what
finds a row edited behind the watcher's position, and what, when it passes, clears a failure (after a
restore) and sends the watcher back to the start of the chain.

A failure is recorded once as an `integrity.verify_failed` event in the organization's log (another
failure, at another seq or of another kind, is recorded too; the same one found again is not) and kept
in the watch row, which /metrics (`auditkeep_integrity_ok`) and the console's banner read. While an
organization has a failure its incremental watch pauses (the chain past the break cannot be trusted);
the scheduled full verify goes on. One node at a time watches an organization (a lease, storage/leases.py).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from auditkeep.background import Loop
from auditkeep.errors import AuditKeepError
from auditkeep.ingest import checkpointing, proofs
from auditkeep.ingest.selfaudit import Origin, audit
from auditkeep.ingest.verification import verify_org, verify_span
from auditkeep.integrity.checkpoints import Checkpoint
from auditkeep.integrity.keyring import verify_with_ring
from auditkeep.integrity.merkle import CompactRange, verify_consistency
from auditkeep.integrity.verify import BreakKind, ChainBreak, ChainReport
from auditkeep.settings import Settings
from auditkeep.storage import Storage
from auditkeep.storage import integrity as records
from auditkeep.storage import selfwatch as store
from auditkeep.storage.types import format_timestamp
from auditkeep.streams.forwarder import default_owner

log = logging.getLogger("auditkeep.selfwatch")

FAILED = "integrity.verify_failed"
RECOVERED = "integrity.verify_recovered"
# Events hashed per step (one read, one position write). ~12 us an event: a step takes ~60 ms, so the
# watcher never holds SQLite's writer lock for long and ingest does not wait behind it.
BATCH = 5_000
# How long one organization keeps the watcher while it has a backlog, before the others get their turn; and
# how long a pass spends on full verifies (at least one) before it goes back to every organization's new
# events.
TURN_SECONDS = 2.0
ORIGIN = Origin(source="system", client_ip="127.0.0.1", url="auditkeep:self-watch")


@dataclass(frozen=True, slots=True)
class Found:
    """A failure the watcher found: where, what, and which check found it."""

    brk: ChainBreak
    check: str  # "incremental", "checkpoint" or "full"

    def same_as(self, known: dict[str, Any]) -> bool:
        return known.get("seq") == self.brk.seq and known.get("kind") == self.brk.kind.value


class Watcher(Loop):
    """Watches every organization of this database; several (nodes, workers) may run at once."""

    thread_name = "auditkeep-selfwatch"
    # Re-hashing new events is Python work under the worker's GIL, beside ingest's: while behind (a bulk
    # load), a quarter of the time (background.py). It then verifies ~10,000 events a second on SQLite.
    busy_share = 0.25
    log = log

    def __init__(self, storage: Storage, settings: Settings, owner: str | None = None) -> None:
        self.storage = storage
        self.settings = settings
        self.owner = owner or default_owner()
        self._held: set[int] = set()
        self._backlog = False  # the last pass left work for the next: a whole batch, or full verifies due
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """One pass over the organizations with work to do; how many events were verified incrementally.

        Every organization's new events come first, then the full verifies that are due, most overdue first,
        for about a turn: a full verify walks a whole log (~7 CPU s per 1,000,000 events), and a pass that
        ran them all first would hold up the new events of every organization behind them. What is left is
        the next pass's, which follows at once."""
        now = datetime.now(UTC)
        with self.storage.read() as conn:
            orgs = store.due_orgs(conn, now, self.owner, self.settings.verify_interval)
        self._behind = 0  # the most new events an organization had waiting (background.py FAR_BEHIND)
        done = 0
        for org_id, _ in orgs:
            if self._stop.is_set():
                break
            done += self.watch(org_id, full=False)
        overdue = [org_id for org_id, last in orgs if store.full_due(last, now, self.settings.verify_interval)]
        turn_ends = time.monotonic() + TURN_SECONDS
        # Work left for the next pass, which then follows at once (background.Loop): a whole batch of new
        # events (more may be waiting), or full verifies still due (below). Otherwise the loop rests, so under
        # steady ingest a pass covers a poll interval's events with one position write, not one write per
        # ingest commit (each an fsync on SQLite, in ingest's way). Set here, not only by run_forever: tests
        # and benchmarks call run_once alone.
        self._backlog = done >= BATCH
        for k, org_id in enumerate(overdue):
            if self._stop.is_set():
                break
            if k and time.monotonic() >= turn_ends:
                self._backlog = True
                break
            done += self.watch(org_id)
        return done

    def catch_up(self) -> int:
        """Pass until no new event is left to verify (tests, benchmarks); how many were verified."""
        total = 0
        while done := self.run_once():
            total += done
        return total

    # --- one organization -------------------------------------------------------------------------------

    def watch(self, org_id: int, *, full: bool = True) -> int:
        """Verify `org_id`'s new events, then its full verify if one is due (and `full`); how many events
        were verified incrementally."""
        now = datetime.now(UTC)
        with self.storage.read() as conn:
            row = store.get(conn, org_id)
            head = records.read_head(conn, org_id)
            latest = records.latest_checkpoint(conn, org_id)
        if row is None:
            self._start_row(org_id, head.first_seq, now)
            with self.storage.read() as conn:
                row = store.get(conn, org_id)
            assert row is not None
        self._behind = max(self._behind, head.seq - row.verified_seq)
        full_due = full and store.full_due(row.full_verified_at, now, self.settings.verify_interval)
        new_work = not row.failures and (row.verified_seq != head.seq or (
            latest is not None and latest["tree_size"] > row.checkpoint_size))
        # The lease is taken only when there is work: taking it is a write, and on SQLite every write is an
        # fsync in ingest's way. An idle lease may lapse.
        if not (full_due or new_work):
            return 0
        with self.storage.write() as conn:
            if not store.acquire(conn, org_id, self.owner, now, self.settings.self_watch_lease_seconds):
                self._held.discard(org_id)
                return 0
        self._held.add(org_id)
        verified = 0
        turn_ends = now.timestamp() + TURN_SECONDS
        while new_work and not self._stop.is_set():
            step = self._step(org_id)
            if step is None:
                break
            verified += step
            if step < BATCH or datetime.now(UTC).timestamp() >= turn_ends:  # caught up, or the turn is over
                break
        if full_due and not self._stop.is_set():
            self._full(org_id)
        return verified

    def _start_row(self, org_id: int, first_seq: int, now: datetime) -> None:
        """Start watching from the chain's start (after a purge, from its anchor)."""
        with self.storage.read() as conn:
            prev_hash, tree = checkpointing.start_anchor(conn, org_id, first_seq)
        with self.storage.write() as conn:
            store.create(conn, org_id, verified_seq=first_seq - 1, verified_hash=prev_hash,
                         merkle_frontier=None if tree is None else tree.to_text(), now=now)

    def _restart_values(self, org_id: int) -> dict[str, Any]:
        with self.storage.read() as conn:
            head = records.read_head(conn, org_id)
            prev_hash, tree = checkpointing.start_anchor(conn, org_id, head.first_seq)
        return {"verified_seq": head.first_seq - 1, "verified_hash": prev_hash,
                "merkle_frontier": None if tree is None else tree.to_text(), "checkpoint_size": 0}

    def _step(self, org_id: int) -> int | None:
        """Verify the next batch after the position and compare a new checkpoint: how many events were
        verified (0: caught up), None when a failure was found or the lease was lost."""
        with self.storage.read() as conn:
            row = store.get(conn, org_id)
            head = records.read_head(conn, org_id)
            latest = records.latest_checkpoint(conn, org_id)
        if row is None or row.lease_owner != self.owner or row.failures:
            return None
        now = datetime.now(UTC)
        if row.verified_seq < head.first_seq - 1:  # a retention purge passed the position: start at its anchor
            with self.storage.write() as conn:
                store.update(conn, org_id, self.owner, now, **self._restart_values(org_id))
            return 0
        found = self._check_head(row, head)
        if found is not None:
            self._failed(org_id, row, found)
            return None
        checkpoint = None if latest is None else checkpointing.to_checkpoint(latest)
        if checkpoint is not None and checkpoint.tree_size <= row.checkpoint_size:
            checkpoint = None
        end = min(head.seq, row.verified_seq + BATCH)
        tree = None if row.merkle_frontier is None else CompactRange.from_text(row.verified_seq, row.merkle_frontier)
        ahead = checkpoint is not None and row.verified_seq < checkpoint.tree_size <= end
        compare = [checkpoint] if checkpoint is not None and ahead and self._signed(checkpoint) else []
        report, tree = self._walk(org_id, row, end, tree, compare)
        brk = report.broken
        values: dict[str, Any] = {"verified_seq": report.head.tree_size, "verified_hash": report.head.chain_head,
                                  "merkle_frontier": None if tree is None else tree.to_text()}
        if brk is not None:
            if self._purged_meanwhile(org_id, row.verified_seq):
                return 0
            with self.storage.write() as conn:  # what did verify stays verified: the position stops at the break
                store.update(conn, org_id, self.owner, now, **values)
            check = "checkpoint" if brk.kind is BreakKind.CHECKPOINT_MISMATCH else "incremental"
            self._failed(org_id, row, Found(brk, check))
            return None
        if checkpoint is not None and checkpoint.tree_size <= report.head.tree_size:
            found = self._checkpoint(org_id, checkpoint, ahead, report.head.tree_size, tree)
            if found is not None:
                self._failed(org_id, row, found)
                return None
            values["checkpoint_size"] = checkpoint.tree_size
        with self.storage.write() as conn:
            if not store.update(conn, org_id, self.owner, now, **values):
                return None
        return report.head.tree_size - row.verified_seq

    def _walk(self, org_id: int, row: store.WatchRow, end: int, tree: CompactRange | None,
              compare: list[Checkpoint]) -> tuple[ChainReport, CompactRange | None]:
        """Verify seq verified_seq+1..end (the fast path of `verify`'s workers, in this thread); a row missing
        before `end` (the chain head's seq) is a gap."""
        report, tree = verify_span(self.storage, org_id, row.verified_seq + 1, end, prev_hash=row.verified_hash,
                                   frontier=tree, checkpoints=compare)
        if report.broken is None and report.head.tree_size < end:
            missing = report.head.tree_size + 1
            brk = ChainBreak(missing, BreakKind.SEQ_GAP, f"seq {missing} missing (the chain head records seq {end})")
            return ChainReport(brk, report.events, report.head), tree
        return report, tree

    def _check_head(self, row: store.WatchRow, head: records.HeadState) -> Found | None:
        """The chain_heads row may not fall behind what was verified, nor name another hash for it."""
        if head.seq < row.verified_seq:
            reason = f"the chain head records seq {head.seq} but seq {row.verified_seq} was verified"
            return Found(ChainBreak(head.seq + 1, BreakKind.TRUNCATED, reason), "incremental")
        if head.seq == row.verified_seq and row.verified_hash is not None and head.hash != row.verified_hash:
            reason = f"the chain head's hash differs from the verified hash of seq {head.seq}"
            return Found(ChainBreak(head.seq, BreakKind.CHECKPOINT_MISMATCH, reason), "incremental")
        return None

    def _known_key(self, checkpoint: Checkpoint) -> bool:
        # As `verify`: a checkpoint naming a key this server never had is not this server's; it is ignored.
        return checkpoint.key_id in checkpointing.public_keys(self.storage)

    def _signed(self, checkpoint: Checkpoint) -> bool:
        return verify_with_ring(checkpoint, checkpointing.public_keys(self.storage))

    def _checkpoint(self, org_id: int, checkpoint: Checkpoint, compared: bool, size: int,
                    tree: CompactRange | None) -> Found | None:
        """A new checkpoint the watcher has reached: `compared` (the walk compared it at its size when its
        signature verified) or behind the walk's start (compared here)."""
        if not compared:
            return self._compare_behind(org_id, checkpoint, size, tree)
        if self._known_key(checkpoint) and not self._signed(checkpoint):
            return Found(_forged(checkpoint), "checkpoint")
        return None

    def _compare_behind(self, org_id: int, checkpoint: Checkpoint, size: int,
                        tree: CompactRange | None) -> Found | None:
        """A checkpoint at or before the watcher's position `size`: its signature, its chain head against
        the stored hash at its size, and its root against the watcher's own through a consistency proof."""
        if not self._known_key(checkpoint):
            return None
        if not self._signed(checkpoint):
            return Found(_forged(checkpoint), "checkpoint")
        at = checkpoint.tree_size
        if at == 0:
            return None
        with self.storage.read() as conn:
            stored = dict(records.iter_hashes(conn, org_id, at - 1, at)).get(at)
        if stored != checkpoint.chain_head:
            reason = f"hash of seq {at} differs from the chain head of the checkpoint issued {checkpoint.issued_at}"
            return Found(ChainBreak(at, BreakKind.CHECKPOINT_MISMATCH, reason), "checkpoint")
        if tree is None:  # purged without an anchor: no roots to compare
            return None
        proof = proofs.consistency(self.storage, org_id, at, size)["proof"]
        if not verify_consistency(at, size, [bytes.fromhex(h) for h in proof], bytes.fromhex(checkpoint.root_hash),
                                  tree.root()):
            reason = f"Merkle root at tree size {at} differs from the checkpoint issued {checkpoint.issued_at}"
            return Found(ChainBreak(at, BreakKind.CHECKPOINT_MISMATCH, reason), "checkpoint")
        return None

    def _purged_meanwhile(self, org_id: int, verified_seq: int) -> bool:
        """A purge that deleted past the position while the batch was read looks like a gap: it is not one."""
        with self.storage.read() as conn:
            return records.read_head(conn, org_id).first_seq - 1 > verified_seq

    def _full(self, org_id: int) -> None:
        """The scheduled full verify: a new failure is recorded; a pass clears every failure (a restore)."""
        # 10,000,000 events take ~70 CPU s, longer than a lease: it is renewed while the walk runs, so no other
        # node starts the same walk meanwhile.
        done = threading.Event()
        renewer = threading.Thread(target=self._renew, args=(org_id, done), name="auditkeep-selfwatch-lease",
                                   daemon=True)
        renewer.start()
        try:
            result = verify_org(self.storage, org_id)
        finally:
            done.set()
            renewer.join()
        now = datetime.now(UTC)
        with self.storage.write() as conn:
            # Drop the result if another node took the lease over all the same (this one stalled).
            if not store.acquire(conn, org_id, self.owner, now, self.settings.self_watch_lease_seconds):
                return
        with self.storage.read() as conn:
            row = store.get(conn, org_id)
        assert row is not None
        brk = result.report.broken
        if brk is not None:
            self._failed(org_id, row, Found(brk, "full"))
            with self.storage.write() as conn:
                store.update(conn, org_id, self.owner, now, full_verified_at=now)
            return
        values: dict[str, Any] = {"full_verified_at": now}
        if row.failures:
            values |= {"failures": [], **self._restart_values(org_id)}
            audit(self.storage, org_id, RECOVERED, ORIGIN, object_type="audit_log",
                  log_entry=f"Self-watch: the log verifies again ({result.report.events} events); "
                            f"{len(row.failures)} failure(s) cleared",
                  payload={"events": result.report.events, "tree_size": result.report.head.tree_size,
                           "cleared": row.failures})
            log.warning("integrity restored", extra={"org_id": org_id})
        with self.storage.write() as conn:
            store.update(conn, org_id, self.owner, now, **values)

    def _renew(self, org_id: int, done: threading.Event) -> None:
        """Renew `org_id`'s lease every third of its length until `done`."""
        ttl = self.settings.self_watch_lease_seconds
        while not done.wait(ttl / 3):
            try:
                with self.storage.write() as conn:
                    if not store.acquire(conn, org_id, self.owner, datetime.now(UTC), ttl):
                        return
            except Exception:  # a database hiccup: the walk goes on, and the next renewal may succeed
                log.exception("self-watch lease renewal failed", extra={"org_id": org_id})

    def _failed(self, org_id: int, row: store.WatchRow, found: Found) -> None:
        """Record `found` unless this failure is known already; the watch row keeps it either way."""
        if any(found.same_as(known) for known in row.failures):
            return
        brk = found.brk
        # Recorded before the row is written: a crash between records it twice rather than never.
        try:
            audit(self.storage, org_id, FAILED, ORIGIN, status="failure", object_type="audit_log",
                  log_entry=f"Self-watch: the log does not verify at seq {brk.seq} ({brk.kind.value}): {brk.reason}",
                  payload={"seq": brk.seq, "kind": brk.kind.value, "reason": brk.reason, "check": found.check})
        except (AuditKeepError, SQLAlchemyError):
            # The damaged chain may refuse the append itself (a row planted past its head takes the seq the
            # event would get). The failure must still show: the row below sets the metric and the banner.
            log.exception("integrity.verify_failed could not be appended to the organization's log",
                          extra={"org_id": org_id, "seq": brk.seq, "kind": brk.kind.value})
        log.error("integrity verification failed",
                  extra={"org_id": org_id, "seq": brk.seq, "kind": brk.kind.value, "check": found.check})
        entry = {"seq": brk.seq, "kind": brk.kind.value, "reason": brk.reason, "check": found.check,
                 "at": format_timestamp(datetime.now(UTC))}
        with self.storage.write() as conn:
            store.update(conn, org_id, self.owner, datetime.now(UTC), failures=[*row.failures, entry])

    # --- in the background (background.Loop: start, run_forever) ---------------------------------------

    def rest_seconds(self) -> float:
        return self.settings.self_watch_poll_seconds

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the step in hand and give the leases back."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with self.storage.write() as conn:
            for org_id in self._held:
                store.release(conn, org_id, self.owner)
        self._held.clear()


def _forged(checkpoint: Checkpoint) -> ChainBreak:
    return ChainBreak(checkpoint.tree_size, BreakKind.CHECKPOINT_MISMATCH,
                      f"a stored checkpoint at tree size {checkpoint.tree_size} has an invalid signature")
