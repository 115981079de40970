"""Evidence bundle benchmark (issue #12): make a bundle of N events with `auditkeep evidence` and verify it
with `auditkeep verify-bundle`, each in its own process, reporting wall time and peak RSS (os.wait4).

    .venv/bin/python bench/evidence_bench.py --events 1000000 --runs 3 [--db /tmp/ev.db]

Targets: N = 1,000,000 made in <= 30 s and verified in <= 30 s, each in <= 300 MB (SQLite). The database's
own limit beside it: a bare `SELECT` of the same rows' JSON (what making reads), timed in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
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


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of a child process."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd} failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    return wall, usage.ru_maxrss / 1024


def database_limit(path: Path) -> float:
    """Seconds for SQLite alone to produce every event's JSON text (what a bundle's events are read as)."""
    import sqlite3

    from auditkeep.storage.sqlite import SQLiteBackend  # the same json_object() expression the server uses

    expr = SQLiteBackend().log_json_sql(integrity=True)
    conn = sqlite3.connect(path)
    started = time.perf_counter()
    for _ in conn.execute(f'SELECT {expr} FROM events ORDER BY "timestamp", seq'):
        pass
    conn.close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--db", default="/tmp/evidence-bench/ev.db")
    args = parser.parse_args()
    db = Path(args.db)
    db.parent.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{db}"
    env = {**os.environ, "AUDITKEEP_DATABASE_URL": url,
           "AUDITKEEP_SIGNING_KEY_PATH": str(db.parent / "signing-key.pem")}
    if not db.exists():
        started = time.perf_counter()
        populate(url, args.events)
        print(f"populated {args.events:,} events in {time.perf_counter() - started:.1f} s", flush=True)
    exe = str(Path(sys.executable).with_name("auditkeep"))
    out = db.parent / "bundle.zip"
    make, check, limit = [], [], []
    for _ in range(args.runs):
        make.append(timed([exe, "evidence", "--org", "bench", "--output", str(out)], env))
        check.append(timed([exe, "verify-bundle", str(out)], env))
        limit.append(database_limit(db))
    print(f"load average {os.getloadavg()}; bundle {out.stat().st_size / 1e6:.1f} MB")
    for name, runs in (("make", make), ("verify", check)):
        print(f"{name}: median {statistics.median(w for w, _ in runs):.1f} s "
              f"(runs {', '.join(f'{w:.1f}' for w, _ in runs)}), peak RSS {max(r for _, r in runs):.0f} MB")
    print(f"database alone (SELECT of the events' JSON): median {statistics.median(limit):.1f} s; "
          f"make / database = {statistics.median(w for w, _ in make) / statistics.median(limit):.2f}")


if __name__ == "__main__":
    main()
