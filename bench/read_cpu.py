"""Process CPU of one `GET /api/v1/audit_logs?limit=100&order=desc` read, in-process (issues #11, #14).

Each read is a walk's first page, so it commits its own `audit_logs.read` record and waits for it to be
flushed, as every reader of `bench/load.py` does. The app is called as raw ASGI (no HTTP client, no
socket: the caller's own cost is a few microseconds), one read after another, and the process's CPU
(`time.process_time`: every thread, the read flusher's included; on PostgreSQL the database's own work is
in its processes and not counted) is divided by the reads.

Old and new code take turns: each round runs one child process per code tree (`--old` is a commit whose
`src/` is exported with `git archive` into a temporary directory and put first on PYTHONPATH; the new code
is this checkout's `src/`), in alternating order, on the same database, seeded once. Medians of the
rounds, and the median of each round's new/old ratio.

    .venv/bin/python -u bench/read_cpu.py --old 99dc82d [--reads 300] [--rounds 5] [--events 5000]
                                          [--database-url postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PATH = "/api/v1/audit_logs"
QUERY = b"limit=100&order=desc"


async def _read(app: Any, key: str) -> tuple[int, bytes]:
    """One GET through the ASGI app; the status and the body."""
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": "GET", "scheme": "http", "path": PATH, "raw_path": PATH.encode(), "query_string": QUERY,
        "root_path": "", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 40000),
        "headers": [(b"host", b"127.0.0.1:8000"), (b"authorization", f"Key {key}".encode()),
                    (b"accept", b"*/*"), (b"accept-encoding", b"identity"), (b"user-agent", b"read-cpu")],
    }
    sent = False
    status = 0
    body: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # a client that stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(body)


def child(key: str, reads: int, warmup: int) -> None:
    """Run in a child process: `warmup` reads, then `reads` timed ones; print the CPU a read as JSON."""
    from auditkeep.api.app import GC_THRESHOLD, create_app

    app = create_app()
    gc.set_threshold(*GC_THRESHOLD)  # as `auditkeep serve` does (create_server_app), without its background jobs
    gc.freeze()

    async def run() -> dict[str, float]:
        for _ in range(warmup):
            status, body = await _read(app, key)
            assert status == 200 and body.count(b'"event_uuid"') == 100, (status, body[:300])
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(reads):
            status, _body = await _read(app, key)
            assert status == 200, status
        return {"cpu_ms": (time.process_time() - cpu) / reads * 1e3,
                "wall_ms": (time.perf_counter() - wall) / reads * 1e3}

    result = asyncio.run(run())
    print(json.dumps(result))


def _seed(env: dict[str, str], events: int) -> str:
    """An organization, a read-only service account's key, and `events` events; the key."""
    os.environ.update(env)
    from datetime import UTC, datetime

    from auditkeep.auth.principals import Scope
    from auditkeep.ingest.service import record_events
    from auditkeep.ingest.validation import parse_events
    from auditkeep.storage import identity, open_storage

    storage = open_storage(env["AUDITKEEP_DATABASE_URL"])
    try:
        with storage.write() as conn:
            org = identity.create_org(conn, f"read-cpu-{secrets.token_hex(3)}")
            owner = identity.create_service_account(conn, org, "reader", frozenset({Scope.READ}))
            key = identity.create_key(conn, owner, name="reader")[0]
        now = time.time()
        for start in range(0, events, 1000):
            batch = [{"action": "user.login", "user_email": f"u{i % 97}@example.test", "user_id": i,
                      "object_type": "session", "object_id": i, "source": "web", "status": "success",
                      "client_ip": f"10.0.{i % 250}.{i % 200}", "log_entry": f"user {i} signed in",
                      "url": f"https://app.example.test/login?n={i}", "request_type": "POST",
                      "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - events + i)),
                      "payload": {"n": i, "tags": ["a", "b"]}}
                     for i in range(start, min(start + 1000, events))]
            record_events(storage, org.id, parse_events(json.dumps(batch).encode(), datetime.now(UTC)))
    finally:
        storage.dispose()
    return key


