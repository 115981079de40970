"""The search indexer (issue #13): follows each organization's seq behind ingest and adds its events to
the search index (storage/search.py), so ingest itself never pays for the index.

Each batch is one write transaction that adds the entries and moves the organization's position
(`search_positions`), so a crash loses nothing and indexes nothing twice. Several nodes (or `serve
--workers N`) may each run one: per organization they take turns on its position row (PostgreSQL's row
lock, SQLite's writer lock), and whoever comes second starts after what the first indexed.
"""

from __future__ import annotations

import logging
import threading
import time

from auditkeep.settings import Settings
from auditkeep.storage import search
from auditkeep.storage.base import Storage

log = logging.getLogger("auditkeep.search")


class Indexer:
    """Keeps the search index up with ingest, in a daemon thread (`start`/`stop`) or by `run_once`."""

    def __init__(self, storage: Storage, settings: Settings) -> None:
        self.storage = storage
        self.settings = settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """One pass: a batch for each organization that is behind; how many events were indexed."""
        done = 0
        for org_id in search.lagging_orgs(self.storage):
            if self._stop.is_set():
                break
            done += search.index_batch(self.storage, org_id)
        return done

    def catch_up(self) -> int:
        """Pass until nothing is left to index (tests, benchmarks); how many events were indexed."""
        total = 0
        while done := self.run_once():
            total += done
        return total

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="auditkeep-indexer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        duty = self.settings.search_indexer_duty
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                done = self.run_once()
            except Exception:  # a database hiccup must not end indexing for good: log it and go on
                log.exception("search indexer pass failed")
                done = 0
            if not done:
                self._stop.wait(self.settings.search_poll_seconds)
            elif duty < 1:
                # Busy at most `duty` of the time: on SQLite each batch holds the one writer lock, so this
                # bounds what the indexer takes from ingest, at the price of a longer unindexed tail.
                self._stop.wait((time.monotonic() - started) * (1 / duty - 1))

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch in flight and end the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
