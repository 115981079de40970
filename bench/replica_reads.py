"""Reads from a read replica versus the primary (issue #14), in one run on one machine.

    .venv/bin/python bench/replica_reads.py --events 200000 --rounds 5

Starts its own primary (initdb on a free port: tests/e2e/pg_cluster.py), bulk-loads `--events` events into
it as bench/query_bench.py does and VACUUM ANALYZEs it, then makes the hot standby from it (`pg_basebackup
-R`, started on another port) and waits for it to replay everything, then times the same requests
through two in-process apps over one primary: one with `AUDITKEEP_READ_DATABASE_URL` naming the
standby, one without. Requests alternate between the two (the order flips each round), so load swings
hit both alike.

Why the standby is made after the load (issue #14): made before it, the standby builds every page by
replaying the load's WAL, and hint bits (set by the primary's VACUUM, never WAL-logged without data
checksums) are missing on its copies, so its first scans look each row's transaction up in pg_xact and
dirty the page to set them, work the primary did once during VACUUM. A standby made by `pg_basebackup`
of a running primary, as in production, starts from the primary's pages, hint bits included. Both
clusters have the same settings (initdb's defaults, copied by the base backup); the script prints any
setting that differs.

Shapes:

- `page`: `GET /api/v1/audit_logs?limit=100` with one of query_bench's filter shapes (19 per round);
- `export`: an NDJSON export of one week (~4,000 events at 200,000);
- `routing`: `Storage.for_read()` alone, with the replica caught up (its round trips: the primary's WAL
  position, the replica's replay position) and right after a commit on the primary (plus the wait for
  the replica to replay it, which every routed read pays for its own read record).

Beside them, "db": the page's plan and stream below HTTP (no auth, no read record, no routing) on each
database directly, the databases' own cost for the same work. Prints medians and same-run ratios
(replica / primary: of the medians, and the median of back-to-back pairs), the load average, and how many
queries the standby cancelled for replay conflicts. Results: docs/benchmarks.md ("Read replicas").
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/e2e/pg_cluster.py

from query_bench import _direct, _org, analyze, bulk_seed, query_shapes  # type: ignore[import-not-found]

from auditkeep.settings import Settings
from auditkeep.storage import Storage, open_storage
from auditkeep.storage.types import format_timestamp
from tests.e2e.pg_cluster import Cluster


def _settings(primary: str, replica: str, keys: Path) -> Settings:
    return Settings(database_url=primary, read_database_url=replica, log_level="WARNING",
                    signing_key_path=keys / "signing-key.pem", secrets_key_path=keys / "secrets-key",
                    rate_limit="100000/second", auth_failure_limit="100000/minute")


def _wait_replayed(primary: Storage, standby: Storage) -> None:
    with primary.lookup() as conn:
        lsn = conn.exec_driver_sql("SELECT pg_current_wal_lsn()::text").scalar_one()
    for _ in range(6000):
        with standby.lookup() as conn:
            if conn.exec_driver_sql("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).scalar_one():
                return
        time.sleep(0.01)
    raise SystemExit("the standby did not catch up in 60 s")


def _differing_settings(primary: Storage, standby: Storage) -> dict[str, tuple[str | None, str | None]]:
    """Server settings whose values differ between the two (those only a standby or a loaded module has aside)."""
    sql = ("SELECT name, setting FROM pg_settings WHERE name NOT IN ('port', 'unix_socket_directories', "
           "'primary_conninfo', 'transaction_read_only', 'in_hot_standby', 'config_file', 'data_directory', "
           "'hba_file', 'ident_file') AND strpos(name, '.') = 0")
    found = []
    for storage in (primary, standby):
        with storage.lookup() as conn:
            found.append(dict(conn.exec_driver_sql(sql).tuples().all()))
    return {k: (found[0].get(k), found[1].get(k)) for k in found[0].keys() | found[1].keys()
            if found[0].get(k) != found[1].get(k)}


def run(events: int, rounds: int) -> None:
    from fastapi.testclient import TestClient

    from auditkeep.api.app import create_app

    primary, standby = Cluster().init(), Cluster()
    try:
        primary.start()
        keys = primary.root / "keys"
        plain = open_storage(primary.url, settings=_settings(primary.url, "", keys))
        bulk_seed(plain, events)
        analyze(plain)
        standby.standby_of(primary).start()  # after the load: see the module docstring
        routed = open_storage(primary.url, settings=_settings(primary.url, standby.url, keys), migrate=False)
        direct_standby = Storage(standby.url, plain.settings, replica=True)
        _wait_replayed(plain, direct_standby)
        print(f"settings that differ: {_differing_settings(plain, direct_standby) or 'none'}")
        org_id, key = _org(plain)
        headers = {"Authorization": f"Key {key}", "Accept-Encoding": "identity"}
        print(f"load average at the start {os.getloadavg()}")
        # No background threads (streams, indexer, ...): the same app with and without the replica.
        apps = {"primary": create_app(plain.settings, storage=plain),
                "replica": create_app(routed.settings, storage=routed)}
        dbs = {"primary": plain, "replica": direct_standby}
        times: dict[tuple[str, str], list[float]] = {}
        rng = random.Random(7)
        week_start = datetime.now(UTC) - timedelta(days=60)
        shapes = query_shapes(rng)
        with TestClient(apps["primary"]) as on_primary, TestClient(apps["replica"]) as on_replica:
            clients = {"primary": on_primary, "replica": on_replica}

            def timed(where: str, shape: str, params: dict[str, object]) -> None:
                t0 = time.perf_counter()
                r = clients[where].get("/api/v1/audit_logs", params=params, headers=headers)
                times.setdefault((shape, where), []).append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200, r.text

            for _ in range(20):  # warm both databases' caches and both pools
                _, params = next(shapes)
                for where in clients:
                    timed(where, "warm", {**params, "limit": 100})
            for i in range(rounds):
                order = ["primary", "replica"] if i % 2 == 0 else ["replica", "primary"]
                for _ in range(19):
                    _, params = next(shapes)
                    for where in order:
                        timed(where, "page", {**params, "limit": 100})
                        t = _direct(dbs[where], org_id, params)
                        times.setdefault(("db page", where), []).append(t)
                    # Routing alone: once with the replica caught up (the round trips), once right after a
                    # commit on the primary (the round trips and the wait for replay).
                    t0 = time.perf_counter()
                    routed.for_read()
                    times.setdefault(("route", "idle"), []).append((time.perf_counter() - t0) * 1000)
                    with plain.write() as conn:
                        conn.exec_driver_sql("UPDATE chain_heads SET seq = seq WHERE org_id = %s", (org_id,))
                    t0 = time.perf_counter()
                    routed.for_read()
                    times.setdefault(("route", "after write"), []).append((time.perf_counter() - t0) * 1000)
                week = {"start_date": format_timestamp(week_start),
                        "end_date": format_timestamp(week_start + timedelta(days=7)), "format": "ndjson"}
                for where in order:
                    timed(where, "export", week)
        replicas = routed.replicas
        assert replicas is not None
        print(f"events {events:,}, rounds {rounds}, load average at the end {os.getloadavg()}")
        print(f"routing: {dict(replicas.counts)}")
        # "paired": the median of each request's replica / primary time, the two timed back to back with the
        # same parameters; less swayed by a load swing that hits a stretch of requests than the ratio of medians.
        print(f"{'shape':<10} {'primary ms':>11} {'replica ms':>11} {'ratio':>6} {'paired':>7} {'n':>5}")
        for shape in ("page", "db page", "export"):
            p, r = times[(shape, "primary")], times[(shape, "replica")]
            mp, mr = statistics.median(p), statistics.median(r)
            paired = statistics.median(b / a for a, b in zip(p, r, strict=True))
            print(f"{shape:<10} {mp:>11.2f} {mr:>11.2f} {mr / mp:>6.2f} {paired:>7.2f} {len(p):>5}")
        with direct_standby.lookup() as conn:
            conflicts = conn.exec_driver_sql(
                "SELECT confl_lock + confl_snapshot + confl_bufferpin + confl_deadlock + confl_tablespace "
                "FROM pg_stat_database_conflicts WHERE datname = current_database()").scalar_one()
        print(f"queries the standby cancelled for replay conflicts: {conflicts}")
        for case in ("idle", "after write"):
            t = times[("route", case)]
            print(f"routing ({case}): median {statistics.median(t):.2f} ms, max {max(t):.2f} ms, n {len(t)}")
        routed.dispose()
        plain.dispose()
        direct_standby.dispose()
    finally:
        standby.destroy()
        primary.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    run(args.events, args.rounds)


if __name__ == "__main__":
    main()
