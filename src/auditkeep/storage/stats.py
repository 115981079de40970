"""Activity statistics of an organization's log (issue #13): events and failures per time bucket, and the
most frequent values of one field, for the same filters and range as a read (storage/queries.py).

A *failure* is an event whose `status` is exactly `failure`: the value the console's status filter offers
and the one the partial index `ix_events_org_failure_ts` (migration 0002) holds. Events with another or
no status are not failures. Buckets with no event are left out; `top` leaves out events without a value.

Served from the rollup (storage/rollup.py) when it can answer exactly (`_Plan`): hour and day buckets,
and `top`, with no filter, one filter on `action` (exact or prefix), `status`, `source` or `user_email`,
or the console's hiding of `audit_logs.read` events (buckets under `user_email`: not served, the user's
index counts them, as the rollup has no hour rows of users); `top` with a filter also needs the filter on the
grouped field itself, or the filter `status=failure` (every rollup row counts its failures). The range's
whole hours (and, for `top`, whole days) are read from the rollup up to its position; the partial hours at
either end (for top users and addresses, counted per day alone, the partial days: `_day_plan`) and the
events after the position (the tail) are counted from `events`, all in one snapshot
(one read transaction; PostgreSQL's at repeatable read). Anything else (`q`, `client_ip`, `object_id`,
`user_id`, `object_type`, `request_type`, `is_support_user`, two filters, `interval=minute`, a roller far
behind) counts the matching events in the range with the read path's own WHERE clause (`queries._where`),
so a filter means exactly what it means on `GET /api/v1/audit_logs`. The SQL is hand-written like the
rest of the read path, since the clause is text with `?` placeholders (docs/benchmarks.md, "Stats", has
what each costs).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa

from auditkeep.errors import InvalidRangeError
from auditkeep.storage import rollup
from auditkeep.storage.base import Storage
from auditkeep.storage.queries import LogFilters, LogQuery, _prefix_upper, _q, _where, ascii_lower
from auditkeep.storage.tables import events
from auditkeep.storage.types import format_timestamp, parse_timestamp

Interval = Literal["minute", "hour", "day"]
GroupBy = Literal["action", "user_email", "status", "source", "client_ip"]
INTERVALS: dict[Interval, timedelta] = {
    "minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1),
}
# More non-empty buckets than this is a 422: a chart cannot show them, and a month of minutes is 43,200.
MAX_BUCKETS = 5_000
TOP_N = 10
# The console's default view leaves out audit_logs.read events with this clause (web/queries.py), which
# the rollup serves as a difference of counts (storage/rollup.py READ_FIELDS).
HIDE_READS_WHERE = "(action IS NULL OR action <> ?)"
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


def _bucket_sql(storage: Storage, interval: Interval, column: str = '"timestamp"') -> str:
    if storage.dialect == "sqlite":
        return f"substr({column}, 1, {_SQLITE_PREFIX[interval][0]})"
    return f"date_trunc('{interval}', {column} AT TIME ZONE 'UTC')"


def _bucket_start(storage: Storage, interval: Interval, value: object) -> str:
    if isinstance(value, datetime):
        return format_timestamp(value.replace(tzinfo=UTC))
    return f"{value}{_SQLITE_PREFIX[interval][1]}"


def buckets(storage: Storage, query: LogQuery, interval: Interval) -> list[Bucket]:
    """Events and failures per `interval`, oldest first; InvalidRangeError past MAX_BUCKETS buckets."""
    with _snapshot(storage) as conn:
        plan = _plan(conn, storage, query) if interval != "minute" else None
        source = _bucket_sources(plan) if plan is not None else None
        if plan is None or source is None:
            where, params = _where(storage, query)
            expr = _bucket_sql(storage, interval)
            sql = (f"SELECT {expr} AS b, count(*), sum(CASE WHEN status = 'failure' THEN 1 ELSE 0 END) "
                   f"FROM events WHERE {where} GROUP BY b ORDER BY b LIMIT ?")
            args: list[Any] = [*params, MAX_BUCKETS + 1]
        else:
            sql, args = _rollup_buckets_sql(storage, plan, source, interval)
        rows = conn.exec_driver_sql(_q(storage, sql), tuple(args)).all()
    if len(rows) > MAX_BUCKETS:
        raise InvalidRangeError(f"more than {MAX_BUCKETS} buckets: choose a longer interval or a shorter range",
                                param="interval", value=interval)
    return [Bucket(_bucket_start(storage, interval, b), int(n), int(f or 0)) for b, n, f in rows]


def top(storage: Storage, query: LogQuery, group_by: GroupBy, limit: int = TOP_N) -> list[TopValue]:
    """The `limit` most frequent values of `group_by`, most frequent first (ties by value)."""
    # SQLite: `+column` keeps the planner off the column's own (org_id, column, timestamp, seq) index, which
    # it chose for `IS NOT NULL` and the GROUP BY and then walked the organization's whole log for a 30-day
    # range (bench/stats_bench.py, 1,000,000 events: 1.4 s for a range outside the data, ~0 ms with `+`).
    col = f"+{group_by}" if storage.dialect == "sqlite" else group_by
    with _snapshot(storage) as conn:
        plan = _plan(conn, storage, query)
        source = _top_sources(plan, group_by) if plan is not None else None
        served = _rollup_top_sql(storage, plan, source, col, limit) if plan is not None and source else None
        if served is None:
            where, params = _where(storage, query)
            sql = (f"SELECT {col} AS v, count(*) AS n FROM events WHERE {where} AND {col} IS NOT NULL "
                   f"GROUP BY v ORDER BY n DESC, v LIMIT ?")
            args: list[Any] = [*params, limit]
        else:
            sql, args = served
        rows = conn.exec_driver_sql(_q(storage, sql), tuple(args)).all()
    return [TopValue(str(v), int(n)) for v, n in rows]


# --- served from the rollup (storage/rollup.py) ----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Rows:
    """Rollup rows of one field whose value meets `cond` (SQL on `value`), added with `sign`."""

    field: str
    cond: str
    params: tuple[Any, ...]
    sign: int = 1
    column: str = "event_count"  # or failure_count: counts of `status=failure` alone


@dataclass(frozen=True, slots=True)
class _Plan:
    """How a query's range splits: whole hours [hours_from, hours_to) read from the rollup (None: open),
    the partial hours at either end (`edges`) and the events after the rollup's position in the whole
    hours (`tail`) counted from events; the one filter the rollup serves and whether reads are hidden."""

    org_id: int
    hours_from: datetime | None
    hours_to: datetime | None
    edges: tuple[LogQuery, ...]
    tail: LogQuery
    filter: _Rows
    hide_reads: bool
    edge: LogQuery  # the query as an edge counts it (on SQLite, its timestamp range driving)
    position: int


def _filter_rows(storage: Storage, f: LogFilters) -> _Rows | None:
    """The rollup rows matching the query's one filter (all events without one); None when it has another
    filter or more than one."""
    given = f.given()
    if not given:
        return _Rows("", "", ())
    if len(given) > 1:
        return None
    (name, value), = given.items()
    sqlite = storage.dialect == "sqlite"
    if name in ("action", "status", "source"):
        return _Rows(name, "value = ?", (value,))
    if name == "action_prefix":
        # Prefix ranges compare code points, as the read path's (PostgreSQL: the "C" collation).
        column = "value" if sqlite else 'value COLLATE "C"'
        upper = _prefix_upper(value)
        if upper is None:
            return _Rows("action", f"{column} >= ?", (value,))
        return _Rows("action", f"{column} >= ? AND {column} < ?", (value, upper))
    if name == "user_email":  # ASCII-case-insensitive, as the read path's (migration 0007)
        return _Rows(name, "lower(value) = ?" if sqlite else 'lower(value COLLATE "C") = ?', (ascii_lower(value),))
    return None


def _ceil_hour(moment: datetime) -> datetime | None:
    """The first whole hour at or after `moment`; None in the last hour of year 9999, which has none."""
    floor = rollup.floor_to(moment, "hour")
    if floor == moment:
        return floor
    return floor + timedelta(hours=1) if floor < _LAST_HOUR else None


_LAST_HOUR = datetime(9999, 12, 31, 23, tzinfo=UTC)
_LAST_DAY = datetime(9999, 12, 31, tzinfo=UTC)


def _text(moment: datetime | None) -> str | None:
    return None if moment is None else format_timestamp(moment)


@contextmanager
def _snapshot(storage: Storage) -> Iterator[sa.Connection]:
    """A read transaction whose statements all see one snapshot: the rollup's position read first, and
    the counts read after it, must agree (else a batch the roller commits in between would count twice).
    SQLite's read transaction is one; PostgreSQL's default (read committed) takes one a statement."""
    with storage.read() as conn:
        if storage.dialect == "postgresql":
            conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield conn


def _plan(conn: sa.Connection, storage: Storage, query: LogQuery) -> _Plan | None:
    """How the rollup serves `query`, or None when it cannot (then the events are counted)."""
    if (query.after is not None or query.through is not None or query.keys is not None
            or query.max_seq is not None or query.after_seq is not None):
        return None
    hide_reads = bool(query.extra_where)
    if hide_reads and (query.extra_where != (HIDE_READS_WHERE,) or query.extra_params != (rollup.READ_ACTION,)):
        return None
    rows = _filter_rows(storage, query.filters)
    if rows is None:
        return None
    low = parse_timestamp(query.start) if query.start is not None else None
    high = parse_timestamp(query.end) if query.end is not None else None
    hours_from = _ceil_hour(low) if low is not None else None
    if low is not None and hours_from is None:
        return None  # the range starts in the last hour there is: no whole hour in it
    hours_to = rollup.floor_to(high, "hour") if high is not None else None
    if hours_from is not None and hours_to is not None and hours_from >= hours_to:
        return None  # not one whole hour: its events are few
    heads = conn.exec_driver_sql(_q(storage, "SELECT h.seq, coalesce(p.rolled_seq, 0) FROM chain_heads h "
                                             "LEFT JOIN stats_positions p ON p.org_id = h.org_id "
                                             "WHERE h.org_id = ?"), (query.org_id,)).first()
    if heads is None:
        return None
    head, position = int(heads[0]), int(heads[1])
    if head - position > rollup.TAIL_LIMIT:
        return None
    # An edge is less than an hour: its timestamp range drives (SQLite: driver "" writes the filters so
    # that no filter's index is chosen; an action prefix's would walk all the log's matches, ~140 ms).
    edge = replace(query, driver="") if storage.dialect == "sqlite" else query
    edges = []
    if hours_from is not None and hours_from != low:
        edges.append(replace(edge, end=_text(hours_from)))
    if hours_to is not None and hours_to != high:
        edges.append(replace(edge, start=_text(hours_to)))
    # As a walk in seq order after the position: the (org_id, seq) key drives (on SQLite the time bounds
    # and filters are written so that no other index is chosen), reading only the tail.
    tail = replace(query, start=_text(hours_from), end=_text(hours_to), after_seq=position)
    return _Plan(query.org_id, hours_from, hours_to, tuple(edges), tail, rows, hide_reads, edge, position)


def _bucket_sources(plan: _Plan) -> list[_Rows] | None:
    """The rollup rows whose sum per hour is the buckets' (reads hidden: minus those of the reads)."""
    rows = plan.filter
    if rows.field in rollup.DAY_FIELDS:
        return None  # no hour rows: counted from events (the user's index)
    if not plan.hide_reads:
        return [rows]
    if rows.field == "":
        return [rows, _Rows("action", "value = ?", (rollup.READ_ACTION,), -1)]
    if rows.field == "action":
        return [replace(rows, cond=f"{rows.cond} AND value <> ?", params=(*rows.params, rollup.READ_ACTION))]
    return [rows, replace(rows, field=rollup.READ_FIELDS[rows.field], sign=-1)]


