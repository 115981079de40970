"""The self-watch rows (issue #13, migration 0014; storage/tables.py explains the columns).

Every change the watcher makes is conditional on the lease it holds, so a node that lost its lease (it
stalled past the lease's end and another took over) never moves a position it no longer owns.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa

from auditkeep.storage import leases
from auditkeep.storage.tables import chain_heads, checkpoints, integrity_watch, organizations


@dataclass(frozen=True, slots=True)
class WatchRow:
    """One organization's watch state as stored."""

    org_id: int
    verified_seq: int
    verified_hash: str | None
    merkle_frontier: str | None
    checkpoint_size: int
    full_verified_at: datetime
    failures: list[dict[str, Any]]
    lease_owner: str | None


def _row(r: sa.Row[Any]) -> WatchRow:
    m = r._mapping
    return WatchRow(int(m["id"]), int(m["verified_seq"]), m["verified_hash"], m["merkle_frontier"],
                    int(m["checkpoint_size"]), m["full_verified_at"], orjson.loads(m["failures"]),
                    m["lease_owner"])


def due_orgs(conn: sa.Connection, now: datetime, owner: str, interval: float) -> list[tuple[int, datetime | None]]:
    """The organizations with work for `owner`, in one query (an idle pass costs this alone, however many
    organizations there are): not watched yet, or with their lease free or `owner`'s and either events or
    a checkpoint newer than the position (while no failure is known) or a full verify due. Each comes with
    its last full verify (None: not watched yet), oldest first, so the most overdue full verify runs first."""
    w, h, c = integrity_watch.c, chain_heads.c, checkpoints.c
    newest_checkpoint = (sa.select(sa.func.max(c.tree_size)).where(c.org_id == h.org_id)
                         .scalar_subquery())
    behind = sa.and_(w.failures == "[]", sa.or_(h.seq != w.verified_seq, newest_checkpoint > w.checkpoint_size))
    # A time in the future (a clock stepped back, or a row edited to put the next full verify off) is due.
    due = sa.or_(w.full_verified_at <= now - timedelta(seconds=interval), w.full_verified_at > now)
    query = (sa.select(h.org_id, w.full_verified_at)
             .select_from(chain_heads.outerjoin(integrity_watch, w.id == h.org_id))
             .where(sa.or_(w.id.is_(None), sa.and_(leases.free_or_mine(integrity_watch, now, owner),
                                                   sa.or_(behind, due))))
             .order_by(w.full_verified_at.asc().nulls_first(), h.org_id))
    return [(int(org_id), at) for org_id, at in conn.execute(query)]


def full_due(last: datetime | None, now: datetime, interval: float) -> bool:
    """Whether a full verify last run at `last` is due at `now` (as `due_orgs` asks it of the database)."""
    if last is None:  # not watched yet: its row is made now, and its first full verify is an interval away
        return False
    since = (now - last).total_seconds()
    return since >= interval or since < 0


def get(conn: sa.Connection, org_id: int) -> WatchRow | None:
    found = conn.execute(sa.select(integrity_watch).where(integrity_watch.c.id == org_id)).first()
    return None if found is None else _row(found)


def create(conn: sa.Connection, org_id: int, *, verified_seq: int, verified_hash: str | None,
           merkle_frontier: str | None, now: datetime) -> None:
    """The row of an organization not watched yet; nothing if another node made it first."""
    values = {"id": org_id, "verified_seq": verified_seq, "verified_hash": verified_hash,
              "merkle_frontier": merkle_frontier, "checkpoint_size": 0, "full_verified_at": now,
              "failures": "[]", "updated_at": now}
    # Several nodes may start watching a new organization at once: the first insert wins, the rest are no-ops.
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        conn.execute(sqlite_insert(integrity_watch).values(values).on_conflict_do_nothing())
    else:
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        conn.execute(pg_insert(integrity_watch).values(values).on_conflict_do_nothing())


def acquire(conn: sa.Connection, org_id: int, owner: str, now: datetime, ttl: float) -> bool:
    return leases.acquire(conn, integrity_watch, org_id, owner, now=now, ttl=ttl)


def release(conn: sa.Connection, org_id: int, owner: str) -> None:
    leases.release(conn, integrity_watch, org_id, owner)


def update(conn: sa.Connection, org_id: int, owner: str, now: datetime, **values: Any) -> bool:
    """Change the row while `owner` holds its lease; False (nothing changed) once it does not."""
    if "failures" in values:
        values["failures"] = orjson.dumps(values["failures"]).decode()
    c = integrity_watch.c
    result = conn.execute(integrity_watch.update().where(c.id == org_id, c.lease_owner == owner)
                          .values(updated_at=now, **values))
    return result.rowcount == 1


def failures(conn: sa.Connection, org_id: int) -> list[dict[str, Any]]:
    """The organization's unresolved failures (empty: intact, or not watched yet). One primary-key read:
    every console page asks it."""
    found = conn.execute(sa.select(integrity_watch.c.failures).where(integrity_watch.c.id == org_id)).first()
    return [] if found is None else list(orjson.loads(found[0]))


def all_states(conn: sa.Connection) -> list[tuple[str, bool]]:
    """(organization name, intact) of every watched organization, by name: what /metrics reports."""
    rows = conn.execute(sa.select(organizations.c.name, integrity_watch.c.failures)
                        .join(integrity_watch, integrity_watch.c.id == organizations.c.id)
                        .order_by(organizations.c.name))
    return [(r[0], r[1] == "[]") for r in rows]
