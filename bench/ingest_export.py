"""Core benchmark (issue #2, #3): batched ingest, one streamed export of everything, server peak RSS.

Starts the real server (`auditkeep serve`) as a subprocess on a fresh database, creates an organization
and an admin key with the CLI, then:

1. ingest: POSTs N events in batches through the HTTP API from `--clients` concurrent httpx clients
   (threads). Bodies are generated before the clock starts, so the timed window holds only HTTP and the
   server's work. Every event carries a client-made `event_uuid`, as the SDK sends it, so the
   idempotency lookup runs on every batch.
2. export: one `GET /api/v1/audit_logs` of all N events, streamed; bytes and events are counted as they
   arrive and nothing is kept.
3. peak RSS of the server's process tree (the uvicorn supervisor and its workers), sampled from
   /proc/<pid>/status every 50 ms, plus each process's own high-water mark (VmHWM).

`--chain-overhead` repeats the ingest against a server whose chain computation is stubbed out
(bench/_nochain_app.py, a bench-only monkeypatch; the service has no such switch) and reports how much
throughput chaining costs. `--ceiling` measures the database's own limit on the same rows and schema:
raw executemany (and COPY on PostgreSQL) of the ingest, raw json_object / row_to_json for the
export.

    .venv/bin/python bench/ingest_export.py                       # SQLite, N=1,000,000, 3 runs
    .venv/bin/python bench/ingest_export.py --n 100000 --runs 1   # quick look
    .venv/bin/python bench/ingest_export.py --database-url postgresql://postgres@127.0.0.1:5432/test

Results: a table on stdout and JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import queue
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import sqlalchemy as sa

from auditkeep.ids import new_event_uuid
from auditkeep.schemas.audit_logs import LOG_FIELDS
from auditkeep.settings import Settings
from auditkeep.storage import identity, open_storage
from auditkeep.storage import sqlite as sqlite_backend
from auditkeep.storage.postgres import PostgresBackend
from auditkeep.storage.sqlite import SQLiteBackend
from auditkeep.storage.types import parse_timestamp

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
RESULTS = BENCH / "results"
ORG = "bench"
ADMIN = "admin@bench.example"

# --- events -----------------------------------------------------------------------------------------

_ACTIONS = ("user.login", "document.update", "document.share", "api_key.create", "user.logout")
_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"


def make_event(i: int, base: datetime, uuids: str = "v7") -> dict[str, Any]:
    """Event number `i`: every one of the 17 fields set, a small nested payload, ~700 bytes as JSON.

    Its event_uuid is what auditkeep's SDK and capture middleware send (`uuids="v7"`, auditkeep/ids.py)
    or a random version 4 one, as a client that makes its own ids may send (`uuids="v4"`).
    """
    ts = base + timedelta(microseconds=i * 97_000)
    user = i % 1000
    return {
        "action": _ACTIONS[i % len(_ACTIONS)],
        "client_ip": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
        "event_uuid": new_event_uuid() if uuids == "v7" else str(uuid.UUID(bytes=secrets.token_bytes(16), version=4)),
        "is_support_user": i % 50 == 0,
        "log_entry": f"user{user}@example.com updated document {i}",
        "object_id": i,
        "object_type": "document",
        "payload": {"request_id": f"req-{i:010d}", "changes": {"title": ["draft", "final"]}, "size": i % 4096,
                    "tags": ["a", "b"], "ok": True},
        "referer": "https://app.example.com/documents",
        "request_type": "POST",
        "source": "web",
        "status": "success",
        "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "url": f"https://app.example.com/api/documents/{i}",
        "user_agent": _UA,
        "user_email": f"user{user}@example.com",
        "user_id": user,
    }


def make_bodies(n: int, batch: int, uuids: str = "v7") -> list[bytes]:
    """The POST bodies of all N events (JSON arrays of `batch` events), timestamps in the last few days."""
    base = datetime.now(UTC) - timedelta(microseconds=n * 97_000) - timedelta(hours=1)
    return [
        orjson.dumps([make_event(i, base, uuids) for i in range(start, min(start + batch, n))])
        for start in range(0, n, batch)
    ]


# --- process tree memory -----------------------------------------------------------------------------


def _status(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) * 1024
    return out


def _tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc/*/stat's ppid field)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, ()))
    return found


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process tree so far (/proc/*/stat utime and stime). CPU per event
    barely depends on what else a shared machine runs, where wall time does."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / tick


class RssSampler:
    """Samples the summed VmRSS of a process tree; `phase()` starts a new peak."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peaks: dict[str, int] = {}
        self._phase = "startup"
        self._stop = threading.Event()
        self._pids: list[int] = [pid]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def phase(self, name: str) -> None:
        self._pids = _tree(self.pid)
        self._phase = name

    def _run(self) -> None:
        ticks = 0
        while not self._stop.is_set():
            if ticks % 20 == 0:  # workers appear (and restart) rarely: rescan the tree once a second
                self._pids = _tree(self.pid)
            total = sum(_status(p).get("VmRSS", 0) for p in self._pids)
            self.peaks[self._phase] = max(self.peaks.get(self._phase, 0), total)
            ticks += 1
            self._stop.wait(self.interval)

    def hwm(self) -> dict[int, int]:
        """Each process's own peak RSS (VmHWM) so far."""
        return {p: _status(p).get("VmHWM", 0) for p in _tree(self.pid)}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# --- databases ------------------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(url: str | None, tmp: Path) -> Iterator[str]:
    """A new empty database: a SQLite file under `tmp`, or a new PostgreSQL database beside `url`'s."""
    if url is None or url.startswith("sqlite"):
        path = tmp / f"bench-{secrets.token_hex(4)}.db"
        yield f"sqlite:///{path}"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    name = f"auditkeep_bench_{secrets.token_hex(4)}"
    admin = _pg_dsn(url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield _replace_db(url, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _replace_db(url: str, name: str) -> str:
    return sa.make_url(url).set(database=name).render_as_string(hide_password=False)


def _pg_dsn(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the server -------------------------------------------------------------------------------------


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    base_url: str
    key: str
    log_path: Path


def _cli(env: dict[str, str], *args: str) -> str:
    out = subprocess.run([str(VENV_BIN / "auditkeep"), *args], env=env, check=True, capture_output=True, text=True)
    return out.stdout.strip()


@contextlib.contextmanager
def running_server(database_url: str, workers: int, tmp: Path, *, chain: bool = True,
                   factory: str | None = None) -> Iterator[Server]:
    """`auditkeep serve`, or with `factory` (or chain=False) a bench-only app factory under uvicorn."""
    env = {**os.environ, "AUDITKEEP_DATABASE_URL": database_url,
           "AUDITKEEP_SIGNING_KEY_PATH": str(tmp / "signing-key.pem"), "AUDITKEEP_LOG_LEVEL": "WARNING"}
    _cli(env, "orgs", "create", ORG)
    _cli(env, "users", "create", "--org", ORG, "--email", ADMIN, "--role", "admin")
    key = _cli(env, "keys", "create", "--org", ORG, "--user", ADMIN)
    port = _free_port()
    if not chain:
        factory = "_nochain_app:create_app"  # the chain computation stubbed (bench only; see _nochain_app.py)
    if factory is None:
        cmd = [str(VENV_BIN / "auditkeep"), "serve", "--port", str(port), "--workers", str(workers)]
    else:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH), env.get("PYTHONPATH")]))
        cmd = [sys.executable, "-c",
               f"import uvicorn; uvicorn.run('{factory}', factory=True, host='127.0.0.1', "
               f"port={port}, workers={workers}, server_header=False, proxy_headers=False)"]
    log_path = tmp / f"server-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {log_path.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("server did not become ready in 60 s")
            time.sleep(0.1)
        if workers > 1:
            time.sleep(2)  # let every worker finish importing, so the first batches do not wait on it
        yield Server(proc, base, key, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the measurements -------------------------------------------------------------------------------


def ingest(server: Server, bodies: list[bytes], clients: int) -> float:
    """POST every body from `clients` threads; returns the elapsed seconds."""
    work: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    for body in bodies:
        work.put(body)
    for _ in range(clients):
        work.put(None)
    errors: list[str] = []
    headers = {"Authorization": f"Key {server.key}", "Content-Type": "application/json"}

    def client() -> None:
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=300) as http:
            while (body := work.get()) is not None:
                r = http.post("/api/v1/audit_logs", content=body)
                if r.status_code != 201:
                    errors.append(f"{r.status_code} {r.text[:300]}")
                    return

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"ingest failed: {errors[0]}")
    return elapsed