def _top_sources(plan: _Plan, group_by: GroupBy) -> list[_Rows] | None:
    """The rollup rows whose sum per value is `top`'s, or None when the filter is on another field (the
    rollup counts one field at a time) other than `status=failure` (which every row counts)."""
    rows = plan.filter
    if rows.field in ("", group_by):
        rows = replace(rows, field=group_by)
    elif rows.field == "status" and rows.params == ("failure",):
        rows = _Rows(group_by, "", (), column="failure_count")
    else:
        return None
    if not plan.hide_reads:
        return [rows]
    if group_by == "action":
        cond = f"{rows.cond} AND value <> ?" if rows.cond else "value <> ?"
        return [replace(rows, cond=cond, params=(*rows.params, rollup.READ_ACTION))]
    return [rows, replace(rows, field=rollup.READ_FIELDS[group_by], sign=-1)]


def _rollup_rows(storage: Storage, plan: _Plan, rows: _Rows, span: rollup.Span, low: datetime | None,  # noqa: PLR0917 (private; each caller names what it reads)
                 high: datetime | None, select: str, group: str) -> tuple[str, list[Any]]:
    ts = storage.backend.ts_param
    clauses = ["org_id = ?", "span = ?", "field = ?"]
    params: list[Any] = [plan.org_id, span, rows.field]
    if low is not None:
        clauses.append("bucket_start >= ?")
        params.append(ts(format_timestamp(low)))
    if high is not None:
        clauses.append("bucket_start < ?")
        params.append(ts(format_timestamp(high)))
    if rows.cond:
        clauses.append(rows.cond)
        params.extend(rows.params)
    if rows.column == "failure_count":
        # The rows that count a failure alone (3% of events): what the partial index of migration 0018
        # holds, instead of every row of the field in the range.
        clauses.append("failure_count > 0")
    sql = select.replace("{n}", f"{rows.sign} * {rows.column}").replace("{f}", f"{rows.sign} * failure_count")
    return f"{sql} FROM stats_rollup WHERE {' AND '.join(clauses)}{group}", params


