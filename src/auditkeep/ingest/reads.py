"""Recording each read of the audit log as an `audit_logs.read` event, without an fsync in series with
the read's query.

The promise (issue #4): every read of the audit log is recorded. How it is kept (docs/architecture.md,
"Recording reads"):

- a read's event is *committed* before its query runs (so the read sees its own event); if the commit
  fails, the read fails;
- group commit, leader and followers: a read that finds no commit in progress commits its own event
  and those of every read that queued meanwhile, in one transaction per organization, in its own
  thread; reads arriving while it commits wait for it, and the first of them commits the next group.
  Concurrent reads thus do not queue one by one for SQLite's write lock, and a lone read hands nothing
  to another thread (on a busy 2-core machine each hand-off between threads cost up to milliseconds);
- on SQLite those commits skip the fsync (storage/deferred.py) and a flusher thread fsyncs right
  behind them, one fsync for every commit since the last, *while the read's query runs*; the answer is
  released only once its record is on disk (`ReadRecord.wait_durable`). So a read costs a commit plus
  the longer of its query and one fsync, instead of the sum;
- a clean shutdown (`close_recorders`, called by the app's lifespan and at interpreter exit) waits for
  the commit in progress and flushes before it returns.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections import defaultdict
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from auditkeep.auth.principals import Principal
from auditkeep.ingest.selfaudit import Origin, self_audit_event
from auditkeep.ingest.service import record_events
from auditkeep.ingest.validation import NewEvent
from auditkeep.storage import Storage
from auditkeep.storage.deferred import DeferredCommits

log = logging.getLogger(__name__)


class RecorderClosedError(RuntimeError):
    """A read was to be recorded by a recorder that is shutting down."""


@dataclass(slots=True)
class _Pending:
    org_id: int
    event: NewEvent
    done: Future[int] = field(default_factory=Future)  # the commit's number


@dataclass(frozen=True, slots=True)
class ReadRecord:
    """A committed read event: its uuid, and how to wait until it is on disk."""

    uuid: str
    recorder: ReadRecorder
    commit: int
    timestamp: str  # the event's, as API text: with the uuid it finds the record's row in one probe

    @property
    def durable(self) -> bool:
        return self.recorder.flushed >= self.commit and not self.recorder.failed_at(self.commit)

    def wait_durable(self) -> None:
        """Return once the record is on disk; raises the flush's OSError if it failed."""
        self.recorder.wait_flushed(self.commit)


