"""Retention: deleting an organization's events older than its retention, the one audited exception to
append-only (issue #4).

What is deleted is always a *prefix of the chain*: the events from `chain_heads.first_seq` up to, not
including, the first event (in seq order) whose timestamp is within the retention. The kept events are
therefore contiguous in seq, and the chain stays verifiable from the oldest kept event: its stored
`prev_hash` is the hash of the last deleted one. An old event stored after a newer one (back-dated) is
kept until everything before it may go too.

The prefix is found first (read only), then `before_delete` may anchor it (issue #3), then it is
deleted in batches. Each batch is one write transaction that inserts the organization's row in
`retention_guard` (the only thing the append-only triggers let a DELETE through with), deletes, moves
`chain_heads.first_seq`, and removes the guard row again; the guard row also makes concurrent purges of
one organization take turns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from auditkeep.storage.base import Storage
from auditkeep.storage.queries import timestamp_text
from auditkeep.storage.types import format_timestamp

PURGE_BATCH = 10_000


@dataclass(frozen=True)
class PurgeResult:
    """What one organization's purge deleted: `count` events, seq `first_seq`..`last_seq`, timestamps
    `oldest`..`newest` (None when nothing was deleted); `cutoff` is the retention's boundary."""

    org_id: int
    cutoff: str
    count: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    oldest: str | None = None
    newest: str | None = None

    def merge(self, other: PurgeResult) -> PurgeResult:
        if not other.count:
            return self
        if not self.count:
            return other
        assert self.oldest and self.newest and other.oldest and other.newest
        return PurgeResult(self.org_id, self.cutoff, self.count + other.count, self.first_seq, other.last_seq,
                           min(self.oldest, other.oldest), max(self.newest, other.newest))


def cutoff_for(days: int, now: datetime | None = None) -> str:
    """The boundary of a retention of `days`: events strictly older than this may go."""
    return format_timestamp((now or datetime.now(UTC)) - timedelta(days=days))


def _q(storage: Storage, sql: str) -> str:
    return sql if storage.dialect == "sqlite" else sql.replace("?", "%s")


def purge_boundary(storage: Storage, org_id: int, cutoff: str, *, batch: int = PURGE_BATCH) -> PurgeResult:
    """What a purge at `cutoff` would delete: the chain prefix of events older than it (read only)."""
    ts = storage.backend.ts_param(cutoff)
    result = PurgeResult(org_id, cutoff)
    with storage.read() as conn:
        run = conn.exec_driver_sql
        seq = run(_q(storage, "SELECT first_seq FROM chain_heads WHERE org_id = ?"), (org_id,)).scalar_one()
        while True:
            rows: Sequence[Any] = run(
                _q(storage, 'SELECT seq, "timestamp", CASE WHEN "timestamp" < ? THEN 1 ELSE 0 END FROM events '
                            "WHERE org_id = ? AND seq >= ? ORDER BY seq LIMIT ?"),
                (ts, org_id, seq, batch),
            ).all()
            old = []
            for row in rows:
                if not row[2]:
                    break
                old.append(row)
            if old:
                stamps = [timestamp_text(r[1]) for r in old]
                result = result.merge(PurgeResult(org_id, cutoff, len(old), int(old[0][0]), int(old[-1][0]),
                                                  min(stamps), max(stamps)))
            if len(old) < batch:
                return result
            seq = int(old[-1][0]) + 1


def _delete_batch(storage: Storage, org_id: int, last_seq: int, batch: int) -> int:
    """Delete the next up to `batch` events, stopping at `last_seq`; how many went."""
    with storage.write() as conn:
        run = conn.exec_driver_sql
        run(_q(storage, "INSERT INTO retention_guard (org_id) VALUES (?)"), (org_id,))
        first = int(run(_q(storage, "SELECT first_seq FROM chain_heads WHERE org_id = ?"), (org_id,)).scalar_one())
        last = min(last_seq, first + batch - 1)
        deleted = 0
        if last >= first:
            deleted = run(_q(storage, "DELETE FROM events WHERE org_id = ? AND seq >= ? AND seq <= ?"),
                          (org_id, first, last)).rowcount
            run(_q(storage, "UPDATE chain_heads SET first_seq = ? WHERE org_id = ?"), (last + 1, org_id))
        run(_q(storage, "DELETE FROM retention_guard WHERE org_id = ?"), (org_id,))
    return int(deleted)


def purge_org(storage: Storage, org_id: int, cutoff: str, *, batch: int = PURGE_BATCH,
              before_delete: Callable[[int], object] | None = None) -> PurgeResult:
    """Delete `org_id`'s chain prefix of events older than `cutoff` (API timestamp text), in batches.

    `before_delete(last_seq)` runs once before anything is deleted (the integrity anchor of the purge
    boundary: the signed compact range over seq 1..last_seq, issue #3).
    """
    plan = purge_boundary(storage, org_id, cutoff, batch=batch)
    if not plan.count:
        return plan
    assert plan.last_seq is not None
    if before_delete is not None:
        before_delete(plan.last_seq)
    while _delete_batch(storage, org_id, plan.last_seq, batch) == batch:
        pass
    return plan
