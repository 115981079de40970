"""Time `auditkeep verify` over N events on SQLite (issue #3: 1,000,000 events within 10 s).

Seeds a temporary SQLite database through the real ingest path (record_events, batches of 5,000), then
runs the real `auditkeep verify --org bench` command and reports its wall time.

    .venv/bin/python bench/verify_bench.py [--events 1000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

from auditkeep.ingest.service import record_events
from auditkeep.ingest.validation import parse_events
from auditkeep.settings import Settings
from auditkeep.storage import identity, open_storage

BATCH = 5000


def seed(url: str, key_path: Path, events: int) -> None:
    settings = Settings(database_url=url, signing_key_path=key_path, checkpoint_every_events=100_000)
    storage = open_storage(url, settings=settings)
    with storage.write() as conn:
        org = identity.create_org(conn, "bench")
    started = time.perf_counter()
    for base in range(0, events, BATCH):
        body = [
            {"action": "document.update", "client_ip": f"10.0.{i % 256}.{i % 200}", "url": f"https://app/doc/{i}",
             "object_type": "document", "object_id": i, "user_email": f"user{i % 100}@example.com",
             "user_id": i % 100, "payload": {"n": i, "field": "title", "old": "Q1", "new": "Q2"},
             "timestamp": "2024-05-01T12:00:00.000000Z"}
            for i in range(base, min(base + BATCH, events))
        ]
        record_events(storage, org.id, parse_events(orjson.dumps(body), datetime.now(UTC)))
    print(f"seeded {events:,} events in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    storage.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="use (and keep) this directory; reuse its database")
    args = parser.parse_args()
    directory = args.keep or Path(tempfile.mkdtemp(prefix="verify-bench-"))
    directory.mkdir(parents=True, exist_ok=True)
    db, key = directory / "bench.db", directory / "signing-key.pem"
    url = f"sqlite:///{db}"
    if not db.exists():
        seed(url, key, args.events)
    env = {**os.environ, "AUDITKEEP_DATABASE_URL": url, "AUDITKEEP_SIGNING_KEY_PATH": str(key)}
    command = [str(Path(sys.executable).parent / "auditkeep"), "verify", "--org", "bench"]
    for run in range(3):
        load_before = os.getloadavg()[0]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        # CPU seconds of the whole process tree: what the run costs whatever else the machine is doing.
        print(f"run {run + 1}: auditkeep verify exit {done.returncode} in {elapsed:.2f} s wall, {cpu:.2f} s CPU, "
              f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
        print("  " + "\n  ".join(done.stdout.splitlines()[:2] + done.stderr.splitlines()[-2:]))
    print(f"database: {db} ({db.stat().st_size / 1e6:.0f} MB), CPUs: {os.cpu_count()}")


if __name__ == "__main__":
    main()
