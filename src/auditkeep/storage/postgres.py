"""PostgreSQL: only what differs from SQLite.

The events table is range-partitioned by `timestamp` (monthly partitions plus a default one, created in
migrations and kept ahead by storage/partitions.py), and every key leads with `org_id`, so it can also be
distributed by organization (Citus). Writers of one organization serialize on its `chain_heads` row
(SELECT … FOR UPDATE); organizations write in parallel.
"""

from __future__ import annotations

import logging
import select
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy import event

from auditkeep.settings import Settings
from auditkeep.storage.types import parse_timestamp

log = logging.getLogger(__name__)

# Months of partitions kept ready ahead of now; events outside them land in events_default.
PARTITION_MONTHS_AHEAD = 3
# A pooled connection idle for longer than this is pinged (one round trip) before it is handed out, for the
# failures that leave no trace on its socket (a peer gone silently); see _usable_or_discard.
PING_AFTER_IDLE_S = 30.0

# A log's JSON is row_to_json of a one-row subquery (no FROM: it reads the outer row), not json_build_object:
# json_build_object writes `{"a" : 1, "b" : 2}`, and a read must return the same bytes on both backends
# (issue #9); row_to_json writes compact JSON like SQLite's json_object, with the same string escapes, and
# embeds the stored payload text as is. It is also cheaper: the database's CPU time to build and send
# 200,000 logs went from 3.19 s to 2.74 s (median of 6 interleaved runs each; docs/benchmarks.md).
_LOG_COLUMNS_SQL = """action, client_ip, event_uuid, is_support_user, log_entry, object_id, object_type,
payload, referer, request_type, source, status,
to_char("timestamp" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS "timestamp",
url, user_agent, user_email, user_id"""


def _socket_has_news(dbapi_conn: Any) -> bool:
    """Whether an idle connection's socket is readable or gone: a server that ends a session
    (`pg_terminate_backend`, a restart) sends its FATAL error and closes, while a healthy idle session sends
    nothing. One poll(2), no round trip."""
    if dbapi_conn.closed:
        return True
    try:
        fd = dbapi_conn.pgconn.socket
    except psycopg.OperationalError:  # the connection has no socket any more
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def _ping(dbapi_conn: Any) -> None:
    """One round trip, outside any transaction (psycopg's autocommit switch is local, not a statement)."""
    was = dbapi_conn.autocommit
    dbapi_conn.autocommit = True
    try:
        dbapi_conn.execute(";")
    finally:
        dbapi_conn.autocommit = was


def ensure_partitions(conn: sa.Connection, now: datetime | None = None) -> None:
    """Create the default partition if missing and monthly partitions of `events` from last month to
    PARTITION_MONTHS_AHEAD ahead (after each migration; `auditkeep serve` keeps them since, with its
    setting: storage/partition_keeper.py)."""
    from auditkeep.storage.partitions import ensure

    ensure(conn, now or datetime.now(UTC), PARTITION_MONTHS_AHEAD)


def _plan_cursors_per_transaction(engine: sa.Engine) -> None:
    """cursor_tuple_fraction = 1 through a transaction pooler, where a session SET would stay on whichever
    server connection ran it: nothing set in a session may be relied on in the next transaction.

    A new connection asks once what the role's sessions start with. When the role (or the database)
    already has `cursor_tuple_fraction = 1` (`ALTER ROLE ... SET`, docs/production.md), nothing more is
    done; otherwise each transaction starts with SET LOCAL, one more round trip. Autocommit statements
    (the key lookup) open no cursor and are left alone.
    """

    told: list[bool] = []

    @event.listens_for(engine, "connect")
    def _role_plans_all_rows(dbapi_conn: Any, record: Any) -> None:
        with dbapi_conn.cursor() as cursor:
            cursor.execute("SHOW cursor_tuple_fraction")
            row = cursor.fetchone()
        dbapi_conn.commit()
        record.info["role_plans_all_rows"] = row is not None and float(row[0]) == 1.0
        if not record.info["role_plans_all_rows"] and not told:
            told.append(True)
            log.info("cursor_tuple_fraction is not 1 for this role: each transaction sets it (one round "
                     "trip; ALTER ROLE ... SET cursor_tuple_fraction = 1 saves it)")

    @event.listens_for(engine, "begin")
    def _set_local(conn: sa.Connection) -> None:
        proxied = conn.connection
        if proxied.info.get("role_plans_all_rows", True):
            return
        dbapi_conn: Any = proxied.dbapi_connection
        if dbapi_conn is None or dbapi_conn.autocommit:
            return
        # On the DBAPI connection, not `conn`: `conn` is still beginning, and a statement through it would
        # begin again (this event, recursively). psycopg sends its BEGIN first, as for any statement.
        dbapi_conn.execute("SET LOCAL cursor_tuple_fraction = 1")


