"""Self-watch cost (issue #13): ingest throughput with the incremental watcher running against without it,
in one run, and the watcher's own verification speed beside the database reading the same rows alone.
Results: docs/benchmarks.md.

    .venv/bin/python bench/selfwatch_bench.py --url sqlite:////tmp/akbench/sw.db --events 50000 --rounds 5
    .venv/bin/python bench/selfwatch_bench.py --url sqlite:////tmp/akbench/sw.db --alone-only
    .venv/bin/python bench/selfwatch_bench.py --url postgresql://postgres@127.0.0.1/akbench_sw --events 20000 --recent

Ingest: batches of 5,000 through record_events (as bench/query_bench.py's `seed_through_ingest`: seq,
canonical form, chain hash, Merkle frontier, every index), alternating runs without and with a Watcher
thread in the same process (as in `auditkeep serve`: same GIL, same connection pool), polling every
second (the default). Before each run with it, the watcher catches up untimed on what the run before
left, so it verifies during the run exactly the events that run ingests; how far behind it was when the
run ended is reported. Then the watcher alone verifies the whole log from the start (`catch_up` from
position 0: read, hash, Merkle leaf, a position write each 5,000), beside the database alone reading
the same rows in the same batches through the same driver cursor, nothing computed: the database's own
limit for this work.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime

from query_bench import BATCH, EventMaker, _org, _storage  # type: ignore[import-not-found]

from auditkeep.ingest.service import record_events
from auditkeep.selfwatch.watcher import Watcher
from auditkeep.storage import Storage
from auditkeep.storage import integrity as records
from auditkeep.storage.types import format_timestamp


def _head(storage: Storage, org_id: int) -> int:
    with storage.read() as conn:
        return int(conn.exec_driver_sql("SELECT seq FROM chain_heads WHERE org_id = " + str(org_id)).scalar_one())


def _position(storage: Storage, org_id: int) -> int:
    with storage.read() as conn:
        found = conn.exec_driver_sql("SELECT verified_seq FROM integrity_watch WHERE id = " + str(org_id)).first()
    return 0 if found is None else int(found[0])


def ingest(storage: Storage, org_id: int, total: int, seed: int, *, recent: bool = False) -> float:
    """`total` new events through record_events in batches of 5,000: events per second of record_events
    (query_bench's seed_through_ingest, with a seed per run so every run's event_uuids are new). `recent`:
    every event timestamped now, as live ingest is, instead of spread over the past year."""
    maker = EventMaker(total, seed=seed)
    spent = 0.0
    done = 0
    while done < total:
        batch = maker.batch(min(BATCH, total - done))
        if recent:
            now = format_timestamp(datetime.now(UTC))
            for event in batch:
                event.log["timestamp"] = now
        t0 = time.perf_counter()
        record_events(storage, org_id, batch)
        spent += time.perf_counter() - t0
        done += len(batch)
    return total / spent


def run_ingest(storage: Storage, events: int, rounds: int, *, recent: bool) -> None:
    org_id, _ = _org(storage)
    without: list[float] = []
    with_watch: list[float] = []
    lags: list[int] = []
    for r in range(rounds * 2):
        watcher = None
        if r % 2:
            watcher = Watcher(storage, storage.settings)
            watcher.catch_up()  # untimed: what the run before left
            watcher.start()
        rate = ingest(storage, org_id, events, seed=1000 + r, recent=recent)
        if watcher is not None:
            lags.append(_head(storage, org_id) - _position(storage, org_id))
            watcher.stop()
            with_watch.append(rate)
        else:
            without.append(rate)
        print(f"  run {r + 1}: {'with' if watcher else 'without'} self-watch {rate:,.0f} events/s",
              file=sys.stderr, flush=True)
    a, b = statistics.median(without), statistics.median(with_watch)
    print(f"ingest without self-watch: median {a:,.0f} events/s {sorted(round(x) for x in without)}")
    print(f"ingest with self-watch:    median {b:,.0f} events/s {sorted(round(x) for x in with_watch)}")
    print(f"ratio {b / a:.3f}; events the watcher had still to verify when each run ended: {lags}")


def _read_rows(storage: Storage, org_id: int, head: int) -> int:
    """The rows the watcher reads, in its batches, through the same driver cursor, nothing computed."""
    sql = records.chain_rows_sql(storage.dialect)
    n = 0
    for start in range(0, head, BATCH):
        with storage.read() as conn:
            cursor = conn.connection.driver_connection.cursor()
            cursor.execute(sql, (org_id, start, start + BATCH))
            n += sum(1 for _ in cursor)
            cursor.close()
    return n


def run_alone(storage: Storage, rounds: int) -> None:
    org_id, _ = _org(storage)
    head = _head(storage, org_id)
    watcher_rates: list[float] = []
    db_rates: list[float] = []
    for _ in range(rounds):
        with storage.write() as conn:  # back to the start: the next catch_up verifies the whole log
            conn.exec_driver_sql("DELETE FROM integrity_watch WHERE id = " + str(org_id))
        watcher = Watcher(storage, storage.settings)
        t0 = time.perf_counter()
        done = watcher.catch_up()
        watcher_rates.append(done / (time.perf_counter() - t0))
        watcher.stop()
        assert done == head, (done, head)
        t0 = time.perf_counter()
        n = _read_rows(storage, org_id, head)
        db_rates.append(n / (time.perf_counter() - t0))
    a, b = statistics.median(watcher_rates), statistics.median(db_rates)
    print(f"watcher alone over {head:,} events: median {a:,.0f} events/s; "
          f"the database reading the same rows: {b:,.0f} events/s (ratio {a / b:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="a dedicated bench database")
    parser.add_argument("--events", type=int, default=100_000, help="events ingested per run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--recent", action="store_true", help="timestamp every event now (one partition)")
    parser.add_argument("--alone-only", action="store_true", help="only the watcher alone over the log as it is")
    args = parser.parse_args()
    os.makedirs("/tmp/akbench", exist_ok=True)
    storage = _storage(args.url)
    before = os.getloadavg()
    print(f"{storage.dialect}, {os.cpu_count()} CPUs")
    if not args.alone_only:
        run_ingest(storage, args.events, args.rounds, recent=args.recent)
    run_alone(storage, 3)
    print("load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}; after: {:.2f} {:.2f} {:.2f}".format(
        *before, *os.getloadavg()))
    storage.dispose()


if __name__ == "__main__":
    main()
