"""Alert rule rows and their firings' outbox (issue #13; storage/tables.py explains the columns).

Every change the evaluator makes is conditional on the lease it holds and on the cursor and generation
it read, so two nodes never both count one event, and an evaluation read before an admin's change never
lands after it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from auditkeep.errors import NotFoundError
from auditkeep.storage import leases
from auditkeep.storage.tables import alert_firings, alert_rules, events

_JSON = ("filter", "group_by", "notify", "window_state")


@dataclass(frozen=True, slots=True)
class RuleRow:
    """One rule as stored (channel secrets still sealed)."""

    id: str
    org_id: int
    name: str
    template: str | None
    filter: dict[str, Any]
    threshold_count: int
    window_seconds: int
    group_by: list[str]
    notify: list[dict[str, Any]]
    sealed_secrets: str
    cooldown_seconds: int
    enabled: bool
    evaluated_seq: int
    window_state: dict[str, Any]
    generation: int
    last_fired_at: datetime | None
    last_error: str | None
    lease_owner: str | None
    lease_until: datetime | None
    created_at: datetime
    updated_at: datetime


def _row(r: sa.Row[Any]) -> RuleRow:
    m = dict(r._mapping)
    m.setdefault("window_state", "{}")
    for name in _JSON:
        m[name] = orjson.loads(m[name])
    m["enabled"], m["evaluated_seq"] = bool(m["enabled"]), int(m["evaluated_seq"])
    return RuleRow(**m)


def _encoded(values: dict[str, Any]) -> dict[str, Any]:
    return {k: orjson.dumps(v).decode() if k in _JSON else v for k, v in values.items()}


def insert(conn: sa.Connection, row: RuleRow) -> None:
    conn.execute(alert_rules.insert().values(**_encoded({f.name: getattr(row, f.name) for f in fields(row)})))


def _select(with_state: bool) -> sa.Select[Any]:
    """The rules' columns; without the window state (empty in the rows read), which only the evaluator's
    count needs and which holds every group's recent events."""
    if with_state:
        return alert_rules.select()
    return sa.select(*(c for c in alert_rules.c if c.name != "window_state"))


def get(conn: sa.Connection, org_id: int, rule_id: str, *, with_state: bool = True) -> RuleRow:
    """The organization's rule `rule_id`; NotFoundError for any other organization's."""
    r = conn.execute(_select(with_state).where(alert_rules.c.org_id == org_id, alert_rules.c.id == rule_id)).first()
    if r is None:
        raise NotFoundError(f"no alert rule {rule_id!r} in this organization")
    return _row(r)


def list_for_org(conn: sa.Connection, org_id: int) -> list[RuleRow]:
    """The organization's rules, without their window state."""
    rows = conn.execute(_select(False).where(alert_rules.c.org_id == org_id)
                        .order_by(alert_rules.c.created_at, alert_rules.c.name))
    return [_row(r) for r in rows]


def update(conn: sa.Connection, org_id: int, rule_id: str, **values: Any) -> None:
    """An admin's change (name, enabled, what the rule counts, its channels)."""
    c = alert_rules.c
    conn.execute(alert_rules.update().where(c.org_id == org_id, c.id == rule_id).values(**_encoded(values)))


def delete(conn: sa.Connection, org_id: int, rule_id: str) -> None:
    conn.execute(alert_firings.delete().where(alert_firings.c.org_id == org_id, alert_firings.c.rule_id == rule_id))
    conn.execute(alert_rules.delete().where(alert_rules.c.org_id == org_id, alert_rules.c.id == rule_id))


def due(conn: sa.Connection, now: datetime, owner: str) -> list[RuleRow]:
    """Enabled rules whose lease is free, expired, or `owner`'s (without their window state)."""
    c = alert_rules.c
    rows = conn.execute(_select(False).where(c.enabled.is_(True), leases.free_or_mine(alert_rules, now, owner))
                        .order_by(c.org_id, c.created_at))
    return [_row(r) for r in rows]


def acquire(conn: sa.Connection, rule_id: str, owner: str, now: datetime, ttl: float) -> bool:
    return leases.acquire(conn, alert_rules, rule_id, owner, now=now, ttl=ttl)


def release(conn: sa.Connection, rule_id: str, owner: str) -> None:
    leases.release(conn, alert_rules, rule_id, owner)


@dataclass(frozen=True, slots=True)
class Firing:
    """One firing as the outbox holds it."""

    id: str
    org_id: int
    rule_id: str
    event_uuid: str
    body: dict[str, Any]
    recorded: bool
    pending: list[int]
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    done_at: datetime | None


