"""The stats roller (issue #13): follows each organization's seq behind ingest and adds its events to the
stats rollup (storage/rollup.py), so ingest itself never pays for it.

Each batch is one write transaction that adds the counts and moves the organization's position
(`stats_positions`), so a crash loses nothing and counts nothing twice. Several nodes (or `serve
--workers N`) may each run one: per organization they take turns on its position row (PostgreSQL's row
lock, SQLite's writer lock), and whoever comes second starts after what the first counted, as the search
indexer does (search/indexer.py).
"""

from __future__ import annotations

import logging
import threading
from typing import ClassVar

from auditkeep.background import Loop
from auditkeep.settings import Settings
from auditkeep.storage import rollup
from auditkeep.storage.base import Storage


class Roller(Loop):
    """Keeps the stats rollup up with ingest, in a daemon thread (`start`/`stop`) or by `run_once`."""

    thread_name: ClassVar[str] = "auditkeep-roller"
    # SQLite counts a batch in Python, under the worker's GIL beside ingest's: while behind, a quarter of the
    # time (background.py). On PostgreSQL the database counts, and the rest costs the worker little.
    busy_share: ClassVar[float] = 0.25
    log: ClassVar[logging.Logger] = logging.getLogger("auditkeep.rollup")

    def __init__(self, storage: Storage, settings: Settings) -> None:
        self.storage = storage
        self.settings = settings
        self._stop = threading.Event()
        self._thread = None

    def run_once(self) -> int:
        """One pass: a batch for each organization that is behind; how many events were counted."""
        done = 0
        lagging = rollup.lagging_orgs(self.storage)
        self._behind = max((behind for _, behind in lagging), default=0)
        for org_id, _ in lagging:
            if self._stop.is_set():
                break
            moved = rollup.roll_batch(self.storage, org_id)
            self._backlog |= moved >= rollup.ROLL_BATCH  # a whole batch: more may be waiting (background.py)
            done += moved
        return done

    def catch_up(self) -> int:
        """Pass until nothing is left to count (tests, benchmarks); how many events were counted."""
        total = 0
        while done := self.run_once():
            total += done
        return total

    def rest_seconds(self) -> float:
        return self.settings.stats_roll_seconds

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch in flight and end the thread (it holds no lease: each batch locks its row)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
