"""Stats benchmark (issue #13): `GET /api/v1/audit_logs/stats`'s work below HTTP (storage/stats.py: the
buckets and the top values, served from the rollup of storage/rollup.py) for a 30-day range of a large log,
beside the database alone counting the same range from its (org_id, timestamp, seq) index, in one run; and
ingest with the stats roller running beside ingest without it, same run. Results: docs/benchmarks.md
("Stats").

    .venv/bin/python bench/stats_bench.py seed  --url sqlite:////tmp/akbench/stats/1m.db --events 1000000 --days 37
    .venv/bin/python bench/stats_bench.py query --url sqlite:////tmp/akbench/stats/1m.db --rounds 15
    .venv/bin/python bench/stats_bench.py ingest --url sqlite:////tmp/akbench/stats/ing.db --events 100000 --rounds 3

`seed` bulk-loads events as bench/query_bench.py does (EventMaker: 3% failures, 5% `audit_logs.read`),
spread over `--days` (365 by default; 1,000,000 over 37 days puts ~820,000 events in a 30-day range, as
10,000,000 over a year would), then rolls them up (Roller.catch_up, timed) except the last `--tail`
events, which stay for stats to count from `events`, as the seconds of ingest the roller has not reached
would. `query` picks a random 30-day window of the seeded span per round and times each shape (interval,
group_by, filter); "db count" is `SELECT count(*)` of the window alone, a floor for any exact answer
read from `events`. `ingest` stores `--events` through record_events (batches of 5,000) into fresh
databases, with the roller running in a thread and without, alternating, `--rounds` pairs.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from datetime import timedelta
from pathlib import Path

import query_bench  # type: ignore[import-not-found]
import sqlalchemy as sa
from query_bench import _org, _storage, analyze, bulk_seed, seed_through_ingest

from auditkeep.rollup.roller import Roller
from auditkeep.storage import Storage, rollup, stats
from auditkeep.storage.queries import LogFilters, LogQuery
from auditkeep.storage.types import format_timestamp, parse_timestamp

SHAPES: list[tuple[str, stats.Interval, stats.GroupBy, LogFilters]] = [
    ("day, top actions, no filter", "day", "action", LogFilters()),
    ("hour, top users, no filter", "hour", "user_email", LogFilters()),
    ("day, top addresses, status=failure", "day", "client_ip", LogFilters(status="failure")),
    ("hour, top actions, action=user.*", "hour", "action", LogFilters(action_prefix="user.")),
    ("day, top statuses, one user", "day", "status", LogFilters(user_email="user42@corp.example")),
]


def _dense(days: int) -> type:
    """query_bench's EventMaker with its events spread over `days` instead of a year."""

    class Dense(query_bench.EventMaker):  # type: ignore[misc]
        def __init__(self, total: int, seed: int = 4) -> None:
            super().__init__(total, seed)
            self.start = self.end - timedelta(days=days)
            self.step_us = days * 86400 * 1_000_000 // max(total, 1)

    return Dense


def _span(storage: Storage, org_id: int) -> tuple[str, str]:
    with storage.read() as conn:
        low, high = conn.exec_driver_sql(
            f'SELECT min("timestamp"), max("timestamp") FROM events WHERE org_id = {org_id}').one()
    return tuple(v if isinstance(v, str) else format_timestamp(v) for v in (low, high))  # type: ignore[return-value]


def _window(rng: random.Random, span: tuple[str, str], days: int = 30) -> tuple[str, str]:
    """A random window of `days` within the seeded span, its ends at random seconds (not on an hour)."""
    low, high = (parse_timestamp(t) for t in span)
    room = max(int((high - low).total_seconds()) - days * 86400, 1)
    start = low + timedelta(seconds=rng.randrange(0, room), microseconds=rng.randrange(1_000_000))
    return format_timestamp(start), format_timestamp(start + timedelta(days=days))