def export(server: Server) -> tuple[float, int, int]:
    """One GET of the whole log, streamed; returns (seconds, events, bytes)."""
    marker = b'"event_uuid"'  # one a log, whatever follows the key
    events = size = 0
    tail = b""
    start = time.perf_counter()
    # identity: the plain JSON stream, as curl asks for it (httpx would ask for gzip by default).
    headers = {"Authorization": f"Key {server.key}", "Accept-Encoding": "identity"}
    with httpx.Client(timeout=600) as http, http.stream(
        "GET", f"{server.base_url}/api/v1/audit_logs", headers=headers
    ) as r:
        r.raise_for_status()
        first = True
        for chunk in r.iter_raw(1 << 20):
            if first and not chunk.startswith(b'{"logs":['):
                raise RuntimeError(f"unexpected response start {chunk[:40]!r}")
            first = False
            size += len(chunk)
            data = tail + chunk
            events += data.count(marker)
            # Keep the last few bytes (not a whole marker) so a marker split across chunks counts once.
            keep = len(marker) - 1
            tail = data[-keep:]
    elapsed = time.perf_counter() - start
    if not tail.endswith(b"]}"):
        raise RuntimeError(f"unexpected response end {tail!r}")
    return elapsed, events, size


@dataclass
class Run:
    ingest_s: float
    ingest_eps: float
    ingest_cpu_us_per_event: float | None = None  # the server tree's CPU time over the ingest phase
    export_s: float | None = None
    export_eps: float | None = None
    export_events: int | None = None
    export_bytes: int | None = None
    rss_peak_bytes: dict[str, int] = field(default_factory=dict)
    rss_hwm_bytes: dict[str, int] = field(default_factory=dict)


