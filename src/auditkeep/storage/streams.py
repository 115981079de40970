"""Stream rows: made and changed by operators, and leased and advanced by forwarders (issue #10).

Every change a forwarder makes is conditional on the lease it holds and the generation it read, so two
forwarders never both move one stream's cursor, and a batch read before a replay never moves it after.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from auditkeep.errors import NotFoundError
from auditkeep.storage import leases
from auditkeep.storage.base import Storage
from auditkeep.storage.queries import LogFilters, LogQuery, select_sql
from auditkeep.storage.tables import chain_heads, events, streams

# One batch read scans at most this many seqs past the cursor, so a filter that matches rarely still
# answers in bounded time; the cursor then moves to the window's end (the events it skipped did not match).
SCAN_WINDOW = 50_000


@dataclass(frozen=True, slots=True)
class StreamRow:
    """One stream as stored (secrets still sealed)."""

    id: str
    org_id: int
    name: str
    kind: str
    format: str
    config: dict[str, Any]
    sealed_secrets: str
    filter: dict[str, Any]
    state: str
    delivered_seq: int
    generation: int
    failures: int
    last_error: str | None
    last_delivery_at: datetime | None
    next_attempt_at: datetime | None
    lease_owner: str | None
    lease_until: datetime | None
    created_at: datetime
    updated_at: datetime


def _row(r: sa.Row[Any]) -> StreamRow:
    m = r._mapping
    return StreamRow(
        id=m["id"], org_id=m["org_id"], name=m["name"], kind=m["kind"], format=m["format"],
        config=orjson.loads(m["config"]), sealed_secrets=m["sealed_secrets"], filter=orjson.loads(m["filter"]),
        state=m["state"], delivered_seq=int(m["delivered_seq"]), generation=int(m["generation"]),
        failures=int(m["failures"]), last_error=m["last_error"], last_delivery_at=m["last_delivery_at"],
        next_attempt_at=m["next_attempt_at"], lease_owner=m["lease_owner"], lease_until=m["lease_until"],
        created_at=m["created_at"], updated_at=m["updated_at"],
    )


def insert(conn: sa.Connection, row: StreamRow) -> None:
    values = {f: getattr(row, f) for f in StreamRow.__dataclass_fields__}
    values["config"] = orjson.dumps(row.config).decode()
    values["filter"] = orjson.dumps(row.filter).decode()
    conn.execute(streams.insert().values(**values))


def get(conn: sa.Connection, org_id: int, stream_id: str) -> StreamRow:
    """The organization's stream `stream_id`; NotFoundError for any other organization's."""
    r = conn.execute(streams.select().where(streams.c.org_id == org_id, streams.c.id == stream_id)).first()
    if r is None:
        raise NotFoundError(f"no stream {stream_id!r} in this organization")
    return _row(r)


def find_by_name(conn: sa.Connection, org_id: int, name: str) -> StreamRow:
    r = conn.execute(streams.select().where(streams.c.org_id == org_id, streams.c.name == name)).first()
    if r is None:
        raise NotFoundError(f"no stream named {name!r} in this organization")
    return _row(r)


def list_for_org(conn: sa.Connection, org_id: int) -> list[StreamRow]:
    rows = conn.execute(streams.select().where(streams.c.org_id == org_id).order_by(streams.c.created_at))
    return [_row(r) for r in rows]


def update(conn: sa.Connection, org_id: int, stream_id: str, **values: Any) -> None:
    """An operator's change (name, state, config, filter, format, a replay's delivered_seq...)."""
    for name in ("config", "filter"):
        if name in values:
            values[name] = orjson.dumps(values[name]).decode()
    conn.execute(streams.update().where(streams.c.org_id == org_id, streams.c.id == stream_id).values(**values))


def delete(conn: sa.Connection, org_id: int, stream_id: str) -> None:
    conn.execute(streams.delete().where(streams.c.org_id == org_id, streams.c.id == stream_id))


def due(conn: sa.Connection, now: datetime, owner: str) -> list[StreamRow]:
    """Active streams whose next attempt is due and whose lease is free, expired, or `owner`'s."""
    c = streams.c
    rows = conn.execute(
        streams.select().where(
            c.state == "active",
            sa.or_(c.next_attempt_at.is_(None), c.next_attempt_at <= now),
            leases.free_or_mine(streams, now, owner),
        ).order_by(c.next_attempt_at)
    )
    return [_row(r) for r in rows]


