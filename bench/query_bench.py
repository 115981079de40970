"""Queries and exports over a large log (issue #4): filtered `limit=100` queries, NDJSON vs JSON export.

    .venv/bin/python bench/query_bench.py seed  --url sqlite:////tmp/akbench/q.db --events 10000000
    .venv/bin/python bench/query_bench.py seed  --url postgresql://postgres@127.0.0.1:5432/akbench
    .venv/bin/python bench/query_bench.py query --url sqlite:////tmp/akbench/q.db
    .venv/bin/python bench/query_bench.py export --url sqlite:////tmp/akbench/q.db
    .venv/bin/python bench/query_bench.py ingest-cost --url sqlite:////tmp/akbench/cost.db --events 1000000

How the log is seeded (`seed`): rows are generated in Python from a fixed random seed (`EventMaker`:
24 actions with skewed weights, 2,000 users and 5,000 addresses with Zipf-like skew, 100,000 objects,
3% failures, 0.5% support staff; timestamps through the past year, 1% back-dated by up to 30 days) and
bulk-loaded straight into `events` (SQLite: executemany in 50,000-row transactions with synchronous=OFF;
PostgreSQL: COPY into monthly partitions), with migration 0002's filter indexes dropped during the load
and built afterwards, as one would restore a dump. Hashes are placeholders (the chain of a bench database
does not verify); everything a query touches is real. 10,000,000 events take minutes, not hours.
`ingest-cost` instead stores events through the ingest service (`record_events`: seq, canonical form,
chain hash, Merkle frontier, every index) into fresh databases with and without the filter indexes.

How queries are timed: in-process, through the real app (FastAPI + TestClient transport, auth, the
self-audit `audit_logs.read` record, committed before the query and on disk before the answer, planning,
streaming): the time from request to the last body byte.
Each query shape runs against many values drawn from the seeded distribution (common and rare ones);
p50/p99 per shape and over all. `ingest-cost` stores the same events with and without the filter
indexes of migration 0002 to show what they cost at ingest.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from auditkeep.errors import NotFoundError
from auditkeep.ingest.service import record_events
from auditkeep.ingest.validation import NewEvent
from auditkeep.schemas.audit_logs import LOG_FIELDS
from auditkeep.settings import Settings
from auditkeep.storage import Storage, identity, open_storage
from auditkeep.storage.addresses import ip_key
from auditkeep.storage.types import format_timestamp

BATCH = 5000
ORG = "bench"
ACTIONS: list[tuple[str, str | None, float]] = [
    # (action, object_type, weight)
    ("query.run", "query", 30), ("dashboard.view", "dashboard", 20), ("datasource.read", "datasource", 12),
    ("user.login", "user", 8), ("user.logout", "user", 6), ("audit_logs.read", "audit_log", 5),
    ("datasource.update", "datasource", 3), ("dashboard.update", "dashboard", 3), ("monitor.run", "monitor", 3),
    ("datasource.create", "datasource", 1), ("datasource.delete", "datasource", 0.3),
    ("dashboard.create", "dashboard", 1), ("dashboard.delete", "dashboard", 0.2),
    ("monitor.create", "monitor", 0.5), ("monitor.delete", "monitor", 0.1),
    ("api_key.create", "api_key", 0.2), ("api_key.revoke", "api_key", 0.1), ("user.create", "user", 0.1),
    ("user.role_change", "user", 0.05), ("sso.config_change", "sso_config", 0.01),
    ("service_account.create", "service_account", 0.02), ("request.denied", None, 0.5),
    ("export.download", "export", 0.4), ("integration.sync", "integration", 4),
]
SOURCES = [("api", 60), ("web", 35), ("cli", 5)]
METHODS = [("GET", 60), ("POST", 25), ("PUT", 5), ("DELETE", 5), ("CLI", 5)]
USERS = 2000
OBJECTS = 100_000
ADDRESSES = 5000


class EventMaker:
    """Deterministic, realistic-looking events (a Zipf-like skew over users and addresses), fast enough
    to generate ten million in a few minutes."""

    def __init__(self, total: int, seed: int = 4) -> None:
        self.rng = random.Random(seed)
        self.total = total
        self.end = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
        self.start = self.end - timedelta(days=365)
        self.step_us = 365 * 86400 * 1_000_000 // max(total, 1)
        self.actions = [(a, t) for a, t, _ in ACTIONS]
        self.action_weights = [w for _, _, w in ACTIONS]
        rng = self.rng
        self.addresses = [
            f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}" if i % 10 else
            f"2001:db8:{rng.randrange(65536):x}::{rng.randrange(1, 65536):x}" for i in range(ADDRESSES)
        ]
        self.ip_keys = {a: ip_key(a) for a in self.addresses}
        self.user_weights = [1 / (i + 1) ** 0.8 for i in range(USERS)]
        self.ip_weights = [1 / (i + 1) ** 0.8 for i in range(ADDRESSES)]
        self.n = 0

    def logs(self, size: int) -> list[dict[str, Any]]:
        """The next `size` events as API logs (17 fields)."""
        rng = self.rng
        picks = rng.choices(self.actions, self.action_weights, k=size)
        users = rng.choices(range(USERS), self.user_weights, k=size)
        ips = rng.choices(self.addresses, self.ip_weights, k=size)
        sources = rng.choices([s for s, _ in SOURCES], [w for _, w in SOURCES], k=size)
        methods = rng.choices([m for m, _ in METHODS], [w for _, w in METHODS], k=size)
        base = self.start
        out = []
        for i in range(size):
            n = self.n + i
            offset = n * self.step_us
            if rng.random() < 0.01:
                offset = max(0, offset - rng.randrange(30 * 86400 * 1_000_000))
            action, object_type = picks[i]
            object_id = rng.randrange(1, OBJECTS) if object_type else None
            status = "failure" if rng.random() < 0.03 else "success"
            email = f"user{users[i]}@corp.example"
            h = f"{rng.getrandbits(128):032x}"
            web = sources[i] == "web"
            out.append({
                "action": action,
                "client_ip": ips[i],
                "event_uuid": f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}",
                "is_support_user": (rng.random() < 0.005) if n % 5 else None,
                "log_entry": f"{email} {action} {object_type or ''} {object_id or ''} ({status})",
                "object_id": object_id,
                "object_type": object_type,
                "payload": {"n": n, "region": ("eu", "us", "ap")[n % 3]} if n % 3 else None,
                "referer": "https://app.example.com/" if web else None,
                "request_type": methods[i],
                "source": sources[i],
                "status": status,
                "timestamp": format_timestamp(base + timedelta(microseconds=offset)),
                "url": f"https://app.example.com/api/v1/{object_type or 'x'}s/{object_id or 0}",
                "user_agent": "Mozilla/5.0" if web else "python-httpx/0.27",
                "user_email": email,
                "user_id": 10_000 + users[i],
            })
        self.n += size
        return out

    def batch(self, size: int) -> list[NewEvent]:
        """The next `size` events as validated ingest input."""
        return [NewEvent(log, None if log["payload"] is None else orjson.dumps(log["payload"]).decode(),
                         frozenset(LOG_FIELDS), uuid_given=True) for log in self.logs(size)]

    def rows(self, org_id: int, size: int, *, postgres: bool) -> list[tuple[Any, ...]]:
        """The next `size` events as rows in the backends' insert column order (placeholder hashes)."""
        rows = []
        seq = self.n
        for log in self.logs(size):
            seq += 1
            ts: Any = log["timestamp"]
            if postgres:
                ts = datetime.fromisoformat(ts)
            payload = None if log["payload"] is None else orjson.dumps(log["payload"]).decode()
            rows.append((org_id, seq, log["event_uuid"], ts, ts, log["action"], log["client_ip"],
                         log["is_support_user"], log["log_entry"], log["object_id"], log["object_type"], payload,
                         log["referer"], log["request_type"], log["source"], log["status"], log["url"],
                         log["user_agent"], log["user_email"], log["user_id"], _HASH, _HASH,
                         self.ip_keys[log["client_ip"]]))
        return rows


