"""Retention: deleting an organization's events received longer ago than its retention, the one audited
exception to append-only (issues #4, #9 and #12).

The rule: retention counts from when auditkeep *received* an event (`received_at`), not from its
`timestamp`. Ingest never stamps an event received earlier than the one before it in the chain
(ingest/service.py), so the events received before a cutoff are exactly a *prefix of the chain*: a purge
deletes it, the kept events stay contiguous in seq, and the chain stays verifiable from the oldest kept
event (its stored `prev_hash` is the hash of the last deleted one, signed in the purge's anchor). An
imported or back-dated event, whose timestamp may be years old, is therefore kept for the retention
period after it arrived, and then purged like any other; the purge's report counts such kept events.
(Events stored before received_at was made monotonic may be a few milliseconds out of order; the scan
stops at the first event received within the retention, so one is never deleted early.)

Legal holds and per-action rules (issue #12) keep that shape: the prefix ends before the first event an
active hold covers, and, given a policy of per-action rules (storage/retention_rules.py), before the first
event its action's rule keeps. Each delete batch checks the holds again with the head row locked, so a
hold committed after the plan still keeps what it covers.

The prefix is found first (read only), then `before_delete` may anchor it (issue #3), then it is
deleted in batches. Each batch is one write transaction that inserts the organization's row in
`retention_guard` (the only thing the append-only triggers let a DELETE through with), deletes, moves
`chain_heads.first_seq`, removes the deleted events' search index entries and stats counts (issue #13),
and removes the guard row again; the guard row also makes concurrent purges of
one organization take turns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from auditkeep.storage import rollup, search
from auditkeep.storage.base import Storage
from auditkeep.storage.holds import Hold, first_held
from auditkeep.storage.queries import timestamp_text
from auditkeep.storage.retention_rules import Policy, Verdict
from auditkeep.storage.types import format_timestamp

PURGE_BATCH = 10_000


@dataclass(frozen=True)
class Stop:
    """Why a purge kept seq `seq` (and so every later event): `text` for the report, `detail` for its event."""

    seq: int
    kind: str  # "hold" | "rule"
    text: str
    detail: dict[str, Any]


@dataclass(frozen=True)
class PurgeResult:
    """What one organization's purge deleted: `count` events, seq `first_seq`..`last_seq`, timestamps
    `oldest`..`newest` (None when nothing was deleted); `cutoff` is the retention's boundary on
    received_at. After the purge, `kept` events remain, `kept_old` of them with a timestamp before the
    cutoff (imported or back-dated: received within the retention)."""

    org_id: int
    cutoff: str | None
    count: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    oldest: str | None = None
    newest: str | None = None
    kept: int = 0
    kept_old: int = 0
    stop: Stop | None = None  # what ended the prefix, when a hold or a per-action rule did

    def merge(self, other: PurgeResult) -> PurgeResult:
        if not other.count:
            return self
        if not self.count:
            return other
        assert self.oldest and self.newest and other.oldest and other.newest
        return PurgeResult(self.org_id, self.cutoff, self.count + other.count, self.first_seq, other.last_seq,
                           min(self.oldest, other.oldest), max(self.newest, other.newest))


def cutoff_for(days: int, now: datetime | None = None) -> str:
    """The boundary of a retention of `days`: events received strictly before this may go."""
    return format_timestamp((now or datetime.now(UTC)) - timedelta(days=days))


def _q(storage: Storage, sql: str) -> str:
    return sql if storage.dialect == "sqlite" else sql.replace("?", "%s")


def _stop_at_rule(seq: int, action: str | None, received: str, verdict: Verdict) -> Stop:
    which = "minimum of " if verdict.by_minimum else ""
    if verdict.cutoff is None:
        why = f"kept forever by {verdict.rule.describe()}"
    else:
        why = f"received {received}, kept by the {which}{verdict.rule.describe()}"
    return Stop(seq, "rule", f"seq {seq:,} (action {action!r}) is {why}",
                {"kind": "rule", "seq": seq, "action": action, "rule": verdict.rule.action,
                 "max_days": verdict.rule.max_days, "min_days": verdict.rule.min_days,
                 "by_minimum": verdict.by_minimum})


def _stop_at_hold(seq: int, hold: Hold) -> Stop:
    return Stop(seq, "hold", f"kept because hold {hold.id} ({hold.reason}) covers seq {seq:,}",
                {"kind": "hold", "seq": seq, "hold_id": hold.id, "hold_reason": hold.reason})


def purge_boundary(storage: Storage, org_id: int, cutoff: str | None, *, batch: int = PURGE_BATCH,
                   policy: Policy | None = None) -> PurgeResult:
    """What a purge would delete (read only): the chain prefix of events past their retention (received
    before `cutoff`, or, given a `policy`, before their action's cutoff), ending before the first event
    an active legal hold covers. The result says where and why it stops when a hold or a rule of the
    policy stopped it."""
    result = PurgeResult(org_id, cutoff)
    with storage.read() as conn:
        run = conn.exec_driver_sql
        seq = run(_q(storage, "SELECT first_seq FROM chain_heads WHERE org_id = ?"), (org_id,)).scalar_one()
        held = first_held(conn, org_id, int(seq))
        while True:
            rows: Sequence[Any] = run(
                _q(storage, 'SELECT seq, "timestamp", received_at, action FROM events '
                            "WHERE org_id = ? AND seq >= ? ORDER BY seq LIMIT ?"),
                (org_id, seq, batch),
            ).all()
            old = []
            stop: Stop | None = None
            for row in rows:
                received = timestamp_text(row[2])
                if policy is not None:
                    verdict = policy.verdict(row[3])
                    if verdict.cutoff is None or received >= verdict.cutoff:
                        stop = _stop_at_rule(int(row[0]), row[3], received, verdict) if policy.per_action else None
                        break
                elif cutoff is None or received >= cutoff:
                    break
                if held is not None and int(row[0]) >= held[0]:
                    stop = _stop_at_hold(held[0], held[1])
                    break
                old.append(row)
            if old:
                stamps = [timestamp_text(r[1]) for r in old]
                result = result.merge(PurgeResult(org_id, cutoff, len(old), int(old[0][0]), int(old[-1][0]),
                                                  min(stamps), max(stamps)))
            if stop is not None:
                return replace(result, stop=stop)
            if len(old) < batch:
                return result
            seq = int(old[-1][0]) + 1


def _delete_batch(storage: Storage, org_id: int, last_seq: int, batch: int) -> int:
    """Delete the next up to `batch` events, stopping at `last_seq`; how many went."""
    with storage.write() as conn:
        run = conn.exec_driver_sql
        run(_q(storage, "INSERT INTO retention_guard (org_id) VALUES (?)"), (org_id,))
        # FOR UPDATE: a legal hold's insert takes this row too (storage/holds.py), so a hold committed
        # after the plan is seen here, and what it covers stays.
        lock = "" if storage.dialect == "sqlite" else " FOR UPDATE"
        first = int(run(_q(storage, f"SELECT first_seq FROM chain_heads WHERE org_id = ?{lock}"),
                        (org_id,)).scalar_one())
        last = min(last_seq, first + batch - 1)
        held = first_held(conn, org_id, first)
        if held is not None:
            last = min(last, held[0] - 1)
        deleted = 0
        if last >= first:
            rollup.forget(conn, storage, org_id, first, last)  # their stats counts, read before they go
            deleted = run(_q(storage, "DELETE FROM events WHERE org_id = ? AND seq >= ? AND seq <= ?"),
                          (org_id, first, last)).rowcount
            run(_q(storage, "UPDATE chain_heads SET first_seq = ? WHERE org_id = ?"), (last + 1, org_id))
            search.forget(conn, storage, org_id, first, last)  # their search index entries go with them
        run(_q(storage, "DELETE FROM retention_guard WHERE org_id = ?"), (org_id,))
    search.settle(storage, org_id)  # SQLite: the search file's entries follow the commit (storage/search.py)
    return int(deleted)


def kept_after(storage: Storage, result: PurgeResult) -> PurgeResult:
    """`result` with what its organization keeps now: every stored event, and those of them whose
    timestamp is before the cutoff (received within the retention, so kept by the rule)."""
    with storage.read() as conn:
        run = conn.exec_driver_sql
        first, head = run(_q(storage, "SELECT first_seq, seq FROM chain_heads WHERE org_id = ?"),
                          (result.org_id,)).one()
        old = 0 if result.cutoff is None else run(
            _q(storage, 'SELECT count(*) FROM events WHERE org_id = ? AND "timestamp" < ?'),
            (result.org_id, storage.backend.ts_param(result.cutoff))).scalar_one()
    return replace(result, kept=max(int(head) - int(first) + 1, 0), kept_old=int(old))


def purge_org(storage: Storage, org_id: int, cutoff: str | None, *, batch: int = PURGE_BATCH,
              before_delete: Callable[[int], object] | None = None, policy: Policy | None = None) -> PurgeResult:
    """Delete `org_id`'s chain prefix of events received before `cutoff` (API timestamp text), in
    batches; the result also counts what is kept (`kept_after`).

    Given a `policy` (storage/retention_rules.py), each event's cutoff is its action's. Either way the
    purge stops before the first event an active legal hold covers (issue #12).

    `before_delete(last_seq)` runs once before anything is deleted (the integrity anchor of the purge
    boundary: the signed compact range over seq 1..last_seq, issue #3).
    """
    plan = purge_boundary(storage, org_id, cutoff, batch=batch, policy=policy)
    if plan.count:
        assert plan.last_seq is not None
        if before_delete is not None:
            before_delete(plan.last_seq)
        deleted = 0
        while (step := _delete_batch(storage, org_id, plan.last_seq, batch)) > 0:
            deleted += step
            if step < batch:
                break
        if deleted < plan.count:
            # A hold placed after the plan covers part of it: report what went. (The anchor stays at the
            # planned boundary; `verify` notes the missing one, as after an interrupted purge.)
            assert plan.first_seq is not None
            plan = replace(plan, count=deleted, last_seq=plan.first_seq + deleted - 1 if deleted else None)
    return kept_after(storage, plan)
