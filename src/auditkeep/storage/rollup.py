"""The stats rollup (issue #13, migration 0017): per-hour and per-day counts of each organization's events,
by the fields stats group and filter by, kept behind ingest by the roller (rollup/roller.py), so stats
over a month read hundreds or thousands of rows instead of every event in it (storage/stats.py).

What it holds (`stats_rollup`): for each span (`hour`, `day`), bucket start, field and value, how many
events and how many failures (status exactly `failure`); `user_email` and `client_ip` (`DAY_FIELDS`) have
day rows alone. Field `''` (value `''`) counts every event;
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

from collections import Counter
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
# Fields with many values are counted per day alone (and their read_ twins): their hour rows were most of
# the rollup (1.28M hour rows for 1,000,000 events) and served only a range's partial days, which stats
# count from events instead (storage/stats.py `_day_plan`).
DAY_FIELDS = ("user_email", "client_ip", "read_user_email", "read_client_ip")
# How many events the roller counts in one transaction. SQLite has one writer, so this bounds how long
# ingest waits behind the roller (docs/benchmarks.md, "Stats").
ROLL_BATCH = 5_000
# Stats count a tail of at most this many not-yet-rolled events from `events`; past it (an upgraded
# database the roller is still catching up with, or the roller switched off) they count everything from
# `events`, as before the rollup.
TAIL_LIMIT = 20_000
# A purge subtracts its events' counts this many seqs at a time (each slice's rows are read into memory).
FORGET_SLICE = 50_000


def _q(storage: Storage, sql: str) -> str:
    return sql if storage.dialect == "sqlite" else sql.replace("?", "%s")


def floor_to(moment: datetime, span: Span) -> datetime:
    moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if span == "day" else moment


Key = tuple[Span, str, Any, str]  # span, field, bucket start (as the backend binds it), value


# What `_tally` counts: (field, span, the column of `_read_rows` counted by value; None: every event).
_COUNTED: tuple[tuple[str, Span, int | None], ...] = (
    ("", "hour", None), ("action", "hour", 2), ("status", "hour", 3), ("source", "hour", 4),
    ("user_email", "day", 5), ("client_ip", "day", 6))
_READ_COUNTED = tuple((READ_FIELDS[field], span, column) for field, span, column in _COUNTED
                      if field in READ_FIELDS)


def _tally(rows: list[Any]) -> dict[Key, list[int]]:
    """SQLite: the rollup's counts of `rows` ((hour, day, action, status, source, user_email, client_ip), hour
    and day as `_read_rows` selects them), [events, failures] by key. Each field is counted by a Counter over
    the batch's columns (C loops; the failures and the reads, a few percent, over their own rows), and
    each hour field's day rows are summed from its hour rows. The SQL this replaced grouped the batch 13
    times; a Python loop over the rows cost more than that SQL did on SQLite (docs/benchmarks.md, "Stats")."""
    counts: dict[Key, list[int]] = {}
    fails = [row for row in rows if row[3] == "failure"]
    reads = [row for row in rows if row[2] == READ_ACTION]
    read_fails = [row for row in reads if row[3] == "failure"]
    for counted, of in ((_COUNTED, (rows, fails)), (_READ_COUNTED, (reads, read_fails))):
        for slot, part in enumerate(of):
            if not part:
                continue
            columns = list(zip(*part, strict=True))
            # Each hour and day as bound: the text padded to a timestamp.
            bound = [{at: f"{at}{pad}" for at in set(columns[i])}
                     for i, pad in ((0, ":00:00.000000Z"), (1, "T00:00:00.000000Z"))]
            for field, span, column in counted:
                which = 0 if span == "hour" else 1
                at = columns[which]
                pairs = (((when, "") for when in at) if column is None
                         else zip(at, columns[column], strict=True))
                for (when, value), n in Counter(pairs).items():
                    if value is None:  # events without the field's value are not counted by it
                        continue
                    key: Key = (span, field, bound[which][when], value)
                    old = counts.get(key)
                    if old is None:
                        counts[key] = [n, 0] if slot == 0 else [0, n]
                    else:
                        old[slot] += n
    _add_days(counts)
    return counts


def _add_days(counts: dict[Key, list[int]]) -> None:
    """Add each hour row of `counts` to its day's."""
    day_of: dict[Any, Any] = {}  # an hour as bound -> its day's start as bound
    for (span, field, hour, value), (n, nf) in list(counts.items()):
        if span == "hour":
            day = day_of.get(hour)
            if day is None:
                day = day_of[hour] = f"{hour[:10]}T00:00:00.000000Z"
            old = counts.get(("day", field, day, value))
            if old is None:
                counts["day", field, day, value] = [n, nf]
            else:
                old[0] += n
                old[1] += nf


