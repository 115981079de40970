"""The search indexer (issue #13): follows each organization's seq behind ingest and adds its events to
the search index (storage/search.py), so ingest itself never pays for the index.

Each batch is one write transaction that adds the entries and moves the organization's position
(`search_positions`), so a crash loses nothing and indexes nothing twice. Several nodes (or `serve
--workers N`) may each run one: per organization they take turns on its position row (PostgreSQL's row
lock, SQLite's writer lock of the search file), and whoever comes second starts after what the first indexed.

On SQLite the index is derived data in a file of its own (storage/search_file.py): the first pass starts
over for organizations whose index belongs to another state of the events (`search.stale_orgs`), and a
pass that finds the file damaged replaces it by an empty one and rebuilds from the events.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time

from auditkeep.settings import Settings
from auditkeep.storage import search, search_file
from auditkeep.storage.base import Storage

log = logging.getLogger("auditkeep.search")

# The indexer thread's nice value (Linux applies setpriority to a thread id per thread). Its FTS5 work
# costs about as much CPU an event as ingest itself (docs/benchmarks.md, "Search"); on a busy machine the
# scheduler then gives ingest the cores first and the indexer what is left, so ingest does not pay for it
# and the unindexed tail grows instead (q scans it, exact either way).
NICE = 10


class Indexer:
    """Keeps the search index up with ingest, in a daemon thread (`start`/`stop`) or by `run_once`."""

    def __init__(self, storage: Storage, settings: Settings) -> None:
        self.storage = storage
        self.settings = settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stale: list[int] | None = None  # checked on the first pass
        self._backlog = False  # the last pass indexed a whole batch of an organization: more may be waiting

    def run_once(self) -> int:
        """One pass: a batch for each organization that is behind; how many events were indexed."""
        try:
            return self._pass()
        except Exception as exc:
            if self.storage.dialect != "sqlite" or not search_file.is_corrupt(exc):
                raise
            database = self.storage.engine.url.database
            assert database
            search_file.replace(search_file.path_of(database))
            return 0

    def _pass(self) -> int:
        if self._stale is None:
            search.drop_old_index(self.storage)
            self._stale = search.stale_orgs(self.storage)
            if self._stale:
                log.warning("search index of organizations %s is not these events': rebuilding", self._stale)
        done = 0
        for org_id in sorted({*self._stale, *search.lagging_orgs(self.storage)}):
            if self._stop.is_set():
                break
            indexed = search.index_batch(self.storage, org_id)
            self._backlog |= indexed >= search.INDEX_BATCH  # a whole batch: more may be waiting
            done += indexed
        self._stale = []
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
        with contextlib.suppress(AttributeError, OSError):  # not Linux, or not allowed: run at normal priority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
        duty = self.settings.search_indexer_duty
        while not self._stop.is_set():
            started = time.monotonic()
            self._backlog = False
            try:
                done = self.run_once()
            except Exception:  # a database hiccup must not end indexing for good: log it and go on
                log.exception("search indexer pass failed")
                done = 0
            if not (done and self._backlog):
                # Caught up: rest a poll interval even after a pass that indexed something, so under steady
                # ingest a pass indexes a poll interval's events in one transaction, not each commit's few
                # (issue #11, background.py).
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