def roll(storage: Storage, org_id: int, tail: int) -> None:
    """Roll the seeded log up, but for its last `tail` events; print the rate and the rollup's size."""
    with storage.read() as conn:
        head = int(conn.exec_driver_sql(f"SELECT seq FROM chain_heads WHERE org_id = {org_id}").scalar_one())
    t0 = time.perf_counter()
    while True:
        with storage.read() as conn:
            left = head - tail - rollup.rolled_seq(conn, storage, org_id)
        if left <= 0 or not rollup.roll_batch(storage, org_id, min(rollup.ROLL_BATCH, left)):
            break
    spent = time.perf_counter() - t0
    with storage.read() as conn:
        rows = conn.exec_driver_sql(f"SELECT span, count(*) FROM stats_rollup WHERE org_id = {org_id} "
                                    "GROUP BY span ORDER BY span").all()
    print(f"rolled up {head - tail:,} events in {spent:.0f} s ({(head - tail) / spent:,.0f}/s); rollup rows: "
          + ", ".join(f"{span} {n:,}" for span, n in rows) + f"; tail left to count directly: {tail:,}")


def _db_count(storage: Storage, org_id: int, start: str, end: str) -> tuple[float, int]:
    mark = "?" if storage.dialect == "sqlite" else "%s"
    ts = storage.backend.ts_param
    sql = f'SELECT count(*) FROM events WHERE org_id = {mark} AND "timestamp" >= {mark} AND "timestamp" < {mark}'
    with storage.read() as conn:
        t0 = time.perf_counter()
        n = int(conn.exec_driver_sql(sql, (org_id, ts(start), ts(end))).scalar_one())
        return time.perf_counter() - t0, n


def _rows_in(storage: Storage, org_id: int, start: str, end: str) -> dict[str, int]:
    """How many rollup rows a 30-day window's top lists read: per field, day rows plus hour rows."""
    ts = storage.backend.ts_param
    mark = "?" if storage.dialect == "sqlite" else "%s"
    sql = (f"SELECT field, count(*) FROM stats_rollup WHERE org_id = {mark} AND span = 'day' "
           f"AND bucket_start >= {mark} AND bucket_start < {mark} GROUP BY field")
    with storage.read() as conn:
        return {str(f): int(n) for f, n in conn.exec_driver_sql(sql, (org_id, ts(start), ts(end))).all()}


def run_queries(storage: Storage, rounds: int) -> None:
    org_id, _ = _org(storage)
    rng = random.Random(13)
    span = _span(storage, org_id)
    times: dict[str, list[float]] = {name: [] for name, *_ in SHAPES}
    counts: list[float] = []
    in_range: list[int] = []
    sizes: dict[str, list[int]] = {}
    for _ in range(rounds):
        start, end = _window(rng, span)
        for field, n in _rows_in(storage, org_id, start, end).items():
            sizes.setdefault(field, []).append(n)
        spent, n = _db_count(storage, org_id, start, end)
        counts.append(spent)
        in_range.append(n)
        for name, interval, group_by, filters in SHAPES:
            query = LogQuery(org_id=org_id, start=start, end=end, filters=filters)
            t0 = time.perf_counter()
            stats.activity(storage, query, interval, group_by)
            times[name].append(time.perf_counter() - t0)
    # The console's default view: the last 7 days, per hour, with its three top lists (web/insight.py), and
    # audit_logs.read events hidden, as the console does unless asked to show them.
    console: list[float] = []
    for _ in range(rounds):
        start, end = _window(rng, span, days=7)
        query = LogQuery(org_id=org_id, start=start, end=end, extra_where=(stats.HIDE_READS_WHERE,),
                         extra_params=(rollup.READ_ACTION,))
        t0 = time.perf_counter()
        stats.buckets(storage, query, "hour")
        for field in ("user_email", "action", "client_ip"):
            stats.top(storage, query, field, 5)  # type: ignore[arg-type]
        console.append(time.perf_counter() - t0)
    print(f"{storage.dialect}: {rounds} random 30-day windows, median {statistics.median(in_range):,.0f} events "
          "in the window")
    print("  day rows a window's top reads (median): " + ", ".join(
        f"{field or 'total'} {statistics.median(v):,.0f}" for field, v in sorted(sizes.items())))
    base = statistics.median(counts)
    print(f"  {'db count of the window (floor)':40} median {base * 1000:8.1f} ms")
    print(f"  {'console chart, 7 days (buckets + 3 tops)':40} median {statistics.median(console) * 1000:8.1f} ms")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"  {name:40} median {med * 1000:8.1f} ms  max {max(values) * 1000:8.1f} ms  "
              f"= {med / base:5.1f}x the count")