_HASH = "0" * 64
_COLUMNS = ("org_id", "seq", "event_uuid", "timestamp", "received_at", "action", "client_ip", "is_support_user",
            "log_entry", "object_id", "object_type", "payload", "referer", "request_type", "source", "status", "url",
            "user_agent", "user_email", "user_id", "prev_hash", "hash", "client_ip_key")
_COLUMN_LIST = ", ".join(f'"{c}"' if c == "timestamp" else c for c in _COLUMNS)


def _filter_indexes() -> Any:
    import importlib

    return importlib.import_module("auditkeep.storage.migrations.versions.0002_query_indexes").FILTER_INDEXES


def _create_filter_indexes(storage: Storage) -> None:
    with storage.write() as conn:
        for name, column, partial in _filter_indexes():
            col = 'action COLLATE "C"' if column == "action" and storage.dialect == "postgresql" else column
            cols = f'org_id, {col}, "timestamp", seq' if col else 'org_id, "timestamp", seq'
            where = f" WHERE {partial[storage.dialect]}" if partial else ""
            conn.exec_driver_sql(f"CREATE INDEX {name} ON events ({cols}){where}")


def _drop_filter_indexes(storage: Storage) -> None:
    with storage.write() as conn:
        for name, _column, _partial in _filter_indexes():
            conn.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")