def acquire(conn: sa.Connection, stream_id: str, owner: str, now: datetime, ttl: float) -> bool:
    """Take or renew the stream's lease; False when another forwarder holds it."""
    return leases.acquire(conn, streams, stream_id, owner, now=now, ttl=ttl)


def release(conn: sa.Connection, stream_id: str, owner: str) -> None:
    leases.release(conn, streams, stream_id, owner)


def advance(conn: sa.Connection, row: StreamRow, owner: str, delivered_seq: int, *, now: datetime,
            delivered: bool) -> bool:
    """Move the cursor to `delivered_seq` after an acknowledged batch (or past events the filter skipped,
    `delivered=False`); False (and nothing changed) when the lease or the generation moved meanwhile."""
    c = streams.c
    if conn.dialect.name == "postgresql":
        # The cursor's move need not wait for the WAL flush: a move lost to a crash only sends its batch
        # again, which at-least-once delivery allows (docs/streams.md). SQLite: the forwarder's
        # cursor_commits.
        conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
    values: dict[str, Any] = {"delivered_seq": delivered_seq, "failures": 0, "last_error": None,
                              "next_attempt_at": None}
    if delivered:
        values["last_delivery_at"] = now
    result = conn.execute(
        streams.update()
        .where(c.id == row.id, c.lease_owner == owner, c.generation == row.generation,
               c.delivered_seq == row.delivered_seq)
        .values(**values)
    )
    return result.rowcount == 1


def record_failure(conn: sa.Connection, row: StreamRow, owner: str, error: str, retry_at: datetime,
                   *, park: bool = False) -> None:
    """One more failed attempt: the error, when to try again; `park` pauses the stream (a poison event)."""
    c = streams.c
    values: dict[str, Any] = {"failures": c.failures + 1, "last_error": error[:2000], "next_attempt_at": retry_at}
    if park:
        values["state"] = "paused"
    conn.execute(
        streams.update().where(c.id == row.id, c.lease_owner == owner, c.generation == row.generation)
        .values(**values)
    )


def head_seq(conn: sa.Connection, org_id: int) -> int:
    r = conn.execute(sa.select(chain_heads.c.seq).where(chain_heads.c.org_id == org_id)).first()
    return int(r[0]) if r is not None else 0


def received_at(conn: sa.Connection, org_id: int, seqs: Sequence[int]) -> dict[int, datetime]:
    """When the events with these seqs were stored (for lag_seconds)."""
    if not seqs:
        return {}
    rows = conn.execute(sa.select(events.c.seq, events.c.received_at)
                        .where(events.c.org_id == org_id, events.c.seq.in_(list(seqs))))
    return {int(s): t for s, t in rows}


@dataclass(frozen=True, slots=True)
class BatchRows:
    """The next events of a stream: (log JSON with integrity fields, seq, event_uuid) in seq order, and the
    seq the cursor may move to once they are acknowledged (past events the filter skipped)."""

    rows: list[tuple[str, int, str]]
    through_seq: int


def next_batch(storage: Storage, org_id: int, after_seq: int, filters: LogFilters, limit: int) -> BatchRows:
    """Up to `limit` matching events after `after_seq`, read in one snapshot, the JSON built by the database."""
    with storage.read() as conn:
        head = head_seq(conn, org_id)
        end = min(head, after_seq + max(SCAN_WINDOW, limit))
        if end <= after_seq:
            return BatchRows([], after_seq)
        q = LogQuery(org_id=org_id, after_seq=after_seq, max_seq=end, integrity=True, filters=filters, limit=limit)
        columns = f"{storage.backend.log_json_sql(integrity=True)}, seq, event_uuid"
        sql, params = select_sql(storage, q, columns)
        # The driver's own cursor and fetchall, in this transaction: SQLAlchemy's row objects and per-row
        # fetch cost ~2.5 us an event, an eighth of a backfill's CPU (bench/streams_bench.py, cProfile).
        # The columns are already text (JSON, uuid) and integer (seq) on both backends.
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql, params)
            rows: list[tuple[str, int, str]] = list(cursor.fetchall())
        finally:
            cursor.close()
    return BatchRows(rows, rows[-1][1] if len(rows) == limit else end)
