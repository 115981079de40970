"""Commits that return before the disk flush, and the flush that makes them durable (issue #4).

A commit through `DeferredCommits.storage` is committed when it returns: other connections see it, and
it survives a crash of the process. It is not yet on disk; `flush()` puts every such commit made so far
there. The service records each read of the audit log this way (ingest/reads.py): the record is
committed before the read's query runs, and flushed by a background thread while the query runs, so the
fsync overlaps the query instead of adding to it (docs/architecture.md, "Recording reads").

SQLite: a second engine on the same file whose connections run `synchronous=NORMAL`, under which a WAL
commit writes its frames to the `-wal` file without fsync'ing it; `flush()` fsyncs that file, which is
what `synchronous=FULL` does at every commit. PostgreSQL: commits stay synchronous (a one-event
transaction's WAL flush took ~1 ms here), so `flush()` has nothing to do.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from auditkeep.storage.base import Storage


def _sqlite_file(url: str) -> str | None:
    """The database file of a SQLite URL, or None for an in-memory or URI-form database."""
    database = sa.make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database


class DeferredCommits:
    """A store on the same database as `storage` whose commits are made durable by `flush()`."""

    def __init__(self, storage: Storage) -> None:
        self._wal: str | None = None
        database = _sqlite_file(storage.url) if storage.dialect == "sqlite" else None
        if database is None:
            self.storage = storage  # commits are synchronous already; nothing to flush
            self._owned = False
            return
        self.storage = Storage(storage.url, storage.settings)
        self._owned = True
        self._wal = database + "-wal"

        # Registered after the backend's own listener, so it overrides its synchronous=FULL.
        @event.listens_for(self.storage.engine, "connect")
        def _no_fsync_at_commit(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
            dbapi_conn.execute("PRAGMA synchronous = NORMAL")

    @property
    def deferred(self) -> bool:
        """Whether commits through `storage` wait for `flush()` to reach the disk."""
        return self._wal is not None

    def flush(self) -> None:
        """Make every commit made through `storage` so far durable.

        fsync of the WAL file, opened afresh: SQLite deletes it only after checkpointing it into the
        database file and syncing that (its last connection closing), so a missing file has nothing left.
        """
        if self._wal is None:
            return
        try:
            fd = os.open(self._wal, os.O_RDWR)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def dispose(self) -> None:
        if self._owned:
            self.storage.dispose()