def _events_parts(storage: Storage, plan: _Plan, select: str, extra: str = "") -> tuple[list[str], list[Any]]:
    parts: list[str] = []
    params: list[Any] = []
    for part in (*plan.edges, plan.tail):
        where, where_params = _where(storage, part)
        parts.append(f"{select} FROM events WHERE {where}{extra}")
        params.extend(where_params)
    return parts, params


def _rollup_buckets_sql(storage: Storage, plan: _Plan, sources: list[_Rows], interval: Interval,
                        ) -> tuple[str, list[Any]]:
    parts: list[str] = []
    params: list[Any] = []
    for rows in sources:
        sql, args = _rollup_rows(storage, plan, rows, "hour", plan.hours_from, plan.hours_to,
                                 f"SELECT {_bucket_sql(storage, interval, 'bucket_start')} AS b, {{n}} AS n, "
                                 "{f} AS f", "")
        parts.append(sql)
        params.extend(args)
    expr = _bucket_sql(storage, interval)
    more, args = _events_parts(storage, plan, f"SELECT {expr} AS b, count(*) AS n, "
                                              "sum(CASE WHEN status = 'failure' THEN 1 ELSE 0 END) AS f",
                               " GROUP BY b")
    parts.extend(more)
    params.extend(args)
    sql = (f"SELECT b, sum(n), sum(f) FROM ({' UNION ALL '.join(parts)}) AS u GROUP BY b HAVING sum(n) > 0 "
           "ORDER BY b LIMIT ?")
    return sql, [*params, MAX_BUCKETS + 1]


