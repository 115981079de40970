"""Ingest on PostgreSQL with 1, 2 and 4 workers and with 2 nodes, beside `COPY FROM` of the same rows into
the same schema, interleaved in one run (issue #14).

Each round, on a fresh database each: `auditkeep serve --workers 1`, `--workers 2`, `--workers 4`, two
`auditkeep serve --workers 1` processes on separate ports (two nodes, each sent half the batches by half
the clients, at the same time), and PostgreSQL's own `COPY events FROM STDIN` of the rows the service
would store (bench/ingest_export.py's `postgres_ceiling`: one transaction a batch, made-up hashes). Bodies
are generated before any clock starts; every event carries a client-made UUIDv7, as the SDK sends.
Medians over the rounds, and each configuration's ratio to the same round's COPY, then the median ratio.

    .venv/bin/python bench/nodes_ingest.py --database-url postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/nodes_ingest.py --database-url ... --n 50000 --runs 1   # quick look
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
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx

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
    fresh_database,
    ingest,
    machine,
    make_bodies,
    postgres_ceiling,
)


@contextlib.contextmanager
def nodes(database_url: str, count: int, workers: int, tmp: Path) -> Iterator[list[Server]]:
    """`count` `auditkeep serve --workers N` processes on one database, with one organization and key."""
    env = {**os.environ, "AUDITKEEP_DATABASE_URL": database_url,
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


def run_config(url: str, bodies: list[bytes], tmp: Path, *, count: int, workers: int, clients: int) -> float:
    """Events/s of ingesting every body through `count` nodes at once (batches dealt round-robin)."""
    with nodes(url, count, workers, tmp) as servers:
        shares = [bodies[i::count] for i in range(count)]
        elapsed: list[float] = []
        threads = [threading.Thread(target=lambda s=s, b=b: elapsed.append(ingest(s, b, max(1, clients // count))))
                   for s, b in zip(servers, shares, strict=True)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        if len(elapsed) != count:
            raise RuntimeError("a node's ingest failed")
    n = sum(body.count(b'"event_uuid"') for body in bodies)
    return n / wall


CONFIGS = {"workers_1": (1, 1), "workers_2": (1, 2), "workers_4": (1, 4), "nodes_2x1": (2, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url", required=True, help="a PostgreSQL server; fresh databases are made beside it")
    p.add_argument("--n", type=int, default=200_000, help="events per ingest")
    p.add_argument("--batch", type=int, default=5000, help="events per POST")
    p.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients in all (split between nodes)")
    p.add_argument("--runs", type=int, default=3, help="rounds; medians reported")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="auditkeep-nodes-bench-"))
    bodies = make_bodies(args.n, args.batch)
    eps: dict[str, list[float]] = {k: [] for k in [*CONFIGS, "copy_from"]}
    loads: list[float] = []
    try:
        for i in range(args.runs):
            for name, (count, workers) in CONFIGS.items():
                with fresh_database(args.database_url, tmp) as url:
                    eps[name].append(run_config(url, bodies, tmp, count=count, workers=workers,
                                                clients=args.clients))
            with fresh_database(args.database_url, tmp) as url:
                eps["copy_from"].append(postgres_ceiling(url, bodies, copy=True))
            loads.append(os.getloadavg()[0])
            print(f"round {i + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in eps.items())
                  + f" ev/s (load {loads[-1]:.1f})", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = {f"{k}_eps": statistics.median(v) for k, v in eps.items()}
    for k in CONFIGS:
        summary[f"{k}_vs_copy"] = statistics.median(a / c for a, c in zip(eps[k], eps["copy_from"], strict=True))
    summary["load_average_1m"] = statistics.median(loads)
    print(f"\npostgresql, N={args.n:,}, batch={args.batch:,}, clients={args.clients}, runs={args.runs} (medians)")
    for k, v in summary.items():
        print(f"  {k:<22} {v:,.2f}" if v < 10 else f"  {k:<22} {v:,.0f}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"nodes_ingest-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps({"command": " ".join([Path(sys.executable).name, *sys.argv]), "args": vars(args),
                               "machine": machine(), "summary": summary, "runs": eps, "loads": loads}, indent=2))
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