def _read_rows(conn: sa.Connection, org_id: int, selection: str, params: tuple[Any, ...]) -> list[Any]:
    """SQLite: the fields the rollup counts of `org_id`'s events that `selection` picks, the hour and the day
    already truncated (the timestamp's text up to the hour or day)."""
    sql = ('SELECT substr("timestamp", 1, 13), substr("timestamp", 1, 10), action, status, source, user_email, '
           f"client_ip FROM events WHERE org_id = ? AND {selection}")
    # The driver's own tuples: no SQLAlchemy Row a row, and the columns need no conversion.
    return list(conn.exec_driver_sql(sql, (org_id, *params)).cursor.fetchall())


_UPSERT = ("ON CONFLICT (org_id, span, field, bucket_start, value) DO UPDATE SET "
           "event_count = stats_rollup.event_count + excluded.event_count, "
           "failure_count = stats_rollup.failure_count + excluded.failure_count")
_INSERT = "INSERT INTO stats_rollup (org_id, span, field, bucket_start, value, event_count, failure_count) "


def _grouping_sql() -> str:
    """PostgreSQL: the statement that counts the events a selection picks and upserts their keys, all in the
    database (parameters: org_id, the sign twice, org_id, then the selection's). One scan of the rows and
    one grouping set a key shape (`_COUNTED` and `_READ_COUNTED`, each hour shape's day shape too), so each
    (span, field) comes from one set and the keys are distinct: no row is upserted twice. The `read_*`
    columns hold the field's value for `audit_logs.read` events alone (NULL otherwise), and a NULL value is
    not counted, as `_tally` leaves it out."""
    columns = {"action": "action", "status": "status", "source": "source", "user_email": "user_email",
               "client_ip": "client_ip",
               **{read: f"CASE WHEN action = '{READ_ACTION}' THEN {field} END" for field, read in READ_FIELDS.items()}}
    sets: list[str] = []
    for field, span, column in (*_COUNTED, *_READ_COUNTED):
        for at in ("hour", "day") if span == "hour" else ("day",):
            sets.append(f"({at[0]})" if column is None else f"({at[0]}, {field})")
    # GROUPING(x) is 0 in the sets that group by x: which field (and span) a result row is a count of.
    field = "CASE " + " ".join(f"WHEN GROUPING({f}) = 0 THEN '{f}'" for f in columns) + " ELSE '' END"
    value = "CASE " + " ".join(f"WHEN GROUPING({f}) = 0 THEN {f}" for f in columns) + " ELSE '' END"
    picked = ", ".join(f"{expr} AS {name}" for name, expr in columns.items())
    return (f"{_INSERT}SELECT %s, span, field, bucket_start, value, n, nf FROM ("
            "SELECT CASE WHEN GROUPING(h) = 0 THEN 'hour' ELSE 'day' END AS span, "
            f"{field} AS field, coalesce(h, d) AS bucket_start, {value} AS value, "
            "%s * count(*) AS n, %s * count(*) FILTER (WHERE status = 'failure') AS nf "
            "FROM (SELECT date_trunc('hour', \"timestamp\", 'UTC') AS h, date_trunc('day', \"timestamp\", 'UTC') AS d, "
            f"{picked} FROM events WHERE org_id = %s AND {{selection}}) AS e "
            f"GROUP BY GROUPING SETS ({', '.join(sets)})) AS c WHERE value IS NOT NULL {_UPSERT}")


_GROUPING_SQL = _grouping_sql()


def _add_counts(conn: sa.Connection, storage: Storage, org_id: int, selection: str, params: tuple[Any, ...], *,
                sign: int = 1) -> list[Key]:
    """Add (sign 1) or subtract (-1) the counts of the events `selection` picks, inside the caller's
    transaction; the keys it changed (PostgreSQL: only when subtracting, for `_drop_empty`). Writers of one
    organization take turns on its position row (`_lock_position`), so the keys' order cannot deadlock.

    PostgreSQL: one statement counts and upserts in the database (`_GROUPING_SQL`), so no row crosses into
    Python. Reading a batch's rows into the roller, counting them there and sending the keys back as arrays
    cost 11.4 CPU µs an event in the roller (a thread of the serve worker, beside ingest under its GIL) and
    12.1 in the database; the statement costs 0.4 and 13.3 (bench/jobs_cost.py, 100,000 events, medians of
    3 interleaved rounds at load ~4; docs/benchmarks.md, "Several nodes", issue #14). SQLite: the rows
    counted in Python (`_tally`), then one executemany upsert, which measured cheaper there than SQLite's
    own grouping ("Stats")."""
    if storage.dialect == "postgresql":
        sql = _GROUPING_SQL.format(selection=selection.replace("?", "%s"))
        if sign > 0:
            conn.exec_driver_sql(sql, (org_id, sign, sign, org_id, *params))
            return []
        rows = conn.exec_driver_sql(f"{sql} RETURNING span, field, bucket_start, value",
                                    (org_id, sign, sign, org_id, *params)).all()
        return [(row[0], row[1], row[2], row[3]) for row in rows]
    counts = _tally(_read_rows(conn, org_id, selection, params))
    keys = list(counts)
    if keys:
        conn.exec_driver_sql(f"{_INSERT}VALUES (?, ?, ?, ?, ?, ?, ?) {_UPSERT}",
                             [(org_id, *key, sign * counts[key][0], sign * counts[key][1]) for key in keys])
    return keys


