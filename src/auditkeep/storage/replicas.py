"""Read replicas (issue #14): which database a read runs on, so that it never sees less than it is owed.

The rule. Everything a reader is owed - its own read record, anything its key (or anyone) wrote and was
answered for, the `after_seq` watermark it holds, a cursor's snapshot - was committed on the primary before
the read began, so its commit record lies at or before the primary's WAL position taken at that moment
(`pg_current_wal_lsn()`, one autocommit round trip to the primary, taken after the read's record is
committed). A replica whose `pg_last_wal_replay_lsn()` has reached that position has replayed all of it, and
every later statement on it sees at least as much. The position is asked of the primary at each read rather
than remembered per organization in the worker, because a key may write through another node (several
`auditkeep serve` nodes share one database) and no worker would know of it.

A replica not there yet is waited for briefly (every routed read waits for its own record's replay: a
median 6.5-8 ms with the round trips at load ~16, docs/benchmarks.md); one still short after
CATCH_UP_WAIT_S is passed over for that read (the primary serves it). A replica whose last replayed commit
is older than `AUDITKEEP_REPLICA_MAX_LAG` seconds while it is short of the position, or that fails, is
skipped without being asked for RETRY_AFTER_S, then asked again: it comes back by itself.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    from auditkeep.storage.base import Storage

log = logging.getLogger(__name__)

# How long a read waits for a replica to replay what it is owed before the primary serves it. Replay after a
# commit took a median 8 ms and at most 65 ms at load ~16 on 2 cores (bench/replica_reads.py): past 50 ms
# the primary answers sooner than the replica would.
CATCH_UP_WAIT_S = 0.05
CATCH_UP_POLL_S = 0.001
# How long a replica that failed or lagged past the maximum is left alone before it is asked again.
RETRY_AFTER_S = 1.0

# pg_is_in_recovery() and not the replay position's NULL says "not a standby": a primary that went through
# crash recovery at startup keeps reporting the last position and commit time that recovery replayed, so it
# looks like a standby stuck behind (CI's shared server did, after an unclean restart).
_PROBE_SQL = ("SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn() >= %s::pg_lsn, "
              "extract(epoch FROM now() - pg_last_xact_replay_timestamp())")


class ReplicaSet:
    """The replicas of one primary and what is known of their health. Thread-safe; one per Storage."""

    def __init__(self, primary: Storage, replicas: Sequence[Storage], *, max_lag_s: float) -> None:
        self.primary = primary
        self.replicas = list(replicas)
        self.max_lag_s = max_lag_s
        self.catch_up_wait_s = CATCH_UP_WAIT_S
        self._skip_until = [0.0] * len(self.replicas)
        self._turn = itertools.count()
        self._lock = threading.Lock()
        # Where reads went and why replicas were passed over ("replica:0", "primary", "lagging:0", ...):
        # for the tests and the logs; each is a fact about a read that happened.
        self.counts: Counter[str] = Counter()

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def primary_position(self) -> str:
        """The primary's WAL position now: what a replica must have replayed to serve a read starting now."""
        with self.primary.lookup() as conn:
            return str(conn.exec_driver_sql("SELECT pg_current_wal_lsn()::text").scalar_one())

    def for_read(self) -> Storage:
        """The database a read starting now runs on: a replica that has replayed everything committed on the
        primary so far, else the primary."""
        position = self.primary_position()
        start = next(self._turn)
        for k in range(len(self.replicas)):
            i = (start + k) % len(self.replicas)
            if time.monotonic() < self._skip_until[i]:
                self._count(f"skipped:{i}")
                continue
            if self._caught_up(i, position):
                self._count(f"replica:{i}")
                return self.replicas[i]
        self._count("primary")
        return self.primary

    def _caught_up(self, i: int, position: str) -> bool:
        deadline = time.monotonic() + self.catch_up_wait_s
        try:
            with self.replicas[i].lookup() as conn:
                while True:
                    standby, replayed, lag = conn.exec_driver_sql(_PROBE_SQL, (position,)).one()
                    if not standby:  # promoted, or misconfigured: not a replica of ours
                        self._skip(i, "not_standby", "is not in recovery")
                        return False
                    if replayed:
                        return True
                    if lag is not None and float(lag) > self.max_lag_s:
                        self._skip(i, "lagging", f"lags {float(lag):.1f} s (AUDITKEEP_REPLICA_MAX_LAG)")
                        return False
                    if time.monotonic() >= deadline:
                        self._count(f"behind:{i}")
                        return False
                    time.sleep(CATCH_UP_POLL_S)
        except sa.exc.DBAPIError as exc:
            self._skip(i, "failed", f"failed: {exc.orig!r}")
            return False

    def _skip(self, i: int, why: str, detail: str) -> None:
        self._count(f"{why}:{i}")
        self._skip_until[i] = time.monotonic() + RETRY_AFTER_S
        log.warning("read replica %d %s; reads go elsewhere for %.0f s", i, detail, RETRY_AFTER_S)

    def dispose(self) -> None:
        for replica in self.replicas:
            replica.dispose()
