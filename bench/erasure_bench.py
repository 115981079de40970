"""Erasure benchmark (issue #12): erase one person's K events in an organization of N, SQLite and PostgreSQL.

Seeds a fresh database through the service's own batch path (`record_events`, 5,000 events a batch) with N
events of 1,000 people plus one person whose K events are spread evenly through the log, and one event in
10,000 of others whose url names the person (erased as mentions), fills the search index as the server's
indexer would, then times `erase_person` for that person (wall and this process's CPU). Beside it, in the same
run and on the same database, the database's own limit: the same rows rewritten to the erased form by one
set-based UPDATE of another person's K events with the append-only trigger dropped (the bench database is
thrown away afterwards).

    .venv/bin/python bench/erasure_bench.py --events 1000000 --person-events 10000
    .venv/bin/python bench/erasure_bench.py --database-url postgresql://postgres@127.0.0.1:5432/test

Target: K = 10,000 of N = 1,000,000 erased in <= 10 s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
import sqlalchemy as sa

from auditkeep.erasure import erase_person
from auditkeep.ingest.selfaudit import Origin
from auditkeep.ingest.service import record_events
from auditkeep.ingest.validation import parse_events
from auditkeep.storage import erasure as store
from auditkeep.storage import identity, open_storage, search

BATCH = 5000
MENTION_EVERY = 10_000  # 100 events per 1,000,000 mention the person in their url
ERASE_SQL = """UPDATE events SET client_ip = '[erased]', url = '[erased]', log_entry = NULL, payload = NULL,
    referer = NULL, user_agent = NULL, user_email = NULL, user_id = NULL, client_ip_key = NULL,
    personal_salt = NULL, personal_commitment = '{zeros}' WHERE org_id = {org} AND user_email = '{email}'"""


@contextlib.contextmanager
def fresh_database(url: str | None, tmp: Path) -> Iterator[str]:
    """A new empty database: a SQLite file under `tmp`, or a new PostgreSQL database beside `url`'s."""
    if url is None or url.startswith("sqlite"):
        yield f"sqlite:///{tmp / 'erasure-bench.db'}"
        return
    name = f"auditkeep_bench_{secrets.token_hex(4)}"
    admin = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield sa.make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def event(i: int, who: int, email: str) -> dict[str, Any]:
    return {"action": f"document.{('read', 'update', 'delete')[i % 3]}", "client_ip": f"10.{who % 250}.{i % 250}.1",
            "url": f"https://app.example.com/doc/{i}?by={email}", "object_type": "document", "object_id": i,
            "user_email": email, "user_id": who, "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
            "payload": {"n": i, "field": "title"}, "log_entry": f"{email} updated document {i}",
            "timestamp": datetime.fromtimestamp(1_700_000_000 + i, UTC).isoformat().replace("+00:00", "Z")}


def seed(url: str, n: int, k: int) -> tuple[int, float]:
    """N events, K of them `target@…` and K of them `ceiling@…` (each every N/K-th), the rest 1,000 others."""
    storage = open_storage(url)
    with storage.write() as conn:
        org = identity.create_org(conn, "bench")
    step = n // k
    started = time.perf_counter()
    for first in range(0, n, BATCH):
        body = []
        for i in range(first, min(first + BATCH, n)):
            if i % step == 0:
                who, email = 10**6, "target@erase.example"
            elif i % step == step // 2:
                who, email = 10**6 + 1, "ceiling@erase.example"
            else:
                who, email = i % 1000, f"user{i % 1000}@example.com"
            body.append(event(i, who, email))
            if i % MENTION_EVERY == 1:  # another user's event whose url names the person (an admin's search)
                body[-1]["url"] = "https://app.example.com/admin/users?user_email=target%40erase.example"
        record_events(storage, org.id, parse_events(orjson.dumps(body), datetime.now(UTC)))
    seconds = time.perf_counter() - started
    while search.index_batch(storage, org.id, batch=20_000):  # as the server's indexer would have by now
        pass
    if storage.dialect == "postgresql":
        with storage.write() as conn:
            conn.exec_driver_sql("ANALYZE")
    storage.dispose()
    return org.id, seconds


PHASES = ((store, "person_rows"), (store, "mention_rows"), (store, "overwrite"), (search, "reindex"),
          (search, "merge_all"), (store, "scrub_after"))


def timing_phases(out: dict[str, Any]) -> None:
    """Wrap the erasure's steps so each one's wall and CPU seconds land in `out` (bench only)."""
    for module, name in PHASES:
        real = getattr(module, name)

        def timed(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return _real(*args, **kwargs)
            finally:
                out[_name] = (round(time.perf_counter() - wall, 2), round(time.process_time() - cpu, 2))

        setattr(module, name, timed)


def measure(url: str, org_id: int) -> dict[str, Any]:
    storage = open_storage(url)
    phases: dict[str, Any] = {}
    timing_phases(phases)
    cpu, started = time.process_time(), time.perf_counter()
    done = erase_person(storage, org_id, user_email="TARGET@erase.example", reason="bench",
                        origin=Origin.cli(["bench"]))
    out: dict[str, Any] = {"events": done.events, "mentions": done.mentions, "wall": time.perf_counter() - started,
                           "cpu": time.process_time() - cpu, "phases_wall_cpu_s": phases}
    with storage.write() as conn:  # the database alone: one set-based UPDATE of K rows, no trigger, no checks
        if storage.dialect == "sqlite":
            conn.exec_driver_sql("DROP TRIGGER events_no_update")
        else:
            conn.exec_driver_sql("ALTER TABLE events DISABLE TRIGGER USER")
    with storage.write() as conn:
        started, cpu = time.perf_counter(), time.process_time()
        sql = ERASE_SQL.format(org=org_id, email="ceiling@erase.example", zeros="0" * 64)
        rows = conn.exec_driver_sql(sql).rowcount
        out["database_alone"] = time.perf_counter() - started
        out["database_alone_cpu"] = time.process_time() - cpu  # SQLite's work is in this process; PG's is not
        out["database_rows"] = rows
    storage.dispose()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--person-events", type=int, default=10_000)
    p.add_argument("--database-url", default=None, help="PostgreSQL server to create a fresh database on")
    args = p.parse_args()
    with (tempfile.TemporaryDirectory(prefix="erasure-bench-") as tmp,
          fresh_database(args.database_url, Path(tmp)) as url):
        org_id, seeding = seed(url, args.events, args.person_events)
        load_before = os.getloadavg()[0]
        r = measure(url, org_id)
        print(orjson.dumps({"backend": url.split(":")[0], "events": args.events, "person_events": r["events"],
                            "mentions": r["mentions"],
                            "seed_s": round(seeding, 1), "erase_wall_s": round(r["wall"], 2),
                            "erase_cpu_s": round(r["cpu"], 2), "database_alone_s": round(r["database_alone"], 2),
                            "database_alone_cpu_s": round(r["database_alone_cpu"], 2),
                            "phases_wall_cpu_s": r["phases_wall_cpu_s"],
                            "database_rows": r["database_rows"], "load_1min": [load_before, os.getloadavg()[0]]},
                           option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
