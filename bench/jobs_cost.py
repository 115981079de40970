"""What each background job costs an event on PostgreSQL, the job alone on a log it catches up with (issue #14).

A database is seeded once through `record_events` (bench/ingest_export.py's events, jobs off) and kept as
a template. Each round, for each job (`search`, `rollup`, `selfwatch`) and each code variant (the tree's
src, and with `--baseline SRC` an older src directory, e.g. from `git archive <commit> src`), a copy of the
template is made (CREATE DATABASE ... TEMPLATE) and a child process of that code catches the job up on
every event: the child's CPU (µs an event, only around `catch_up`), the database backends' CPU serving it
(/proc, the backends connected to the copy; autovacuum not counted) and the wall time. Variants and jobs
are interleaved within each round; medians over the rounds. With `--statements` (a server that preloads
pg_stat_statements) the child also prints the job's statements by total time.

    .venv/bin/python bench/jobs_cost.py --database-url postgresql://postgres@127.0.0.1:5432/postgres \
        --n 100000 --runs 3 --baseline /tmp/ak-base/src
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

JOBS = ("search", "rollup", "selfwatch")


def _proc_cpu(pid: int) -> float:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def child(url: str, job: str, statements: bool) -> None:
    """Catch `job` up on the database at `url`; print what it cost as JSON."""
    import psycopg

    from auditkeep.settings import Settings
    from auditkeep.storage import open_storage

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    monitor = psycopg.connect(dsn, autocommit=True)
    own = monitor.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]

    def backends() -> dict[int, float]:
        rows = monitor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                               "AND pid <> %s", (own,)).fetchall()
        return {r[0]: _proc_cpu(r[0]) for r in rows}

    settings = Settings(database_url=url)
    storage = open_storage(url, settings=settings, migrate=False)
    if job == "search":
        from auditkeep.search.indexer import Indexer
        runner: Any = Indexer(storage, settings)
    elif job == "rollup":
        from auditkeep.rollup.roller import Roller
        runner = Roller(storage, settings)
    else:
        from auditkeep.selfwatch.watcher import Watcher
        runner = Watcher(storage, settings)
    if statements:
        monitor.execute("SELECT pg_stat_statements_reset()")
    start_db = backends()
    c0, t0 = time.process_time(), time.perf_counter()
    done = runner.catch_up()
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    end_db = backends()
    db = sum(v - start_db.get(p, 0.0) for p, v in end_db.items())
    top: list[Any] = []
    if statements:
        top = [list(r) for r in monitor.execute(
            "SELECT round(total_exec_time::numeric, 1), calls, rows, wal_bytes, "
            "left(regexp_replace(query, '\\s+', ' ', 'g'), 140) FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "ORDER BY total_exec_time DESC LIMIT 8").fetchall()]
    storage.engine.dispose()
    monitor.close()
    print(json.dumps({"events": done, "cpu": cpu, "wall": wall, "db": db, "top": top}, default=str))


def seed(url: str, n: int) -> None:
    """Store `n` events through record_events into org 'bench' of the (migrated) database at `url`."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ingest_export import ORG, make_bodies

    from auditkeep.ingest.service import record_events
    from auditkeep.ingest.validation import parse_events
    from auditkeep.settings import Settings
    from auditkeep.storage import identity, open_storage

    storage = open_storage(url, settings=Settings(database_url=url))
    with storage.write() as conn:
        org = identity.create_org(conn, ORG)
    for body in make_bodies(n, 5000):
        record_events(storage, org.id, parse_events(body, datetime.now(UTC)))
    storage.engine.dispose()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url", required=True)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--jobs", default=",".join(JOBS))
    p.add_argument("--baseline", help="an older src directory to compare with (PYTHONPATH for its children)")
    p.add_argument("--statements", action="store_true", help="print each job's costliest statements")
    p.add_argument("--child", nargs=2, metavar=("URL", "JOB"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(*args.child, statements=args.statements)
        return
    import psycopg
    import sqlalchemy as sa

    base = sa.make_url(args.database_url)
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)

    def url_of(name: str) -> str:
        return base.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)

    here = Path(__file__).resolve()
    variants = {"new": str(here.parent.parent / "src")}
    if args.baseline:
        variants = {"old": str(Path(args.baseline).resolve()), **variants}
    template = f"ak_jobs_seed_{secrets.token_hex(4)}"
    results: dict[str, list[dict[str, Any]]] = {}
    loads: list[float] = []
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {template}")
    keys = Path(tempfile.mkdtemp(prefix="ak-jobs-cost-"))
    try:
        env = {**os.environ, "PYTHONPATH": variants["new"], "AUDITKEEP_LOG_LEVEL": "WARNING",
               "AUDITKEEP_SIGNING_KEY_PATH": str(keys / "signing-key.pem"),
               "AUDITKEEP_SECRETS_KEY_PATH": str(keys / "secrets-key")}
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import sys; sys.argv=['x']; sys.path.insert(0, {str(here.parent)!r}); "
                        f"import jobs_cost; jobs_cost.seed({url_of(template)!r}, {args.n})"], env=env, check=True)
        print(f"seeded {args.n:,} events in {time.perf_counter() - t0:.1f} s", flush=True)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {template} WITH ALLOW_CONNECTIONS false")
        for i in range(args.runs):
            for job in args.jobs.split(","):
                for variant, src in variants.items():
                    name = f"ak_jobs_{secrets.token_hex(4)}"
                    with psycopg.connect(admin, autocommit=True) as conn:
                        conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
                    try:
                        out = subprocess.run(
                            [sys.executable, "-u", str(here), "--database-url", args.database_url,
                             "--child", url_of(name), job, *(["--statements"] if args.statements else [])],
                            env={**env, "PYTHONPATH": src}, check=True, capture_output=True, text=True).stdout
                    finally:
                        with psycopg.connect(admin, autocommit=True) as conn:
                            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                    got = json.loads(out.strip().splitlines()[-1])
                    got["load_1m"] = os.getloadavg()[0]
                    results.setdefault(f"{job}_{variant}", []).append(got)
                    n = max(got["events"], 1)
                    print(f"round {i + 1} {job:9} {variant}: {got['events']:,} events in {got['wall']:.2f} s, "
                          f"process {got['cpu'] / n * 1e6:.1f} + database {got['db'] / n * 1e6:.1f} CPU us/event "
                          f"(load {got['load_1m']:.1f})", flush=True)
                    for row in got["top"]:
                        print(f"      {row}", flush=True)
            loads.append(os.getloadavg()[0])
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {template} WITH (FORCE)")
        shutil.rmtree(keys, ignore_errors=True)
    print(f"\nmedians of {args.runs} rounds, {args.n:,} events, load {min(loads):.1f}-{max(loads):.1f}")
    for key, runs in results.items():
        n = max(runs[0]["events"], 1)
        print(f"  {key:18} process {statistics.median(r['cpu'] for r in runs) / n * 1e6:6.1f}  database "
              f"{statistics.median(r['db'] for r in runs) / n * 1e6:6.1f} CPU us/event, wall "
              f"{statistics.median(r['wall'] for r in runs):.2f} s")


if __name__ == "__main__":
    main()
