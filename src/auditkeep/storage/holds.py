"""Legal hold rows, and which events they cover (issue #12).

An active hold (not released) covers an event of its organization when the event matches every
criterion the hold gives: `user_email` (ASCII-case-insensitive, as the API's filter), `user_id`,
`object_type`, `object_id`, and a `timestamp` in [start_ts, end_ts). A hold that gives no criterion
covers the whole log. Retention and erasure consult these before deleting or rewriting anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from auditkeep.errors import ConflictError, NotFoundError
from auditkeep.storage.base import Storage
from auditkeep.storage.queries import ascii_lower
from auditkeep.storage.tables import chain_heads, events, legal_holds

# seqs per `IN (...)` list: well under SQLite's 32,766 bound parameters and cheap to plan on PostgreSQL.
_SEQ_CHUNK = 1_000


@dataclass(frozen=True, slots=True)
class Hold:
    """One legal hold as stored."""

    id: str
    org_id: int
    reason: str
    user_email: str | None
    user_id: int | None
    object_type: str | None
    object_id: int | None
    start_ts: datetime | None
    end_ts: datetime | None
    created_at: datetime
    created_by: str
    released_at: datetime | None = None
    released_by: str | None = None
    release_reason: str | None = None

    @property
    def active(self) -> bool:
        return self.released_at is None

    def criteria(self) -> dict[str, Any]:
        """The criteria given (the rest match any event)."""
        names = ("user_email", "user_id", "object_type", "object_id", "start_ts", "end_ts")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


def _hold(row: sa.Row[Any]) -> Hold:
    m = row._mapping
    return Hold(**{f.name: m[f.name] for f in fields(Hold)})


def _lock_head(conn: sa.Connection, org_id: int) -> None:
    """Take the organization's head row, as a purge batch does before it checks holds: a hold and a
    purge of one organization then serialize, so a purge never deletes what a hold committed meanwhile
    covers (SQLite's write transactions serialize already)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(chain_heads.c.seq).where(chain_heads.c.org_id == org_id).with_for_update())


def insert(conn: sa.Connection, hold: Hold) -> None:
    _lock_head(conn, hold.org_id)
    conn.execute(legal_holds.insert().values({f.name: getattr(hold, f.name) for f in fields(Hold)}))


def get(conn: sa.Connection, org_id: int, hold_id: str) -> Hold:
    """The organization's hold `hold_id`; NotFoundError for another organization's."""
    row = conn.execute(legal_holds.select().where(legal_holds.c.org_id == org_id,
                                                  legal_holds.c.id == hold_id)).first()
    if row is None:
        raise NotFoundError(f"no legal hold {hold_id!r} in this organization")
    return _hold(row)


def find(conn: sa.Connection, hold_id: str) -> Hold:
    """The hold `hold_id` of whichever organization holds it (for the operator's CLI)."""
    row = conn.execute(legal_holds.select().where(legal_holds.c.id == hold_id)).first()
    if row is None:
        raise NotFoundError(f"no legal hold {hold_id!r}")
    return _hold(row)


def list_for_org(conn: sa.Connection, org_id: int, *, active_only: bool = False) -> list[Hold]:
    """The organization's holds, oldest first."""
    q = legal_holds.select().where(legal_holds.c.org_id == org_id)
    if active_only:
        q = q.where(legal_holds.c.released_at.is_(None))
    return [_hold(r) for r in conn.execute(q.order_by(legal_holds.c.created_at, legal_holds.c.id))]


def release(conn: sa.Connection, org_id: int, hold_id: str, *, at: datetime, by: str, reason: str) -> Hold:
    """Mark the hold released; ConflictError when it already was."""
    hold = get(conn, org_id, hold_id)
    if not hold.active:
        raise ConflictError(f"legal hold {hold_id!r} was already released at {hold.released_at:%Y-%m-%dT%H:%M:%SZ}")
    done = conn.execute(
        legal_holds.update()
        .where(legal_holds.c.org_id == org_id, legal_holds.c.id == hold_id, legal_holds.c.released_at.is_(None))
        .values(released_at=at, released_by=by, release_reason=reason)
    ).rowcount
    if done != 1:  # released by someone else between the read and the update
        raise ConflictError(f"legal hold {hold_id!r} was already released")
    return get(conn, org_id, hold_id)


def _email_key(conn: sa.Connection) -> sa.ColumnElement[Any]:
    # The same expression as the user_email index (migration 0007), so the match is the API filter's.
    if conn.dialect.name == "postgresql":
        return sa.func.lower(sa.collate(events.c.user_email, "C"))
    return sa.func.lower(events.c.user_email)


def covers(conn: sa.Connection, hold: Hold) -> sa.ColumnElement[bool]:
    """A WHERE clause on `events` true for the events of the hold's organization that it covers."""
    terms: list[sa.ColumnElement[bool]] = [events.c.org_id == hold.org_id]
    if hold.user_email is not None:
        terms.append(_email_key(conn) == ascii_lower(hold.user_email))
    if hold.user_id is not None:
        terms.append(events.c.user_id == hold.user_id)
    if hold.object_type is not None:
        terms.append(events.c.object_type == hold.object_type)
    if hold.object_id is not None:
        terms.append(events.c.object_id == hold.object_id)
    if hold.start_ts is not None:
        terms.append(events.c.timestamp >= hold.start_ts)
    if hold.end_ts is not None:
        terms.append(events.c.timestamp < hold.end_ts)
    return sa.and_(*terms)


def covering(conn: sa.Connection, org_id: int, seqs: Sequence[int]) -> dict[int, list[str]]:
    """{seq: [ids of the active holds covering it]} for those of `seqs` that are held."""
    held: dict[int, list[str]] = {}
    wanted = sorted(set(seqs))
    for hold in list_for_org(conn, org_id, active_only=True):
        for i in range(0, len(wanted), _SEQ_CHUNK):
            chunk = wanted[i:i + _SEQ_CHUNK]
            found = conn.execute(sa.select(events.c.seq).where(covers(conn, hold), events.c.seq.in_(chunk)))
            for seq in found.scalars():
                held.setdefault(int(seq), []).append(hold.id)
    return held


def first_held(conn: sa.Connection, org_id: int, from_seq: int) -> tuple[int, Hold] | None:
    """The lowest seq >= `from_seq` that an active hold covers, with that hold; None when none is held.

    One `min(seq)` per active hold: holds are few, and each query is served by the index of the hold's
    most selective criterion (or by the primary key for a hold on the whole log)."""
    best: tuple[int, Hold] | None = None
    for hold in list_for_org(conn, org_id, active_only=True):
        seq = conn.execute(sa.select(sa.func.min(events.c.seq)).where(covers(conn, hold),
                                                                      events.c.seq >= from_seq)).scalar()
        if seq is not None and (best is None or int(seq) < best[0]):
            best = (int(seq), hold)
    return best


def first_held_storage(storage: Storage, org_id: int, from_seq: int) -> tuple[int, Hold] | None:
    """`first_held` in a read transaction of its own."""
    with storage.read() as conn:
        return first_held(conn, org_id, from_seq)
