"""Evidence bundle benchmark (issue #12): make a bundle of N events with `auditkeep evidence` and verify it
with `auditkeep verify-bundle`, each in its own process, reporting wall time, CPU time (the process and the
workers it waited for, os.wait4) and peak memory: the sum of the resident sets of the process and its
workers, sampled every 20 ms (wait4's ru_maxrss is the largest single process, not the sum).

    .venv/bin/python bench/evidence_bench.py --events 1000000 --runs 3 [--db /tmp/ev.db]
    .venv/bin/python bench/evidence_bench.py --url postgresql+psycopg://postgres@127.0.0.1:5432/DBNAME

Targets: N = 1,000,000 made in <= 30 s and verified in <= 30 s, each in <= 300 MB. The database's own limit
beside it: a bare `SELECT` of the same rows' JSON (what making reads), timed in the same run. The database
is filled once (SQLite: --db, a file; PostgreSQL: --url, an existing empty database) and reused.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

from auditkeep.ingest.service import record_events
from auditkeep.ingest.validation import parse_events
from auditkeep.storage import identity, open_storage

BATCH = 5000


def populate(url: str, n: int) -> None:
    storage = open_storage(url)
    with storage.write() as conn:
        org = identity.create_org(conn, "bench")
    done = 0
    while done < n:
        size = min(BATCH, n - done)
        body = [{"action": f"document.{('read', 'update', 'delete')[i % 3]}", "client_ip": f"10.0.{i % 250}.{i % 200}",
                 "url": f"https://app.example.com/doc/{i}", "object_type": "document", "object_id": i,
                 "user_email": f"user{i % 97}@example.com", "user_id": i % 97, "is_support_user": i % 500 == 0,
                 "status": "failure" if i % 50 == 0 else "success", "payload": {"n": i},
                 "log_entry": f"entry {i}",
                 "timestamp": datetime.fromtimestamp(1_700_000_000 + i, UTC).isoformat().replace("+00:00", "Z")}
                for i in range(done, done + size)]
        record_events(storage, org.id, parse_events(orjson.dumps(body), datetime.now(UTC)))
        done += size
    storage.dispose()


def _tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and its descendants now (0 for any that ended meanwhile)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
    return total


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak MB of the process tree's summed RSS) of a child process."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], _tree_rss(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd} failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    return wall, usage.ru_utime + usage.ru_stime, max(peak[0], usage.ru_maxrss * 1024) / 1e6


def database_limit(url: str) -> float:
    """Seconds for the database alone to produce every event's JSON text (what a bundle's events are read as)."""
    if url.startswith("sqlite"):
        import sqlite3

        from auditkeep.storage.sqlite import SQLiteBackend  # the json_object() expression the server uses

        lite = sqlite3.connect(url.removeprefix("sqlite:///"))
        started = time.perf_counter()
        for _ in lite.execute(f'SELECT {SQLiteBackend().log_json_sql(integrity=True)} FROM events '
                              'ORDER BY "timestamp", seq'):
            pass
        lite.close()
        return time.perf_counter() - started
    import psycopg

    from auditkeep.storage.postgres import PostgresBackend  # the json_build_object() expression the server uses

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        started = time.perf_counter()
        with conn.cursor(name="bench") as cursor:
            cursor.itersize = 2000
            cursor.execute(f'SELECT {PostgresBackend().log_json_sql(integrity=True)} FROM events '
                           'ORDER BY "timestamp", seq')
            for _ in cursor:
                pass
        return time.perf_counter() - started


def _populated(url: str) -> bool:
    storage = open_storage(url)
    try:
        with storage.read() as conn:
            return any(o.name == "bench" for o in identity.list_orgs(conn))
    finally:
        storage.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--db", default="/tmp/evidence-bench/ev.db", help="the SQLite file (without --url)")
    parser.add_argument("--url", default=None, help="a database URL instead of --db (e.g. PostgreSQL)")
    args = parser.parse_args()
    db = Path(args.db)
    db.parent.mkdir(parents=True, exist_ok=True)
    url = args.url or f"sqlite:///{db}"
    env = {**os.environ, "AUDITKEEP_DATABASE_URL": url,
           "AUDITKEEP_SIGNING_KEY_PATH": str(db.parent / "signing-key.pem")}
    if not _populated(url):
        started = time.perf_counter()
        populate(url, args.events)
        print(f"populated {args.events:,} events in {time.perf_counter() - started:.1f} s", flush=True)
    exe = str(Path(sys.executable).with_name("auditkeep"))
    out = db.parent / "bundle.zip"
    make, check, limit, loads = [], [], [], []
    for _ in range(args.runs):
        loads.append(os.getloadavg()[0])
        make.append(timed([exe, "evidence", "--org", "bench", "--output", str(out)], env))
        check.append(timed([exe, "verify-bundle", str(out)], env))
        limit.append(database_limit(url))
        loads.append(os.getloadavg()[0])
        print(f"run: make {make[-1][0]:.1f} s, verify {check[-1][0]:.1f} s, database {limit[-1]:.1f} s, "
              f"load {loads[-2]:.1f} → {loads[-1]:.1f}", flush=True)
    print(f"{url.split(':')[0]}; load average {min(loads):.1f} to {max(loads):.1f}; bundle "
          f"{out.stat().st_size / 1e6:.1f} MB")
    for name, runs in (("make", make), ("verify", check)):
        print(f"{name}: median {statistics.median(w for w, _, _ in runs):.1f} s "
              f"(runs {', '.join(f'{w:.1f}' for w, _, _ in runs)}), CPU {', '.join(f'{c:.1f}' for _, c, _ in runs)} s, "
              f"peak RSS (all processes) {max(r for _, _, r in runs):.0f} MB")
    print(f"database alone (SELECT of the events' JSON): median {statistics.median(limit):.1f} s; "
          f"make / database = {statistics.median(w for w, _, _ in make) / statistics.median(limit):.2f}")


if __name__ == "__main__":
    main()
