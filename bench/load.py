"""Load benchmark (issue #11): readers and paced ingest at once, against the real `auditkeep serve`.

N concurrent clients on loopback: `--readers` clients read `limit=100` pages in a loop (closed loop, no
think time: each sends its next read when the last answer is read in full), while `--writers` clients
POST `--batch`-event batches paced to `--rate` events/s in all (each writer sends on its own schedule;
one that falls behind sends at once, so a server too slow for the rate shows as an achieved rate below
it). Every client has its own API key (one service account), so each stays far under the default
per-key rate limit and a 429 is a real refusal, counted apart from errors.

Each run measures, on the same server and database, a phase of the readers alone, one of the writers
alone, then one of both, so the ratio of the read throughputs with and without ingest is a same-run figure
on a noisy machine, and the lone phases give the server's CPU per read and per ingested event. Reported
per phase: throughput, p50/p95/p99 of reads and of ingest batches, errors and 429s,
and the CPU seconds of the server's processes and of this generator (one asyncio process on uvloop with
a minimal HTTP/1.1 client) as shares of the machine's cores, with the load average.

`--reads fresh` (the default) makes every read a walk's first page, so each one commits its own
`audit_logs.read` record before it is answered (docs/architecture.md, "Recording reads"); `--reads walk`
follows each page's `Link` for up to 10 pages, as the SDK does, so only a walk's first page is recorded.

    .venv/bin/python bench/load.py                                   # SQLite, 1 and 2 workers, 3 runs
    .venv/bin/python bench/load.py --database-url postgresql://postgres@127.0.0.1:5432/test --workers 2 4
    .venv/bin/python bench/load.py --workers 1 --runs 1 --duration 10   # a quick look

Results: a table on stdout and JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvloop
from _http import Conn, next_link
from ingest_export import (
    RESULTS,
    VENV_BIN,
    _free_port,
    _pg_dsn,
    _tree,
    fresh_database,
    machine,
    make_bodies,
    tree_cpu_seconds,
)

from auditkeep.auth.principals import Scope
from auditkeep.ingest.service import record_batch
from auditkeep.ingest.validation import parse_events
from auditkeep.storage import identity, open_storage
from auditkeep.storage.postgres import PostgresBackend
from auditkeep.storage.sqlite import SQLiteBackend

ORG = "load"


def tree_schedstat(pid: int) -> dict[tuple[int, int], tuple[float, float]]:
    """Per thread of a process tree: seconds run on a CPU, and seconds spent runnable but waiting for one
    (/proc/<pid>/task/<tid>/schedstat). The second is what a machine busy with other work costs us."""
    out: dict[tuple[int, int], tuple[float, float]] = {}
    for p in _tree(pid):
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{p}/task/{tid}/schedstat") as f:
                    ran, waited, _ = f.read().split()
                    out[(p, int(tid))] = (int(ran) / 1e9, int(waited) / 1e9)
    return out


def _sched_delta(before: dict[tuple[int, int], tuple[float, float]],
                 after: dict[tuple[int, int], tuple[float, float]]) -> tuple[float, float]:
    ran = waited = 0.0
    for task, (r, w) in after.items():
        r0, w0 = before.get(task, (0.0, 0.0))
        ran, waited = ran + r - r0, waited + w - w0
    return ran, waited


def _pid_cpu(pids: list[int]) -> dict[int, float]:
    """CPU seconds so far of each of `pids` that still runs."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for p in pids:
        with contextlib.suppress(OSError), open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            out[p] = (int(fields[11]) + int(fields[12])) / tick
    return out


def _database_pids(database_url: str) -> list[int]:
    """The PostgreSQL backends serving `database_url`'s database (none for SQLite, which runs in the
    server's own threads): their CPU is the database's share of the machine."""
    if database_url.startswith("sqlite"):
        return []
    with psycopg.connect(_pg_dsn(database_url), autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                            "AND pid <> pg_backend_pid()").fetchall()
    return [int(r[0]) for r in rows]