def _drop_empty(conn: sa.Connection, storage: Storage, org_id: int, keys: list[Key]) -> None:
    """Delete the rows among `keys` that a subtraction left at zero events."""
    if keys:
        conn.exec_driver_sql(_q(storage, "DELETE FROM stats_rollup WHERE org_id = ? AND span = ? AND field = ? "
                                         "AND bucket_start = ? AND value = ? AND event_count = 0"),
                             [(org_id, *key) for key in keys])


def rolled_seq(conn: sa.Connection, storage: Storage, org_id: int) -> int:
    """The seq up to which `org_id`'s events are counted (0: none yet)."""
    row = conn.exec_driver_sql(_q(storage, "SELECT rolled_seq FROM stats_positions WHERE org_id = ?"),
                               (org_id,)).first()
    return 0 if row is None else int(row[0])


def _lock_position(conn: sa.Connection, storage: Storage, org_id: int) -> int:
    """`org_id`'s position, its row created if missing and locked (PostgreSQL) for this transaction, so
    rollers on several nodes, a purge and an erasure take turns per organization. SQLite's writer lock
    does that."""
    position = _try_lock_position(conn, storage, org_id, wait=True)
    assert position is not None  # a waiting lock always returns the row
    return position


def _try_lock_position(conn: sa.Connection, storage: Storage, org_id: int, *, wait: bool) -> int | None:
    """As `_lock_position`; with `wait=False` None when another transaction holds the row (PostgreSQL):
    every serve worker runs a roller, and one that finds an organization being rolled goes on to the next
    instead of queueing behind it (as the search indexer does)."""
    run = conn.exec_driver_sql
    if storage.dialect == "sqlite":
        run("INSERT OR IGNORE INTO stats_positions (org_id, rolled_seq) VALUES (?, 0)", (org_id,))
        return rolled_seq(conn, storage, org_id)
    run("INSERT INTO stats_positions (org_id, rolled_seq) VALUES (%s, 0) ON CONFLICT DO NOTHING", (org_id,))
    lock = "FOR UPDATE" if wait else "FOR UPDATE SKIP LOCKED"
    row = run(f"SELECT rolled_seq FROM stats_positions WHERE org_id = %s {lock}", (org_id,)).first()
    return None if row is None else int(row[0])


def lagging_orgs(storage: Storage) -> list[tuple[int, int]]:
    """Organizations with events not rolled up yet, each with how many."""
    with storage.read() as conn:
        rows = conn.exec_driver_sql(
            "SELECT h.org_id, h.seq - coalesce(p.rolled_seq, 0) FROM chain_heads h LEFT JOIN stats_positions p "
            "ON p.org_id = h.org_id WHERE h.seq > coalesce(p.rolled_seq, 0) ORDER BY h.org_id").all()
    return [(int(r[0]), int(r[1])) for r in rows]


def roll_batch(storage: Storage, org_id: int, batch: int = ROLL_BATCH) -> int:
    """Count `org_id`'s next up to `batch` events after its position, and move the position past them in
    the same transaction; how many seqs it moved."""
    with storage.write() as conn:
        locked = _try_lock_position(conn, storage, org_id, wait=False)
        if locked is None:
            return 0  # another worker or node is rolling this organization up now
        position = locked
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
    # In slices, so a purge of millions of events does not hold them all in memory at once.
    for low in range(first, last + 1, FORGET_SLICE):
        high = min(last, low + FORGET_SLICE - 1)
        keys = _add_counts(conn, storage, org_id, "seq >= ? AND seq <= ?", (low, high), sign=-1)
        _drop_empty(conn, storage, org_id, keys)


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
            _drop_empty(conn, storage, org_id, _add_counts(conn, storage, org_id, selection, tuple(chunk), sign=-1))
        else:
            _add_counts(conn, storage, org_id, selection, tuple(chunk))
