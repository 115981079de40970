"""SQLite: only what differs from PostgreSQL.

Durability: WAL with `synchronous=FULL`. In WAL mode NORMAL already survives a crash of the process,
but not of the machine (the last transactions can roll back on power loss); an audit service promises
that a 2xx from ingest means the event is kept, so every commit is fsync'd. Batched ingest pays one
fsync per batch, which costs little (docs/benchmarks.md).

Concurrency: SQLite has one writer at a time. Every write transaction starts with BEGIN IMMEDIATE, so
it takes the write lock up front (waiting up to busy_timeout) instead of failing with "database is
locked" when a read transaction tries to upgrade; `write_connection` also retries the rare lock
timeout, so several server workers writing at once serialize instead of failing.

A read-only database file (issue #11): SQLite checks the file's mode only when it opens it, so a pooled
connection opened before a `chmod a-w` keeps writing through its descriptor, one opened after is
read-only for good (even once the mode is restored), and the answer would depend on which connection a
request drew. So every write first asks the file system whether this process may write the file
(`access(2)`, ~1 us) and refuses with `ReadOnlyDatabaseError` when not; a connection opened while the
file was read-only is replaced at checkout once it is writable again, so writes resume in the same
process with no restart.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError, OperationalError

from auditkeep.errors import ReadOnlyDatabaseError
from auditkeep.settings import Settings
from auditkeep.storage import search_file

_LOCK_RETRIES = 20
_SQLITE_READONLY = 8  # https://sqlite.org/rescode.html
# Page cache of a write transaction, KiB (SQLite's default is 2,000). A 5,000-event batch dirties pages
# all over the uuid and filter indexes, ~7,000 of them at 1,000,000 events; a 2 MB cache spills them to
# the WAL mid-transaction and reads them back. Raised for the write transaction only and lowered again
# before the connection returns to the pool, so reads (an export scans the whole table) keep the small
# cache. 32 MB, not 64: 64 was ~8% faster in raw inserts at 1,000,000 events but took the server's peak
# RSS from ~184 to ~197 MB, against the 200 MB target (docs/benchmarks.md).
WRITE_CACHE_KIB = 32_768
READ_CACHE_KIB = 2_000
# WAL frames between automatic checkpoints (SQLite's default, 1,000, is less than one batch writes). A
# checkpoint copies each changed page once and fsyncs the database file, so a longer interval writes the
# index pages that many batches touch once instead of once a batch. The WAL then grows to ~200 MB on disk
# between checkpoints. Durability is the commit's fsync of the WAL either way (synchronous=FULL).
# Raw executemany of 5,000-row batches into 1,000,000 events: 10,100 rows/s with both defaults, 16,900 with
# a 64 MB cache and 10,000 frames, 23,000 with a 64 MB cache and 50,000 frames (docs/benchmarks.md).
WAL_AUTOCHECKPOINT = 50_000


def connection_pragmas(busy_timeout_ms: int) -> list[str]:
    """What every connection runs first (also used by bench/ingest_export.py for the raw-SQLite ceiling)."""
    return [
        f"PRAGMA busy_timeout = {int(busy_timeout_ms)}",
        "PRAGMA journal_mode = WAL",
        "PRAGMA synchronous = FULL",
        f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT}",
        f"PRAGMA cache_size = -{READ_CACHE_KIB}",
        "PRAGMA foreign_keys = ON",
    ]


_LOG_FIELDS_SQL = """
'action', action, 'client_ip', client_ip, 'event_uuid', event_uuid,
'is_support_user', CASE is_support_user WHEN 1 THEN json('true') WHEN 0 THEN json('false') END,
'log_entry', log_entry, 'object_id', object_id, 'object_type', object_type, 'payload', json(payload),
'referer', referer, 'request_type', request_type, 'source', source, 'status', status,
'timestamp', "timestamp", 'url', url, 'user_agent', user_agent, 'user_email', user_email,
'user_id', user_id"""


def _file(url: sa.URL) -> str | None:
    """The database file of a SQLite URL, or None for an in-memory one."""
    database = url.database
    return database if database and database != ":memory:" and not database.startswith("file:") else None


def _writable(database: str | None) -> bool:
    return database is None or os.access(database, os.W_OK)


def _sqlite_code(exc: OperationalError) -> int | None:
    code = getattr(exc.orig, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


class SQLiteBackend:
    """The embedded default backend."""

    name = "sqlite"

    def create_engine(self, url: str, settings: Settings) -> sa.Engine:
        database = sa.make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False})
        busy_timeout = settings.sqlite_busy_timeout_ms
        file = _file(engine.url)
        search = None if file is None else search_file.path_of(file)
        if search is not None:
            search_file.ensure(search)  # the search index's own file (issue #13), attached by every connection

        @event.listens_for(engine, "connect")
        def _configure(dbapi_conn: sqlite3.Connection, record: Any) -> None:
            # SQLite opened the file read-only if it could not open it for writing: remember, so the
            # connection is replaced once the file is writable again (checkout below).
            record.info["read_only"] = not _writable(file)
            # Autocommit at the driver level: SQLAlchemy's "begin" hook below decides how transactions
            # start (pysqlite's own implicit BEGIN would defeat BEGIN IMMEDIATE).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            for pragma in connection_pragmas(busy_timeout):
                cur.execute(pragma)
            cur.close()
            if search is not None:
                search_file.attach(dbapi_conn, search, read_only=True)

        @event.listens_for(engine, "checkout")
        def _reopen_when_writable(_dbapi_conn: sqlite3.Connection, record: Any, _proxy: Any) -> None:
            if record.info.get("read_only") and _writable(file):
                raise DisconnectionError("opened while the database file was read-only")  # the pool reconnects

        @event.listens_for(engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

        if search is not None:
            search_file.follow_replacement(engine, search)
        return engine

    def log_json_sql(self, *, integrity: bool) -> str:
        extra = (", 'seq', seq, 'prev_hash', prev_hash, 'hash', hash, 'personal_salt', personal_salt, "
                 "'personal_commitment', personal_commitment") if integrity else ""
        return f"json_object({_LOG_FIELDS_SQL}{extra})"

    def insert_events_sql(self) -> str:
        return (
            "INSERT INTO events (org_id, seq, event_uuid, \"timestamp\", received_at, action, client_ip, "
            "is_support_user, log_entry, object_id, object_type, payload, referer, request_type, source, "
            "status, url, user_agent, user_email, user_id, prev_hash, hash, client_ip_key, personal_salt) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )

    def lock_head_sql(self) -> str:
        # BEGIN IMMEDIATE already holds the database-wide write lock. The last column is the head event's
        # received_at (NULL before the first event, or once purged): ingest's floor for the next one.
        return ("SELECT seq, hash, merkle_frontier, (SELECT received_at FROM events WHERE events.org_id = "
                "chain_heads.org_id AND events.seq = chain_heads.seq) FROM chain_heads WHERE org_id = ?")

    def ts_param(self, value: str) -> object:
        return value

    @contextmanager
    def lookup_connection(self, engine: sa.Engine) -> Iterator[sa.Connection]:
        # An ordinary read transaction: in-process, its BEGIN and COMMIT cost no round trips.
        with engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write_connection(self, engine: sa.Engine) -> Iterator[sa.Connection]:
        if not _writable(_file(engine.url)):
            raise ReadOnlyDatabaseError("the database file is read-only")
        for attempt in range(_LOCK_RETRIES):
            conn = engine.connect().execution_options(sqlite_begin="IMMEDIATE")
            try:
                trans = conn.begin()
            except OperationalError as exc:
                conn.close()
                if "locked" not in str(exc) or attempt == _LOCK_RETRIES - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
                continue
            read_only = False
            try:
                conn.exec_driver_sql(f"PRAGMA cache_size = -{WRITE_CACHE_KIB}")
                yield conn
                trans.commit()
            except BaseException as exc:
                trans.rollback()
                # Opened read-only in the instant the mode changed back: never reuse it for a write.
                read_only = isinstance(exc, OperationalError) and _sqlite_code(exc) == _SQLITE_READONLY
                raise
            finally:
                if read_only:
                    conn.invalidate()
                else:
                    # Shrinking frees the extra pages at once, before the pool hands the connection to a
                    # reader. On the driver connection: through SQLAlchemy it would begin (IMMEDIATE) a new
                    # transaction.
                    dbapi = conn.connection.dbapi_connection
                    with contextlib.suppress(sqlite3.Error):
                        if dbapi is not None:
                            dbapi.execute(f"PRAGMA cache_size = -{READ_CACHE_KIB}")
                conn.close()
            return

    def after_migrate(self, conn: sa.Connection) -> None:
        """SQLite's events table is not partitioned. Migration 0013 put the search index in this database;
        it lives in its own file since (storage/search_file.py), so the old table goes (it is rebuilt)."""
        conn.exec_driver_sql("DROP TABLE IF EXISTS main.search_fts")
