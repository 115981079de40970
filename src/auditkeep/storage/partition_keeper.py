"""The partition keeper: `auditkeep serve` runs partition upkeep (storage/partitions.py) in a background
thread on PostgreSQL, one node at a time (issue #14).

Every node runs a keeper; each pass takes the `partitions` row of `job_leases` (storage/leases.py) and
runs upkeep only if the last run is `partition_upkeep_seconds` old, so of several nodes one runs it per
interval, and a node that dies mid-run holds the job no longer than its lease. The clock is injected so a
test can run a year of upkeep in seconds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from auditkeep.background import Loop
from auditkeep.settings import Settings
from auditkeep.storage import leases
from auditkeep.storage.base import Storage
from auditkeep.storage.partitions import UpkeepResult, upkeep
from auditkeep.storage.tables import job_leases
from auditkeep.streams.forwarder import default_owner

log = logging.getLogger(__name__)

JOB = "partitions"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class PartitionKeeper(Loop):
    """Partition upkeep, leased per deployment; `last` is what the last run this keeper made did."""

    thread_name = "auditkeep-partitions"
    log = log

    def __init__(self, storage: Storage, settings: Settings, owner: str | None = None,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        self.storage = storage
        self.settings = settings
        self.owner = owner or default_owner()
        self.clock = clock
        self.last: UpkeepResult | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """Run upkeep if this node gets the lease and the last run is old enough; partitions changed.
        Returns 0 either way after a run, so the loop rests until the next check."""
        now = self.clock()
        with self.storage.write() as conn:
            if not leases.acquire(conn, job_leases, JOB, self.owner, now=now,
                                  ttl=self.settings.partition_lease_seconds):
                return 0
            last = conn.execute(sa.select(job_leases.c.last_run_at).where(job_leases.c.id == JOB)).scalar()
        try:
            if last is not None and now - _aware(last) < timedelta(seconds=self.settings.partition_upkeep_seconds):
                return 0
            self.last = upkeep(self.storage, now, self.settings.partition_months_ahead)
            with self.storage.write() as conn:
                conn.execute(job_leases.update().where(job_leases.c.id == JOB, job_leases.c.lease_owner == self.owner)
                             .values(last_run_at=now))
            if self.last.created or self.last.dropped:
                log.info("partition upkeep: created %s, dropped %s", self.last.created, self.last.dropped)
            return 0
        finally:
            with self.storage.write() as conn:
                leases.release(conn, job_leases, JOB, self.owner)

    def rest_seconds(self) -> float:
        return min(self.settings.partition_upkeep_seconds, self.settings.partition_lease_seconds)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
