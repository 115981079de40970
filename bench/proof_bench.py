"""Time Merkle inclusion and consistency proofs (`ingest/proofs.py`) at a large tree size (issue #3).

Run it on a copy of a database seeded by `bench/verify_bench.py --keep DIR` (it writes the node cache):

    .venv/bin/python bench/proof_bench.py sqlite:///COPY/bench.db [--org bench] [--tree-size 1000000]

Reports wall and CPU seconds of the first proofs (node cache emptied first) and of later ones. With
`--no-migrate` it runs on the schema as it is (to time a tree without the node cache, e.g. an older checkout
on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from auditkeep.ingest import proofs
from auditkeep.storage import open_storage


def _timed(label: str, call: Callable[[], dict[str, Any]]) -> None:
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    print(f"{label:<52} wall {time.perf_counter() - wall:6.3f} s  cpu {time.process_time() - cpu:6.3f} s  "
          f"load {os.getloadavg()[0]:.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--org", default="bench")
    parser.add_argument("--tree-size", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-migrate", action="store_true")
    args = parser.parse_args()
    storage = open_storage(args.url, migrate=not args.no_migrate)
    size = args.tree_size
    with storage.read() as conn:
        org_id = conn.execute(sa.text("SELECT id FROM organizations WHERE name = :n"), {"n": args.org}).scalar_one()
        picked = sa.text("SELECT seq, event_uuid FROM events WHERE org_id = :o AND seq IN (123457, 500001, 876543)")
        uuid_at: dict[int, str] = {int(seq): uuid for seq, uuid in conn.execute(picked, {"o": org_id})}
        cached = sa.inspect(conn).has_table("merkle_nodes")

    def empty_cache() -> None:
        if cached:
            with storage.write() as conn:
                conn.execute(sa.text("DELETE FROM merkle_nodes WHERE org_id = :o"), {"o": org_id})

    empty_cache()
    for n in range(args.rounds):
        _timed(f"inclusion seq 500001 @ {size} (#{n + 1})",
               lambda: proofs.inclusion(storage, org_id, uuid_at[500001], size))
    empty_cache()
    for n in range(args.rounds):
        _timed(f"consistency 700001 -> {size} (#{n + 1})", lambda: proofs.consistency(storage, org_id, 700_001, size))
    for seq in (123457, 876543):
        uuid = uuid_at[seq]
        _timed(f"inclusion seq {seq} @ {size} (other leaf)",
               lambda uuid=uuid: proofs.inclusion(storage, org_id, uuid, size))  # type: ignore[misc]
    _timed(f"consistency 300000 -> {size} (other size)", lambda: proofs.consistency(storage, org_id, 300_000, size))
    _timed(f"consistency 999000 -> {size} (other size)", lambda: proofs.consistency(storage, org_id, 999_000, size))
    if cached:
        with storage.read() as conn:
            rows = conn.execute(sa.text("SELECT count(*) FROM merkle_nodes WHERE org_id = :o"), {"o": org_id}).scalar()
        print(f"merkle_nodes rows for the organization: {rows}")


if __name__ == "__main__":
    main()
