"""Search benchmarks (issue #13): `q` with limit=100 over a large log served by the search index, and
ingest throughput with the indexer running against without it, in one run. Results: docs/benchmarks.md.

    .venv/bin/python bench/search_bench.py seed   --url sqlite:////tmp/akbench/s.db --events 1000000
    .venv/bin/python bench/search_bench.py index  --url sqlite:////tmp/akbench/s.db --tail 2000
    .venv/bin/python bench/search_bench.py query  --url sqlite:////tmp/akbench/s.db --rounds 40
    .venv/bin/python bench/search_bench.py ingest --url sqlite:////tmp/akbench/s2.db --events 200000

`seed` bulk-loads events as bench/query_bench.py does (its EventMaker and bulk_seed: placeholder hashes,
so the chain does not verify; a search reads none of it). `index` runs the real indexer
(storage.search.index_batch) over all but the newest `--tail` events, so every query also scans a tail
of unindexed events, as it does behind live ingest; it reports the indexer's own speed. `query` times
each term below HTTP (parse, plan_page, the JSON body: bench/query_bench.py's `_direct`) and, beside
it, the database alone running the page's SQL (on PostgreSQL the index's candidates are read while
planning, so that is the page's lookups alone), after one untimed query of each term. `ingest` records
batches of 5,000 through record_events, alternating runs without and with an Indexer thread in the same
process, and reports the median of each and their ratio.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from typing import Any

from query_bench import (  # type: ignore[import-not-found]
    BATCH,
    EventMaker,
    _direct,
    _org,
    _storage,
    analyze,
    bulk_seed,
)

from auditkeep.ingest.service import record_events
from auditkeep.search.indexer import Indexer
from auditkeep.storage import Storage, search
from auditkeep.storage.pages import plan_page
from auditkeep.storage.queries import LogFilters, LogQuery, select_sql

# From common to absent in query_bench's data: its log_entry is "<email> <action> <type> <id> (<status>)"
# and its url "https://app.example.com/api/v1/<type>s/<id>".
TERMS = {
    "failure": "common (3%)",
    "report.delete": "uncommon",
    "dashboards/42": "prefix of ids",
    "user1999@": "a rare user",
    "sso_config": "rare (0.01%)",
    "datasources/31337": "one object",
    "no-such-text": "absent",
}


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def index_all_but(storage: Storage, tail: int) -> None:
    org_id, _ = _org(storage)
    with storage.read() as conn:
        head = int(conn.exec_driver_sql(
            "SELECT seq FROM chain_heads WHERE org_id = " + str(org_id)).scalar_one())
        start = search.indexed_seq(conn, storage, org_id)
    target = head - tail
    t0 = time.perf_counter()
    done = start
    while done < target:
        done += search.index_batch(storage, org_id, batch=min(50_000, target - done))
        if done % 1_000_000 < 50_000:
            print(f"  indexed {done:,}", file=sys.stderr, flush=True)
    spent = time.perf_counter() - t0
    print(f"indexed seq {start:,}..{done:,} ({done - start:,} events) in {spent:.1f} s: "
          f"{(done - start) / max(spent, 1e-9):,.0f} events/s; tail {head - done:,} events")


def _database_alone(storage: Storage, org_id: int, text: str) -> float:
    """The planned page's SQL, run by the raw driver and fetched whole (ms): the database's own cost."""
    page = plan_page(storage, LogQuery(org_id=org_id, limit=100, filters=LogFilters(q=text)))
    sql, params = select_sql(storage, page.query, storage.backend.log_json_sql(integrity=False))
    raw = storage.engine.raw_connection()
    try:
        cur = raw.cursor()
        t0 = time.perf_counter()
        cur.execute(sql, params)
        cur.fetchall()
        elapsed = (time.perf_counter() - t0) * 1000
        raw.rollback()
    finally:
        raw.close()
    return elapsed


def _warm(storage: Storage, org_id: int) -> None:
    """One untimed query of each term (caches, prepared statements), and on PostgreSQL until this process
    holds its trigram sample, which the first query starts taking in the background (storage/trigrams.py)."""
    for term in TERMS:
        _direct(storage, org_id, {"q": term})
    try:
        from auditkeep.storage import trigrams
    except ImportError:  # a tree from before the sample (A/B runs through PYTHONPATH)
        return
    deadline = time.monotonic() + 60
    while storage.dialect == "postgresql" and trigrams.sample_for(storage) is None and time.monotonic() < deadline:
        time.sleep(0.05)


def run_queries(storage: Storage, rounds: int) -> None:
    org_id, _ = _org(storage)
    _warm(storage, org_id)
    rng = random.Random(13)
    ours: dict[str, list[float]] = {t: [] for t in TERMS}
    alone: dict[str, list[float]] = {t: [] for t in TERMS}
    # This thread's CPU: on SQLite the whole query's (it runs in-process), a measure the machine's load
    # inflates far less than wall time; on PostgreSQL only the client's share.
    cpu: dict[str, list[float]] = {t: [] for t in TERMS}
    for _ in range(rounds):
        terms = list(TERMS)
        rng.shuffle(terms)
        for term in terms:
            params: dict[str, Any] = {"q": term, "order": rng.choice(["asc", "desc"])}
            c0 = time.thread_time()
            ours[term].append(_direct(storage, org_id, params))
            cpu[term].append((time.thread_time() - c0) * 1000)
            alone[term].append(_database_alone(storage, org_id, term))
    every = [v for vs in ours.values() for v in vs]
    print(f"{'term':<20} {'kind':<15} {'ours p50':>9} {'p99':>7} {'cpu p50':>8} {'p99':>7} {'db p50':>8} {'p99':>7}")
    for term, kind in TERMS.items():
        print(f"{term:<20} {kind:<15} {_pct(ours[term], 50):9.2f} {_pct(ours[term], 99):7.2f} "
              f"{_pct(cpu[term], 50):8.2f} {_pct(cpu[term], 99):7.2f} "
              f"{_pct(alone[term], 50):8.2f} {_pct(alone[term], 99):7.2f}")
    every_cpu = [v for vs in cpu.values() for v in vs]
    print(f"{'all':<36} {_pct(every, 50):9.2f} {_pct(every, 99):7.2f} {_pct(every_cpu, 50):8.2f} "
          f"{_pct(every_cpu, 99):7.2f}  ({len(every)} queries, ms)")


def _ingest(storage: Storage, org_id: int, events: int, seed: int, server_uuids: bool) -> float:
    """Record `events` new events (a seed of their own: a repeated uuid would be a no-op) in batches of
    BATCH through record_events; events per second of wall time spent in it. `server_uuids`: as if the
    client sent no event_uuid (no idempotency lookups; the lookup of client uuids over every monthly
    partition took ~26 s a batch on PostgreSQL at load ~20, which would hide what the indexer costs)."""
    maker = EventMaker(events, seed=seed)
    spent = 0.0
    done = 0
    while done < events:
        size = min(BATCH, events - done)
        batch = maker.batch(size)
        if server_uuids:
            for event in batch:
                event.uuid_given = False
        t0 = time.perf_counter()
        record_events(storage, org_id, batch)
        spent += time.perf_counter() - t0
        done += size
    return events / spent


def _postgres_cpu() -> float:
    """CPU seconds used so far by every process named `postgres` on this machine (/proc; the bench's
    database server runs here). Other sessions' queries on the same server count too: read it beside the
    load average."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)
        except OSError:
            continue
        if fields[0].endswith("(postgres"):
            rest = fields[1].split()
            total += int(rest[11]) + int(rest[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def run_ingest(storage: Storage, events: int, rounds: int, duty: float, server_uuids: bool) -> None:
    """Alternating ingest runs of `events` each, without and with the indexer thread; beside each run's
    rate, this process's CPU seconds (ingest and, in the runs with it, the indexer thread) and on
    PostgreSQL the database server's."""
    without: list[float] = []
    with_indexer: list[float] = []
    lags: list[int] = []
    org_id, _ = _org(storage)
    if storage.dialect == "sqlite":
        Indexer(storage, storage.settings).catch_up()  # an index that is up to date when the runs begin
    for r in range(rounds * 2):
        indexer = None
        # ABBA order (without, with; with, without; ...): every run adds events to the same database and
        # ingest slows as it grows (74 -> 134 CPU us an event from 0 to 1,000,000 of these events on SQLite,
        # random timestamps over a year), so a fixed order would charge the growth to the indexer.
        if (r % 2) != ((r // 2) % 2):
            indexer = Indexer(storage, storage.settings.model_copy(
                update={"search_poll_seconds": 0.5, "search_indexer_duty": duty}))
            indexer.start()
        cpu0, pg0, load = time.process_time(), _postgres_cpu(), os.getloadavg()[0]
        rate = _ingest(storage, org_id, events, 100 + r, server_uuids)
        cpu = time.process_time() - cpu0
        pg = _postgres_cpu() - pg0 if storage.dialect == "postgresql" else 0.0
        if indexer is not None:
            with storage.read() as conn:
                head = int(conn.exec_driver_sql(
                    "SELECT seq FROM chain_heads WHERE org_id = " + str(org_id)).scalar_one())
                lags.append(head - search.indexed_seq(conn, storage, org_id))
            indexer.stop()
            Indexer(storage, storage.settings).catch_up()  # untimed: the next run with it starts up to date
            with_indexer.append(rate)
        else:
            without.append(rate)
        print(f"  run {r + 1}: {'with' if indexer else 'without'} indexer {rate:,.0f} events/s, "
              f"our CPU {cpu:.1f} s, postgres CPU {pg:.1f} s, load {load:.1f}", flush=True)
    a, b = statistics.median(without), statistics.median(with_indexer)
    print(f"ingest without indexer: median {a:,.0f} events/s {sorted(round(x) for x in without)}")
    print(f"ingest with indexer:    median {b:,.0f} events/s {sorted(round(x) for x in with_indexer)}")
    print(f"ratio {b / a:.3f} (indexer duty {duty}); unindexed tail when each run ended: {lags}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["seed", "index", "query", "ingest"])
    parser.add_argument("--url", required=True, help="a dedicated bench database")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--tail", type=int, default=2_000, help="index: leave this many newest events unindexed")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--server-uuids", action="store_true", help="ingest: events without client uuids")
    parser.add_argument("--duty", type=float, default=1.0, help="ingest: the indexer's AUDITKEEP_SEARCH_INDEXER_DUTY")
    args = parser.parse_args()
    os.makedirs("/tmp/akbench", exist_ok=True)
    storage = _storage(args.url)
    before = os.getloadavg()
    if args.mode == "seed":
        t0 = time.perf_counter()
        bulk_seed(storage, args.events)
        analyze(storage)
        print(f"seeded {args.events:,} events in {time.perf_counter() - t0:.0f} s")
    elif args.mode == "index":
        index_all_but(storage, args.tail)
        if storage.dialect == "postgresql":  # what autovacuum does after a bulk insert (and the GIN's pending list)
            with storage.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE search_docs")
    elif args.mode == "query":
        run_queries(storage, args.rounds)
    else:
        run_ingest(storage, args.events, args.rounds, args.duty, args.server_uuids)
    print("load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}; after: {:.2f} {:.2f} {:.2f}".format(
        *before, *os.getloadavg()))
    storage.dispose()


if __name__ == "__main__":
    main()
