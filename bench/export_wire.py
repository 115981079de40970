"""Exports at the wire's speed (issue #14): one GET of N events through httpx, side by side in one run.

Seeds N events into a fresh database through the real server (`auditkeep serve`), starts the
conventional FastAPI + SQLAlchemy ORM implementation (bench/_orm_app.py) on the same database, then in
each round, interleaved, times:

- auditkeep through httpx with its default headers (`Accept-Encoding: gzip, deflate, zstd` with zstandard
  installed: the server answers zstd), the body decoded by httpx as a client reads it;
- auditkeep asked for gzip only, and for identity (no compression);
- the conventional app through httpx with its default headers (GZipMiddleware answers gzip);
- the database's own JSON scan of the same rows in the same order: the service's per-row JSON
  (`row_to_json` / `json_object`) through a cursor fetched 2,000 rows at a time, and on PostgreSQL also
  `COPY (SELECT row_to_json ...) TO STDOUT`.

Reported: medians over the rounds, ratios within each round (medians of those), the servers' CPU per
export, the load average. Results in bench/results/ as JSON.

    .venv/bin/python bench/export_wire.py --n 200000 --rounds 3
    .venv/bin/python bench/export_wire.py --n 200000 --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_export import (
    BENCH,
    RESULTS,
    _free_port,
    _org_id,
    _pg_dsn,
    fresh_database,
    ingest,
    machine,
    make_bodies,
    running_server,
    sqlite_export_ceiling,
    tree_cpu_seconds,
)

from auditkeep.storage.postgres import PostgresBackend

MARKER = b'"event_uuid"'  # one a log


def timed_get(url: str, headers: dict[str, str]) -> dict[str, Any]:
    """GET `url` through a fresh httpx client, decoding as httpx does; count logs as they arrive."""
    events = size = 0
    tail = b""
    start = time.perf_counter()
    with httpx.Client(timeout=900) as http, http.stream("GET", url, headers=headers) as r:
        r.raise_for_status()
        coding = r.headers.get("content-encoding", "identity")
        for chunk in r.iter_bytes():
            size += len(chunk)
            data = tail + chunk
            events += data.count(MARKER)
            tail = data[-(len(MARKER) - 1):]
        wire = r.num_bytes_downloaded
    elapsed = time.perf_counter() - start
    return {"s": elapsed, "events": events, "bytes": size, "wire_bytes": wire, "coding": coding,
            "eps": events / elapsed}


def postgres_scan(url: str, org_id: int) -> float:
    """The service's log JSON, raw, in API order, through a server-side cursor 2,000 rows a fetch (rows/s)."""
    sql = (f"SELECT {PostgresBackend().log_json_sql(integrity=False)} FROM events WHERE org_id = %s "
           'ORDER BY "timestamp", seq')
    with psycopg.connect(_pg_dsn(url)) as conn:
        start = time.perf_counter()
        with conn.transaction(), conn.cursor(name="bench") as cur:
            cur.execute(sql, (org_id,))
            n = 0
            while rows := cur.fetchmany(2000):
                n += len(rows)
        return n / (time.perf_counter() - start)


def postgres_copy(url: str, org_id: int) -> float:
    """`COPY (SELECT row_to_json ...) TO STDOUT` of the same rows in the same order (rows/s)."""
    sql = (f"COPY (SELECT {PostgresBackend().log_json_sql(integrity=False)} FROM events WHERE org_id = {org_id:d} "
           'ORDER BY "timestamp", seq) TO STDOUT')
    with psycopg.connect(_pg_dsn(url)) as conn, conn.cursor() as cur:
        start = time.perf_counter()
        n = 0
        with cur.copy(sql) as copy:
            for block in copy:
                n += bytes(block).count(b"\n")
        return n / (time.perf_counter() - start)