def _storage(url: str) -> Storage:
    return open_storage(url, settings=Settings(database_url=url, log_level="WARNING",
                                               signing_key_path=Path("/tmp/akbench/signing-key.pem")))


def _org(storage: Storage) -> tuple[int, str]:
    from auditkeep.auth.principals import Role

    with storage.write() as conn:
        try:
            org = identity.get_org(conn, ORG)
        except NotFoundError:
            org = identity.create_org(conn, ORG)
        try:
            user = identity.get_user(conn, org, "bench@bench.example")
        except NotFoundError:
            user = identity.create_user(conn, org, "bench@bench.example", Role.ADMIN)
        for old in [k for k in identity.list_keys(conn, org) if k.revoked_at is None]:
            identity.revoke_key(conn, org, f"#{old.id}")
        key, _ = identity.create_key(conn, user)
    return org.id, key


def seed_through_ingest(storage: Storage, total: int) -> tuple[float, float]:
    """Store `total` events in org 'bench' through record_events; events per second of wall time and of
    this thread's CPU time spent in it (SQLite works in the calling thread)."""
    org_id, _ = _org(storage)
    maker = EventMaker(total)
    spent = cpu = 0.0  # in record_events only (generating the events is not ingest)
    done = 0
    while done < total:
        size = min(BATCH, total - done)
        batch = maker.batch(size)
        t0 = time.perf_counter()
        c0 = time.thread_time()
        record_events(storage, org_id, batch)
        spent += time.perf_counter() - t0
        cpu += time.thread_time() - c0
        done += size
    return total / spent, total / cpu