def _firing(r: sa.Row[Any]) -> Firing:
    m = dict(r._mapping)
    m["body"], m["pending"], m["recorded"] = orjson.loads(m["body"]), orjson.loads(m["pending"]), bool(m["recorded"])
    return Firing(**m)


def advance(conn: sa.Connection, row: RuleRow, owner: str, evaluated_seq: int, *, state: dict[str, Any],
            firings: list[Firing]) -> bool:
    """Move the cursor and window state, and queue what fired, in one transaction; False (nothing changed)
    when the lease, the generation or the cursor moved meanwhile."""
    c = alert_rules.c
    result = conn.execute(
        alert_rules.update()
        .where(c.id == row.id, c.lease_owner == owner, c.generation == row.generation,
               c.evaluated_seq == row.evaluated_seq)
        .values(evaluated_seq=evaluated_seq, window_state=orjson.dumps(state).decode())
    )
    if result.rowcount != 1:
        return False
    for f in firings:
        conn.execute(alert_firings.insert().values(
            id=f.id, org_id=f.org_id, rule_id=f.rule_id, event_uuid=f.event_uuid, body=orjson.dumps(f.body).decode(),
            recorded=f.recorded, pending=orjson.dumps(f.pending).decode(), attempts=f.attempts,
            next_attempt_at=f.next_attempt_at, last_error=f.last_error, created_at=f.created_at, done_at=f.done_at))
    return True


def due_firings(conn: sa.Connection, rule_id: str, now: datetime, limit: int = 1000) -> list[Firing]:
    """The rule's firings not yet done whose next attempt is due, oldest first (at most `limit`: a flood is
    worked off a thousand at a time, each thousand one append)."""
    c = alert_firings.c
    rows = conn.execute(alert_firings.select().where(
        c.rule_id == rule_id, c.done_at.is_(None), sa.or_(c.next_attempt_at.is_(None), c.next_attempt_at <= now),
    ).order_by(c.created_at, c.id).limit(limit))
    return [_firing(r) for r in rows]


def pending_count(conn: sa.Connection, rule_id: str) -> int:
    c = alert_firings.c
    return int(conn.execute(sa.select(sa.func.count()).where(c.rule_id == rule_id, c.done_at.is_(None))).scalar_one())


def update_firing(conn: sa.Connection, firing_id: str, **values: Any) -> None:
    if "pending" in values:
        values["pending"] = orjson.dumps(values["pending"]).decode()
    conn.execute(alert_firings.update().where(alert_firings.c.id == firing_id).values(**values))


def recorded_firings(conn: sa.Connection, org_id: int, event_uuids: list[str]) -> set[str]:
    """Which of these events are alert.fired records the evaluator wrote (rules must not count them)."""
    if not event_uuids:
        return set()
    c = alert_firings.c
    rows = conn.execute(sa.select(c.event_uuid).where(c.org_id == org_id, c.event_uuid.in_(event_uuids)))
    return {str(u) for (u,) in rows}


def forget_done_firings(conn: sa.Connection) -> int:
    """Delete the firings that are done and whose alert.fired event every enabled rule of their
    organization has counted past: only the evaluator's check for its own records needed them. A rule
    created or enabled later starts at the newest event, so it never meets those records. How many went."""
    r, f, e = alert_rules.c, alert_firings.c, events.c
    cursors = conn.execute(sa.select(r.org_id, sa.func.min(r.evaluated_seq))
                           .where(r.enabled.is_(True)).group_by(r.org_id)).all()
    gone = 0
    for org_id, seq in cursors:
        passed = sa.select(e.seq).where(e.org_id == org_id, e.event_uuid == f.event_uuid, e.seq <= seq).exists()
        result = conn.execute(alert_firings.delete().where(f.org_id == org_id, f.done_at.is_not(None),
                                                           f.recorded.is_(True), passed))
        gone += int(result.rowcount)
    return gone


def mark_recorded(conn: sa.Connection, firing_ids: list[str], *, done: list[str], now: datetime) -> None:
    """The firings' alert.fired events are in the log; those in `done` had no channel to notify."""
    c = alert_firings.c
    conn.execute(alert_firings.update().where(c.id.in_(firing_ids)).values(recorded=True))
    if done:
        conn.execute(alert_firings.update().where(c.id.in_(done)).values(done_at=now, pending="[]"))


def stored_events(conn: sa.Connection, org_id: int, event_uuids: list[str]) -> set[str]:
    """Which of these events the organization's log holds (alert.fired records written before a crash)."""
    c = events.c
    rows = conn.execute(sa.select(c.event_uuid).where(c.org_id == org_id, c.event_uuid.in_(event_uuids)))
    return {str(u) for (u,) in rows}
