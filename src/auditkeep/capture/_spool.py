"""The on-disk spool: events that could not be shipped wait here, in append-only NDJSON files.

Each process appends to its own file (`<time_ns>-<pid>-<random>.ndjson`), fsync'd after every write,
and holds an exclusive `flock` on it while it is open, so another process (a sibling worker sharing the
directory) never replays a file that is still being written. Replaying takes the oldest files first,
locks each, publishes its events in batches and deletes it once all of them are stored. A replay cut
short (the service went away again, the process died) leaves the file in place and sends it again
later: harmless, because every event carries its event_uuid and the service stores each uuid once.
A torn last line (a crash mid-write) is skipped.

Events the service refuses for good (a 422 naming them, a 409) are moved to `rejected-*.ndjson` in the
same directory for a person to look at; they are never replayed.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any

from auditkeep.ids import new_event_uuid

try:
    import fcntl
except ImportError:  # pragma: no cover (Windows: one process per spool directory)
    fcntl = None  # type: ignore[assignment]

__all__ = ["Spool"]

logger = logging.getLogger("auditkeep.capture")

Event = dict[str, Any]


def _default(value: object) -> object:
    # A value the application put in an event that JSON cannot hold is kept as text rather than
    # losing the event; dates in the form the service reads.
    return value.isoformat() if isinstance(value, datetime | date) else str(value)


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=_default).encode()


def _lock(file: IO[Any], *, blocking: bool) -> bool:
    if fcntl is None:
        return True
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


class Spool:
    """A directory of NDJSON files holding events until the service takes them."""

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool = True,
                 max_bytes: int | None = None, rotate_bytes: int = 8 * 1024 * 1024) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.max_bytes = max_bytes
        self.rotate_bytes = rotate_bytes
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self._file_bytes = 0
        self._pid = os.getpid()
        # Only this process's view (kept up to date here, re-read after each replay), so that a write
        # does not list the directory.
        self._approx_bytes = self.size()

    def _files(self) -> list[Path]:
        return sorted(p for p in self.directory.glob("*.ndjson") if not p.name.startswith("rejected-"))

    def size(self) -> int:
        """Bytes waiting in the directory (all processes' files)."""
        total = 0
        for path in self._files():
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                continue
        return total

    def pending(self) -> bool:
        """Whether any events wait in the directory."""
        return self.size() > 0

    def _open_new(self) -> IO[bytes]:
        name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}.ndjson"
        file = open(self.directory / name, "ab")  # noqa: SIM115 (kept open across writes; closed by seal)
        _lock(file, blocking=True)
        if self.fsync and hasattr(os, "O_DIRECTORY"):
            # The new file's directory entry must survive a crash too, not only its contents.
            dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self._file_bytes = 0
        return file

    def write(self, events: list[Event]) -> bool:
        """Append events durably; False (and nothing written) if the spool is over `max_bytes`."""
        if not events:
            return True
        for event in events:
            # The uuid must be fixed before the event is first kept, so that replays are idempotent.
            if event.get("event_uuid") is None:
                event["event_uuid"] = new_event_uuid()
        data = b"".join(_dumps(event) + b"\n" for event in events)
        with self._lock:
            if self.max_bytes is not None and self._approx_bytes + len(data) > self.max_bytes:
                return False
            if self._pid != os.getpid():
                # Forked: the open file is the parent's (its buffer is empty, we flush every write).
                self._seal_locked()
                self._pid = os.getpid()
            if self._file is None or self._file_bytes >= self.rotate_bytes:
                self._seal_locked()
                self._file = self._open_new()
            self._file.write(data)
            self._file.flush()
            if self.fsync:
                os.fsync(self._file.fileno())
            self._file_bytes += len(data)
            self._approx_bytes += len(data)
        return True

    def seal(self) -> None:
        """Close the file being written, so that it can be replayed."""
        with self._lock:
            self._seal_locked()

    def _seal_locked(self) -> None:
        if self._file is not None:
            self._file.close()  # releases the flock
            self._file = None

    def reset_after_fork(self) -> None:
        """In a forked child: a new lock (the parent's may have been held), and the inherited copy of the
        parent's file closed (its buffer is empty; the parent keeps its flock through its own copy)."""
        self._lock = threading.Lock()
        self._seal_locked()
        self._pid = os.getpid()

    def replay(self, publish: Callable[[list[Event]], object], batch_size: int) -> int:
        """Publish every spooled event, oldest file first; returns how many were sent.

        `publish` raising stops the replay (the current file stays for next time) and propagates.
        """
        self.seal()
        sent = 0
        try:
            for path in self._files():
                sent += self._replay_file(path, publish, batch_size)
        finally:
            self._approx_bytes = self.size()
        return sent

    def _replay_file(self, path: Path, publish: Callable[[list[Event]], object], batch_size: int) -> int:
        try:
            file = open(path, "rb")  # noqa: SIM115 (closed in the finally below)
        except FileNotFoundError:
            return 0  # replayed and deleted by another process meanwhile
        sent = 0
        try:
            if not _lock(file, blocking=False) or os.fstat(file.fileno()).st_nlink == 0:
                return 0  # being written or replayed elsewhere, or already done
            for batch in self._batches(file, path, batch_size):
                publish(batch)
                sent += len(batch)
            path.unlink(missing_ok=True)
        finally:
            file.close()
        return sent

    @staticmethod
    def _batches(file: IO[bytes], path: Path, batch_size: int) -> Iterator[list[Event]]:
        batch: list[Event] = []
        for number, line in enumerate(file, 1):
            try:
                batch.append(json.loads(line))
            except ValueError:
                logger.warning("skipping unreadable line %d of %s (torn write?)", number, path)
                continue
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def reject(self, events: list[Event], reason: str) -> None:
        """Keep events the service refused for good, with the reason, out of the replay."""
        path = self.directory / f"rejected-{time.strftime('%Y%m%d')}-{os.getpid()}.ndjson"
        with self._lock, open(path, "ab") as file:
            for event in events:
                file.write(_dumps({"reason": reason, "event": event}) + b"\n")
            file.flush()
            if self.fsync:
                os.fsync(file.fileno())

    def close(self) -> None:
        """Seal the current file."""
        self.seal()