def _fresh(url: str, name: str) -> str:
    """A fresh database beside `url` named `name` (SQLite: a new file; PostgreSQL: a new database)."""
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///") + f"-{name}"
        for suffix in ("", "-wal", "-shm"):
            Path(path + suffix).unlink(missing_ok=True)
        return f"sqlite:///{path}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS akbench_{name} WITH (FORCE)")
        conn.exec_driver_sql(f"CREATE DATABASE akbench_{name}")
    admin.dispose()
    return sa.make_url(url).set(database=f"akbench_{name}").render_as_string(hide_password=False)


def ingest_pairs(url: str, total: int, rounds: int) -> None:
    """Ingest through record_events with the roller running in a thread and without, alternating."""
    from auditkeep.settings import Settings

    rates: dict[str, list[float]] = {"without roller": [], "with roller": []}
    for i in range(rounds):
        for name, runs in rates.items():
            target = _fresh(url, f"stats_ingest_{i}_{name.split()[0]}")
            storage = _storage(target)
            roller = Roller(storage, Settings(database_url=target)) if name == "with roller" else None
            if roller is not None:
                roller.start()
            rate, _cpu = seed_through_ingest(storage, total)
            lag = 0
            if roller is not None:
                roller.stop()
                org_id, _ = _org(storage)
                with storage.read() as conn:
                    sql = f"SELECT seq FROM chain_heads WHERE org_id = {org_id}"
                    head = int(conn.exec_driver_sql(sql).scalar_one())
                    lag = head - rollup.rolled_seq(conn, storage, org_id)
            runs.append(rate)
            print(f"  round {i + 1} {name:15} {rate:9,.0f} events/s" + (f"  (roller {lag:,} behind at the end)"
                                                                         if roller is not None else ""),
                  flush=True)
            storage.dispose()
    without, with_ = (statistics.median(rates[k]) for k in ("without roller", "with roller"))
    ratios = [w / wo for w, wo in zip(rates["with roller"], rates["without roller"], strict=True)]
    print(f"{url.split(':', maxsplit=1)[0]}: {total:,} events a run, {rounds} pairs: median without "
          f"{without:,.0f}, with {with_:,.0f} events/s; with / without per pair: "
          f"{', '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["seed", "query", "ingest"])
    parser.add_argument("--url", required=True, help="a dedicated bench database")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=365, help="seed: the span the events are spread over")
    parser.add_argument("--tail", type=int, default=5_000, help="seed: the last events left unrolled")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    os.makedirs("/tmp/akbench/stats", exist_ok=True)
    before = os.getloadavg()
    if args.mode == "ingest":
        ingest_pairs(args.url, args.events, args.rounds)
    else:
        storage = _storage(args.url)
        if args.mode == "seed":
            query_bench.EventMaker = _dense(args.days)
            t0 = time.perf_counter()
            bulk_seed(storage, args.events)
            analyze(storage)
            print(f"seeded {args.events:,} events over {args.days} days in {time.perf_counter() - t0:.0f} s")
            roll(storage, _org(storage)[0], args.tail)
            analyze(storage)
        else:
            run_queries(storage, args.rounds)
        storage.dispose()
    print("load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}; after: {:.2f} {:.2f} {:.2f}".format(
        *before, *os.getloadavg()))


if __name__ == "__main__":
    main()