def _whole_days(plan: _Plan) -> tuple[datetime | None, datetime | None] | None:
    """The range's whole days [from, to) (None: open), or None when it holds none."""
    low, high = plan.hours_from, plan.hours_to
    days_from = None if low is None else rollup.floor_to(low, "day")
    if days_from is not None and low is not None and days_from < low:
        if days_from >= _LAST_DAY:  # no whole day after the last one
            return None
        days_from += timedelta(days=1)
    days_to = None if high is None else rollup.floor_to(high, "day")
    if days_from is not None and days_to is not None and days_from >= days_to:
        return None
    return days_from, days_to


def _spans(plan: _Plan) -> list[tuple[rollup.Span, datetime | None, datetime | None]]:
    """The range's whole hours as whole days (day rows) and the hours around them (hour rows)."""
    low, high = plan.hours_from, plan.hours_to
    days = _whole_days(plan)
    if days is None:
        return [("hour", low, high)]
    days_from, days_to = days
    out: list[tuple[rollup.Span, datetime | None, datetime | None]] = [("day", days_from, days_to)]
    if low is not None and days_from is not None and low < days_from:
        out.append(("hour", low, days_from))
    if high is not None and days_to is not None and days_to < high:
        out.append(("hour", days_to, high))
    return out


def _day_plan(plan: _Plan) -> _Plan | None:
    """`plan` for a field the rollup counts per day alone (rollup.DAY_FIELDS): the range's whole days from
    the rollup, the partial days at either end counted from events (None: no whole day in the range)."""
    days = _whole_days(plan)
    if days is None:
        return None
    days_from, days_to = days
    edges = []
    if days_from is not None and plan.edge.start != _text(days_from):
        edges.append(replace(plan.edge, end=_text(days_from)))
    if days_to is not None and plan.edge.end != _text(days_to):
        edges.append(replace(plan.edge, start=_text(days_to)))
    tail = replace(plan.tail, start=_text(days_from), end=_text(days_to))
    return replace(plan, hours_from=days_from, hours_to=days_to, edges=tuple(edges), tail=tail)