def _machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (all cores, every process; /proc/stat)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class Phase:
    """What one phase measured."""

    name: str
    seconds: float
    reads: list[float] = field(default_factory=list)  # latency of each read answered 200, seconds
    batches: list[float] = field(default_factory=list)  # latency of each batch answered 201, seconds
    errors: dict[str, int] = field(default_factory=dict)  # "status: detail" or exception name -> count
    throttled: int = 0  # 429s
    server_cpu: float = 0.0
    server_runqueue: float = 0.0  # seconds the server's threads were runnable but waited for a CPU
    database_cpu: float = 0.0  # PostgreSQL's backends serving the benchmark's database
    machine_busy: float = 0.0  # every process on the machine
    generator_cpu: float = 0.0
    load: float = 0.0

    def summary(self, writers: int, batch: int) -> dict[str, Any]:
        def pct(values: list[float], q: float) -> float:
            if not values:
                return float("nan")
            ordered = sorted(values)
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

        return {
            "phase": self.name, "seconds": round(self.seconds, 2),
            "reads_per_s": round(len(self.reads) / self.seconds, 1),
            "read_p50_ms": round(pct(self.reads, 0.50), 1), "read_p95_ms": round(pct(self.reads, 0.95), 1),
            "read_p99_ms": round(pct(self.reads, 0.99), 1),
            "events_per_s": round(len(self.batches) * batch / self.seconds, 0) if writers else 0,
            "batch_p50_ms": round(pct(self.batches, 0.50), 1), "batch_p95_ms": round(pct(self.batches, 0.95), 1),
            "batch_p99_ms": round(pct(self.batches, 0.99), 1),
            "errors": sum(self.errors.values()), "error_kinds": self.errors, "throttled": self.throttled,
            "server_cores": round(self.server_cpu / self.seconds, 2),
            # The server's CPU per request of the phase's only kind: what a noisy machine changes least.
            "server_ms_per_read": round(self.server_cpu / len(self.reads) * 1000, 2) if self.reads and not writers
            else None,
            "server_us_per_event": round(self.server_cpu / (len(self.batches) * batch) * 1e6, 1)
            if self.batches and not self.reads else None,
            "generator_cores": round(self.generator_cpu / self.seconds, 2), "load1": round(self.load, 2),
            # Per second of the phase, how many of the server's threads were waiting for a CPU on average.
            "server_runqueue": round(self.server_runqueue / self.seconds, 2),
            "database_cores": round(self.database_cpu / self.seconds, 2),
            "machine_busy_cores": round(self.machine_busy / self.seconds, 2),
        }


def _error(phase: Phase, what: str) -> None:
    phase.errors[what] = phase.errors.get(what, 0) + 1


async def _reader(conn: Conn, key: str, phase: Phase, stop: float, walk: bool) -> None:
    first = "/api/v1/audit_logs?limit=100&order=desc"
    url, pages = first, 0
    while time.monotonic() < stop:
        t = time.perf_counter()
        try:
            status, headers, data = await conn.request("GET", url, key)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            _error(phase, type(exc).__name__)
            conn.close()
            url, pages = first, 0
            continue
        elapsed = time.perf_counter() - t
        if status == 200:
            phase.reads.append(elapsed)
        elif status == 429:
            phase.throttled += 1
            await asyncio.sleep(float(headers.get("retry-after", "1")))
        else:
            _error(phase, f"{status}: {data[:120].decode(errors='replace')}")
        nxt = next_link(headers) if walk and status == 200 else None
        pages += 1
        url, pages = (nxt, pages) if nxt and pages < 10 else (first, 0)


async def _writer(conn: Conn, key: str, bodies: Iterator[bytes], phase: Phase, stop: float,
                  interval: float, offset: float) -> None:
    due = time.monotonic() + offset
    while True:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        if time.monotonic() >= stop:
            return
        due += interval
        t = time.perf_counter()
        try:
            status, _, data = await conn.request("POST", "/api/v1/audit_logs", key, next(bodies))
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            _error(phase, type(exc).__name__)
            conn.close()
            continue
        if status == 201:
            phase.batches.append(time.perf_counter() - t)
        elif status == 429:
            phase.throttled += 1
        else:
            _error(phase, f"{status}: {data[:120].decode(errors='replace')}")