def _export(commit: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "src"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", help="commit of the old code (omit to measure this checkout alone)")
    parser.add_argument("--old-src", type=Path, help="the old code's src/, instead of --old's")
    parser.add_argument("--new-src", type=Path, default=ROOT / "src",
                        help="the new code's src/ (default: this checkout's)")
    parser.add_argument("--also", action="append", default=[], metavar="LABEL=SRC",
                        help="another code tree to take turns with (a src/ directory)")
    parser.add_argument("--reads", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--database-url", help="PostgreSQL server URL (a scratch database is made and dropped)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.key, args.reads, args.warmup)
        return

    with tempfile.TemporaryDirectory(prefix="read-cpu-") as tmp_name:
        tmp = Path(tmp_name)
        trees: dict[str, Path] = {"new": args.new_src}
        for also in args.also:
            label, _, src = also.partition("=")
            trees[label] = Path(src)
        if args.old_src:
            trees = {"old": args.old_src, **trees}
        elif args.old:
            (tmp / "old").mkdir()
            trees = {"old": _export(args.old, tmp / "old"), **trees}
        scratch = None
        if args.database_url:
            import sqlalchemy as sa

            scratch = f"read_cpu_{secrets.token_hex(4)}"
            admin = sa.create_engine(sa.make_url(args.database_url).set(drivername="postgresql+psycopg"),
                                     isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.exec_driver_sql(f"CREATE DATABASE {scratch}")
            url = sa.make_url(args.database_url).set(database=scratch).render_as_string(hide_password=False)
        else:
            url = f"sqlite:///{tmp}/read-cpu.db"
        env = {"AUDITKEEP_DATABASE_URL": url, "AUDITKEEP_SIGNING_KEY_PATH": str(tmp / "signing-key.pem"),
               "AUDITKEEP_SECRETS_KEY_PATH": str(tmp / "secrets-key"), "AUDITKEEP_LOG_LEVEL": "WARNING",
               "AUDITKEEP_FORWARDER": "false",
               # Counted as always, but never refusing: reads back to back pass the default per-key limit.
               "AUDITKEEP_RATE_LIMIT": "1000000/second;100000000/minute"}
        try:
            key = _seed(env, args.events)
            results: dict[str, list[float]] = {name: [] for name in trees}
            ratios: dict[str, list[float]] = {name: [] for name in trees if name != "old"}
            loads: list[float] = []
            for rnd in range(args.rounds):
                order = list(trees) if rnd % 2 == 0 else list(reversed(trees))
                this: dict[str, float] = {}
                for name in order:
                    loads.append(os.getloadavg()[0])
                    out = subprocess.run(
                        [sys.executable, __file__, "--child", "--key", key, "--reads", str(args.reads),
                         "--warmup", str(args.warmup)],
                        env={**os.environ, **env, "PYTHONPATH": str(trees[name])}, capture_output=True,
                        text=True, check=False,
                    )
                    if out.returncode != 0:
                        raise SystemExit(f"{name} code failed:\n{out.stderr[-3000:]}")
                    figures = json.loads(out.stdout.strip().splitlines()[-1])
                    this[name] = figures["cpu_ms"]
                    results[name].append(figures["cpu_ms"])
                    print(f"round {rnd + 1} {name:>5}: {figures['cpu_ms']:.3f} ms CPU a read, "
                          f"{figures['wall_ms']:.3f} ms wall (load {loads[-1]:.1f})", flush=True)
                if "old" in this:
                    for name, values in ratios.items():
                        values.append(this[name] / this["old"])
            loads.append(os.getloadavg()[0])
        finally:
            if scratch is not None:
                with admin.connect() as conn:
                    conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {scratch} WITH (FORCE)")
                admin.dispose()
        backend = "PostgreSQL" if scratch else "SQLite"
        print(f"{backend}, {args.reads} reads x {args.rounds} rounds, load {min(loads):.1f}-{max(loads):.1f}")
        for name, values in results.items():
            print(f"  {name}: median {statistics.median(values):.3f} ms CPU a read "
                  f"({min(values):.3f}-{max(values):.3f})")
        for name, values in ratios.items():
            if values:
                print(f"  {name}/old: median of the rounds' ratios {statistics.median(values):.3f} "
                      f"({', '.join(f'{r:.2f}' for r in values)})")

if __name__ == "__main__":
    main()
