"""In-process cost of chaining (issue #3): record_events with and without the chain, CPU per event.

Validates N events once (not timed), then stores them with `ingest.service.record_events` into fresh
SQLite databases, alternating the real service with the one bench/_nochain_app.py patches (canonical
form, chain hash, Merkle leaf and compact range, checkpoints stubbed). Reports the thread's CPU time per
event, which a shared machine disturbs less than wall time, and wall time, as medians of --runs pairs.
Through HTTP the same comparison is `ingest_export.py --chain-overhead`.

    .venv/bin/python bench/chain_cost.py --n 200000 --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import _nochain_app
from ingest_export import make_bodies

import auditkeep.ingest.service as service
from auditkeep.ingest.validation import NewEvent, parse_events
from auditkeep.settings import Settings
from auditkeep.storage import identity, open_storage

_REAL = (service.canonical_parts, service._chain, service.maybe_checkpoint)


def _chain(enabled: bool) -> None:
    if enabled:
        service.canonical_parts, service._chain, service.maybe_checkpoint = _REAL
    else:
        service.canonical_parts = _nochain_app._no_parts  # type: ignore[assignment]
        service._chain = _nochain_app._chain_without_hashes  # type: ignore[assignment]
        service.maybe_checkpoint = lambda *args: None  # type: ignore[assignment]


def _store(batches: list[list[NewEvent]], tmp: Path, tag: str) -> tuple[float, float]:
    """(CPU seconds of this thread, wall seconds) to record every batch into a fresh database."""
    url = f"sqlite:///{tmp}/{tag}.db"
    storage = open_storage(url, settings=Settings(database_url=url, signing_key_path=tmp / "key.pem"))
    with storage.write() as conn:
        org = identity.create_org(conn, "bench")
    cpu, wall = time.thread_time(), time.perf_counter()
    for batch in batches:
        service.record_events(storage, org.id, batch)
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    storage.dispose()
    return cpu, wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--batch", type=int, default=5000)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    bodies = make_bodies(args.n, args.batch)
    results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="auditkeep-chain-") as tmp:
        for i in range(args.runs):
            for enabled in (True, False):
                # Fresh events each time: record_events keeps nothing, but the log dicts are its input.
                batches = [parse_events(body, datetime.now(UTC)) for body in bodies]
                _chain(enabled)
                cpu, wall = _store(batches, Path(tmp), f"{i}-{enabled}")
                results[enabled].append((cpu, wall))
                print(f"run {i + 1} {'with chain   ' if enabled else 'chain stubbed'}: "
                      f"{cpu / args.n * 1e6:6.1f} us CPU/event, {args.n / wall:8,.0f} events/s wall", flush=True)
        _chain(True)
    cpu = {k: statistics.median(c for c, _ in v) / args.n * 1e6 for k, v in results.items()}
    eps = {k: statistics.median(args.n / w for _, w in v) for k, v in results.items()}
    print(f"\nrecord_events, SQLite, N={args.n:,}, batch={args.batch:,}, medians of {args.runs}:")
    print(f"  CPU per event: {cpu[True]:.1f} us with chain, {cpu[False]:.1f} us stubbed "
          f"(chaining {cpu[True] - cpu[False]:.1f} us, {100 * (1 - cpu[False] / cpu[True]):.1f}% of the CPU)")
    print(f"  events/s wall: {eps[True]:,.0f} with chain, {eps[False]:,.0f} stubbed "
          f"(chaining costs {100 * (1 - eps[True] / eps[False]):.1f}% of throughput)")


if __name__ == "__main__":
    main()