class PostgresBackend:
    """The production backend."""

    name = "postgresql"

    def create_engine(self, url: str, settings: Settings) -> sa.Engine:
        u = sa.make_url(url)
        if u.drivername in {"postgresql", "postgres"}:
            u = u.set(drivername="postgresql+psycopg")
        # No pool_pre_ping: its round trip on every checkout was 3 of a read's ~19 (docs/benchmarks.md,
        # issue #4). _usable_or_discard below pings only a connection with news on its socket or long idle.
        pooled = settings.database_pooler == "pgbouncer"
        # psycopg prepares a statement on the server after its 5th run on a connection; through PgBouncer's
        # transaction pooling (before 1.21, and Debian 12 ships 1.18) the next transaction may run on a
        # server connection that never saw it ("prepared statement _pg3_0 does not exist"). None: never.
        connect_args: dict[str, Any] = {"prepare_threshold": None} if pooled else {}
        engine = sa.create_engine(u, pool_size=settings.database_pool_size,
                                  max_overflow=settings.database_max_overflow, connect_args=connect_args)

        @event.listens_for(engine, "checkin")
        def _idle_from_now(_dbapi_conn: Any, record: Any) -> None:
            record.info["idle_since"] = time.monotonic()

        @event.listens_for(engine, "checkout")
        def _usable_or_discard(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
            # A connection the server has ended (restart, pg_terminate_backend, idle timeout) has its FATAL
            # message or EOF waiting on its socket; one idle long enough may have lost its peer silently.
            # Either is pinged, and a failed ping makes the pool discard it and check out another
            # (SQLAlchemy's DisconnectionError protocol), so the request never sees the dead connection.
            idle_since = record.info.pop("idle_since", None)
            if idle_since is None:
                return  # just connected
            if time.monotonic() - idle_since < PING_AFTER_IDLE_S and not _socket_has_news(dbapi_conn):
                return
            try:
                _ping(dbapi_conn)
            except psycopg.Error as exc:
                raise sa.exc.DisconnectionError(f"stale pooled connection: {exc}") from exc

        # Every server-side cursor the service opens (a page read while planning, an export, a verifier's
        # walk) is read to its end, so it is planned for all its rows, not PostgreSQL's default of the first
        # 10%, which favours a fast start over a fast finish: the keys of a /16 page (queries.py,
        # _keys_first) were read by a 37 ms walk instead of a 5 ms index-only scan and sort. A SET, not a
        # startup option: PgBouncer refuses unknown startup parameters.
        if pooled:
            _plan_cursors_per_transaction(engine)
        else:
            @event.listens_for(engine, "connect")
            def _plan_cursors_for_all_rows(dbapi_conn: Any, _record: Any) -> None:
                with dbapi_conn.cursor() as cursor:
                    cursor.execute("SET cursor_tuple_fraction = 1")
                dbapi_conn.commit()

        return engine

    def log_json_sql(self, *, integrity: bool) -> str:
        extra = ", seq, prev_hash, hash, personal_salt, personal_commitment" if integrity else ""
        return f"(SELECT row_to_json(log)::text FROM (SELECT {_LOG_COLUMNS_SQL}{extra}) AS log)"

    def insert_events_sql(self) -> str:
        return (
            "INSERT INTO events (org_id, seq, event_uuid, \"timestamp\", received_at, action, client_ip, "
            "is_support_user, log_entry, object_id, object_type, payload, referer, request_type, source, "
            "status, url, user_agent, user_email, user_id, prev_hash, hash, client_ip_key, personal_salt) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::json, %s, %s, %s, %s, %s, %s, %s, %s, "
            "%s, %s, %s, %s)"
        )

    def lock_head_sql(self) -> str:
        # The last column is the head event's received_at, ingest's floor for the next one. Read in the
        # statement's snapshot, it is NULL when the head moved while this waited for the lock (the new
        # head's event is not in that snapshot): EventWriter then reads it again (storage/events.py).
        return ("SELECT seq, hash, merkle_frontier, (SELECT received_at FROM events WHERE events.org_id = "
                "chain_heads.org_id AND events.seq = chain_heads.seq) FROM chain_heads WHERE org_id = %s "
                "FOR UPDATE")

    def ts_param(self, value: str) -> object:
        return parse_timestamp(value)

    @contextmanager
    def write_connection(self, engine: sa.Engine) -> Iterator[sa.Connection]:
        with engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def lookup_connection(self, engine: sa.Engine) -> Iterator[sa.Connection]:
        # Autocommit: the statement alone, without the BEGIN and COMMIT round trips around it.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            yield conn

    def after_migrate(self, conn: sa.Connection) -> None:
        ensure_partitions(conn)
