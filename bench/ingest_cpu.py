"""Server CPU an event of paced small-batch ingest, old code against new in the same session (issue #11).

The "ingest only" phase of bench/load.py, on its own: `--writers` clients POST `--batch`-event batches paced
to `--rate` events/s in all against `auditkeep serve --workers N`, for `--duration` seconds, and the server
process tree's CPU is divided by the events stored. Each `--code` is a directory holding an `auditkeep`
package (e.g. `git archive <commit> src | tar -x -C /tmp/old`, then `--code /tmp/old/src`; `.` is the working
tree), put first on the server's PYTHONPATH; rounds take the codes in turn (ABAB...), each on a fresh database,
so a noisy machine moves every code alike. `--env NAME=VALUE` sets a variable for every server (for instance
AUDITKEEP_SEARCH_INDEXER=false); `--code-env LABEL:NAME=VALUE` for one code only.

After each phase the script waits for the background jobs (search indexer, stats roller, self-watch) to
reach the chain head and reports how far behind each was when the writers stopped and how long it took to
catch up: cutting their CPU must not leave them behind.

    .venv/bin/python -u bench/ingest_cpu.py --code /tmp/old/src --code . --rounds 3 --workers 2
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest_export import RESULTS, _pg_dsn, _tree, fresh_database, machine, make_bodies
from load import _preload, _setup, run_phase, serving, tree_schedstat

REPO = Path(__file__).resolve().parent.parent
MEDIANS = ("events_per_s", "server_us_per_event", "database_us_per_event", "server_cores", "batch_p50_ms",
           "batch_p99_ms", "load1")
SHOWN = ("code", "round", *MEDIANS, "errors", "server_runqueue", "database_cores", "machine_busy_cores",
         "indexed_behind", "indexed_caught_up_s", "rolled_behind", "rolled_caught_up_s", "verified_behind",
         "verified_caught_up_s", "indexed_lag_p50", "indexed_lag_max", "indexed_went_back", "rolled_lag_p50",
         "rolled_lag_max", "verified_lag_p50", "verified_lag_max", "thread_cpu_s")


def _positions(url: str) -> dict[str, int | None]:
    """The chain head's seq and each job's position, for the one organization."""
    queries = {
        "head": "SELECT max(seq) FROM chain_heads",
        "indexed": "SELECT max(indexed_seq) FROM search_positions",
        "rolled": "SELECT max(rolled_seq) FROM stats_positions",
        "verified": "SELECT max(verified_seq) FROM integrity_watch",
    }
    out: dict[str, int | None] = {}
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        search = f"{path}-search"
        try:
            if Path(search).exists():  # SQLite's index and its positions are a file of their own
                conn.execute("ATTACH DATABASE ? AS search", (f"file:{search}?mode=ro",))
                queries["indexed"] = "SELECT max(indexed_seq) FROM search.search_positions"
            for name, sql in queries.items():
                try:
                    out[name] = conn.execute(sql).fetchone()[0]
                except sqlite3.OperationalError:
                    out[name] = None
        finally:
            conn.close()
        return out
    with psycopg.connect(_pg_dsn(url), autocommit=True) as conn:
        for name, sql in queries.items():
            try:
                out[name] = conn.execute(sql).fetchone()[0]
            except psycopg.Error:
                out[name] = None
    return out


def _thread_names(pid: int) -> dict[int, str]:
    """The server's threads by OS thread id (py-spy dump names them; threads started later are "other")."""
    names: dict[int, str] = {}
    for p in _tree(pid):
        out = subprocess.run([str(REPO / ".venv/bin/py-spy"), "dump", "--pid", str(p)], check=False,
                             capture_output=True,
                             text=True).stdout
        for line in out.splitlines():
            m = re.match(r'Thread (\d+) \(\w+\): "(.*)"', line)
            if m:
                name = re.sub(r"^Thread-\d+ ", "", m.group(2))
                names[int(m.group(1))] = "worker thread" if name.startswith(("AnyIO", "Thread-")) else name
    return names


def _by_thread(before: dict[tuple[int, int], tuple[float, float]], after: dict[tuple[int, int], tuple[float, float]],
               names: dict[int, str]) -> dict[str, float]:
    """CPU seconds of the phase per thread name (summed over the workers)."""
    out: dict[str, float] = {}
    for (pid, tid), (ran, _) in after.items():
        name = names.get(tid, "other (request threads)")
        out[name] = round(out.get(name, 0.0) + ran - before.get((pid, tid), (0.0, 0.0))[0], 3)
    return out


def _sample(url: str, out: list[dict[str, int | None]], stop: threading.Event) -> None:
    """The positions every 0.25 s while the writers run: how far behind the head each job stays."""
    while not stop.wait(0.25):
        out.append(_positions(url))


def _lag(url: str, jobs: list[str], timeout: float = 60.0) -> dict[str, Any]:
    """How far behind the head each job was right after the writers stopped, and the seconds until it
    reached the head (None: not within `timeout`, or the job is off)."""
    start = time.monotonic()
    first = _positions(url)
    head = first["head"] or 0
    out: dict[str, Any] = {f"{j}_behind": None if first[j] is None else head - first[j] for j in jobs}
    pending = {j for j in jobs if first[j] is not None}
    caught: dict[str, float | None] = dict.fromkeys(jobs)
    while pending and time.monotonic() - start < timeout:
        now = _positions(url)
        for j in list(pending):
            if (now[j] or 0) >= head:
                caught[j] = round(time.monotonic() - start, 2)
                pending.discard(j)
        if pending:
            time.sleep(0.05)
    out.update({f"{j}_caught_up_s": caught[j] for j in jobs})
    return out