class ReadRecorder:
    """Commits reads' events in groups through a `DeferredCommits` store, and flushes them behind."""

    def __init__(self, storage: Storage) -> None:
        self._store = DeferredCommits(storage)
        self._lock = threading.Lock()  # guards _queue and _closed
        self._queue: list[_Pending] = []
        self._closed = False
        self._leader = threading.Lock()  # held by the read committing a group
        self._state = threading.Condition()  # guards the counters below
        self._committed = 0  # commits made so far (numbered 1, 2, ...)
        self._flushed = 0  # every commit up to this number went through a flush: on disk unless _failed
        self._failed: tuple[int, OSError] | None = None  # the last failed flush: commits up to it may be lost
        self._stopping = False
        self._flusher = threading.Thread(target=self._flush_loop, name="auditkeep-read-flusher", daemon=True)
        self._flusher.start()

    @property
    def flushed(self) -> int:
        return self._flushed

    def record(self, org_id: int, event: NewEvent) -> ReadRecord:
        """Commit `event` in `org_id`'s log (raises what the commit raised, so a read whose record failed
        is not answered)."""
        pending = _Pending(org_id, event)
        with self._lock:
            if self._closed:
                raise RecorderClosedError("the read recorder is shut down")
            self._queue.append(pending)
        with self._leader:
            if not pending.done.done():  # no leader took it: lead, with whatever queued meanwhile
                with self._lock:
                    group, self._queue = self._queue, []
                self._commit(group)
        return ReadRecord(event.log["event_uuid"], self, pending.done.result(), event.log["timestamp"])

    def wait_flushed(self, commit: int) -> None:
        """Return once commit number `commit` (and every earlier one) is on disk."""
        with self._state:
            self._state.wait_for(lambda: self._flushed >= commit)
            if self._failed is not None and self._failed[0] >= commit:
                raise self._failed[1]

    def failed_at(self, commit: int) -> bool:
        """Whether a failed flush covered commit number `commit`."""
        failed = self._failed
        return failed is not None and failed[0] >= commit

    def close(self) -> None:
        """Wait for the commit in progress, flush every commit to disk, stop the flusher. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with self._leader:  # after the commit in progress; and lead for reads queued but not yet led
            with self._lock:
                group, self._queue = self._queue, []
            self._commit(group)
        with self._state:
            self._stopping = True
            self._state.notify_all()
        self._flusher.join()
        self._store.dispose()

    def _commit(self, group: list[_Pending]) -> None:
        by_org: dict[int, list[_Pending]] = defaultdict(list)
        for pending in group:
            by_org[pending.org_id].append(pending)
        for org_id, items in by_org.items():
            try:
                record_events(self._store.storage, org_id, [p.event for p in items])
            except Exception as exc:  # every read of the group fails with it (none is answered)
                for p in items:
                    p.done.set_exception(exc)
                continue
            with self._state:
                self._committed += 1
                commit = self._committed
                if not self._store.deferred:
                    self._flushed = commit  # the commit itself was synchronous
                self._state.notify_all()
            for p in items:
                p.done.set_result(commit)

    def _flush_loop(self) -> None:
        while True:
            with self._state:
                self._state.wait_for(lambda: self._committed > self._flushed or self._stopping)
                if self._committed == self._flushed:
                    return  # stopping, and nothing left
                target = self._committed
            try:
                self._store.flush()
            except OSError as exc:
                # Not retried: after a failed fsync the kernel may already have dropped the dirty pages, so
                # a later success would prove nothing about these commits. Their reads fail instead.
                log.exception("flushing recorded reads to disk failed")
                with self._state:
                    self._failed = (target, exc)
                    self._flushed = target  # dealt with: their reads fail; the next flush is for newer ones
                    self._state.notify_all()
                continue
            with self._state:
                self._flushed = target
                self._state.notify_all()


_recorders: weakref.WeakKeyDictionary[Storage, ReadRecorder] = weakref.WeakKeyDictionary()
_recorders_lock = threading.Lock()


def recorder_for(storage: Storage) -> ReadRecorder:
    """The process's read recorder for `storage` (started on first use)."""
    with _recorders_lock:
        recorder = _recorders.get(storage)
        if recorder is None:
            recorder = _recorders[storage] = ReadRecorder(storage)
        return recorder


def close_recorders(storage: Storage | None = None) -> None:
    """Record and flush what is pending, then stop the recorder of `storage` (of every store: None)."""
    with _recorders_lock:
        if storage is None:
            closing = list(_recorders.values())
            _recorders.clear()
        else:
            one = _recorders.pop(storage, None)
            closing = [one] if one is not None else []
    for recorder in closing:
        recorder.close()


atexit.register(close_recorders)


def record_read(
    storage: Storage,
    org_id: int,
    origin: Origin,
    *,
    actor: Principal,
    log_entry: str,
    payload: dict[str, Any],
) -> ReadRecord:
    """Commit the record of a read of `org_id`'s audit log by `actor`. The caller runs the read, then calls
    `wait_durable()` on the result before answering:

        record = record_read(storage, org_id, origin, actor=me, log_entry="...", payload={})
        page = plan_page(...)      # meanwhile the record is being flushed to disk
        record.wait_durable()      # no answer leaves before its record is on disk
    """
    event = self_audit_event("audit_logs.read", origin, actor=actor, object_type="audit_log",
                             log_entry=log_entry, payload=payload)
    while True:
        try:
            return recorder_for(storage).record(org_id, event)
        except RecorderClosedError:
            continue  # closed between lookup and record (an app shutting down while another starts)
