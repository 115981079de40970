"""Work that runs beside the server, or apart from it (`auditkeep forward`, `auditkeep alerts watch`): passes
of `run_once()` in a daemon thread, resting after every pass that left no work behind.

A pass that caught up rests its poll interval even when it found work (issue #11). Going on at once, a job
that keeps up under steady ingest of small batches makes a pass, a transaction of its own (the roller's an
fsync on SQLite, in ingest's way for the writer lock), for every ingest commit or two: the search indexer
cost 19 CPU us an event in passes of one 100-event batch and 10 in passes of ten (docs/benchmarks.md,
"Ingest CPU of small batches"). Resting, a pass takes a poll interval's events at once, and a job is no
further behind than after an idle poll; one that stopped with work left (a whole batch, or its turn over)
goes on at once, so catching up is as fast as before.

A job whose passes are Python work in a serve worker (the self-watch's re-hash, the roller's counts) may
take a share of the time while it has a backlog (`busy_share`): after such a pass it rests in proportion
to how long the pass took. Its threads share the worker's GIL with ingest, and on SQLite, where one
process ingests, a job that kept it busy through a bulk load took a third of the events a second from
ingest; catching up at a quarter of the time, it falls behind during the burst and catches up after it
(docs/benchmarks.md, "Eighth session"). Only so far: a job FAR_BEHIND events behind works all the time
again, so a load that does not end cannot leave it behind for good (at worst ingest slows to what it was
with the job at full share)."""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import ClassVar

# How many events behind a job with a `busy_share` may fall before it works all the time again. The
# self-watch caught up 35,000 events in 0.6 s once a burst of ingest ended, the roller 10,000 in 0.4 s
# (bench/ingest_cpu.py), so either is then well under a minute from the head.
FAR_BEHIND = 1_000_000


class Loop:
    """A subclass sets `_stop` (a threading.Event) and `_thread` (None) in its __init__, and says how to do
    one pass (`run_once`: how much it did; it sets `_backlog` when it stopped with work left) and how long
    to rest after a pass that caught up (`rest_seconds`)."""

    thread_name: ClassVar[str]
    log: ClassVar[logging.Logger]
    _stop: threading.Event
    _thread: threading.Thread | None
    _backlog: bool = False
    # The share of the time the job may work while it has a backlog (1: passes follow at once), and how many
    # events behind its last pass found it (set by jobs with a share).
    busy_share: ClassVar[float] = 1.0
    _behind: int = 0

    def run_once(self) -> int:
        raise NotImplementedError

    def rest_seconds(self) -> float:
        raise NotImplementedError

    def start(self) -> None:
        """Run passes in a daemon thread until stopped."""
        self._thread = threading.Thread(target=self.run_forever, name=self.thread_name, daemon=True)
        self._thread.start()

    def run_forever(self) -> None:
        while not self._stop.is_set():
            self._backlog = False
            started = time.monotonic()
            try:
                self.run_once()
            except Exception:  # a database hiccup must not end the work for good: log it and go on
                self.log.exception("%s pass failed", self.thread_name)
                self._backlog = False  # a failed pass rests: a database that is down is not asked in a busy loop
            if not self._backlog:
                self._stop.wait(self.rest_seconds())
            elif self.busy_share < 1 and self._behind < FAR_BEHIND:
                self._stop.wait((time.monotonic() - started) * (1 / self.busy_share - 1))

    def stop_soon(self) -> None:
        """Ask the loop to end after the piece of work in hand (safe from a signal handler)."""
        self._stop.set()

    def stop(self, timeout: float = 10.0) -> None:
        """End the loop and give back what it holds (leases, connections)."""
        raise NotImplementedError

    def run_in_foreground(self) -> None:
        """Passes in this thread until SIGINT or SIGTERM (`auditkeep forward`, `auditkeep alerts watch`)."""
        signal.signal(signal.SIGTERM, lambda *_: self.stop_soon())
        try:
            self.run_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()