def one_run(args: argparse.Namespace, url: str, bodies: list[bytes], tmp: Path, *, chain: bool,
            do_export: bool, factory: str | None = None) -> Run:
    """Serve the (empty) database at `url`, ingest every body, then export everything once."""
    with running_server(url, args.workers, tmp, chain=chain, factory=factory) as server:
        sampler = RssSampler(server.proc.pid)
        try:
            sampler.phase("ingest")
            cpu = tree_cpu_seconds(server.proc.pid)
            secs = ingest(server, bodies, args.clients)
            cpu = tree_cpu_seconds(server.proc.pid) - cpu
            run = Run(ingest_s=secs, ingest_eps=args.n / secs, ingest_cpu_us_per_event=cpu / args.n * 1e6)
            if do_export:
                sampler.phase("export")
                secs, events, size = export(server)
                if events < args.n:
                    raise RuntimeError(f"export returned {events} events, expected at least {args.n}")
                run.export_s, run.export_eps = secs, events / secs
                run.export_events, run.export_bytes = events, size
            sampler.phase("idle")
            run.rss_hwm_bytes = {str(p): v for p, v in sampler.hwm().items()}
        finally:
            sampler.stop()
        run.rss_peak_bytes = {k: v for k, v in sampler.peaks.items() if k in ("ingest", "export")}
    return run


# --- the database's own limits ------------------------------------------------------------------------


def _insert_columns(sql: str) -> list[str]:
    return [c.strip().strip('"') for c in sql[sql.index("(") + 1 : sql.index(")")].split(",")]


def _rows(bodies: list[bytes], columns: list[str]) -> Iterator[list[tuple[Any, ...]]]:
    """The rows the service would store for each batch (org 1, seq from 1, made-up hashes), in the
    column order of the backend's insert statement."""
    seq = 0
    received = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    for body in bodies:
        rows = []
        for event in orjson.loads(body):
            seq += 1
            digest = hashlib.sha256(seq.to_bytes(8, "big")).hexdigest()
            values = {f: event.get(f) for f in LOG_FIELDS}
            values.update(org_id=1, seq=seq, received_at=received, payload=orjson.dumps(event["payload"]).decode(),
                          prev_hash=digest, hash=digest)
            if "client_ip_key" in columns:  # issue #4's address filter column (storage/addresses.py)
                from auditkeep.storage.addresses import ip_key

                values["client_ip_key"] = ip_key(event["client_ip"])
            if "personal_salt" in columns:  # canonical form version 2's per-event salt (32 hex digits)
                values["personal_salt"] = digest[:32]
            rows.append(tuple(values[c] for c in columns))
        yield rows


