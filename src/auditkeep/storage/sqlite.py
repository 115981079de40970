"""SQLite: only what differs from PostgreSQL.

Durability: WAL with `synchronous=FULL`. In WAL mode NORMAL already survives a crash of the process,
but not of the machine (the last transactions can roll back on power loss); an audit service promises
that a 2xx from ingest means the event is kept, so every commit is fsync'd. Batched ingest pays one
fsync per batch, which costs little (docs/benchmarks.md).

Concurrency: SQLite has one writer at a time. Every write transaction starts with BEGIN IMMEDIATE, so
it takes the write lock up front (waiting up to busy_timeout) instead of failing with "database is
locked" when a read transaction tries to upgrade; `write_connection` also retries the rare lock
timeout, so several server workers writing at once serialize instead of failing.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from auditkeep.settings import Settings

_LOCK_RETRIES = 20

_LOG_FIELDS_SQL = """
'action', action, 'client_ip', client_ip, 'event_uuid', event_uuid,
'is_support_user', CASE is_support_user WHEN 1 THEN json('true') WHEN 0 THEN json('false') END,
'log_entry', log_entry, 'object_id', object_id, 'object_type', object_type, 'payload', json(payload),
'referer', referer, 'request_type', request_type, 'source', source, 'status', status,
'timestamp', "timestamp", 'url', url, 'user_agent', user_agent, 'user_email', user_email,
'user_id', user_id"""


class SQLiteBackend:
    """The embedded default backend."""

    name = "sqlite"

    def create_engine(self, url: str, settings: Settings) -> sa.Engine:
        database = sa.make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False})
        busy_timeout = settings.sqlite_busy_timeout_ms

        @event.listens_for(engine, "connect")
        def _configure(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
            # Autocommit at the driver level: SQLAlchemy's "begin" hook below decides how transactions
            # start (pysqlite's own implicit BEGIN would defeat BEGIN IMMEDIATE).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout)}")
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = FULL")
            cur.execute("PRAGMA foreign_keys = ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine

    def log_json_sql(self, *, integrity: bool) -> str:
        extra = ", 'seq', seq, 'prev_hash', prev_hash, 'hash', hash" if integrity else ""
        return f"json_object({_LOG_FIELDS_SQL}{extra})"

    def insert_events_sql(self) -> str:
        return (
            "INSERT INTO events (org_id, seq, event_uuid, \"timestamp\", received_at, action, client_ip, "
            "is_support_user, log_entry, object_id, object_type, payload, referer, request_type, source, "
            "status, url, user_agent, user_email, user_id, prev_hash, hash, client_ip_key) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )

    def lock_head_sql(self) -> str:
        # BEGIN IMMEDIATE already holds the database-wide write lock.
        return "SELECT seq, hash, merkle_frontier FROM chain_heads WHERE org_id = ?"

    def ts_param(self, value: str) -> object:
        return value

    @contextmanager
    def write_connection(self, engine: sa.Engine) -> Iterator[sa.Connection]:
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
            try:
                yield conn
                trans.commit()
            except BaseException:
                trans.rollback()
                raise
            finally:
                conn.close()
            return

    def after_migrate(self, conn: sa.Connection) -> None:
        """Nothing to maintain: SQLite's events table is not partitioned."""