async def run_phase(name: str, base_url: str, server_pid: int, keys: list[str], readers: int, writers: int,
                    rate: float, batch: int, bodies: Iterator[bytes], seconds: float, walk: bool,
                    database_url: str = "sqlite:") -> Phase:
    phase = Phase(name, seconds)
    host, port = base_url.rsplit("/", 1)[1].split(":")
    conns = [Conn(host, int(port)) for _ in range(readers + writers)]
    await asyncio.gather(*(c.open() for c in conns))  # so the clock does not time TCP handshakes
    try:
        cpu0, gen0, wall0 = tree_cpu_seconds(server_pid), time.process_time(), time.monotonic()
        sched0 = tree_schedstat(server_pid)
        db0, busy0 = _pid_cpu(_database_pids(database_url)), _machine_busy()
        stop = wall0 + seconds
        interval = writers * batch / rate if writers else 0.0
        tasks = [_reader(conns[i], keys[i], phase, stop, walk) for i in range(readers)]
        tasks += [_writer(conns[readers + i], keys[-1 - i], bodies, phase, stop, interval,
                          interval * i / max(writers, 1)) for i in range(writers)]
        await asyncio.gather(*tasks)
        phase.seconds = time.monotonic() - wall0
        phase.server_cpu = tree_cpu_seconds(server_pid) - cpu0
        phase.server_runqueue = _sched_delta(sched0, tree_schedstat(server_pid))[1]
        # Backends that ended during the phase are missed (an undercount); new ones count from their start.
        phase.database_cpu = sum(c - db0.get(p, 0.0) for p, c in _pid_cpu(_database_pids(database_url)).items())
        phase.machine_busy = _machine_busy() - busy0
        phase.generator_cpu = time.process_time() - gen0
        phase.load = os.getloadavg()[0]
    finally:
        for c in conns:
            c.close()
    return phase


def _setup(database_url: str, tmp: Path, clients: int, preload: int) -> tuple[list[str], dict[str, str]]:
    """A fresh organization, a service account with read and write scopes and one key per client, and
    `preload` events (so every read has full pages), all made before the server starts."""
    env = {**os.environ, "AUDITKEEP_DATABASE_URL": database_url,
           "AUDITKEEP_SIGNING_KEY_PATH": str(tmp / "signing-key.pem"),
           "AUDITKEEP_SECRETS_KEY_PATH": str(tmp / "secrets-key"), "AUDITKEEP_LOG_LEVEL": "WARNING"}
    subprocess.run([str(VENV_BIN / "auditkeep"), "orgs", "create", ORG], env=env, check=True, capture_output=True)
    storage = open_storage(database_url)
    try:
        with storage.write() as conn:
            org = identity.get_org(conn, ORG)
            owner = identity.create_service_account(conn, org, "load", frozenset({Scope.READ, Scope.WRITE}))
            keys = [identity.create_key(conn, owner, name=f"client {i}")[0] for i in range(clients)]
    finally:
        storage.dispose()
    return keys, env