def one(label: str, code: str, url_base: str | None, args: argparse.Namespace,
        extra_env: dict[str, str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="auditkeep-ingest-cpu-") as tmpdir:
        tmp = Path(tmpdir)
        with fresh_database(url_base, tmp) as url:
            path = str((REPO / code).resolve()) if not Path(code).is_absolute() else code
            os.environ["PYTHONPATH"] = path  # for _setup's `auditkeep orgs create`, which migrates
            try:
                keys, env = _setup(url, tmp, args.writers, 0)
            finally:
                del os.environ["PYTHONPATH"]
            env = {**env, "PYTHONPATH": path, **extra_env}
            per_run = int(args.rate * (args.duration + 10)) + args.preload + 10 * args.batch
            bodies = iter(make_bodies(per_run, args.batch))
            with serving(env, args.workers) as (base, pid):
                _preload(base, keys[-1], bodies, args.preload, args.batch)
                uvloop.run(run_phase("warm-up", base, pid, keys, 0, args.writers, args.rate, args.batch, bodies,
                                     3, False, url))
                _lag(url, ["indexed", "rolled", "verified"])
                spy = None
                if args.profile:
                    spy = subprocess.Popen([str(REPO / ".venv/bin/py-spy"), "record", "--subprocesses",
                                            "-r", "100", "-d", str(int(args.duration)), "--format", "raw", "-o",
                                            f"{args.profile}-{label}.txt", "-p", str(pid), *args.spy_flag],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                names = _thread_names(pid) if args.threads else {}
                sched0 = tree_schedstat(pid)
                samples: list[dict[str, int | None]] = []
                sampling = threading.Event()
                sampler = threading.Thread(target=_sample, args=(url, samples, sampling))
                sampler.start()
                try:
                    phase = uvloop.run(run_phase("ingest only", base, pid, keys, 0, args.writers, args.rate,
                                                 args.batch, bodies, args.duration, False, url))
                finally:
                    sampling.set()
                    sampler.join()
                threads = _by_thread(sched0, tree_schedstat(pid), names) if args.threads else {}
                lag = _lag(url, ["indexed", "rolled", "verified"])
                if spy is not None:
                    spy.wait()
            during = {}
            for j in ("indexed", "rolled", "verified"):
                lags = [(x["head"] or 0) - x[j] for x in samples if x[j] is not None]
                during[f"{j}_lag_p50"] = statistics.median(lags) if lags else None
                during[f"{j}_lag_max"] = max(lags) if lags else None
                seen = [x[j] for x in samples if x[j] is not None]
                during[f"{j}_went_back"] = sum(1 for a, b in itertools.pairwise(seen) if b < a)
            stored = len(phase.batches) * args.batch
            during["database_us_per_event"] = round(phase.database_cpu / stored * 1e6, 1) if stored else None
            row = {"code": label, "backend": url.split(":", 1)[0], "workers": args.workers,
                   **phase.summary(args.writers, args.batch), **lag, **during, "samples": samples,
                   "thread_cpu_s": threads}
            return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--code", action="append", required=True, help="LABEL=DIR or DIR (the label is DIR)")
    p.add_argument("--database-url", default=None)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--writers", type=int, default=5)
    p.add_argument("--rate", type=int, default=5000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--duration", type=float, default=15)
    p.add_argument("--preload", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--env", action="append", default=[], help="NAME=VALUE for every server")
    p.add_argument("--code-env", action="append", default=[], help="LABEL:NAME=VALUE for one code's servers")
    p.add_argument("--profile", help="py-spy the server during each phase into PROFILE-LABEL.txt (collapsed)")
    p.add_argument("--spy-flag", action="append", default=[], help="passed to py-spy record (--gil, --native)")
    p.add_argument("--threads", action="store_true", help="CPU per server thread name (py-spy dump names them)")
    args = p.parse_args()
    codes = [(c.split("=", 1)[0], c.split("=", 1)[1]) if "=" in c else (c, c) for c in args.code]
    common = dict(e.split("=", 1) for e in args.env)
    per_code: dict[str, dict[str, str]] = {label: dict(common) for label, _ in codes}
    for e in args.code_env:
        label, assignment = e.split(":", 1)
        name, value = assignment.split("=", 1)
        per_code[label][name] = value
    rows = []
    for r in range(args.rounds):
        order = codes if r % 2 == 0 else list(reversed(codes))
        for label, code in order:
            row = one(label, code, args.database_url, args, per_code[label])
            row["round"] = r + 1
            rows.append(row)
            print(json.dumps({k: row[k] for k in SHOWN}), flush=True)
    print("\nmedians:")
    for label, _ in codes:
        mine = [r for r in rows if r["code"] == label]
        med = {k: statistics.median(v) if (v := [r[k] for r in mine if r[k] is not None]) else None for k in MEDIANS}
        print(json.dumps({"code": label, "runs": len(mine), **med}), flush=True)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"ingest-cpu-{stamp}.json"
    out.write_text(json.dumps({"machine": machine(), "args": vars(args), "runs": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
