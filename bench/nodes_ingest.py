"""Ingest on PostgreSQL with 1, 2 and 4 workers and with 2 nodes, beside `COPY FROM` of the same rows into
the same schema, interleaved in one run (issue #14).

Each round, on a fresh database each: `auditkeep serve --workers 1`, `--workers 2`, `--workers 4`, two
`auditkeep serve --workers 1` processes on separate ports (two nodes, each sent half the batches by half
the clients, at the same time), and PostgreSQL's own `COPY events FROM STDIN` of the rows the service
would store (bench/ingest_export.py's `postgres_ceiling`: one transaction a batch, made-up hashes). Bodies
are generated before any clock starts; every event carries a client-made UUIDv7, as the SDK sends.
Medians over the rounds, and each configuration's ratio to the same round's COPY, then the median ratio.

`--background on,off` runs each configuration with the server's background jobs on (the product's
default) and off (AUDITKEEP_FORWARDER, _SEARCH_INDEXER, _ALERT_EVALUATOR, _SELF_WATCH, _STATS_ROLLER all
false), interleaved in the same round (`only:SELF_WATCH` and the like: that job alone), and reports
each ingest's CPU: the servers' process trees (µs an event) and the database backends serving them
(their /proc CPU time while the servers ran).
`--sample-waits` also counts what those backends were doing (pg_stat_activity, every 50 ms).

    .venv/bin/python bench/nodes_ingest.py --database-url postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/nodes_ingest.py --database-url ... --n 50000 --runs 1   # quick look
    .venv/bin/python bench/nodes_ingest.py --database-url ... --configs workers_1,workers_2 --background on,off
    .venv/bin/python bench/nodes_ingest.py --database-url ... --src old=/tmp/old/src,new=src   # same-run A/B

`--src` runs each configuration once per code variant (`git archive <commit> src` unpacked somewhere, put
first on the servers' PYTHONPATH), interleaved in each round.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_export import (
    ADMIN,
    ORG,
    RESULTS,
    ROOT,
    VENV_BIN,
    Server,
    _cli,
    _free_port,
    _pg_dsn,
    fresh_database,
    ingest,
    machine,
    make_bodies,
    postgres_ceiling,
    tree_cpu_seconds,
)

# Every job `auditkeep serve` runs beside requests that a setting switches off (the partition keeper
# runs its upkeep once an hour and has no switch).
BACKGROUND_OFF = {"AUDITKEEP_FORWARDER": "false", "AUDITKEEP_SEARCH_INDEXER": "false",
                  "AUDITKEEP_ALERT_EVALUATOR": "false", "AUDITKEEP_SELF_WATCH": "false",
                  "AUDITKEEP_STATS_ROLLER": "false"}


def background_env(mode: str) -> dict[str, str]:
    """The settings for `--background` mode `on` (the default: every job), `off` (none) or `only:NAME`
    (that one job alone, NAME as in BACKGROUND_OFF without the prefix, e.g. only:SELF_WATCH)."""
    if mode == "on":
        return {}
    if mode == "off":
        return dict(BACKGROUND_OFF)
    name = "AUDITKEEP_" + mode.removeprefix("only:")
    if not mode.startswith("only:") or name not in BACKGROUND_OFF:
        raise SystemExit(f"--background: unknown mode {mode!r}")
    return {k: v for k, v in BACKGROUND_OFF.items() if k != name}


@contextlib.contextmanager
def nodes(database_url: str, count: int, workers: int, tmp: Path, *,
          background: str = "on", src: str | None = None) -> Iterator[list[Server]]:
    """`count` `auditkeep serve --workers N` processes on one database, with one organization and key; with
    `src`, the servers (and the CLI that sets them up) run that source tree's auditkeep (PYTHONPATH)."""
    code = {} if src is None else {"PYTHONPATH": src}
    env = {**os.environ, **code, **background_env(background), "AUDITKEEP_DATABASE_URL": database_url,
           "AUDITKEEP_SIGNING_KEY_PATH": str(tmp / "signing-key.pem"),
           "AUDITKEEP_SECRETS_KEY_PATH": str(tmp / "secrets-key"), "AUDITKEEP_LOG_LEVEL": "WARNING"}
    _cli(env, "orgs", "create", ORG)
    _cli(env, "users", "create", "--org", ORG, "--email", ADMIN, "--role", "admin")
    key = _cli(env, "keys", "create", "--org", ORG, "--user", ADMIN)
    servers: list[Server] = []
    try:
        for _ in range(count):
            port = _free_port()
            log_path = tmp / f"server-{port}.log"
            with open(log_path, "wb") as log:
                proc = subprocess.Popen([str(VENV_BIN / "auditkeep"), "serve", "--port", str(port),
                                         "--workers", str(workers)], env=env, stdout=log, stderr=subprocess.STDOUT)
            servers.append(Server(proc, f"http://127.0.0.1:{port}", key, log_path))
        deadline = time.monotonic() + 90
        for s in servers:
            while True:
                if s.proc.poll() is not None:
                    raise RuntimeError(f"server exited: {s.log_path.read_text()[-2000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{s.base_url}/readyz", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("server did not become ready in 90 s")
                time.sleep(0.1)
        time.sleep(2)  # every worker done importing, so the first batches do not wait on it
        yield servers
    finally:
        for s in servers:
            s.proc.terminate()
        for s in servers:
            try:
                s.proc.wait(20)
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait()


def _proc_cpu_seconds(pid: int) -> float:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


class Backends:
    """The database's server processes connected to one database: their CPU time, and optionally what they
    were doing (pg_stat_activity sampled every 50 ms in a thread)."""

    def __init__(self, url: str, sample: bool) -> None:
        self.conn = psycopg.connect(_pg_dsn(url), autocommit=True)
        self.db = self.conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        self.start: dict[int, float] = {}
        self.waits: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True) if sample else None

    def _pids(self) -> list[int]:
        rows = self.conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> "
                                 "pg_backend_pid()", (self.db,)).fetchall()
        return [r[0] for r in rows]

    def begin(self) -> None:
        self.start = {p: _proc_cpu_seconds(p) for p in self._pids()}
        if self._thread is not None:
            self._thread.start()

    def _sample(self) -> None:
        with psycopg.connect(self.conn.info.dsn, autocommit=True) as conn:
            while not self._stop.wait(0.05):
                for state, wtype, wevent, query in conn.execute(
                        "SELECT state, wait_event_type, wait_event, left(regexp_replace(query, '\\s+', ' ', 'g'), 60) "
                        "FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() "
                        "AND state <> 'idle'", (self.db,)):
                    self.waits[f"{state} | {wtype}:{wevent} | {query}"] += 1

    def end(self) -> float:
        """CPU seconds the backends used since `begin` (those connected at the end; one that closed
        meanwhile is not counted)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        total = sum(_proc_cpu_seconds(p) - self.start.get(p, 0.0) for p in self._pids())
        self.conn.close()
        return total


def run_config(url: str, bodies: list[bytes], tmp: Path, *, count: int, workers: int, clients: int,
               background: str = "on", sample_waits: bool = False, src: str | None = None) -> dict[str, Any]:
    """Ingest every body through `count` nodes at once (batches dealt round-robin): events/s, server and
    database CPU µs an event, and (with `sample_waits`) the backends' most frequent states."""
    n = sum(body.count(b'"event_uuid"') for body in bodies)
    with nodes(url, count, workers, tmp, background=background, src=src) as servers:
        shares = [bodies[i::count] for i in range(count)]
        elapsed: list[float] = []
        threads = [threading.Thread(target=lambda s=s, b=b: elapsed.append(ingest(s, b, max(1, clients // count))))
                   for s, b in zip(servers, shares, strict=True)]
        backends = Backends(url, sample_waits)
        backends.begin()
        cpu = sum(tree_cpu_seconds(s.proc.pid) for s in servers)
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        cpu = sum(tree_cpu_seconds(s.proc.pid) for s in servers) - cpu
        db_cpu = backends.end()
        if len(elapsed) != count:
            raise RuntimeError("a node's ingest failed")
    return {"eps": n / wall, "server_cpu_us": cpu / n * 1e6, "db_cpu_us": db_cpu / n * 1e6,
            "waits": backends.waits.most_common(12)}


CONFIGS = {"workers_1": (1, 1), "workers_2": (1, 2), "workers_4": (1, 4), "nodes_2x1": (2, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url", required=True, help="a PostgreSQL server; fresh databases are made beside it")
    p.add_argument("--n", type=int, default=200_000, help="events per ingest")
    p.add_argument("--batch", type=int, default=5000, help="events per POST")
    p.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients in all (split between nodes)")
    p.add_argument("--runs", type=int, default=3, help="rounds; medians reported")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"which of {', '.join(CONFIGS)}")
    p.add_argument("--background", default="on",
                   help="the servers' background jobs: on, off, only:NAME (e.g. only:SELF_WATCH), comma-separated")
    p.add_argument("--sample-waits", action="store_true", help="count the database backends' states and waits")
    p.add_argument("--src", default="",
                   help="code variants, NAME=SRC_DIR comma-separated (e.g. old=/tmp/old/src,new=/tmp/new/src): "
                        "each configuration runs with each variant's auditkeep (PYTHONPATH), interleaved in a round")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="auditkeep-nodes-bench-"))
    bodies = make_bodies(args.n, args.batch)
    modes = args.background.split(",")
    for mode in modes:
        background_env(mode)  # refuse an unknown mode before anything starts
    srcs: dict[str, str | None] = dict(item.split("=", 1) for item in args.src.split(",")) if args.src else {"": None}
    configs = [(f"{c}_bg_{m.replace(':', '_').lower()}" if len(modes) > 1 else c, c, m)
               for c in args.configs.split(",") for m in modes]
    configs = [(f"{name}_{variant}" if variant else name, c, m) for name, c, m in configs for variant in srcs]
    code = {name: srcs[name.rsplit("_", 1)[1]] if args.src else None for name, _, _ in configs}
    eps: dict[str, list[float]] = {k: [] for k, _, _ in [*configs, ("copy_from", "", "")]}
    details: dict[str, list[dict[str, Any]]] = {k: [] for k, _, _ in configs}
    loads: list[float] = []
    copy_cpus: list[dict[str, float]] = []
    try:
        for i in range(args.runs):
            for name, config, background in configs:
                count, workers = CONFIGS[config]
                with fresh_database(args.database_url, tmp) as url:
                    got = run_config(url, bodies, tmp, count=count, workers=workers, clients=args.clients,
                                     background=background, sample_waits=args.sample_waits, src=code[name])
                got["load_1m"] = os.getloadavg()[0]
                eps[name].append(got["eps"])
                details[name].append(got)
                print(f"  {name}: {got['eps']:,.0f} ev/s, server {got['server_cpu_us']:.1f} + database "
                      f"{got['db_cpu_us']:.1f} CPU us/event (load {got['load_1m']:.1f})", flush=True)
                for what, samples in got["waits"]:
                    print(f"      {samples:5d}  {what}", flush=True)
            with fresh_database(args.database_url, tmp) as url:
                copy_cpu: dict[str, float] = {}
                eps["copy_from"].append(postgres_ceiling(url, bodies, copy=True, cpu=copy_cpu))
                n = sum(body.count(b'"event_uuid"') for body in bodies)
                copy_cpu = {k: v / n * 1e6 for k, v in copy_cpu.items()}
                copy_cpus.append(copy_cpu)
                print(f"  copy_from: {eps['copy_from'][-1]:,.0f} rows/s, client {copy_cpu['client']:.1f} + database "
                      f"{copy_cpu['database']:.1f} CPU us/row (load {os.getloadavg()[0]:.1f})", flush=True)
            loads.append(os.getloadavg()[0])
            print(f"round {i + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in eps.items())
                  + f" ev/s (load {loads[-1]:.1f})", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = {f"{k}_eps": statistics.median(v) for k, v in eps.items()}
    for k, _, _ in configs:
        summary[f"{k}_vs_copy"] = statistics.median(a / c for a, c in zip(eps[k], eps["copy_from"], strict=True))
        summary[f"{k}_server_cpu_us"] = statistics.median(d["server_cpu_us"] for d in details[k])
        summary[f"{k}_db_cpu_us"] = statistics.median(d["db_cpu_us"] for d in details[k])
    summary["copy_from_client_cpu_us"] = statistics.median(c["client"] for c in copy_cpus)
    summary["copy_from_db_cpu_us"] = statistics.median(c["database"] for c in copy_cpus)
    summary["load_average_1m"] = statistics.median(loads)
    print(f"\npostgresql, N={args.n:,}, batch={args.batch:,}, clients={args.clients}, runs={args.runs} (medians)")
    for k, v in summary.items():
        print(f"  {k:<22} {v:,.2f}" if v < 10 else f"  {k:<22} {v:,.0f}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"nodes_ingest-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps({"command": " ".join([Path(sys.executable).name, *sys.argv]), "args": vars(args),
                               "machine": machine(), "summary": summary, "runs": eps, "details": details,
                               "copy_cpu": copy_cpus, "loads": loads}, indent=2))
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