@contextlib.contextmanager
def orm_server(url: str, org_id: int, tmp: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """bench/_orm_app.py under uvicorn, one worker, on the same database."""
    port = _free_port()
    env = {**os.environ, "AUDITKEEP_DATABASE_URL": url, "BENCH_ORG_ID": str(org_id),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(BENCH), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "uvicorn", "_orm_app:create_app", "--factory", "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "warning"]
    with open(tmp / "orm.log", "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError((tmp / "orm.log").read_text()[-2000:])
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the ORM app did not start in 60 s")
            time.sleep(0.1)
        yield proc, base
    finally:
        proc.terminate()
        proc.wait(20)


def measure(pid: int, get: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One GET, with the server process tree's CPU seconds over it."""
    cpu = tree_cpu_seconds(pid)
    result = get()
    result["server_cpu_s"] = tree_cpu_seconds(pid) - cpu
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200_000, help="events to seed and export")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians reported")
    p.add_argument("--workers", type=int, default=1, help="auditkeep serve workers (one GET uses one)")
    p.add_argument("--database-url", default=None, help="sqlite:///… (default: a fresh file) or postgresql://…")
    args = p.parse_args()
    backend = "postgresql" if args.database_url and args.database_url.startswith("postgres") else "sqlite"
    tmp = Path(tempfile.mkdtemp(prefix="auditkeep-wire-"))
    bodies = make_bodies(args.n, 5000)
    rounds: list[dict[str, Any]] = []
    with fresh_database(args.database_url, tmp) as url, running_server(url, args.workers, tmp) as server:
        print(f"seeding {args.n:,} events …", flush=True)
        ingest(server, bodies, 2)
        org_id = _org_id(url)
        auth = {"Authorization": f"Key {server.key}"}
        api = f"{server.base_url}/api/v1/audit_logs"
        with orm_server(url, org_id, tmp) as (orm_proc, orm_base):
            variants: dict[str, Callable[[], dict[str, Any]]] = {
                "auditkeep_httpx_default": lambda: measure(server.proc.pid, lambda: timed_get(api, auth)),
                "auditkeep_gzip": lambda: measure(
                    server.proc.pid, lambda: timed_get(api, {**auth, "Accept-Encoding": "gzip"})),
                "auditkeep_identity": lambda: measure(
                    server.proc.pid, lambda: timed_get(api, {**auth, "Accept-Encoding": "identity"})),
                "orm_httpx_default": lambda: measure(orm_proc.pid, lambda: timed_get(f"{orm_base}/logs", {})),
                "db_json_scan": lambda: {"eps": postgres_scan(url, org_id) if backend == "postgresql"
                                         else sqlite_export_ceiling(url, org_id)},
            }
            if backend == "postgresql":
                variants["db_copy_json"] = lambda: {"eps": postgres_copy(url, org_id)}
            timed_get(api, auth)  # warm the caches once before the first round
            for i in range(args.rounds):
                one: dict[str, Any] = {"load_1m": os.getloadavg()[0]}
                for name, run in variants.items():
                    one[name] = run()
                rounds.append(one)
                print(f"round {i + 1} (load {one['load_1m']:.1f}): " + ", ".join(
                    f"{k} {v['eps']:,.0f}" + (f" [{v['coding']}]" if "coding" in v else "")
                    for k, v in one.items() if isinstance(v, dict)), flush=True)
    names = [k for k in rounds[0] if isinstance(rounds[0][k], dict)]
    medians = {k: statistics.median(r[k]["eps"] for r in rounds) for k in names}
    ratios = {
        "default_vs_orm": statistics.median(r["auditkeep_httpx_default"]["eps"] / r["orm_httpx_default"]["eps"]
                                            for r in rounds),
        "identity_vs_db_scan": statistics.median(r["auditkeep_identity"]["eps"] / r["db_json_scan"]["eps"]
                                                 for r in rounds),
        "default_vs_db_scan": statistics.median(r["auditkeep_httpx_default"]["eps"] / r["db_json_scan"]["eps"]
                                                for r in rounds),
    }
    if backend == "postgresql":
        ratios["identity_vs_db_copy"] = statistics.median(
            r["auditkeep_identity"]["eps"] / r["db_copy_json"]["eps"] for r in rounds)
    print("medians (events/s): " + ", ".join(f"{k} {v:,.0f}" for k, v in medians.items()))
    print("same-round ratios (medians): " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"export-wire-{backend}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps({"n": args.n, "backend": backend, "machine": machine(), "rounds": rounds,
                               "medians_eps": medians, "ratios": ratios}, indent=1))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