def _prepare_schema(url: str) -> None:
    storage = open_storage(url, settings=Settings(database_url=url))
    with storage.write() as conn:
        identity.create_org(conn, ORG)
    storage.dispose()


def sqlite_ceiling(url: str, bodies: list[bytes]) -> float:
    """Raw sqlite3 executemany of the same rows into the same schema, one transaction a batch."""
    _prepare_schema(url)
    conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    for pragma in sqlite_backend.connection_pragmas(30_000):  # the service's own settings
        conn.execute(pragma)
    conn.execute(f"PRAGMA cache_size = -{sqlite_backend.WRITE_CACHE_KIB}")  # as in its write transactions
    sql = SQLiteBackend().insert_events_sql()
    elapsed = 0.0
    n = 0
    for rows in _rows(bodies, _insert_columns(sql)):
        start = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, rows)
        conn.execute("COMMIT")
        elapsed += time.perf_counter() - start
        n += len(rows)
    conn.close()
    return n / elapsed


def sqlite_export_ceiling(url: str, org_id: int) -> float:
    """Raw `SELECT json_object(...)` of every event in API order, fetched in chunks (rows/s)."""
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    sql = (f"SELECT {SQLiteBackend().log_json_sql(integrity=False)} FROM events WHERE org_id = ? "
           'ORDER BY "timestamp", seq')
    start = time.perf_counter()
    cur = conn.execute(sql, (org_id,))
    n = 0
    while rows := cur.fetchmany(2000):
        n += len(rows)
    elapsed = time.perf_counter() - start
    conn.close()
    return n / elapsed


def postgres_ceiling(url: str, bodies: list[bytes], copy: bool, cpu: dict[str, float] | None = None) -> float:
    """Raw psycopg executemany (or COPY) of the same rows into the same schema, one transaction a batch.
    `cpu`, when given, receives the CPU seconds of the database backend (`database`) and of this
    process's thread (`client`) over the timed parts."""
    _prepare_schema(url)
    sql = PostgresBackend().insert_events_sql()
    columns = _insert_columns(sql)
    cols = sql[sql.index("(") + 1 : sql.index(")")]
    ts = [columns.index("timestamp"), columns.index("received_at")]
    elapsed = 0.0
    client = 0.0
    n = 0
    with psycopg.connect(_pg_dsn(url)) as conn:
        backend_start = tree_cpu_seconds(conn.info.backend_pid)
        for batch in _rows(bodies, columns):
            rows = []
            for row in batch:
                values = list(row)
                for i in ts:
                    values[i] = parse_timestamp(values[i])
                rows.append(values)
            start, thread_start = time.perf_counter(), time.thread_time()
            with conn.transaction(), conn.cursor() as cur:
                if copy:
                    with cur.copy(f"COPY events ({cols}) FROM STDIN") as cp:
                        for row in rows:
                            cp.write_row(row)
                else:
                    cur.executemany(sql, rows)
            elapsed += time.perf_counter() - start
            client += time.thread_time() - thread_start
            n += len(rows)
        if cpu is not None:
            cpu["database"] = tree_cpu_seconds(conn.info.backend_pid) - backend_start
            cpu["client"] = client
    return n / elapsed


def postgres_export_ceiling(url: str, org_id: int) -> float:
    """The service's log JSON (`row_to_json`), raw, in API order through a server-side cursor (rows/s)."""
    sql = (f"SELECT {PostgresBackend().log_json_sql(integrity=False)} FROM events WHERE org_id = %s "
           'ORDER BY "timestamp", seq')
    with psycopg.connect(_pg_dsn(url)) as conn:
        start = time.perf_counter()
        with conn.transaction(), conn.cursor(name="bench") as cur:
            cur.execute(sql, (org_id,))
            n = 0
            while rows := cur.fetchmany(2000):
                n += len(rows)
        elapsed = time.perf_counter() - start
    return n / elapsed


