"""The events table's partitions on PostgreSQL, kept by the service (issue #14).

`events` is range-partitioned by `timestamp`: one partition per month (`events_YYYY_MM`) and a default
partition (`events_default`) for stragglers, the events whose month has no partition (far back-dated or
far future-dated ones). Upkeep makes sure the default exists and that the months from last month to
`partition_months_ahead` ahead exist, drops monthly partitions that retention has emptied, and drops
whole months that every organization's retention has passed (`drop_expired`, below).

Why only emptied ones: partitions go by event `timestamp`, retention by `received_at`, and a month's
partition can hold, beside that month's events, an imported or back-dated event received yesterday, of any
organization. Verification relies on an organization's purged events being a *prefix of its chain*
(storage/retention.py); dropping a partition that still holds a row would delete events in the middle of
some chain (a back-dated one) or events a legal hold or an organization's longer retention keeps. So the
rows go by the audited row purge, which keeps the prefix, honours holds and per-action rules and anchors
the boundary; a partition whose month is over and that no row is left in is then dropped, which removes
no event and so cannot break a chain. That drop is what gives the disk back at once (a row purge leaves
dead tuples for VACUUM to reuse).

A month still holding rows is dropped instead of deleted row by row (issue #14) only when, for every
organization with a row in it, all its rows there lie in the prefix its purge would delete now (received
before its retention, no legal hold or per-action rule keeping them): for each, the chain then loses
exactly a purge's prefix, seq first_seq..M (M its highest seq in the month). The few rows of that prefix
outside the month (an event stamped a few minutes ahead, a straggler in the default partition) are
deleted as the purge would, in the same transaction, which also moves `first_seq` to M + 1, subtracts
all of first_seq..M from the stats rollup and removes their search entries, so no reader sees a gap.
The caller anchors each organization at M first and records `retention.purge` after
(storage/partition_keeper.py), as `auditkeep purge` does.

A drop takes the parent's ACCESS EXCLUSIVE lock (waiting at most LOCK_TIMEOUT, else it is left for the
next run), checks under that lock that the partition is still empty, then detaches and drops it, so an
event written to that month at the same time is either in the partition, which is then kept, or written
after the detach and lands in the default partition.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa

from auditkeep.storage import rollup, search
from auditkeep.storage.base import Storage
from auditkeep.storage.holds import first_held
from auditkeep.storage.queries import timestamp_text

log = logging.getLogger(__name__)

MONTHLY = re.compile(r"^events_(\d{4})_(\d{2})$")
LOCK_TIMEOUT = "2s"


@dataclass
class UpkeepResult:
    """What one upkeep run did: partitions created, dropped, and left (kept busy or not lockable)."""

    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)  # dropped with rows every organization's retention passed


@dataclass(frozen=True)
class MonthRows:
    """One organization's rows in one partition: how many, their seq and timestamp range."""

    org_id: int
    count: int
    first_seq: int
    last_seq: int
    oldest: str
    newest: str


def month_start(year: int, month: int) -> datetime:
    """The first instant of a month; months out of 1..12 carry into the year."""
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    return datetime(year, month, 1, tzinfo=UTC)


