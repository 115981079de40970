"""The stats rollup (issue #13, migration 0017): per-hour and per-day counts of each organization's events,
by the fields stats group and filter by, kept behind ingest by the roller (rollup/roller.py), so stats
over a month read hundreds or thousands of rows instead of every event in it (storage/stats.py).

What it holds (`stats_rollup`): for each span (`hour`, `day`), bucket start, field and value, how many
events and how many failures (status exactly `failure`). Field `''` (value `''`) counts every event;
`action`, `status`, `source`, `user_email`, `client_ip` count by the field's value (events without one are
not counted there); `read_user_email`, `read_client_ip`, `read_status` and `read_source` count the same for
the `audit_logs.read` events alone, so the console's default view, which hides those (web/queries.py),
is the difference of the two.

`stats_positions.rolled_seq` says per organization up to which seq every event is counted; it moves in
the transaction that adds a batch's counts, so a crash loses nothing and counts nothing twice. Stats add
the events after it (the *tail*, seconds of events) counted from `events` itself, in the same snapshot,
so answers stay exact. Whatever changes a counted event changes its counts in the same
transaction: a retention purge subtracts the events it deletes (`forget`), an erasure subtracts its
events' old values and adds the erased ones (`recount`). Partition upkeep drops a month with rows only
with a purge's bookkeeping, `forget` included (storage/partitions.py `drop_expired`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa

if TYPE_CHECKING:
    from auditkeep.storage.base import Storage

Span = Literal["hour", "day"]
SPANS: tuple[Span, ...] = ("hour", "day")
# The fields counted by value. Every group_by of stats is one of them (storage/stats.py GroupBy).
FIELDS = ("action", "status", "source", "user_email", "client_ip")
# Each read of the log writes an `audit_logs.read` event, and the console hides them by default (issue #9):
# these fields are counted for those events alone too, so "all but reads" is a difference of two rows.
READ_ACTION = "audit_logs.read"
READ_FIELDS = {f: f"read_{f}" for f in ("status", "source", "user_email", "client_ip")}
# How many events the roller counts in one transaction. SQLite has one writer, so this bounds how long
# ingest waits behind the roller (docs/benchmarks.md, "Stats").
ROLL_BATCH = 5_000
# Stats count a tail of at most this many not-yet-rolled events from `events`; past it (an upgraded
# database the roller is still catching up with, or the roller switched off) they count everything from
# `events`, as before the rollup.
TAIL_LIMIT = 20_000


def _q(storage: Storage, sql: str) -> str:
    return sql if storage.dialect == "sqlite" else sql.replace("?", "%s")


def trunc_sql(storage: Storage, span: Span, column: str) -> str:
    """SQL for the start of the `span` holding the timestamp `column`, of the column's own type."""
    if storage.dialect == "sqlite":
        # SQLite's timestamps are fixed-width text (YYYY-MM-DDTHH:MM:SS.ffffffZ): a prefix, padded.
        return (f"substr({column}, 1, 13) || ':00:00.000000Z'" if span == "hour"
                else f"substr({column}, 1, 10) || 'T00:00:00.000000Z'")
    return f"date_trunc('{span}', {column}, 'UTC')"


def floor_to(moment: datetime, span: Span) -> datetime:
    moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if span == "day" else moment


def _counts_sql(storage: Storage, org_id: int, selection: str, sign: int) -> str:
    """A SELECT of (org_id, span, field, bucket_start, value, event_count, failure_count) rows: the counts
    of `org_id`'s events matching `selection` (SQL on events, `?` placeholders), times `sign`. The events
    are read once (a materialized CTE); each field's hour counts are grouped from that, each day's from
    the hours."""
    hour = trunc_sql(storage, "hour", '"timestamp"')
    parts = ["SELECT '' AS field, h, '' AS value, count(*) AS n, sum(f) AS nf FROM b GROUP BY h"]
    for field in FIELDS:
        parts.append(f"SELECT '{field}', h, {field}, count(*), sum(f) FROM b WHERE {field} IS NOT NULL "
                     f"GROUP BY h, {field}")
    for field, name in READ_FIELDS.items():
        parts.append(f"SELECT '{name}', h, {field}, count(*), sum(f) FROM b WHERE r = 1 AND {field} IS NOT NULL "
                     f"GROUP BY h, {field}")
    day = trunc_sql(storage, "day", "h")
    org = int(org_id)
    return (
        f"WITH b AS MATERIALIZED (SELECT {hour} AS h, action, status, source, user_email, client_ip, "
        "CASE WHEN status = 'failure' THEN 1 ELSE 0 END AS f, "
        f"CASE WHEN action = '{READ_ACTION}' THEN 1 ELSE 0 END AS r "
        f"FROM events WHERE org_id = {org} AND {selection}), "
        f"g AS MATERIALIZED ({' UNION ALL '.join(parts)}) "
        f"SELECT {org} AS org_id, 'hour' AS span, field, h AS bucket_start, value, {sign} * n AS event_count, "
        f"{sign} * nf AS failure_count FROM g "
        f"UNION ALL SELECT {org}, 'day', field, {day}, value, {sign} * sum(n), {sign} * sum(nf) FROM g "
        f"GROUP BY field, {day}, value"
    )