def _org_id(url: str) -> int:
    storage = open_storage(url, settings=Settings(database_url=url), migrate=False)
    with storage.read() as conn:
        org_id = identity.get_org(conn, ORG).id
    storage.dispose()
    return org_id


# --- reporting --------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
               platform.processor())
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal"))
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gib": round(mem / 2**20, 1),
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version, "kernel": platform.release()}


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    # A SIGTERM (`pkill -f`) ends the script through its `finally` blocks, which stop the server it started:
    # by default the signal killed the script alone, and the orphaned server went on catching up its
    # background jobs beside the next runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="events to ingest and export")
    p.add_argument("--batch", type=int, default=5000, help="events per POST")
    p.add_argument("--clients", type=int, default=2, help="concurrent HTTP clients (threads)")
    p.add_argument("--uuids", choices=("v7", "v4"), default="v7",
                   help="event ids the clients send: v7 as auditkeep's SDK does (default), or random v4")
    p.add_argument("--workers", type=int, default=2, help="server worker processes")
    p.add_argument("--runs", type=int, default=3, help="repetitions (fresh database and server each); medians reported")
    p.add_argument("--database-url", default=None,
                   help="sqlite:///… (default: a fresh file under the temp dir) or postgresql://… (a fresh "
                        "database is created beside it and dropped afterwards)")
    p.add_argument("--no-chain", action="store_true",
                   help="only ingest, against a server with the chain computation stubbed (bench-only)")
    p.add_argument("--chain-overhead", action="store_true",
                   help="also ingest with the chain stubbed, interleaved with the real runs, and report the cost")
    p.add_argument("--canonical-compare", action="store_true",
                   help="also ingest with a server writing canonical form version 1 (bench/_v1_app.py), "
                        "interleaved with the real (version 2) runs, and report version 2's cost (issue #12)")
    p.add_argument("--ceiling", action="store_true", help="also measure the database's own insert/select limits")
    p.add_argument("--no-export", action="store_true", help="skip the export phase")
    p.add_argument("--tmp", type=Path, default=None, help="where SQLite files go (default: a new dir under /tmp)")
    args = p.parse_args()
    backend = "postgresql" if args.database_url and args.database_url.startswith("postgres") else "sqlite"

    tmp = Path(tempfile.mkdtemp(prefix="auditkeep-bench-", dir=args.tmp))
    print(f"generating {args.n:,} events in batches of {args.batch:,} …", flush=True)
    bodies = make_bodies(args.n, args.batch, args.uuids)
    print(f"  {sum(map(len, bodies)) / args.n:.0f} bytes/event as JSON", flush=True)

    chained: list[Run] = []
    unchained: list[Run] = []
    version1: list[Run] = []
    ceilings: dict[str, list[float]] = {}
    try:
        for i in range(args.runs):
            if not args.no_chain:
                # With --canonical-compare both sides start through the same bench factory and uvicorn call.
                v2 = "_v1_app:create_app_v2" if args.canonical_compare else None
                with fresh_database(args.database_url, tmp) as url:
                    run = one_run(args, url, bodies, tmp, chain=True, do_export=not args.no_export, factory=v2)
                    chained.append(run)
                    print(f"run {i + 1}: ingest {run.ingest_eps:,.0f} ev/s "
                          f"({run.ingest_cpu_us_per_event:.1f} server CPU us/event, load {os.getloadavg()[0]:.1f})"
                          + (f", export {run.export_eps:,.0f} ev/s" if run.export_eps else "")
                          + f", peak RSS {max(run.rss_peak_bytes.values()) / 2**20:.0f} MiB", flush=True)
                    if args.ceiling:
                        select = sqlite_export_ceiling if backend == "sqlite" else postgres_export_ceiling
                        ceilings.setdefault("select_json_rows_s", []).append(select(url, _org_id(url)))
                if args.ceiling:
                    with fresh_database(args.database_url, tmp) as raw_url:
                        insert = sqlite_ceiling(raw_url, bodies) if backend == "sqlite" else \
                            postgres_ceiling(raw_url, bodies, copy=False)
                        ceilings.setdefault("executemany_rows_s", []).append(insert)
                    if backend == "postgresql":
                        with fresh_database(args.database_url, tmp) as raw_url:
                            ceilings.setdefault("copy_rows_s", []).append(postgres_ceiling(raw_url, bodies, copy=True))
                    print("  database alone: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in ceilings.items()),
                          flush=True)
            if args.no_chain or args.chain_overhead:
                with fresh_database(args.database_url, tmp) as url:
                    run = one_run(args, url, bodies, tmp, chain=False, do_export=False)
                unchained.append(run)
                print(f"run {i + 1} (chain stubbed): ingest {run.ingest_eps:,.0f} ev/s", flush=True)
            if args.canonical_compare:
                with fresh_database(args.database_url, tmp) as url:
                    run = one_run(args, url, bodies, tmp, chain=True, do_export=False, factory="_v1_app:create_app")
                version1.append(run)
                print(f"run {i + 1} (canonical form v1): ingest {run.ingest_eps:,.0f} ev/s "
                      f"({run.ingest_cpu_us_per_event:.1f} server CPU us/event, load {os.getloadavg()[0]:.1f})",
                      flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    summary: dict[str, Any] = {}
    if chained:
        summary["ingest_eps"] = _median([r.ingest_eps for r in chained])
        summary["ingest_server_cpu_us_per_event"] = _median([r.ingest_cpu_us_per_event or 0 for r in chained])
        summary["load_average_1m_at_end"] = os.getloadavg()[0]
        exports = [r.export_eps for r in chained if r.export_eps]
        if exports:
            summary["export_eps"] = _median(exports)
        summary["rss_peak_mib"] = max(max(r.rss_peak_bytes.values()) for r in chained) / 2**20
        summary["rss_peak_mib_by_phase"] = {
            phase: max(r.rss_peak_bytes.get(phase, 0) for r in chained) / 2**20 for phase in ("ingest", "export")
        }
        summary["rss_hwm_max_process_mib"] = max(max(r.rss_hwm_bytes.values()) for r in chained) / 2**20
    if unchained:
        summary["ingest_eps_chain_stubbed"] = _median([r.ingest_eps for r in unchained])
        if chained:
            summary["chain_overhead_pct"] = 100 * (1 - summary["ingest_eps"] / summary["ingest_eps_chain_stubbed"])
    if version1:
        summary["ingest_eps_canonical_v1"] = _median([r.ingest_eps for r in version1])
        summary["ingest_server_cpu_us_per_event_canonical_v1"] = _median(
            [r.ingest_cpu_us_per_event or 0 for r in version1])
        if chained:
            # Per pair (same round, adjacent in time), then the median, so a load swing hits both sides.
            ratios = [a.ingest_cpu_us_per_event / b.ingest_cpu_us_per_event
                      for a, b in zip(chained, version1, strict=True)
                      if a.ingest_cpu_us_per_event and b.ingest_cpu_us_per_event]
            summary["canonical_v2_cpu_per_event_vs_v1_pct"] = 100 * (_median(ratios) - 1)
    for k, v in ceilings.items():
        summary[f"ceiling_{k}"] = _median(v)
    if "ceiling_executemany_rows_s" in summary and "ingest_eps" in summary:
        summary["ingest_vs_executemany"] = summary["ingest_eps"] / summary["ceiling_executemany_rows_s"]
    if "ceiling_select_json_rows_s" in summary and "export_eps" in summary:
        summary["export_vs_select_json"] = summary["export_eps"] / summary["ceiling_select_json_rows_s"]

    print()
    print(f"{backend}, N={args.n:,}, batch={args.batch:,}, uuids={args.uuids}, workers={args.workers}, "
          f"clients={args.clients}, runs={args.runs} (medians)")
    width = max(map(len, summary))
    for k, v in summary.items():
        if isinstance(v, dict):
            text = ", ".join(f"{pk} {pv:,.0f}" for pk, pv in v.items())
        elif isinstance(v, float):
            text = f"{v:,.2f}" if abs(v) < 10 else f"{v:,.0f}"
        else:
            text = str(v)
        print(f"  {k:<{width}}  {text}")

    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"ingest_export-{backend}-{stamp}.json"
    out.write_text(json.dumps({
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "backend": backend, "machine": machine(), "summary": summary,
        "runs": [asdict(r) for r in chained], "runs_chain_stubbed": [asdict(r) for r in unchained],
        "ceilings": ceilings,
    }, indent=2))
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
