"""The delivery loop: take the lease of each due stream, send its next batch, move its cursor.

At least once, in seq order: the cursor (`delivered_seq`) moves only after the destination acknowledged
the batch, and only if this forwarder still holds the lease and no replay happened meanwhile; a batch
sent but not recorded (a crash between the two) is sent again, so receivers drop duplicates by
`event_uuid` or `seq`. Events the stream's filter skips move the cursor without a delivery.

Failures back off exponentially with jitter (1 s doubling to 5 minutes) or as the destination's
Retry-After asks, and the stream turns `failing` after FAILING_AFTER in a row; it keeps retrying. A batch
refused for good (a 4xx that is not a throttle) is split: the stream sends one event at a time until it
finds the one the destination refuses, and parks there (paused, last_error naming its seq), so one bad
event never hides the ones after it from an operator, nor is it silently dropped.
"""

from __future__ import annotations

import gc
import logging
import os
import random
import socket
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from ipaddress import ip_network
from typing import Any

from sqlalchemy.exc import DatabaseError

from auditkeep.background import Loop
from auditkeep.settings import Settings
from auditkeep.storage import Storage, identity
from auditkeep.storage import streams as store
from auditkeep.storage.deferred import DeferredCommits
from auditkeep.storage.queries import LogFilters
from auditkeep.streams import formats, secrets
from auditkeep.streams.sinks import Batch, DeliveryError, Sink, open_sink

log = logging.getLogger("auditkeep.streams")

FAILING_AFTER = 3
BACKOFF_FIRST = 1.0
BACKOFF_CAP = 300.0
RETRY_AFTER_CAP = 3600.0
# How long one stream keeps the forwarder while it has a backlog, before the others get their turn.
TURN_SECONDS = 2.0


def log_filters(spec: dict[str, Any]) -> LogFilters:
    """A stream's filter object (schemas.streams.StreamFilter, validated) as the GET's LogFilters."""
    given = {k: v for k, v in spec.items() if v is not None}
    action = given.pop("action", None)
    prefix = None
    if action is not None and action.endswith("*"):
        prefix, action = action[:-1], None
    network = given.pop("client_ip", None)
    return LogFilters(action=action, action_prefix=prefix,
                      client_ip=ip_network(network.strip(), strict=False) if network else None, **given)


def backoff(failures: int, first: float = BACKOFF_FIRST) -> float:
    """Seconds before attempt `failures + 1`: doubling from `first`, capped at 5 minutes, with jitter over
    its upper half so many failing streams do not retry in step."""
    ceiling = min(BACKOFF_CAP, first * 2 ** min(failures, 20))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not a secret


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(32):08x}"


