"""Stats benchmark (issue #13): `GET /api/v1/audit_logs/stats`'s work below HTTP (storage/stats.py: the
buckets and the top values) for a 30-day range of a large log, beside the database alone counting the
same range from its (org_id, timestamp, seq) index, in one run. Results: docs/benchmarks.md ("Stats").

    .venv/bin/python bench/stats_bench.py seed  --url sqlite:////tmp/akbench/stats/1m.db --events 1000000
    .venv/bin/python bench/stats_bench.py query --url sqlite:////tmp/akbench/stats/1m.db --rounds 15

`seed` bulk-loads events as bench/query_bench.py does (EventMaker: timestamps spread over the past year,
3% failures). `query` picks a random 30-day window per round and times each shape (interval, group_by,
filter); "db count" is `SELECT count(*)` of the window alone, a floor for any exact answer read from
`events` (every event in the range must be visited once without a rollup).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from datetime import timedelta

from query_bench import EventMaker, _org, _storage, analyze, bulk_seed  # type: ignore[import-not-found]

from auditkeep.storage import Storage, stats
from auditkeep.storage.queries import LogFilters, LogQuery
from auditkeep.storage.types import format_timestamp, parse_timestamp

SHAPES: list[tuple[str, stats.Interval, stats.GroupBy, LogFilters]] = [
    ("day, top actions, no filter", "day", "action", LogFilters()),
    ("hour, top users, no filter", "hour", "user_email", LogFilters()),
    ("day, top addresses, status=failure", "day", "client_ip", LogFilters(status="failure")),
    ("hour, top actions, action=user.*", "hour", "action", LogFilters(action_prefix="user.")),
    ("day, top statuses, one user", "day", "status", LogFilters(user_email="user42@corp.example")),
]


def _window(rng: random.Random) -> tuple[str, str]:
    maker = EventMaker(1)
    start = maker.start + timedelta(days=rng.randrange(0, 365 - 30))
    return format_timestamp(start), format_timestamp(start + timedelta(days=30))


def _db_count(storage: Storage, org_id: int, start: str, end: str) -> tuple[float, int]:
    mark = "?" if storage.dialect == "sqlite" else "%s"
    ts = storage.backend.ts_param
    sql = f'SELECT count(*) FROM events WHERE org_id = {mark} AND "timestamp" >= {mark} AND "timestamp" < {mark}'
    with storage.read() as conn:
        t0 = time.perf_counter()
        n = int(conn.exec_driver_sql(sql, (org_id, ts(start), ts(end))).scalar_one())
        return time.perf_counter() - t0, n


def run_queries(storage: Storage, rounds: int) -> None:
    org_id, _ = _org(storage)
    rng = random.Random(13)
    times: dict[str, list[float]] = {name: [] for name, *_ in SHAPES}
    counts: list[float] = []
    in_range: list[int] = []
    for _ in range(rounds):
        start, end = _window(rng)
        spent, n = _db_count(storage, org_id, start, end)
        counts.append(spent)
        in_range.append(n)
        for name, interval, group_by, filters in SHAPES:
            query = LogQuery(org_id=org_id, start=start, end=end, filters=filters)
            t0 = time.perf_counter()
            stats.activity(storage, query, interval, group_by)
            times[name].append(time.perf_counter() - t0)
    # The console's default view: the last 7 days, per hour, with its three top lists (web/insight.py).
    console: list[float] = []
    for _ in range(rounds):
        start, _end = _window(rng)
        end = format_timestamp(parse_timestamp(start) + timedelta(days=7))
        query = LogQuery(org_id=org_id, start=start, end=end)
        t0 = time.perf_counter()
        stats.buckets(storage, query, "hour")
        for field in ("user_email", "action", "client_ip"):
            stats.top(storage, query, field, 5)  # type: ignore[arg-type]
        console.append(time.perf_counter() - t0)
    print(f"{storage.dialect}: {rounds} random 30-day windows, median {statistics.median(in_range):,.0f} events "
          "in the window")
    base = statistics.median(counts)
    print(f"  {'db count of the window (floor)':40} median {base * 1000:8.1f} ms")
    print(f"  {'console chart, 7 days (buckets + 3 tops)':40} median {statistics.median(console) * 1000:8.1f} ms")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"  {name:40} median {med * 1000:8.1f} ms  max {max(values) * 1000:8.1f} ms  "
              f"= {med / base:5.1f}x the count")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["seed", "query"])
    parser.add_argument("--url", required=True, help="a dedicated bench database")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    os.makedirs("/tmp/akbench", exist_ok=True)
    storage = _storage(args.url)
    before = os.getloadavg()
    if args.mode == "seed":
        t0 = time.perf_counter()
        bulk_seed(storage, args.events)
        analyze(storage)
        print(f"seeded {args.events:,} events in {time.perf_counter() - t0:.0f} s")
    else:
        run_queries(storage, args.rounds)
    print("load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}; after: {:.2f} {:.2f} {:.2f}".format(
        *before, *os.getloadavg()))
    storage.dispose()


if __name__ == "__main__":
    main()
