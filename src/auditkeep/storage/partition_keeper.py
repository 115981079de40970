"""The partition keeper: `auditkeep serve` runs partition upkeep (storage/partitions.py) in a background
thread on PostgreSQL, one node at a time (issue #14).

Every node runs a keeper; each pass takes the `partitions` row of `job_leases` (storage/leases.py) and
runs upkeep only if the last run is `partition_upkeep_seconds` old, so of several nodes one runs it per
interval, and a node that dies mid-run holds the job no longer than its lease. The clock is injected so a
test can run a year of upkeep in seconds.

Each run also drops the past months every organization's retention has passed (`expire_months`), with a
purge's bookkeeping around each drop: every organization losing rows is anchored at its new boundary
first (a signed checkpoint and compact range, which refuses if those events do not verify) and records a
`retention.purge` event after, as `auditkeep purge` does; the rows go by DROP instead of DELETE.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from auditkeep.background import Loop
from auditkeep.errors import AuditKeepError
from auditkeep.ingest.checkpointing import anchor_before_purge
from auditkeep.ingest.selfaudit import Origin, audit
from auditkeep.settings import Settings
from auditkeep.storage import identity, leases, retention_rules
from auditkeep.storage.base import Storage
from auditkeep.storage.partitions import MonthRows, UpkeepResult, drop_expired, past_months, rows_by_org, upkeep
from auditkeep.storage.retention import cutoff_for, purge_boundary
from auditkeep.storage.tables import job_leases
from auditkeep.streams.forwarder import default_owner

log = logging.getLogger(__name__)

JOB = "partitions"
ORIGIN = Origin(source="system", client_ip="127.0.0.1", url="auditkeep:partition-upkeep")


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
            if self.storage.dialect == "postgresql":
                self.last.expired = expire_months(self.storage, now)
                self.last.dropped += self.last.expired
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


def _purgeable_upto(storage: Storage, org: identity.Org, now: datetime) -> int | None:
    """The highest seq `org`'s purge would delete at `now` (its retention, per-action rules and legal holds),
    or None when it would delete nothing."""
    with storage.read() as conn:
        policy = retention_rules.policy(conn, org, now)
    if not policy.deletes_anything:
        return None
    cutoff = cutoff_for(org.retention_days, now) if org.retention_days is not None else None
    return purge_boundary(storage, org.id, cutoff, policy=policy).last_seq


def expire_months(storage: Storage, now: datetime) -> list[str]:
    """Drop, oldest first, each past month (before last month) whose every row is in the prefix its
    organization's purge would delete at `now`; the names dropped. Each organization losing rows is anchored
    at its new boundary first and records `retention.purge` after (issue #14; storage/partitions.py)."""
    with storage.read() as conn:
        orgs = {org.id: org for org in identity.list_orgs(conn)}
        months = past_months(conn, now)
    upto: dict[int, int | None] = {}
    dropped = []
    for name in months:
        with storage.read() as conn:
            month = rows_by_org(conn, name)
        if not month:
            continue  # upkeep drops an empty month without a purge's bookkeeping
        for rows in month:
            if rows.org_id not in upto:
                upto[rows.org_id] = _purgeable_upto(storage, orgs[rows.org_id], now) if rows.org_id in orgs else None
        if any((upto[rows.org_id] or 0) < rows.last_seq for rows in month):
            continue  # some organization keeps a row of it: its rows go by the row purge, later
        try:
            for rows in month:
                anchor_before_purge(storage, rows.org_id, rows.last_seq)
        except AuditKeepError as exc:  # the events about to go do not verify: keep them, as a purge would
            log.warning("partition %s kept: organization %d's events there cannot be anchored: %s", name,
                        rows.org_id, exc)
            continue
        outside = drop_expired(storage, name, {r.org_id: r.last_seq for r in month})
        if outside is None:
            continue
        dropped.append(name)
        for rows in month:
            first, deleted = outside[rows.org_id]
            _record(storage, orgs[rows.org_id], name, rows, first=first, deleted=deleted, now=now)
        log.info("dropped partition %s: every organization's retention had passed its %d rows", name,
                 sum(r.count for r in month))
    return dropped


def _record(storage: Storage, org: identity.Org, name: str, rows: MonthRows, *, first: int, deleted: int,
            now: datetime) -> None:
    """`retention.purge` for an organization's rows that went with a dropped month, as `auditkeep purge`
    records a row purge (counts, seq and time range), plus the partition's name."""
    count = rows.count + deleted
    audit(storage, org.id, "retention.purge", ORIGIN, object_type="organization", object_id=org.id,
          log_entry=f"Retention purge: dropped partition {name} with {rows.count:,} of this organization's "
                    f"events and deleted {deleted:,} more (seq {first:,}-{rows.last_seq:,}), all past retention",
          payload={"count": count, "first_seq": first, "last_seq": rows.last_seq,
                   "oldest_timestamp": rows.oldest, "newest_timestamp": rows.newest,
                   "cutoff": cutoff_for(org.retention_days, now) if org.retention_days is not None else None,
                   "cutoff_applies_to": "received_at", "retention_days": org.retention_days,
                   "partition": name, "dropped_with_partition": rows.count, "deleted_rows": deleted})