def existing(conn: sa.Connection) -> list[str]:
    """Names of the partitions `events` has now."""
    return sorted(conn.exec_driver_sql(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'events'::regclass").scalars())


def ensure(conn: sa.Connection, now: datetime, months_ahead: int) -> list[str]:
    """Create the default partition if it is missing and the monthly ones from last month to
    `months_ahead` ahead; the names created."""
    created = []
    have = set(existing(conn))
    if "events_default" not in have:
        conn.exec_driver_sql("CREATE TABLE events_default PARTITION OF events DEFAULT")
        created.append("events_default")
    for offset in range(-1, months_ahead + 1):
        start = month_start(now.year, now.month + offset)
        end = month_start(start.year, start.month + 1)
        name = f"events_{start:%Y_%m}"
        if name in have:
            continue
        # Fails only if events_default already holds rows of that month (the service was down for
        # months); those rows stay correct and queryable in the default partition.
        try:
            with conn.begin_nested():
                conn.exec_driver_sql(f"CREATE TABLE {name} PARTITION OF events "
                                     f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')")
            created.append(name)
        except sa.exc.DBAPIError as exc:
            log.warning("could not create partition %s: %s", name, exc.orig)
    return created


def _drop_if_empty(storage: Storage, name: str) -> bool | None:
    """Detach and drop partition `name` if no row is in it: True dropped, False kept (rows), None the lock
    was not had in time."""
    # Looked at without a lock first: most old months keep rows for a long time, and the lock below, even
    # granted at once, queues every reader and writer of `events` behind it while it waits.
    with storage.read() as conn:
        if conn.exec_driver_sql(f"SELECT EXISTS (SELECT 1 FROM ONLY {name})").scalar():
            return False
    try:
        with storage.write() as conn:
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            conn.exec_driver_sql("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
            if conn.exec_driver_sql(f"SELECT EXISTS (SELECT 1 FROM ONLY {name})").scalar():
                return False
            conn.exec_driver_sql(f"ALTER TABLE events DETACH PARTITION {name}")
            conn.exec_driver_sql(f"DROP TABLE {name}")
            return True
    except sa.exc.OperationalError as exc:  # lock_timeout: writers or readers held the table
        log.info("partition %s not dropped this time: %s", name, exc.orig)
        return None


def rows_by_org(conn: sa.Connection, name: str) -> list[MonthRows]:
    """Each organization's rows in partition `name` (a full scan of that partition alone)."""
    rows = conn.exec_driver_sql(f'SELECT org_id, count(*), min(seq), max(seq), min("timestamp"), max("timestamp") '
                                f"FROM ONLY {name} GROUP BY org_id ORDER BY org_id").all()
    return [MonthRows(int(r[0]), int(r[1]), int(r[2]), int(r[3]), timestamp_text(r[4]), timestamp_text(r[5]))
            for r in rows]


def past_months(conn: sa.Connection, now: datetime) -> list[str]:
    """The monthly partitions of months before last month, oldest first: what upkeep may drop."""
    horizon = month_start(now.year, now.month - 1)
    return [name for name in existing(conn) if (match := MONTHLY.match(name)) is not None
            and month_start(int(match[1]), int(match[2]) + 1) <= horizon]


def drop_expired(storage: Storage, name: str, upto: dict[int, int]) -> dict[int, tuple[int, int]] | None:
    """Drop partition `name`, whose rows are all within the purge prefixes `upto` allows ({org_id: the highest
    seq its purge may delete now}), and delete each organization's other rows of seq first_seq..M (M its
    highest seq in the month), moving first_seq to M + 1: {org_id: (its old first_seq, rows deleted outside
    the month)}. None, and nothing changed, if a lock was not had in time or a row of the month is past
    its organization's bound or covered by a legal hold (a hold or a back-dated event that came since the
    plan).

    The heavy part runs before the table lock: the stats rollup's subtraction reads every row of first_seq..M,
    and the search index's delete is as large: with them under the lock a reader waited up to 4.3 s while a
    month of 1,000,000 events was dropped, 0.11 s with them before it (bench/partition_drop.py, quiet
    machine, docs/benchmarks.md). Each organization's
    `retention_guard` row, taken first, keeps its purges out until the commit, and the rollup's and index's
    own position locks keep the roller, the indexer and erasures' recounts out, so those rows stay as
    counted; rows can only be added meanwhile (seq past M), which the count under the lock catches.
    """
    try:
        with storage.write() as conn:
            run = conn.exec_driver_sql
            run(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            month = rows_by_org(conn, name)
            if any(upto.get(rows.org_id) is None or rows.last_seq > upto[rows.org_id] for rows in month):
                raise _Kept(f"{name}: some organization's rows there are no longer all past retention")
            firsts: dict[int, int] = {}
            for rows in month:
                run("INSERT INTO retention_guard (org_id) VALUES (%s)", (rows.org_id,))
                first = int(run("SELECT first_seq FROM chain_heads WHERE org_id = %s", (rows.org_id,)).scalar_one())
                firsts[rows.org_id] = first
                rollup.forget(conn, storage, rows.org_id, first, rows.last_seq)  # read while the rows are there
                search.forget(conn, storage, rows.org_id, first, rows.last_seq)
            run("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
            if run(f"SELECT count(*) FROM ONLY {name}").scalar_one() != sum(rows.count for rows in month):
                raise _Kept(f"{name}: events came into it since the plan")
            for rows in month:
                # FOR UPDATE: a legal hold's insert takes this row too (storage/holds.py), as a purge's does.
                run("SELECT first_seq FROM chain_heads WHERE org_id = %s FOR UPDATE", (rows.org_id,))
                held = first_held(conn, rows.org_id, firsts[rows.org_id])
                if held is not None and held[0] <= rows.last_seq:
                    raise _Kept(f"{name}: a legal hold covers organization {rows.org_id}'s seq {held[0]}")
            run(f"ALTER TABLE events DETACH PARTITION {name}")
            outside: dict[int, tuple[int, int]] = {}
            for rows in month:
                first = firsts[rows.org_id]
                deleted = run("DELETE FROM events WHERE org_id = %s AND seq >= %s AND seq <= %s",
                              (rows.org_id, first, rows.last_seq)).rowcount
                outside[rows.org_id] = (first, int(deleted))
                run("UPDATE chain_heads SET first_seq = %s WHERE org_id = %s", (rows.last_seq + 1, rows.org_id))
                run("DELETE FROM retention_guard WHERE org_id = %s", (rows.org_id,))
            run(f"DROP TABLE {name}")
            return outside
    except sa.exc.OperationalError as exc:  # lock_timeout (or a deadlock's victim): tried again next run
        log.info("partition %s not dropped this time: %s", name, exc.orig)
        return None
    except _Kept as exc:  # rolled back: nothing was detached, deleted or subtracted
        log.info("partition %s kept: %s", name, exc)
        return None


class _Kept(Exception):
    """A month found, under the lock, to hold a row its organization's retention keeps."""


def upkeep(storage: Storage, now: datetime, months_ahead: int) -> UpkeepResult:
    """One run: partitions made ahead, emptied months before last month dropped (PostgreSQL only)."""
    result = UpkeepResult()
    if storage.dialect != "postgresql":
        return result
    with storage.write() as conn:
        result.created = ensure(conn, now, months_ahead)
        names = existing(conn)
    horizon = month_start(now.year, now.month - 1)  # last month and later are never dropped
    for name in names:
        match = MONTHLY.match(name)
        if match is None or month_start(int(match[1]), int(match[2]) + 1) > horizon:
            continue
        done = _drop_if_empty(storage, name)
        if done:
            result.dropped.append(name)
            log.info("dropped partition %s: retention had emptied it", name)
        elif done is None:
            result.skipped.append(name)
    return result
