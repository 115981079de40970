"""Alert evaluation (issue #13): how fast one rule catches up with a log, beside the database's own limit.

N events are stored in-process (as bench/chain_cost.py), received all at once, so a window of 60 s holds
all of them. Then, on the same database, interleaved for --runs rounds:

- `read`: the database's own limit for what the evaluator asks of it: every batch of 1,000 matching
  events after a cursor (storage/streams.next_batch, the stream forwarder's read, JSON built by the
  database) and their received_at, one batch after another, doing nothing with them.
- `rule (filter)`: an evaluator catching up on a new rule that matches 1 event in 5 (`action` =
  user.login), grouped by user_email (1,000 users), 5 within 60 s, cooldown 300 s: it fires once per user
  and holds the rest back, so its state carries 1,000 groups.
- `rule (all)`: a rule matching every event, grouped by user_email (1,000 groups), 1,000 within 60 s
  (none fires: each group holds up to 999 events in the state).

Each rule is created at seq 0 (its cursor moved back by hand) and timed until its evaluated_seq reaches
the head; firings are recorded as `alert.fired` events, which is part of the time. Reports events of the
log scanned per second, medians of --runs, and the load average before and after.

    .venv/bin/python bench/alerts_bench.py --n 200000 --runs 3 [--database-url postgresql://...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest_export import RESULTS, fresh_database, machine, make_bodies

from auditkeep.alerts import service
from auditkeep.alerts.evaluator import BATCH, Evaluator
from auditkeep.ingest.selfaudit import Origin
from auditkeep.ingest.service import record_events
from auditkeep.ingest.validation import parse_events
from auditkeep.schemas.alerts import AlertRuleCreate
from auditkeep.settings import Settings
from auditkeep.storage import Storage, identity, open_storage
from auditkeep.storage import alerts as rules
from auditkeep.storage import streams as stream_rows
from auditkeep.storage.tables import alert_firings
from auditkeep.streams.forwarder import log_filters

ORIGIN = Origin(source="bench", client_ip="127.0.0.1", url="bench:alerts")
RULES: dict[str, dict[str, Any]] = {
    "rule (filter)": {"filter": {"action": "user.login"}, "threshold": {"count": 5, "window_seconds": 60},
                      "group_by": ["user_email"], "cooldown_seconds": 300},
    "rule (all)": {"filter": {}, "threshold": {"count": 1000, "window_seconds": 60}, "group_by": ["user_email"]},
}


def _read(storage: Storage, org_id: int, head: int, spec: dict[str, Any]) -> None:
    after, filters = 0, log_filters(spec)
    while after < head:
        found = stream_rows.next_batch(storage, org_id, after, filters, BATCH)
        with storage.read() as conn:
            stream_rows.received_at(conn, org_id, [s for _, s, _ in found.rows])
        after = found.through_seq


def _evaluate(storage: Storage, settings: Settings, org_id: int, head: int, name: str, round_: int) -> int:
    rule = service.create(storage, org_id, AlertRuleCreate.model_validate({**RULES[name], "name": f"{name} {round_}"}),
                          origin=ORIGIN, actor=None)
    with storage.write() as conn:
        rules.update(conn, org_id, rule.id, evaluated_seq=0)
    evaluator = Evaluator(storage, settings)
    try:
        while True:
            evaluator.run_once()
            with storage.read() as conn:
                row = rules.get(conn, org_id, rule.id, with_state=False)
            if row.evaluated_seq >= head:
                break
    finally:
        evaluator.stop()
    with storage.write() as conn:
        assert rules.pending_count(conn, rule.id) == 0  # no channels: every firing is done once recorded
        fired = conn.execute(alert_firings.select().where(alert_firings.c.rule_id == rule.id)).all()
        rules.update(conn, org_id, rule.id, enabled=False)
    return len(fired)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--database-url", default=None)
    args = p.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="auditkeep-alerts-") as tmp, \
            fresh_database(args.database_url, Path(tmp)) as url:
        settings = Settings(database_url=url, signing_key_path=Path(tmp) / "key.pem",
                            secrets_key_path=Path(tmp) / "secrets", checkpoint_every_events=10**9)
        storage = open_storage(url, settings=settings)
        with storage.write() as conn:
            org = identity.create_org(conn, "bench")
        for body in make_bodies(args.n, 5000):
            record_events(storage, org.id, parse_events(body, datetime.now(UTC)))
        with storage.read() as conn:
            head = stream_rows.head_seq(conn, org.id)
        times: dict[str, list[float]] = {"read (filter)": [], "read (all)": [], **{k: [] for k in RULES}}
        firings: dict[str, int] = {}
        for r in range(args.runs):
            for name, spec in RULES.items():
                t = time.perf_counter()
                _read(storage, org.id, head, spec["filter"])
                times[name.replace("rule", "read")].append(time.perf_counter() - t)
                t = time.perf_counter()
                firings[name] = _evaluate(storage, settings, org.id, head, name, r)
                times[name].append(time.perf_counter() - t)
            print(f"round {r + 1}: " + ", ".join(f"{k} {head / v[-1]:,.0f} events/s" for k, v in times.items()),
                  flush=True)
        storage.dispose()
    backend = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    medians = {k: head / statistics.median(v) for k, v in times.items()}
    result = {"backend": backend, "n": args.n, "head": head, "runs": args.runs, "events_per_second": medians,
              "firings": firings, "load_before": load_before, "load_after": os.getloadavg(), "machine": machine()}
    print(f"\n{backend}, {args.n:,} events, medians of {args.runs} (events of the log scanned per second):")
    for name in RULES:
        read = medians[name.replace("rule", "read")]
        print(f"  {name}: {medians[name]:,.0f}/s, the database's read alone {read:,.0f}/s "
              f"(ratio {medians[name] / read:.2f}); {firings[name]:,} firings")
    print(f"  load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"alerts-{backend.lower()}-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
