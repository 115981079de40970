"""Retention: deleting an organization's events older than its retention, the one audited exception to
append-only (issue #4).

What is deleted is always a *prefix of the chain*: the events from `chain_heads.first_seq` up to, not
including, the first event (in seq order) whose timestamp is within the retention. The kept events are
therefore contiguous in seq, and the chain stays verifiable from the oldest kept event: its stored
`prev_hash` is the hash of the last deleted one. An old event stored after a newer one (back-dated) is
kept until everything before it may go too.

Each batch is one write transaction that inserts the organization's row in `retention_guard` (the only
thing the append-only triggers let a DELETE through with), deletes, moves `chain_heads.first_seq`, and
removes the guard row again; the guard row also makes concurrent purges of one organization take turns.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def _purge_batch(storage: Storage, org_id: int, cutoff: str, batch: int) -> PurgeResult:
    ts = storage.backend.ts_param(cutoff)
    with storage.write() as conn:
        run = conn.exec_driver_sql
        run(_q(storage, "INSERT INTO retention_guard (org_id) VALUES (?)"), (org_id,))
        first = run(_q(storage, "SELECT first_seq FROM chain_heads WHERE org_id = ?"), (org_id,)).scalar_one()
        rows: Sequence[Any] = run(
            _q(storage, 'SELECT seq, "timestamp", CASE WHEN "timestamp" < ? THEN 1 ELSE 0 END FROM events '
                        "WHERE org_id = ? AND seq >= ? ORDER BY seq LIMIT ?"),
            (ts, org_id, first, batch),
        ).all()
        old = []
        for row in rows:
            if not row[2]:
                break
            old.append(row)
        result = PurgeResult(org_id, cutoff)
        if old:
            last = int(old[-1][0])
            run(_q(storage, "DELETE FROM events WHERE org_id = ? AND seq >= ? AND seq <= ?"), (org_id, first, last))
            run(_q(storage, "UPDATE chain_heads SET first_seq = ? WHERE org_id = ?"), (last + 1, org_id))
            stamps = [timestamp_text(r[1]) for r in old]
            result = PurgeResult(org_id, cutoff, len(old), int(old[0][0]), last, min(stamps), max(stamps))
        run(_q(storage, "DELETE FROM retention_guard WHERE org_id = ?"), (org_id,))
    return result


def purge_org(storage: Storage, org_id: int, cutoff: str, *, batch: int = PURGE_BATCH) -> PurgeResult:
    """Delete `org_id`'s chain prefix of events older than `cutoff` (API timestamp text), in batches."""
    total = PurgeResult(org_id, cutoff)
    while True:
        done = _purge_batch(storage, org_id, cutoff, batch)
        total = total.merge(done)
        if done.count < batch:
            return total
