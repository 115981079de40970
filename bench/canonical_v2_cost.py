"""CPU cost of preparing an event for the chain, canonical form version 1 against version 2 (issue #12).

Times ingest.service._prepare (canonical bytes, and for v2 the salted personal commitment) over the same
5,000 validated events, interleaved v1/v2 rounds, in one run; prints medians and their ratio.
Run: .venv/bin/python bench/canonical_v2_cost.py
"""

from __future__ import annotations

import os
import statistics
import time
from datetime import UTC, datetime

import orjson

from auditkeep.ingest import service
from auditkeep.ingest.validation import parse_events

N, ROUNDS = 5000, 15


def main() -> None:
    now = datetime.now(UTC)
    body = orjson.dumps([{"client_ip": f"10.0.{i % 250}.{i % 200}", "url": f"https://app.example/d/{i}",
                          "action": "datasource.update", "object_type": "datasource", "object_id": i,
                          "user_email": f"user{i % 50}@example.com", "user_id": i % 50, "status": "success",
                          "user_agent": "Mozilla/5.0", "payload": {"field": "name", "old": "a", "new": "b"}}
                         for i in range(N)])
    events = parse_events(body, now)
    salts = os.urandom(16 * N)
    times: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(ROUNDS):
        for version in (1, 2):
            service.WRITE_VERSION = version
            start = time.process_time()
            for i, e in enumerate(events):
                service._prepare(e, "x", str, salts[16 * i : 16 * i + 16])
            times[version].append((time.process_time() - start) / N * 1e6)
    v1, v2 = statistics.median(times[1]), statistics.median(times[2])
    print(f"load {os.getloadavg()[0]:.1f}; prepare per event: v1 {v1:.2f} us, v2 {v2:.2f} us, +{v2 - v1:.2f} us")


if __name__ == "__main__":
    main()