def _rollup_top_sql(storage: Storage, plan: _Plan, sources: list[_Rows], col: str, limit: int,
                    ) -> tuple[str, list[Any]] | None:
    if sources[0].field in rollup.DAY_FIELDS:
        day_plan = _day_plan(plan)
        if day_plan is None:
            return None
        plan = day_plan
    parts: list[str] = []
    params: list[Any] = []
    for rows in sources:
        for span, low, high in _spans(plan):
            sql, args = _rollup_rows(storage, plan, rows, span, low, high, "SELECT value AS v, sum({n}) AS n",
                                     " GROUP BY value")
            parts.append(sql)
            params.extend(args)
    more, args = _events_parts(storage, plan, f"SELECT {col} AS v, count(*) AS n",
                               f" AND {col} IS NOT NULL GROUP BY {col}")
    parts.extend(more)
    params.extend(args)
    sql = (f"SELECT v, sum(n) FROM ({' UNION ALL '.join(parts)}) AS u GROUP BY v HAVING sum(n) > 0 "
           "ORDER BY 2 DESC, 1 LIMIT ?")
    return sql, [*params, limit]


def activity(storage: Storage, query: LogQuery, interval: Interval, group_by: GroupBy) -> Activity:
    return Activity(buckets(storage, query, interval), top(storage, query, group_by))


def first_timestamp(storage: Storage, org_id: int) -> datetime | None:
    """The organization's earliest event time (one probe of the (org_id, timestamp, seq) index)."""
    with storage.read() as conn:
        value: datetime | None = conn.execute(
            sa.select(sa.func.min(events.c.timestamp)).where(events.c.org_id == org_id)).scalar()
    return value
