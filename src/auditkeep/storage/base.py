"""The Storage object: an engine, its backend's differences, and the schema kept up to date.

Backends are registered by URL scheme (sqlite.py, postgres.py); each holds only what differs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

import sqlalchemy as sa

from auditkeep.errors import AuditKeepError
from auditkeep.settings import Settings, get_settings

if TYPE_CHECKING:
    from auditkeep.storage.events import EventWriter
    from auditkeep.storage.replicas import ReplicaSet


class Backend(Protocol):
    """What differs between SQLite and PostgreSQL."""

    name: str

    def create_engine(self, url: str, settings: Settings) -> sa.Engine: ...

    def log_json_sql(self, *, integrity: bool) -> str:
        """A SQL expression producing one log as JSON text (the API's 17 fields)."""
        ...

    def insert_events_sql(self) -> str: ...

    @contextmanager
    def write_connection(self, engine: sa.Engine) -> Iterator[sa.Connection]:
        """A connection inside a write transaction that holds the backend's writer lock."""
        ...

    @contextmanager
    def lookup_connection(self, engine: sa.Engine) -> Iterator[sa.Connection]:
        """A connection for a single statement, which is its own snapshot."""
        ...

    def lock_head_sql(self) -> str: ...

    def after_migrate(self, conn: sa.Connection) -> None: ...

    def ts_param(self, value: str) -> object:
        """A timestamp (API text form) as a bind parameter."""
        ...


class UnsupportedDatabaseError(AuditKeepError):
    """AUDITKEEP_DATABASE_URL names a database auditkeep does not support."""


def _backend_for(url: str) -> Backend:
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    if scheme == "sqlite":
        from auditkeep.storage.sqlite import SQLiteBackend

        return SQLiteBackend()
    if scheme in {"postgresql", "postgres"}:
        from auditkeep.storage.postgres import PostgresBackend

        return PostgresBackend()
    raise UnsupportedDatabaseError(f"unsupported database URL scheme {scheme!r}: use sqlite:// or postgresql://")


class Storage:
    """A database holding auditkeep's schema. Thread-safe; share one per process."""

    def __init__(self, url: str, settings: Settings | None = None, *, replica: bool = False) -> None:
        self.settings = settings or get_settings()
        self.url = url
        self.backend = _backend_for(url)
        self.engine = self.backend.create_engine(url, self.settings)
        self._search_engine: sa.Engine | None = None
        self._search_engine_lock = threading.Lock()
        self.replicas: ReplicaSet | None = None
        if not replica and self.settings.read_database_url:
            from auditkeep.storage.replicas import ReplicaSet

            if self.dialect != "postgresql":
                raise UnsupportedDatabaseError("AUDITKEEP_READ_DATABASE_URL needs a PostgreSQL primary")
            urls = [u.strip() for u in self.settings.read_database_url.split(",") if u.strip()]
            self.replicas = ReplicaSet(self, [Storage(u, self.settings, replica=True) for u in urls],
                                       max_lag_s=self.settings.replica_max_lag)

    @property
    def dialect(self) -> str:
        return self.backend.name

    def migrate(self) -> None:
        """Bring the schema up to date (idempotent; cheap when already current)."""
        from auditkeep.storage.migrations import upgrade

        upgrade(self)

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        """A connection in a read transaction (one consistent snapshot)."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def for_read(self) -> Storage:
        """Where a read starting now runs: a read replica that has replayed everything committed so far
        (the reader's own record and writes included: storage/replicas.py), else this database. Call it
        after the read's record is committed; never write through what it returns."""
        return self if self.replicas is None else self.replicas.for_read()

    @contextmanager
    def lookup(self) -> Iterator[sa.Connection]:
        """A connection for one statement, such as a key lookup (the statement is its own snapshot). On
        PostgreSQL it runs in autocommit: no BEGIN and COMMIT round trips (issue #4)."""
        with self.backend.lookup_connection(self.engine) as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A connection in a write transaction; commits on success, rolls back on error."""
        with self.backend.write_connection(self.engine) as conn:
            yield conn

    @contextmanager
    def search_write(self) -> Iterator[sa.Connection]:
        """A write transaction on the search index (storage/search.py). On SQLite a connection of its own
        that holds the search file's writer lock and never the events database's (storage/search_file.py);
        on PostgreSQL `write()`."""
        if self.dialect != "sqlite":
            with self.write() as conn:
                yield conn
            return
        with self.search_engine().connect() as conn, conn.begin():
            yield conn

    def search_engine(self) -> sa.Engine:
        """SQLite: the engine of `search_write` (made on first use)."""
        with self._search_engine_lock:
            if self._search_engine is None:
                from auditkeep.storage import search_file

                database = self.engine.url.database
                assert database, "the search index needs a SQLite database file"
                self._search_engine = search_file.writer_engine(database, self.settings.sqlite_busy_timeout_ms)
            return self._search_engine

    @contextmanager
    def event_writer(self, org_id: int) -> Iterator[EventWriter]:
        """A write transaction holding `org_id`'s chain head lock (see storage/events.py)."""
        from auditkeep.storage.events import EventWriter

        with self.write() as conn:
            yield EventWriter(self, conn, org_id)

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def dispose(self) -> None:
        self.engine.dispose()
        if self._search_engine is not None:
            self._search_engine.dispose()
        if self.replicas is not None:
            self.replicas.dispose()


def open_storage(url: str | None = None, *, settings: Settings | None = None, migrate: bool = True) -> Storage:
    """Open the database at `url` (default: AUDITKEEP_DATABASE_URL), migrating it first unless told not to."""
    settings = settings or get_settings()
    storage = Storage(url or settings.database_url, settings)
    if migrate:
        storage.migrate()
    return storage