class Forwarder(Loop):
    """Delivers every due stream of every organization in this database; several may run at once."""

    thread_name = "auditkeep-forwarder"
    log = log

    def __init__(self, storage: Storage, settings: Settings, owner: str | None = None) -> None:
        self.storage = storage
        # The cursor's moves commit without an fsync on SQLite (synchronous=NORMAL; PostgreSQL: see
        # store.advance): a move lost to a power cut only sends its batch again, which at-least-once
        # allows. The fsync a batch was ~6 ms under load, the largest share of a backfill's time.
        self.cursor_commits = DeferredCommits(storage)
        self.settings = settings
        self.owner = owner or default_owner()
        self._key: bytes | None = None
        self._sinks: dict[tuple[str, int], Sink] = {}
        self._org_names: dict[int, str] = {}
        # Streams looking for the event their destination refuses: one event at a time through this seq
        # (the end of the refused batch), then whole batches again.
        self._isolate: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Read-ahead: the next batch of the stream being served is read while this one is in flight.
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="auditkeep-forwarder-read")
        self._ahead: tuple[tuple[str, int, int, int], Future[store.BatchRows]] | None = None
        self.backoff_first = BACKOFF_FIRST  # tests shorten it

    # --- one pass ---------------------------------------------------------------------------------------

    def run_once(self) -> int:
        """One pass over the due streams; the number of batches acknowledged."""
        now = datetime.now(UTC)
        with self.storage.read() as conn:
            due = store.due(conn, now, self.owner)
        sent = 0
        for row in due:
            if self._stop.is_set():
                break
            try:
                sent += self._serve(row.id, row.org_id)
            except (DatabaseError, OSError):
                raise  # the database or the machine: the whole pass stops and run_forever retries it
            except Exception as exc:  # one stream that cannot be served must not stop the others
                self._broken(row.id, row.org_id, exc)
        return sent

    def _broken(self, stream_id: str, org_id: int, exc: Exception) -> None:
        """Record, on the stream, why it could not be served at all (its secrets do not open with this
        node's key, a destination setting the sink cannot use...), and retry it later with backoff."""
        if isinstance(exc, secrets.SecretsKeyError):
            message = f"{exc} (AUDITKEEP_SECRETS_KEY_PATH must hold the key that sealed them on every node)"
        else:
            message = f"cannot deliver: {type(exc).__name__}: {exc}"
        log.error("stream cannot be served", extra={"stream_id": stream_id, "org_id": org_id, "error": message})
        with self.storage.write() as conn:
            row = store.get(conn, org_id, stream_id)
            retry_at = datetime.now(UTC) + timedelta(seconds=backoff(row.failures, self.backoff_first))
            store.record_failure(conn, row, self.owner, message, retry_at)

    def _serve(self, stream_id: str, org_id: int) -> int:
        """Batches for one stream while it has a backlog and its turn lasts."""
        sent = 0
        turn_ends = datetime.now(UTC) + timedelta(seconds=TURN_SECONDS)
        ttl = self.settings.stream_lease_seconds
        renew_at = datetime.now(UTC)
        while not self._stop.is_set():
            now = datetime.now(UTC)
            # The lease is renewed when half of it is left, not before every batch: each renewal is a write
            # transaction (an fsync on SQLite), and the cursor only moves while this forwarder still owns
            # the lease (store.advance), so one taken over meanwhile stops it all the same. Backfill of
            # 200,000 events on SQLite at load ~8 (bench/streams_bench.py): webhook 5,440 -> 6,863 events/s.
            if now >= renew_at:
                with self.storage.write() as conn:
                    if not store.acquire(conn, stream_id, self.owner, now, ttl):
                        return sent
                renew_at = now + timedelta(seconds=ttl / 2)
            with self.storage.read() as conn:
                row = store.get(conn, org_id, stream_id)
            if row.state != "active" or row.lease_owner != self.owner:
                return sent
            outcome = self._one_batch(row)
            if outcome is None:
                return sent
            sent += outcome
            if datetime.now(UTC) >= turn_ends:
                self._backlog = True  # the turn ended before the stream caught up: no rest (background.py)
                return sent
        return sent

    def _one_batch(self, row: store.StreamRow) -> int | None:
        """Send the next batch: 1 acknowledged, 0 cursor moved past skipped events, None nothing to do or
        failed (recorded on the stream)."""
        found = self._read(row, row.delivered_seq)
        if found.through_seq <= row.delivered_seq:
            return None
        now = datetime.now(UTC)
        if found.rows:
            batch = self._batch(row, found.rows)
            # Read the batch after this one while this one is in flight: the database's work (the driver
            # releases the GIL) overlaps the destination's.
            self._read_ahead(row, found.through_seq)
            sink = self._sink(row)
            try:
                sink.deliver(batch)
            except DeliveryError as exc:
                self._failed(row, exc, batch)
                return None
            if found.through_seq >= self._isolate.get(row.id, 0):
                self._isolate.pop(row.id, None)
            del batch
            # Sinks on httpx leave each request (holding its body, ~0.4 MB for 500 records) in a reference
            # cycle (a response and its stream). With the server's collector threshold (api/app.py) a
            # batch allocates too few containers to trigger a collection for hundreds of batches, so their
            # bodies piled up: +120 MB in a 200,000-event webhook backfill, +220 MB in 1,000,000.
            # Collecting the youngest generation frees them at once; but in the server it also walks (and
            # ages) every young object of the ingest requests running beside it, so only sinks that
            # leave cycles pay for it (the webhook sink, on urllib3, does not).
            if sink.leaves_cycles:
                gc.collect(0)
        with self.cursor_commits.storage.write() as conn:
            if not store.advance(conn, row, self.owner, found.through_seq, now=now, delivered=bool(found.rows)):
                return None  # replayed, reconfigured or re-leased meanwhile: the next pass starts afresh
        return 1 if found.rows else 0

    def _limit(self, row: store.StreamRow, after_seq: int) -> int:
        return 1 if after_seq < self._isolate.get(row.id, 0) else int(row.config.get("batch_size", 500))

    def _read(self, row: store.StreamRow, after_seq: int) -> store.BatchRows:
        """The batch after `after_seq`: the one read ahead if it was read for this very stream, generation
        (filter, format, replay) and position, else read now. A read ahead for anything else is dropped."""
        key = (row.id, row.generation, after_seq, self._limit(row, after_seq))
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == key:
            return ahead[1].result()
        return store.next_batch(self.storage, row.org_id, after_seq, log_filters(row.filter), key[3])

    def _read_ahead(self, row: store.StreamRow, after_seq: int) -> None:
        limit = self._limit(row, after_seq)
        if self._stop.is_set():
            return  # stopping: the reader may be shut down already, and nothing more will be sent
        future = self._reader.submit(store.next_batch, self.storage, row.org_id, after_seq,
                                     log_filters(row.filter), limit)
        self._ahead = ((row.id, row.generation, after_seq, limit), future)

    def _batch(self, row: store.StreamRow, rows: list[tuple[str, int, str]]) -> Batch:
        org_name = self._org_names.get(row.org_id)
        if org_name is None:
            with self.storage.read() as conn:
                org_name = self._org_names[row.org_id] = identity.get_org_by_id(conn, row.org_id).name
        records = [r[0] for r in rows]
        return Batch(stream_id=row.id, org_id=row.org_id, org_name=org_name,
                     records=formats.convert(row.format, records, org_name),
                     seqs=[r[1] for r in rows], event_uuids=[r[2] for r in rows])

    def _failed(self, row: store.StreamRow, exc: DeliveryError, batch: Batch) -> None:
        now = datetime.now(UTC)
        park = False
        if exc.permanent and len(batch.records) > 1:
            self._isolate[row.id] = batch.seqs[-1]  # find the event the destination refuses, one at a time
            message, delay = f"batch refused ({exc}); sending one event at a time to find the one refused", 0.0
        elif exc.permanent:
            seq, uuid = batch.seqs[0], batch.event_uuids[0]
            park = True
            message = (f"destination refused seq {seq} (event_uuid {uuid}): {exc}; the stream is paused there: "
                       f"fix the destination and resume, or replay from {seq + 1} to skip it")
            delay = 0.0
        else:
            delay = backoff(row.failures, self.backoff_first) if exc.retry_after is None else min(
                exc.retry_after, RETRY_AFTER_CAP)
            message = str(exc)
        log.warning("stream delivery failed", extra={"stream_id": row.id, "org_id": row.org_id,
                                                     "failures": row.failures + 1, "error": message})
        with self.storage.write() as conn:
            store.record_failure(conn, row, self.owner, message, now + timedelta(seconds=delay), park=park)

    def _sink(self, row: store.StreamRow) -> Sink:
        key = (row.id, row.generation)
        sink = self._sinks.get(key)
        if sink is None:
            for old in [k for k in self._sinks if k[0] == row.id]:
                self._sinks.pop(old).close()
            if self._key is None:
                self._key = secrets.load_key(self.settings.secrets_key_path)
            config = {**row.config, **secrets.unseal(self._key, row.id, row.sealed_secrets)}
            sink = self._sinks[key] = open_sink(row.kind, row.id, config, self.storage)
        return sink

    # --- in the background ------------------------------------------------------------------------------

    def rest_seconds(self) -> float:
        return self.settings.stream_poll_seconds

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch in flight, give the leases back, close the destinations."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            with self.storage.write() as conn:
                for stream_id, _ in list(self._sinks):
                    store.release(conn, stream_id, self.owner)
        finally:
            for sink in self._sinks.values():
                sink.close()
            self._sinks.clear()
            self._ahead = None
            self._reader.shutdown(wait=True)
            self.cursor_commits.dispose()
