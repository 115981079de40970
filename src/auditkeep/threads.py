"""Bounded hand-offs between threads, so that long exports use a second core: read ahead, write behind.

SQLite's step, psycopg's reads, zlib's and zstd's compression, crc32 and SHA-256 of large buffers all
release the GIL, so a thread reading the database and one encoding or compressing what was read overlap
(evidence bundles, issue #12; compressed exports, issue #14; docs/benchmarks.md). Queues are bounded, so
memory stays a few chunks however long the export, and an error in either thread is raised in the caller's.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_DONE = object()
_POLL = 0.5  # seconds between looks at the stop flag while a queue is full


def read_ahead(items: Iterable[T], depth: int = 4, *, name: str = "auditkeep-read-ahead",
               wait: bool = True) -> Iterator[T]:
    """Iterate `items` in a thread of its own, up to `depth` items ahead of the caller.

    Closing the returned generator early (a client that hung up) stops the thread at its next item and
    lets it close `items` (and so its database connection) in the thread that opened it. `wait=False`
    does not join that thread at the end, for a generator that may be finalized on the event loop's thread.
    """
    box: queue.Queue[object] = queue.Queue(depth)
    stop = threading.Event()
    failure: list[BaseException] = []

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        source = iter(items)
        try:
            for item in source:
                if not put(item):
                    break
        except BaseException as exc:  # handed to the caller's thread, raised there
            failure.append(exc)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()
            put(_DONE)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        while (item := box.get()) is not _DONE:
            yield item  # type: ignore[misc]  # everything but _DONE is a T
        if failure:
            raise failure[0]
    finally:
        stop.set()
        if wait:
            thread.join()


class WriteBehind(Generic[T]):
    """Call `write(item)` for each `put` item in a thread of its own, up to `depth` items behind."""

    def __init__(self, write: Callable[[T], None], depth: int = 4) -> None:
        self._write = write
        self._box: queue.Queue[object] = queue.Queue(depth)
        self._failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name="auditkeep-write-behind", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._box.get()) is not _DONE:
            if not self._failure:
                try:
                    self._write(item)  # type: ignore[arg-type]  # everything but _DONE is a T
                except BaseException as exc:  # raised in the caller's thread by put() or close()
                    self._failure.append(exc)

    def put(self, item: T) -> None:
        if self._failure:
            raise self._failure[0]
        self._box.put(item)

    def close(self) -> None:
        """Wait until every item is written; raise the first write's error, if any."""
        self._box.put(_DONE)
        self._thread.join()
        if self._failure:
            raise self._failure[0]
