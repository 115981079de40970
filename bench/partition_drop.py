"""How long a whole-month drop by partition upkeep holds the events table (issue #14).

    .venv/bin/python bench/partition_drop.py --url postgresql://postgres@127.0.0.1:5432/postgres --events 100000

Creates a database of its own on the server at `--url`, stores `--events` events through the ingest
service (real chain hashes: the drop anchors the chain first, which verifies them) into one organization
with a 30-day retention, all stamped and received in January 2027, and one more organization's events in
the same month, then lets the stats roller count them all. Then, with the clock at June 2027, it times
the steps of `expire_months` (storage/partition_keeper.py): the read-only plan (each organization's purge
prefix, `purge_boundary`), the anchors (`anchor_before_purge`, which verifies the prefix), and the
transaction of `drop_expired`, with a reader beside it running one small indexed query after another:
its longest wait is how long the drop's ACCESS EXCLUSIVE lock on `events` kept everyone out. Beside it, in the
same run, the same rows' row-by-row purge on a copy of the month (`purge_org`'s deletes) for scale.
Prints seconds and the load average. Results: docs/benchmarks.md ("Partition upkeep").
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import threading
import time
from datetime import UTC, datetime, timedelta

import orjson
import sqlalchemy as sa

from auditkeep.ingest.checkpointing import anchor_before_purge
from auditkeep.ingest.service import record_events
from auditkeep.ingest.validation import parse_events
from auditkeep.settings import Settings
from auditkeep.storage import Storage, identity, open_storage, rollup
from auditkeep.storage.partition_keeper import _purgeable_upto
from auditkeep.storage.partitions import drop_expired, ensure, rows_by_org
from auditkeep.storage.retention import PURGE_BATCH, purge_org
from auditkeep.storage.types import format_timestamp

BATCH = 5_000


def _seed(storage: Storage, org_id: int, n: int, start: datetime) -> None:
    done = 0
    while done < n:
        k = min(BATCH, n - done)
        moment = start + timedelta(seconds=done)
        body = [{"action": "doc.read", "client_ip": "203.0.113.9", "url": f"https://app.test/{done + i}",
                 "user_email": f"user{(done + i) % 500}@corp.example",
                 "timestamp": format_timestamp(moment + timedelta(milliseconds=i))} for i in range(k)]
        record_events(storage, org_id, parse_events(orjson.dumps(body), moment), received_at=moment)
        done += k


def run(url: str, events: int) -> None:
    name = f"ak_dropbench_{secrets.token_hex(4)}"
    admin = sa.create_engine(sa.make_url(url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    db_url = sa.make_url(url).set(database=name).render_as_string(hide_password=False)
    storage = open_storage(db_url, settings=Settings(database_url=db_url, log_level="WARNING"))
    try:
        jan = datetime(2027, 1, 2, tzinfo=UTC)
        with storage.write() as conn:
            ensure(conn, jan, 1)
            big = identity.create_org(conn, f"big-{secrets.token_hex(3)}")
            small = identity.create_org(conn, f"small-{secrets.token_hex(3)}")
            identity.set_retention(conn, big.id, 30)
            identity.set_retention(conn, small.id, 30)
        t0 = time.perf_counter()
        _seed(storage, big.id, events, jan)
        _seed(storage, small.id, 1000, jan)
        for org in (big, small):
            while rollup.roll_batch(storage, org.id):
                pass
        with storage.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE events")
        print(f"seeded {events + 1000:,} events in {time.perf_counter() - t0:.1f} s; load {os.getloadavg()}")

        now = datetime(2027, 6, 1, tzinfo=UTC)
        t0 = time.perf_counter()
        with storage.read() as conn:
            month = rows_by_org(conn, "events_2027_01")
            orgs = {org.id: org for org in identity.list_orgs(conn)}  # with their retention now
        upto = {r.org_id: _purgeable_upto(storage, orgs[r.org_id], now) for r in month}
        plan_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for r in month:
            anchor_before_purge(storage, r.org_id, r.last_seq)
        anchor_s = time.perf_counter() - t0
        assert all((upto[r.org_id] or 0) >= r.last_seq for r in month), (upto, month)
        load = os.getloadavg()
        # A reader beside it, one small indexed query after another: its longest wait is how long the drop
        # held the table from everyone.
        stop, waits = threading.Event(), []

        def reader() -> None:
            while not stop.is_set():
                q0 = time.perf_counter()
                with storage.lookup() as conn:
                    conn.exec_driver_sql("SELECT seq FROM events WHERE org_id = %s ORDER BY seq DESC LIMIT 1",
                                         (small.id,)).all()
                waits.append(time.perf_counter() - q0)

        thread = threading.Thread(target=reader)
        thread.start()
        t0 = time.perf_counter()
        done = drop_expired(storage, "events_2027_01", {r.org_id: r.last_seq for r in month})
        drop_s = time.perf_counter() - t0
        stop.set()
        thread.join()
        assert done is not None, "not dropped"
        print(f"plan {plan_s:.2f} s, anchors {anchor_s:.2f} s, drop transaction {drop_s:.2f} s "
              f"({sum(r.count for r in month):,} rows); a reader beside it waited at most {max(waits):.3f} s "
              f"(median {statistics.median(waits) * 1000:.2f} ms, {len(waits):,} queries); load {load}")

        # The same number of rows purged row by row, for scale (a new month, the same organization).
        feb = datetime(2027, 2, 2, tzinfo=UTC)
        _seed(storage, big.id, events, feb)
        while rollup.roll_batch(storage, big.id):
            pass
        load = os.getloadavg()
        t0 = time.perf_counter()
        result = purge_org(storage, big.id, format_timestamp(datetime(2027, 3, 1, tzinfo=UTC)), batch=PURGE_BATCH)
        purge_s = time.perf_counter() - t0
        print(f"row purge of {result.count:,} rows: {purge_s:.2f} s in {PURGE_BATCH:,}-row transactions "
              f"(each holding the organization's head lock); load {load}")
    finally:
        storage.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    run(args.url, args.events)


if __name__ == "__main__":
    main()
