"""The background shipper: a bounded in-memory buffer drained by a daemon thread through the SDK.

The request path only appends to a deque (a few microseconds with the middleware's own work, see
bench/capture_overhead.py). The thread publishes batches with the
synchronous client; when the service is unreachable (connection errors, 5xx, 429, or a key it refuses)
the thread marks it down for a while (growing, jittered) and writes batches to the spool instead of
trying each one, then probes by replaying the spool. When the buffer is full, the request thread itself
appends the event to the spool (or, without a spool, drops it and counts it), so memory stays bounded.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from auditkeep.capture._spool import Spool
from auditkeep.client import (
    APIStatusError,
    AuthenticationError,
    Client,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    TransportError,
    ValidationError,
)

__all__ = ["Shipper", "ShipperStats"]

logger = logging.getLogger("auditkeep.capture")

Event = dict[str, Any]
_Item = Event | tuple[Callable[..., Event], tuple[Any, ...]]
# Failures that say "not now" rather than "never": the events wait (in the spool) and go again later.
# A refused key (401/403) or a wrong URL (404) is a configuration problem being fixed, not a reason to
# lose the events.
_UNAVAILABLE = (TransportError, ServerError, RateLimitError, AuthenticationError, PermissionDeniedError,
                NotFoundError)
# The shipper has its own fallback (the spool), so the client gives up sooner than its defaults.
_SHIPPER_RETRY = RetryPolicy(max_retries=2, backoff=0.2, max_backoff=2.0, max_retry_after=10.0)

# Pre-fork servers (gunicorn, uwsgi) fork after the application, and so the shipper, is made: the child
# gets no thread and copies of locks that may have been held. It starts afresh on its first event.
_live_shippers: weakref.WeakSet[Shipper] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for shipper in list(_live_shippers):
        shipper._reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@dataclass
class ShipperStats:
    """Counts of events since the shipper was made (updated without locks: monitoring, not accounting)."""

    captured: int = 0  # handed to submit()
    published: int = 0  # stored by the service straight from memory
    spooled: int = 0  # written to the spool
    replayed: int = 0  # sent from the spool
    rejected: int = 0  # refused by the service for good (kept in rejected-*.ndjson when spooling)
    dropped: int = 0  # lost: buffer full or service down, and no room in a spool

    def as_dict(self) -> dict[str, int]:
        """The counts as a plain dict (for a metrics endpoint)."""
        return asdict(self)


class Shipper:
    """Ships captured events to the audit log service in the background.

    Example:
        >>> from auditkeep.capture import Shipper
        >>> shipper = Shipper(spool_dir="/var/spool/myapp-audit")  # key and URL from the environment
        >>> shipper.submit({"client_ip": "10.0.0.1", "url": "/jobs/1", "action": "job.run"})
        >>> shipper.close()  # flushes; also runs at interpreter exit

    `client` defaults to `Client()` (AUDITKEEP_API_KEY / AUDITKEEP_URL, or the DATAFOLD_* variables)
    with short retries; `spool_dir` to `AUDITKEEP_SPOOL_DIR`, and without one, events that cannot be
    shipped wait in memory only (up to `max_buffer`; more are dropped and counted).
    """

    def __init__(self, client: Client | None = None, *, spool_dir: str | os.PathLike[str] | None = None,
                 max_buffer: int = 10_000, batch_size: int = 500, flush_interval: float = 0.5,
                 retry_interval: float = 1.0, max_retry_interval: float = 60.0,
                 spool_max_bytes: int | None = 1 << 30, fsync: bool = True, close_timeout: float = 10.0) -> None:
        self._owns_client = client is None
        self.client = client if client is not None else Client(retry=_SHIPPER_RETRY)
        spool_dir = spool_dir or os.environ.get("AUDITKEEP_SPOOL_DIR") or None
        self.spool = Spool(spool_dir, fsync=fsync, max_bytes=spool_max_bytes) if spool_dir else None
        self.max_buffer = max_buffer
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.retry_interval = retry_interval
        self.max_retry_interval = max_retry_interval
        self.close_timeout = close_timeout
        self.stats = ShipperStats()
        self._buffer: deque[_Item] = deque()
        self._wake = threading.Event()
        self._start_lock = threading.Lock()
        self._idle = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._closed = False
        self._busy = False
        self._inflight: list[Event] = []  # the batch the thread is sending
        self._down_until = 0.0  # monotonic time before which the service is not tried
        self._down_for = 0.0
        self._spool_waiting = self.spool is not None and self.spool.pending()
        self._last_drop_warning = 0.0
        _live_shippers.add(self)

    # -- the request path ------------------------------------------------------------------------
    def submit(self, event: Event) -> None:
        """Queue an event for shipping; never blocks on the network (see the module docstring).

        An event without an `event_uuid` gets one before it is first sent or spooled.
        """
        self._enqueue(event)

    def defer(self, make_event: Callable[..., Event], *args: Any) -> None:
        """Queue an event that the shipper's thread builds, as `make_event(*args)`, just before sending.

        The middlewares use this to keep the request path to a deque append: parsing headers, making
        the uuid and formatting the timestamp (some 10 µs on a slow core) happen off it.
        """
        self._enqueue((make_event, args))

    def _enqueue(self, item: _Item) -> None:
        self.stats.captured += 1
        if self._thread is None:
            self.start()
        if self._closed or len(self._buffer) >= self.max_buffer:
            self._overflow(self._materialize([item]))
            if self._closed and self.spool is not None:
                self.spool.seal()  # nobody else will close the file now
            return
        self._buffer.append(item)
        if len(self._buffer) >= self.batch_size:
            self._wake.set()

    def _materialize(self, items: list[_Item]) -> list[Event]:
        events: list[Event] = []
        for item in items:
            if isinstance(item, dict):
                events.append(item)
                continue
            make_event, args = item
            try:
                events.append(make_event(*args))
            except Exception:
                self.stats.dropped += 1
                logger.exception("could not build a captured audit event; it is lost")
        return events

    def _take(self, limit: int) -> list[Event]:
        items: list[_Item] = []
        while len(items) < limit:
            try:
                items.append(self._buffer.popleft())
            except IndexError:  # another thread (close) took the last ones
                break
        return self._materialize(items)

    def _overflow(self, events: list[Event]) -> None:
        # Runs on the request path when the buffer is full: it must not raise into the host's request.
        try:
            spooled = self.spool is not None and self.spool.write(events)
        except OSError:
            logger.exception("could not write to the audit spool")
            spooled = False
        if spooled:
            self.stats.spooled += len(events)
            self._spool_waiting = True
            return
        self.stats.dropped += len(events)
        now = time.monotonic()
        if now - self._last_drop_warning > 10:
            self._last_drop_warning = now
            logger.warning("audit events dropped (%d so far): buffer full and no room in a spool",
                           self.stats.dropped)

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the background thread (done on the first `submit`, and again in a forked child)."""
        with self._start_lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._run, name="auditkeep-capture", daemon=True)
            self._thread.start()
            atexit.register(self.close)

    def _reset_after_fork(self) -> None:
        # The parent ships what was buffered before the fork; the child begins empty, with new locks.
        self._buffer.clear()
        self._start_lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._busy = False
        self._thread = None
        if self.spool is not None:
            self.spool.reset_after_fork()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event submitted so far is stored or spooled; False if `timeout` ran out."""
        deadline = time.monotonic() + timeout
        while self._buffer or self._busy:
            remaining = deadline - time.monotonic()
            if self._thread is None or not self._thread.is_alive() or remaining <= 0:
                return False
            self._idle.clear()
            self._wake.set()
            self._idle.wait(min(remaining, 0.1))
        return True

    def close(self, timeout: float | None = None) -> None:
        """Ship (or spool) what is buffered and stop the thread. Called at interpreter exit too."""
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(self.close_timeout if timeout is None else timeout)
            if thread.is_alive() and self._inflight and self.spool is not None:
                # Stuck sending (the process is about to exit): spool that batch too. If it did get
                # through, the replay stores nothing twice (event_uuid).
                self._overflow(list(self._inflight))
        if self._buffer:
            # The thread did not finish in time: keep what we can.
            self._overflow(self._take(len(self._buffer)))
        if self.spool is not None:
            self.spool.close()
        if self._owns_client:
            self.client.close()
        atexit.unregister(self.close)

    # -- the thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        first = True  # a spool left by an earlier run is replayed at once
        while True:
            if not first:
                self._wake.wait(self.flush_interval)
                self._wake.clear()
            first = False
            stopping = self._stopping
            try:
                self._drain(final=stopping)
                if self._spool_waiting and not stopping and time.monotonic() >= self._down_until:
                    self._replay()
            except Exception:
                # Whatever went wrong, the thread must survive it, or capture silently stops.
                logger.exception("unexpected error in the audit shipper")
            if not self._buffer:
                self._idle.set()
            if stopping:
                return

    def _up(self) -> bool:
        return time.monotonic() >= self._down_until

    def _drain(self, *, final: bool) -> None:
        while self._buffer and (self.spool is not None or self._up() or final):
            self._busy = True
            try:
                self._inflight = self._take(self.batch_size)
                if self._inflight:
                    self._ship(self._inflight, final=final)
            finally:
                self._inflight = []
                self._busy = False

    def _ship(self, batch: list[Event], *, final: bool) -> None:
        if not self._up() and self.spool is not None:
            self._park(batch)  # known down: do not wait on the network for every batch
            return
        try:
            stored = self._publish(batch)
        except _UNAVAILABLE as exc:
            self._mark_down(exc)
            self._park(batch, final=final)
            return
        self.stats.published += stored
        if self._mark_up() and self._spool_waiting:
            self._replay()

    def _park(self, batch: list[Event], *, final: bool = False) -> None:
        if self.spool is not None or final:
            self._overflow(batch)
            return
        # No spool: the (built) events go back to the front of the buffer to wait for the service, as
        # far as there is room.
        room = max(0, self.max_buffer - len(self._buffer))
        self._buffer.extendleft(reversed(batch[:room]))
        if len(batch) > room:
            self._overflow(batch[room:])

    def _publish(self, events: list[Event]) -> int:
        """Publish, setting aside the events the service refuses for good (and only those); returns how
        many were stored. Raises the `_UNAVAILABLE` errors: then nothing is known to be stored."""
        try:
            self.client.publish(events)
        except ValidationError as exc:
            bad = set(exc.bad_indices)
            if not bad or len(events) == 1:
                return self._bisect(events, exc)
            self._reject([e for i, e in enumerate(events) if i in bad], exc)
            rest = [e for i, e in enumerate(events) if i not in bad]
            return self._publish(rest) if rest else 0
        except _UNAVAILABLE:
            raise
        except (APIStatusError, TypeError, ValueError) as exc:
            # 409, 413, another 4xx, or an event that cannot be encoded (a value JSON cannot hold).
            return self._bisect(events, exc)
        return len(events)

    def _bisect(self, events: list[Event], exc: Exception) -> int:
        # The answer does not say which event is at fault: halve until it does (for one bad event in
        # 500, about 2 * log2(500) = 18 more requests), each half stored idempotently.
        if len(events) == 1:
            self._reject(events, exc)
            return 0
        middle = len(events) // 2
        return self._publish(events[:middle]) + self._publish(events[middle:])

    def _reject(self, events: list[Event], exc: Exception) -> None:
        self.stats.rejected += len(events)
        reason = f"{exc.status_code}: {exc.detail}" if isinstance(exc, APIStatusError) else repr(exc)
        if self.spool is not None:
            self.spool.reject(events, reason)
        logger.error("the audit service refused %d event(s) for good (%s)", len(events), reason)

    def _replay(self) -> None:
        assert self.spool is not None
        try:
            sent = self.spool.replay(self._publish, self.batch_size)
        except _UNAVAILABLE as exc:
            self._mark_down(exc)
            return
        self._spool_waiting = self.spool.pending()
        if sent:
            self.stats.replayed += sent
            logger.info("replayed %d spooled audit event(s)", sent)
        self._mark_up()

    def _mark_down(self, exc: Exception) -> None:
        if self._down_for == 0:
            where = f"spooling to {self.spool.directory}" if self.spool is not None else "holding in memory"
            logger.warning("audit service unavailable (%s); %s", exc, where)
        self._down_for = min(self.max_retry_interval, max(self.retry_interval, self._down_for * 2))
        self._down_until = time.monotonic() + self._down_for * random.uniform(0.5, 1.0)  # noqa: S311

    def _mark_up(self) -> bool:
        """Note that the service answered; True if it had been down."""
        was_down = self._down_for > 0
        if was_down:
            logger.info("audit service reachable again")
        self._down_for = 0.0
        self._down_until = 0.0
        return was_down
