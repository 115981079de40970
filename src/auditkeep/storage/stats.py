"""Activity statistics of an organization's log (issue #13): events and failures per time bucket, and the
most frequent values of one field, for the same filters and range as a read (storage/queries.py).

A *failure* is an event whose `status` is exactly `failure`: the value the console's status filter offers
and the one the partial index `ix_events_org_failure_ts` (migration 0002) holds. Events with another or
no status are not failures. Buckets with no event are left out; `top` leaves out events without a value.

The WHERE clause is the read path's own (`queries._where`), so a filter means exactly what it means on
`GET /api/v1/audit_logs`; the aggregate around it is hand-written like the rest of the read path, since
the clause is text with `?` placeholders (docs/benchmarks.md, "Stats", has what it costs).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import sqlalchemy as sa

from auditkeep.errors import InvalidRangeError
from auditkeep.storage.base import Storage
from auditkeep.storage.queries import LogQuery, _q, _where
from auditkeep.storage.tables import events
from auditkeep.storage.types import format_timestamp

Interval = Literal["minute", "hour", "day"]
GroupBy = Literal["action", "user_email", "status", "source", "client_ip"]
INTERVALS: dict[Interval, timedelta] = {
    "minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1),
}
# More non-empty buckets than this is a 422: a chart cannot show them, and a month of minutes is 43,200.
MAX_BUCKETS = 5_000
TOP_N = 10
# SQLite stores timestamps as fixed-width text (YYYY-MM-DDTHH:MM:SS.ffffffZ): a bucket is a prefix of it.
_SQLITE_PREFIX: dict[Interval, tuple[int, str]] = {
    "minute": (16, ":00.000000Z"), "hour": (13, ":00:00.000000Z"), "day": (10, "T00:00:00.000000Z"),
}


@dataclass(frozen=True, slots=True)
class Bucket:
    """Events whose timestamp falls in [start, start + interval)."""

    start: str
    count: int
    failures: int


@dataclass(frozen=True, slots=True)
class TopValue:
    value: str
    count: int


@dataclass(frozen=True, slots=True)
class Activity:
    buckets: list[Bucket]
    top: list[TopValue]


def _bucket_sql(storage: Storage, interval: Interval) -> str:
    if storage.dialect == "sqlite":
        return f'substr("timestamp", 1, {_SQLITE_PREFIX[interval][0]})'
    return f"date_trunc('{interval}', \"timestamp\" AT TIME ZONE 'UTC')"


def _bucket_start(storage: Storage, interval: Interval, value: object) -> str:
    if isinstance(value, datetime):
        return format_timestamp(value.replace(tzinfo=UTC))
    return f"{value}{_SQLITE_PREFIX[interval][1]}"


def buckets(storage: Storage, query: LogQuery, interval: Interval) -> list[Bucket]:
    """Events and failures per `interval`, oldest first; InvalidRangeError past MAX_BUCKETS buckets."""
    where, params = _where(storage, query)
    expr = _bucket_sql(storage, interval)
    sql = (f"SELECT {expr} AS b, count(*), sum(CASE WHEN status = 'failure' THEN 1 ELSE 0 END) "
           f"FROM events WHERE {where} GROUP BY b ORDER BY b LIMIT ?")
    with storage.read() as conn:
        rows = conn.exec_driver_sql(_q(storage, sql), (*params, MAX_BUCKETS + 1)).all()
    if len(rows) > MAX_BUCKETS:
        raise InvalidRangeError(f"more than {MAX_BUCKETS} buckets: choose a longer interval or a shorter range",
                                param="interval", value=interval)
    return [Bucket(_bucket_start(storage, interval, b), int(n), int(f or 0)) for b, n, f in rows]


def top(storage: Storage, query: LogQuery, group_by: GroupBy, limit: int = TOP_N) -> list[TopValue]:
    """The `limit` most frequent values of `group_by`, most frequent first (ties by value)."""
    where, params = _where(storage, query)
    # SQLite: `+column` keeps the planner off the column's own (org_id, column, timestamp, seq) index, which
    # it chose for `IS NOT NULL` and the GROUP BY and then walked the organization's whole log for a 30-day
    # range (bench/stats_bench.py, 1,000,000 events: 1.4 s for a range outside the data, ~0 ms with `+`).
    col = f"+{group_by}" if storage.dialect == "sqlite" else group_by
    sql = (f"SELECT {col} AS v, count(*) AS n FROM events WHERE {where} AND {col} IS NOT NULL "
           f"GROUP BY v ORDER BY n DESC, v LIMIT ?")
    with storage.read() as conn:
        rows = conn.exec_driver_sql(_q(storage, sql), (*params, limit)).all()
    return [TopValue(str(v), int(n)) for v, n in rows]


def activity(storage: Storage, query: LogQuery, interval: Interval, group_by: GroupBy) -> Activity:
    return Activity(buckets(storage, query, interval), top(storage, query, group_by))


def first_timestamp(storage: Storage, org_id: int) -> datetime | None:
    """The organization's earliest event time (one probe of the (org_id, timestamp, seq) index)."""
    with storage.read() as conn:
        value: datetime | None = conn.execute(
            sa.select(sa.func.min(events.c.timestamp)).where(events.c.org_id == org_id)).scalar()
    return value
