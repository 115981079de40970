"""Ingest's idempotency lookup on PostgreSQL while partition statistics lag (storage/events.py, _find_sql).

Makes a scratch database on the given server (dropped at the end), migrates it, gives 7 organizations
300 events each and ANALYZEs, then switches autovacuum off on the events partitions so the statistics
stay as they were: they know nothing of the organization that then ingests `--events` events through
the ingest service (`record_events`, batches of 5,000 with client-made UUIDv7s, so every batch looks its
uuids up), as a new tenant filling a partition at ingest speed does before autovacuum catches up.

Prints each batch's ingest rate, then times the lookup of 500 new uuids in that organization with the
form the code uses now and with the previous one (`LATERAL` with `org_id = ... AND event_uuid = ...`,
kept here for comparison), median of `--repeat`.

    .venv/bin/python bench/uuid_probe_bench.py --url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from auditkeep.ids import new_event_uuid
from auditkeep.ingest.service import record_events
from auditkeep.ingest.validation import parse_events
from auditkeep.settings import Settings
from auditkeep.storage import Storage, identity, open_storage
from auditkeep.storage.events import EventWriter, _select_rows_sql

PREVIOUS_LATERAL = ("FROM unnest(%s::text[]) AS wanted(uuid) CROSS JOIN LATERAL (SELECT * FROM events "
                    "WHERE org_id = %s AND event_uuid = wanted.uuid LIMIT 1) AS events")


def body(n: int, tag: str) -> bytes:
    return b"[" + b",".join(
        b'{"event_uuid": "%s", "client_ip": "10.0.0.1", "url": "https://x/%d", "action": "%s", '
        b'"user_email": "ann@example.com"}' % (new_event_uuid().encode(), i, tag.encode()) for i in range(n)
    ) + b"]"


def time_lookup(storage: Storage, org_id: int, previous: bool, repeat: int) -> float:
    """Median milliseconds to look 500 new uuids up, in the ingest transaction's setting."""
    times = []
    for _ in range(repeat):
        chunk = [str(uuid.uuid4()) for _ in range(500)]
        with storage.write() as conn:
            writer = EventWriter(storage, conn, org_id)
            start = time.perf_counter()
            if previous:
                sql = _select_rows_sql(storage).replace("FROM events", PREVIOUS_LATERAL)
                assert writer._unprepared(sql, (chunk, org_id)) == []
            else:
                assert writer.find(chunk) == {}
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--events", type=int, default=30_000, help="events the new organization ingests")
    p.add_argument("--repeat", type=int, default=15)
    args = p.parse_args()
    admin = sa.create_engine(sa.make_url(args.url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    name = f"uuid_probe_bench_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    url = sa.make_url(args.url).set(database=name).render_as_string(hide_password=False)
    storage = open_storage(url, settings=Settings(database_url=url))
    try:
        orgs = []
        for k in range(8):
            with storage.write() as conn:
                orgs.append(identity.create_org(conn, f"bench-{k}-{secrets.token_hex(3)}"))
        for org in orgs[:7]:
            record_events(storage, org.id, parse_events(body(300, "seed"), datetime.now(UTC)))
        with storage.write() as conn:
            conn.exec_driver_sql("ANALYZE events")
            parts = conn.exec_driver_sql("SELECT inhrelid::regclass::text FROM pg_inherits "
                                         "WHERE inhparent = 'events'::regclass").scalars().all()
            for part in parts:
                conn.exec_driver_sql(f"ALTER TABLE {part} SET (autovacuum_enabled = off)")
        new = orgs[7].id
        rates: list[float] = []
        for i in range(0, args.events, 5000):
            events = parse_events(body(min(5000, args.events - i), f"b{i}"), datetime.now(UTC))
            start = time.perf_counter()
            record_events(storage, new, events)
            rates.append(len(events) / (time.perf_counter() - start))
            print(f"batch at {i:>7,} events: {rates[-1]:>9,.0f} events/s", flush=True)
        result: dict[str, Any] = {
            "ingest_events_per_s_median": round(statistics.median(rates)),
            "lookup_500_ms_now": round(time_lookup(storage, new, False, args.repeat), 2),
            "lookup_500_ms_previous_form": round(time_lookup(storage, new, True, args.repeat), 2),
            "load_average_1m": os.getloadavg()[0],
        }
        print(result)
    finally:
        storage.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


if __name__ == "__main__":
    main()