def bulk_seed(storage: Storage, total: int) -> None:
    """Bulk-load `total` events into a fresh org 'bench' (see the module docstring)."""
    org_id, _ = _org(storage)
    postgres = storage.dialect == "postgresql"
    maker = EventMaker(total)
    if postgres:
        from auditkeep.storage.postgres import ensure_partitions

        with storage.write() as conn:
            month = maker.start
            while month <= maker.end + timedelta(days=31):
                ensure_partitions(conn, now=month)
                month += timedelta(days=28)
    t0 = time.perf_counter()
    _drop_filter_indexes(storage)
    raw = storage.engine.raw_connection()
    try:
        cur = raw.cursor()
        if not postgres:
            cur.execute("PRAGMA synchronous = OFF")
        done = 0
        chunk = 50_000
        while done < total:
            rows = maker.rows(org_id, min(chunk, total - done), postgres=postgres)
            if postgres:
                with cur.copy(f"COPY events ({_COLUMN_LIST}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                cur.execute("BEGIN")
                cur.executemany(f"INSERT INTO events ({_COLUMN_LIST}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                                rows)
                cur.execute("COMMIT")
            if postgres:
                raw.commit()
            done += len(rows)
            if done % 1_000_000 == 0:
                print(f"  {done:,} rows, {done / (time.perf_counter() - t0):,.0f}/s", file=sys.stderr, flush=True)
        # A head that later appends (the self-audit of each read) can extend: placeholder hashes.
        frontier = ",".join([_HASH] * total.bit_count())
        cur.execute("UPDATE chain_heads SET seq = %s, merkle_frontier = %s WHERE org_id = %s" if postgres else
                    "UPDATE chain_heads SET seq = ?, merkle_frontier = ? WHERE org_id = ?", (total, frontier, org_id))
        raw.commit()
    finally:
        raw.close()
    loaded = time.perf_counter() - t0
    print(f"loaded {total:,} rows in {loaded:.0f} s; building the filter indexes", file=sys.stderr, flush=True)
    _create_filter_indexes(storage)
    print(f"indexes built in {time.perf_counter() - t0 - loaded:.0f} s", file=sys.stderr, flush=True)


def analyze(storage: Storage) -> None:
    """Statistics for the planner (PostgreSQL: what autovacuum would do after a bulk load)."""
    if storage.dialect == "postgresql":
        with storage.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE events")


def query_shapes(rng: random.Random) -> Iterator[tuple[str, dict[str, Any]]]:
    """(shape, params) pairs drawn from the seeded distribution; rare and common values alike."""
    maker = EventMaker(1)
    actions = [a for a, _ in maker.actions]
    types = sorted({t for _, t in maker.actions if t})
    while True:
        yield "none", {}
        yield "action", {"action": rng.choice(actions)}
        yield "action prefix", {"action": rng.choice(["api_key.*", "datasource.*", "user.*", "sso.*", "monitor.*"])}
        user = rng.randrange(USERS)
        yield "user_email", {"user_email": f"user{user}@corp.example"}
        yield "user_id", {"user_id": 10_000 + rng.randrange(USERS)}
        yield "object_type", {"object_type": rng.choice(types)}
        yield "object", {"object_type": rng.choice(types), "object_id": rng.randrange(1, OBJECTS)}
        yield "source", {"source": rng.choice(["api", "web", "cli"])}
        yield "status", {"status": rng.choice(["success", "failure"])}
        yield "request_type", {"request_type": rng.choice(["GET", "POST", "PUT", "DELETE", "CLI"])}
        yield "is_support_user", {"is_support_user": rng.choice(["true", "false"])}
        yield "client_ip", {"client_ip": rng.choice(maker.addresses)}
        yield "client_ip /16", {"client_ip": f"10.{rng.randrange(256)}.0.0/16"}
        yield "q", {"q": rng.choice(["failure", "delete", "user1@", "sso", "dashboards/42"])}
        yield "combined", {"user_email": f"user{user}@corp.example", "status": "failure"}
        yield "combined", {"action": "datasource.*", "source": "web", "is_support_user": "true"}
        yield "combined", {"source": "api", "request_type": "DELETE", "order": "desc"}
        day = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=rng.randrange(365))
        yield "range+filter", {"start_date": format_timestamp(day),
                               "end_date": format_timestamp(day + timedelta(days=7)),
                               "action": rng.choice(actions)}


_FILTER_NAMES = ("action", "user_email", "user_id", "object_type", "object_id", "source", "status", "request_type",
                 "is_support_user", "client_ip", "q")
_PARAM_DEFAULTS: dict[str, Any] = dict.fromkeys((
    *_FILTER_NAMES, "order", "limit", "cursor", "after_seq", "include", "format", "accept", "accept_encoding",
))


def _direct(storage: Storage, org_id: int, params: dict[str, Any]) -> float:
    """The same query below HTTP: parse, plan, stream the JSON body (no auth, no self-audit write)."""
    from auditkeep.api.log_responses import stream_json
    from auditkeep.api.query_params import filter_params, log_params
    from auditkeep.api.timerange import parse_range
    from auditkeep.storage.pages import plan_page

    t0 = time.perf_counter()
    args = {k: v for k, v in params.items() if k not in {"start_date", "end_date"}}
    if "is_support_user" in args:
        args["is_support_user"] = args["is_support_user"] == "true"
    args = {**_PARAM_DEFAULTS, **args, "limit": 100}
    filtered = filter_params(**{name: args.pop(name) for name in _FILTER_NAMES})
    parsed = log_params(filtered=filtered, **args)
    start = datetime.fromisoformat(params["start_date"]) if "start_date" in params else None
    end = datetime.fromisoformat(params["end_date"]) if "end_date" in params else None
    lo, hi = parse_range(b"", start, end)
    page = plan_page(storage, parsed.query(org_id, lo, hi), prefetch_json=True)
    for _ in stream_json(storage, page):
        pass
    return (time.perf_counter() - t0) * 1000


def run_queries(storage: Storage, rounds: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(through the app, below HTTP) timings in ms per query shape."""
    from fastapi.testclient import TestClient

    from auditkeep.api.app import create_app

    org_id, key = _org(storage)
    app = create_app(storage.settings, storage=storage)
    timings: dict[str, list[float]] = {}
    direct: dict[str, list[float]] = {}
    rng = random.Random(7)
    shapes = query_shapes(rng)
    with TestClient(app) as client:
        headers = {"Authorization": f"Key {key}", "Accept-Encoding": "identity"}
        for _ in range(40):  # warm caches
            name, params = next(shapes)
            client.get("/api/v1/audit_logs", params={**params, "limit": 100}, headers=headers)
        per_round = 19
        for i in range(rounds * per_round):
            name, params = next(shapes)
            # The two timings of one request take turns going first: the first reads the pages cold and the
            # second finds them cached (app first: 'app' all-but-q p99 53 ms, 'query' 12; query first: 18
            # and 15, SQLite at load ~2.3).
            if i % 2:
                direct.setdefault(name, []).append(_direct(storage, org_id, params))
            t0 = time.perf_counter()
            r = client.get("/api/v1/audit_logs", params={**params, "limit": 100}, headers=headers)
            elapsed = time.perf_counter() - t0
            assert r.status_code == 200, r.text
            timings.setdefault(name, []).append(elapsed * 1000)
            if not i % 2:
                direct.setdefault(name, []).append(_direct(storage, org_id, params))
    return timings, direct


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def report_queries(timings: dict[str, list[float]], direct: dict[str, list[float]]) -> None:
    print("limit=100; ms; 'app' = through the app in-process (auth, self-audit record, planning, body);"
          " 'query' = below HTTP (planning and body only)")
    print(f"{'shape':<18} {'n':>5} {'app p50':>8} {'app p99':>8} {'query p50':>10} {'query p99':>10}")
    for name, values in timings.items():
        d = direct[name]
        print(f"{name:<18} {len(values):>5} {_pct(values, 50):>8.2f} {_pct(values, 99):>8.2f} "
              f"{_pct(d, 50):>10.2f} {_pct(d, 99):>10.2f}")
    everything = [v for vs in timings.values() for v in vs]
    every_direct = [v for vs in direct.values() for v in vs]
    print(f"{'all':<18} {len(everything):>5} {_pct(everything, 50):>8.2f} {_pct(everything, 99):>8.2f} "
          f"{_pct(every_direct, 50):>10.2f} {_pct(every_direct, 99):>10.2f}")
    no_q = [v for name, vs in timings.items() if name != "q" for v in vs]
    no_q_direct = [v for name, vs in direct.items() if name != "q" for v in vs]
    print(f"{'all but q':<18} {len(no_q):>5} {_pct(no_q, 50):>8.2f} {_pct(no_q, 99):>8.2f} "
          f"{_pct(no_q_direct, 50):>10.2f} {_pct(no_q_direct, 99):>10.2f}")


def run_export(storage: Storage, events: int) -> None:
    """One GET of about `events` events (the oldest: an end_date cut) per format, plain and gzip."""
    from fastapi.testclient import TestClient

    from auditkeep.api.app import create_app

    org_id, key = _org(storage)
    app = create_app(storage.settings, storage=storage)
    with storage.read() as conn:
        total = conn.exec_driver_sql("SELECT seq FROM chain_heads WHERE org_id = ?".replace(
            "?", "%s" if storage.dialect == "postgresql" else "?"), (org_id,)).scalar_one()
    maker = EventMaker(1)
    end = maker.start + timedelta(days=365) * min(1.0, events / max(total, 1))
    params = {"end_date": format_timestamp(end)}
    with storage.read() as conn:
        count = conn.exec_driver_sql(
            'SELECT count(*) FROM events WHERE org_id = ? AND "timestamp" < ?'.replace(
                "?", "%s" if storage.dialect == "postgresql" else "?"),
            (org_id, storage.backend.ts_param(params["end_date"]))).scalar_one()
    print(f"export of {count:,} events (in-process, body read to the end; best of 2)")
    results: dict[tuple[str, str], tuple[float, int]] = {}
    with TestClient(app) as client:
        for _ in range(2):
            for encoding in ("identity", "gzip"):
                for fmt in ("json", "ndjson", "csv"):
                    headers = {"Authorization": f"Key {key}", "Accept-Encoding": encoding}
                    t0 = time.perf_counter()
                    size = 0
                    with client.stream("GET", "/api/v1/audit_logs", params={**params, "format": fmt},
                                       headers=headers) as r:
                        for chunk in r.iter_raw():
                            size += len(chunk)
                    elapsed = time.perf_counter() - t0
                    best = results.get((fmt, encoding))
                    if best is None or elapsed < best[0]:
                        results[(fmt, encoding)] = (elapsed, size)
    for (fmt, encoding), (elapsed, size) in results.items():
        print(f"  {fmt:<7} {encoding:<9} {size / 1e6:8.1f} MB {elapsed:6.2f} s  {count / elapsed:>9,.0f} events/s")


INDEX_SETS = {
    "none": (),
    "high-cardinality": ("user_email", "user_id", "object_id", "client_ip_key"),
    "low-cardinality": ("action", "object_type", "source", "status", "request_type", "is_support_user"),
    "all ten": ("user_email", "user_id", "object_id", "client_ip_key", "action", "object_type", "source",
                "status", "request_type", "is_support_user"),
    "migration 0002": None,  # exactly what the migration creates
}


def ingest_cost(url: str, total: int, sets: list[str], rounds: int = 2, cache_mb: int = 0) -> None:
    """Ingest rate through record_events with sets of (org_id, column, timestamp, seq) indexes, in
    alternating fresh databases (so machine noise hits every set alike). Process CPU time is reported
    next to wall time: on a shared machine it is the steadier measure. `cache_mb` sets SQLite's page cache
    (the service's default is SQLite's, 2 MB)."""
    results: dict[str, list[tuple[float, float]]] = {}
    for _ in range(rounds):
        for name in sets:
            target = f"{url}-{name.replace(' ', '_').replace(':', '_').replace('+', '_')}"
            if target.startswith("sqlite:///"):
                for suffix in ("", "-wal", "-shm"):
                    Path(target.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
            storage = _storage(target)
            # A set is a name from INDEX_SETS or "cols:a+b" for those columns.
            columns = tuple(name[5:].split("+")) if name.startswith("cols:") else INDEX_SETS[name]
            if columns is not None:
                _drop_filter_indexes(storage)
                with storage.write() as conn:
                    for column in columns:
                        conn.exec_driver_sql(f'CREATE INDEX ix_bench_{column} ON events (org_id, {column}, '
                                             '"timestamp", seq)')
            if cache_mb and storage.dialect == "sqlite":
                from sqlalchemy import event

                event.listen(storage.engine, "connect",
                             lambda dbapi, _r: dbapi.execute(f"PRAGMA cache_size = -{cache_mb * 1024}"))
                storage.engine.dispose()
            rate, cpu_rate = seed_through_ingest(storage, total)
            results.setdefault(name, []).append((rate, cpu_rate))
            print(f"{name:<18} {rate:>9,.0f} events/s wall  {cpu_rate:>9,.0f} events/CPU-s", flush=True)
            storage.dispose()
            if target.startswith("sqlite:///"):
                for suffix in ("", "-wal", "-shm"):
                    Path(target.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
    print(f"best of {rounds} ({total:,} events each):")
    for name, values in results.items():
        print(f"  {name:<18} {max(v[0] for v in values):>9,.0f} events/s wall  "
              f"{max(v[1] for v in values):>9,.0f} events/CPU-s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["seed", "query", "export", "ingest-cost"])
    parser.add_argument("--url", required=True, help="a dedicated bench database, e.g. sqlite:////tmp/akbench/q.db")
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--rounds", type=int, default=100, help="query rounds (19 queries each)")
    parser.add_argument("--cache-mb", type=int, default=0, help="ingest-cost: SQLite page cache size")
    parser.add_argument("--sets", default="none,migration 0002", help=f"ingest-cost: of {', '.join(INDEX_SETS)}")
    args = parser.parse_args()
    os.makedirs("/tmp/akbench", exist_ok=True)
    if args.mode == "ingest-cost":
        ingest_cost(args.url, args.events, [x.strip() for x in args.sets.split(",")], cache_mb=args.cache_mb)
        return
    storage = _storage(args.url)
    if args.mode == "seed":
        t0 = time.perf_counter()
        bulk_seed(storage, args.events)
        analyze(storage)
        print(f"seeded {args.events:,} events in {time.perf_counter() - t0:.0f} s")
    elif args.mode == "query":
        before = os.getloadavg()
        timings = run_queries(storage, args.rounds)
        print("load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}; after: {:.2f} {:.2f} {:.2f}".format(
            *before, *os.getloadavg()))
        report_queries(*timings)
    else:
        run_export(storage, args.events)
    storage.dispose()


if __name__ == "__main__":
    main()