@contextlib.contextmanager
def serving(env: dict[str, str], workers: int) -> Iterator[tuple[str, int]]:
    port = _free_port()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([str(VENV_BIN / "auditkeep"), "serve", "--port", str(port), "--workers", str(workers)],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"server exited: {log.read()[-2000:].decode(errors='replace')}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("server did not become ready in 90 s")
                time.sleep(0.1)
            if workers > 1:
                time.sleep(3)  # every worker done importing, so the first requests do not wait on it
            yield base, proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _preload(base: str, key: str, bodies: Iterator[bytes], n: int, batch: int) -> None:
    with httpx.Client(base_url=base, headers={"Authorization": f"Key {key}"}, timeout=120) as client:
        for _ in range(n // batch):
            r = client.post("/api/v1/audit_logs", content=next(bodies), headers={"Content-Type": "application/json"})
            r.raise_for_status()


def _analyze(url: str) -> None:
    """What autovacuum does after the preload when it is on (PostgreSQL's default; the shared test
    server here runs with it off): statistics for the events' partitions, so the planner walks the
    timestamp index for a page instead of sorting every match (issue #11)."""
    with psycopg.connect(_pg_dsn(url), autocommit=True) as conn:
        conn.execute("ANALYZE events")


def bench(database_url: str | None, workers: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="auditkeep-load-") as tmpdir:
        tmp = Path(tmpdir)
        with fresh_database(database_url, tmp) as url:
            keys, env = _setup(url, tmp, args.readers + args.writers, args.preload)
            # Enough distinct batches for every run's ingest (two phases of it a run, with room for a
            # writer catching up); made before any clock starts.
            per_run = 2 * int(args.rate * (args.duration + 5)) + args.rate
            bodies = iter(make_bodies(args.preload + per_run * args.runs, args.batch))
            with serving(env, workers) as (base, pid):
                _preload(base, keys[-1], bodies, args.preload, args.batch)
                if args.analyze and not url.startswith("sqlite"):
                    _analyze(url)
                walk = args.reads == "walk"
                uvloop.run(run_phase("warm-up", base, pid, keys, args.readers, 0, args.rate, args.batch, bodies,
                                      3, walk))
                for run in range(args.runs):
                    for name, readers, writers in (("reads only", args.readers, 0), ("ingest only", 0, args.writers),
                                                   ("reads + ingest", args.readers, args.writers)):
                        phase = uvloop.run(run_phase(name, base, pid, keys, readers, writers, args.rate,
                                                      args.batch, bodies, args.duration, walk, url))
                        row = {"backend": url.split(":", 1)[0], "workers": workers, "run": run + 1,
                               **phase.summary(writers, args.batch)}
                        out.append(row)
                        print(_line(row), flush=True)
            if args.ceiling:
                limits = {"backend": url.split(":", 1)[0], "workers": workers, "phase": "database alone",
                          "load1": round(os.getloadavg()[0], 2),
                          **ceiling(database_url, tmp, args.batch, 5_000, analyze=args.analyze)}
                out.append(limits)
                print(json.dumps(limits), flush=True)
    return out


def ceiling(database_url: str | None, tmp: Path, batch: int, events: int, *, analyze: bool = False,
            ) -> dict[str, float]:
    """The database's own limit on this machine, measured right after the phases on a fresh database of
    the same schema filled through the service, one thread: raw `limit=100` pages, the read's query (the
    database-built JSON of an organization's newest 100 events) without HTTP, auth or the read's record."""
    with fresh_database(database_url, tmp) as url:
        storage = open_storage(url)
        try:
            with storage.write() as conn:
                org = identity.create_org(conn, "ceiling")
            for body in make_bodies(events, batch):
                record_batch(storage, org.id, parse_events(body, datetime.now(UTC)))
        finally:
            storage.dispose()
        if url.startswith("sqlite"):
            conn = sqlite3.connect(url.removeprefix("sqlite:///"))
            sql = (f"SELECT {SQLiteBackend().log_json_sql(integrity=False)} FROM events WHERE org_id = ? "
                   'ORDER BY "timestamp" DESC, seq DESC LIMIT 100')
        else:
            if analyze:
                _analyze(url)
            conn = psycopg.connect(_pg_dsn(url), autocommit=True)
            # The page's rows, then their JSON, as storage/queries.py sends it since issue #11.
            sql = (f"SELECT {PostgresBackend().log_json_sql(integrity=False)} FROM (SELECT * FROM events "
                   'WHERE org_id = %s ORDER BY "timestamp" DESC, seq DESC LIMIT 100) AS events '
                   'ORDER BY "timestamp" DESC, seq DESC')
        try:
            start, n = time.perf_counter(), 0
            while time.perf_counter() - start < 3:
                conn.execute(sql, (org.id,)).fetchall()
                n += 1
            return {"raw_pages_per_s": round(n / (time.perf_counter() - start))}
        finally:
            conn.close()


def _line(r: dict[str, Any]) -> str:
    return (f"{r['backend']:10} w={r['workers']} run {r['run']} {r['phase']:15} reads {r['reads_per_s']:7.1f}/s "
            f"p50 {r['read_p50_ms']:6.1f} p95 {r['read_p95_ms']:6.1f} p99 {r['read_p99_ms']:6.1f} ms | ingest "
            f"{r['events_per_s']:6.0f} ev/s p50 {r['batch_p50_ms']:6.1f} p99 {r['batch_p99_ms']:6.1f} ms | err "
            f"{r['errors']} 429 {r['throttled']} | cores: server {r['server_cores']:.2f} generator "
            f"{r['generator_cores']:.2f} | cpu/read {r['server_ms_per_read']} ms cpu/event "
            f"{r['server_us_per_event']} us | waiting for a CPU {r['server_runqueue']:.2f} | database cores "
            f"{r['database_cores']:.2f} machine busy {r['machine_busy_cores']:.2f} | load {r['load1']:.1f}")


def medians(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per backend, workers and phase: the median of each figure over the runs, and the same-run ratio of
    read throughput with ingest to without."""
    out = []
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        if r["phase"] == "database alone":
            out.append(r)
            continue
        groups.setdefault((r["backend"], r["workers"]), []).append(r)
    for (backend, workers), rs in groups.items():
        alone = [r for r in rs if r["phase"] == "reads only"]
        mixed = [r for r in rs if r["phase"] == "reads + ingest"]
        ratios = [m["reads_per_s"] / a["reads_per_s"] for a, m in zip(alone, mixed, strict=True) if a["reads_per_s"]]
        for name in ("reads only", "ingest only", "reads + ingest"):
            phase_rows = [r for r in rs if r["phase"] == name]
            med = {k: round(statistics.median(r[k] for r in phase_rows), 2) for k in phase_rows[0]
                   if isinstance(phase_rows[0][k], int | float) and k not in ("workers", "run")}
            out.append({"backend": backend, "workers": workers, "phase": name, "runs": len(phase_rows), **med,
                        "errors": sum(r["errors"] for r in phase_rows),
                        "read_ratio": round(statistics.median(ratios), 2) if name == "reads + ingest" else None})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url", default=None, help="sqlite:///… (default: a fresh file) or postgresql://… "
                                                         "(a fresh database beside it, dropped afterwards)")
    p.add_argument("--workers", type=int, nargs="+", default=None, help="default: 1 2 (SQLite), 2 4 (PostgreSQL)")
    p.add_argument("--readers", type=int, default=45)
    p.add_argument("--writers", type=int, default=5)
    p.add_argument("--rate", type=int, default=5000, help="ingest events/s in all")
    p.add_argument("--batch", type=int, default=100, help="events per POST")
    p.add_argument("--duration", type=float, default=15, help="seconds per phase")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--preload", type=int, default=5000, help="events stored before the first phase")
    p.add_argument("--reads", choices=("fresh", "walk"), default="fresh")
    p.add_argument("--analyze", action="store_true", help="PostgreSQL: ANALYZE the events after the preload, "
                                                          "as autovacuum would (the default: none, as here)")
    p.add_argument("--ceiling", action="store_true", help="also the database's own limits, after the phases")
    args = p.parse_args()
    postgres = bool(args.database_url) and not args.database_url.startswith("sqlite")
    workers = args.workers or ([2, 4] if postgres else [1, 2])
    rows = [row for w in workers for row in bench(args.database_url, w, args)]
    summary = medians(rows)
    print("\nmedians:")
    for s in summary:
        print(json.dumps(s))
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"load-{'postgres' if postgres else 'sqlite'}-{stamp}.json"
    path.write_text(json.dumps({"machine": machine(), "args": vars(args), "runs": rows, "medians": summary},
                               indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