def _add_counts(conn: sa.Connection, storage: Storage, org_id: int, selection: str, params: tuple[Any, ...], *,
                sign: int = 1) -> None:
    """Add (sign 1) or subtract (-1) the counts of the events `selection` picks, inside the caller's
    transaction."""
    counts = _counts_sql(storage, org_id, selection, sign)
    # `WHERE true`: SQLite needs it to tell an upsert's ON CONFLICT from a join's ON.
    sql = (f"INSERT INTO stats_rollup (org_id, span, field, bucket_start, value, event_count, failure_count) "
           f"SELECT * FROM ({counts}) AS c WHERE true "
           "ON CONFLICT (org_id, span, field, bucket_start, value) DO UPDATE SET "
           "event_count = stats_rollup.event_count + excluded.event_count, "
           "failure_count = stats_rollup.failure_count + excluded.failure_count")
    conn.exec_driver_sql(_q(storage, sql), params)


def _drop_empty(conn: sa.Connection, storage: Storage, org_id: int, selection: str,
                params: tuple[Any, ...]) -> None:
    """Delete the rows left at zero events by a subtraction of the events `selection` picks (still
    present), one index range a span and field (SQLite would not skip-scan the key without statistics)."""
    low, high = conn.exec_driver_sql(_q(storage, f'SELECT min("timestamp"), max("timestamp") FROM events '
                                                 f"WHERE org_id = ? AND {selection}"), (org_id, *params)).one()
    if low is None:
        return
    low = f"{str(low)[:10]}T00:00:00.000000Z" if storage.dialect == "sqlite" else floor_to(low, "day")
    for span in SPANS:
        for field in ("", *FIELDS, *READ_FIELDS.values()):
            conn.exec_driver_sql(_q(storage, "DELETE FROM stats_rollup WHERE org_id = ? AND span = ? AND field = ? "
                                             "AND bucket_start >= ? AND bucket_start <= ? AND event_count = 0"),
                                 (org_id, span, field, low, high))


def rolled_seq(conn: sa.Connection, storage: Storage, org_id: int) -> int:
    """The seq up to which `org_id`'s events are counted (0: none yet)."""
    row = conn.exec_driver_sql(_q(storage, "SELECT rolled_seq FROM stats_positions WHERE org_id = ?"),
                               (org_id,)).first()
    return 0 if row is None else int(row[0])


def _lock_position(conn: sa.Connection, storage: Storage, org_id: int) -> int:
    """`org_id`'s position, its row created if missing and locked (PostgreSQL) for this transaction, so
    rollers on several nodes, a purge and an erasure take turns per organization. SQLite's writer lock
    does that."""
    run = conn.exec_driver_sql
    if storage.dialect == "sqlite":
        run("INSERT OR IGNORE INTO stats_positions (org_id, rolled_seq) VALUES (?, 0)", (org_id,))
        return rolled_seq(conn, storage, org_id)
    run("INSERT INTO stats_positions (org_id, rolled_seq) VALUES (%s, 0) ON CONFLICT DO NOTHING", (org_id,))
    return int(run("SELECT rolled_seq FROM stats_positions WHERE org_id = %s FOR UPDATE", (org_id,)).scalar_one())


def lagging_orgs(storage: Storage) -> list[int]:
    """Organizations with events not rolled up yet."""
    with storage.read() as conn:
        rows = conn.exec_driver_sql(
            "SELECT h.org_id FROM chain_heads h LEFT JOIN stats_positions p ON p.org_id = h.org_id "
            "WHERE h.seq > coalesce(p.rolled_seq, 0) ORDER BY h.org_id").all()
    return [int(r[0]) for r in rows]


def roll_batch(storage: Storage, org_id: int, batch: int = ROLL_BATCH) -> int:
    """Count `org_id`'s next up to `batch` events after its position, and move the position past them in
    the same transaction; how many seqs it moved."""
    with storage.write() as conn:
        position = _lock_position(conn, storage, org_id)
        first, head = conn.exec_driver_sql(_q(storage, "SELECT first_seq, seq FROM chain_heads WHERE org_id = ?"),
                                           (org_id,)).one()
        start = max(position, int(first) - 1)  # a purged prefix is never counted
        end = min(int(head), start + batch)
        if end <= position:
            return 0
        _add_counts(conn, storage, org_id, "seq > ? AND seq <= ?", (start, end))
        conn.exec_driver_sql(_q(storage, "UPDATE stats_positions SET rolled_seq = ? WHERE org_id = ?"), (end, org_id))
    return end - position


def forget(conn: sa.Connection, storage: Storage, org_id: int, first: int, last: int) -> None:
    """Subtract the counts of `org_id`'s events `first`..`last`, inside the caller's transaction, before
    it deletes them (a purge). Events after the position were never counted and are left alone."""
    position = _lock_position(conn, storage, org_id)
    last = min(last, position)
    if last < first:
        return
    _add_counts(conn, storage, org_id, "seq >= ? AND seq <= ?", (first, last), sign=-1)
    _drop_empty(conn, storage, org_id, "seq >= ? AND seq <= ?", (first, last))


def recount(conn: sa.Connection, storage: Storage, org_id: int, seqs: list[int], sign: int) -> None:
    """Subtract (sign -1, before an erasure rewrites them) or add (1, after) the counts of `org_id`'s
    events `seqs` as their rows hold now, inside the caller's transaction: an erasure turns user_email into
    NULL and client_ip into "[erased]", so the counts by those values move. Seqs the roller has not reached
    are left to it."""
    position = _lock_position(conn, storage, org_id)
    done = [seq for seq in seqs if seq <= position]
    for start in range(0, len(done), 500):
        chunk = done[start : start + 500]
        selection = f"seq IN ({', '.join('?' for _ in chunk)})"
        if sign < 0:
            _add_counts(conn, storage, org_id, selection, tuple(chunk), sign=-1)
            _drop_empty(conn, storage, org_id, selection, tuple(chunk))
        else:
            _add_counts(conn, storage, org_id, selection, tuple(chunk))
