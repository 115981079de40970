"""What a read of the audit log costs in database work, pinned so it does not creep back (issue #4), and
the PostgreSQL pool's liveness policy that replaced pool_pre_ping (storage/postgres.py)."""

from __future__ import annotations

import secrets
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import psycopg
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.pool import Pool

from auditkeep.api.app import create_app
from auditkeep.settings import Settings
from auditkeep.storage import Storage, identity, open_storage, postgres
from tests.conftest import Tenant, make_tenant

URL = "/api/v1/audit_logs"
PARAMS = {"action": "user.login", "limit": 100}


# libpq trace lines of the front-end messages that wait for the server: each is one round trip.
_ROUND_TRIP_MESSAGES = ("\tQuery\t", "\tSync", "\tCopyDone")


@dataclass
class Counts:
    checkouts: int = 0
    statements: int = 0
    pings: int = 0
    traces: list[IO[str]] = field(default_factory=list, repr=False, compare=False)

    @property
    def round_trips(self) -> int:
        """Round trips to PostgreSQL since the last reset, from libpq's protocol trace (0 on SQLite)."""
        total = 0
        for trace in self.traces:
            trace.seek(0)
            total += sum(1 for line in trace if line.startswith("F\t") and any(m in line for m in _ROUND_TRIP_MESSAGES))
        return total

    def reset(self) -> None:
        self.checkouts = self.statements = self.pings = 0
        self.close()

    def close(self) -> None:
        for trace in self.traces:
            trace.close()
        self.traces.clear()


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counts]:
    """Checkouts and statements of every engine (the read recorder's SQLite store has its own), and pings."""
    seen = Counts()

    def on_checkout(dbapi_conn: Any, *_: object) -> None:
        seen.checkouts += 1
        if isinstance(dbapi_conn, psycopg.Connection):
            trace = tempfile.TemporaryFile("w+")  # noqa: SIM115 - read and closed by the fixture
            seen.traces.append(trace)
            dbapi_conn.pgconn.trace(trace.fileno())
            dbapi_conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)

    def on_checkin(dbapi_conn: Any, *_: object) -> None:
        if isinstance(dbapi_conn, psycopg.Connection) and not dbapi_conn.closed:
            dbapi_conn.pgconn.untrace()

    def on_statement(*_: object) -> None:
        seen.statements += 1

    real_ping = postgres._ping

    def counting_ping(dbapi_conn: object) -> None:
        seen.pings += 1
        real_ping(dbapi_conn)

    monkeypatch.setattr(postgres, "_ping", counting_ping)
    event.listen(Pool, "checkout", on_checkout)
    event.listen(Pool, "checkin", on_checkin)
    event.listen(sa.Engine, "before_cursor_execute", on_statement)
    try:
        yield seen
    finally:
        event.remove(Pool, "checkout", on_checkout)
        event.remove(Pool, "checkin", on_checkin)
        event.remove(sa.Engine, "before_cursor_execute", on_statement)
        seen.close()


# Per read, warm pool, key used within the last minute (so no last_used_at write). PostgreSQL, 14 round
# trips in all: the key lookup (the first statement of the page's transaction: BEGIN, SELECT: 2); the record
# (BEGIN, SELECT chain head FOR UPDATE, INSERT, UPDATE chain head, COMMIT: 5); the page (SELECT head seq,
# DECLARE, psycopg's Describe of the cursor, FETCH 1, FETCH the rest, CLOSE, COMMIT: 7). Two checkouts: the
# key lookup and the page share one connection (storage.pages.RequestConnection, issue #14; three before),
# the record is committed on the recorder's. The driver's own BEGIN/COMMIT, FETCH and Describe are not
# SQLAlchemy cursor executes, so 5 statements count here; no ping. SQLite: the same two checkouts, plus
# BEGINs and PRAGMAs as statements (in-process calls, no round trips).
EXPECTED = {"postgresql": Counts(checkouts=2, statements=5, pings=0),
            "sqlite": Counts(checkouts=2, statements=10, pings=0)}
EXPECTED_ROUND_TRIPS = {"postgresql": 14, "sqlite": 0}


def test_a_read_makes_a_pinned_number_of_checkouts_and_statements(
    app_client: TestClient, tenant: Tenant, storage: Storage, counts: Counts
) -> None:
    """A filtered read's checkouts, statements and pings are exactly these (PostgreSQL before issue #4's
    round-trip cut: 3 checkouts, 5 statements, 3 pings and 20 round trips; before issue #14's shared
    connection, 3 checkouts)."""
    assert app_client.get(URL, params=PARAMS, headers=tenant.headers).status_code == 200  # warm, key touched
    counts.reset()
    assert app_client.get(URL, params=PARAMS, headers=tenant.headers).status_code == 200
    assert counts == EXPECTED[storage.dialect]
    assert counts.round_trips == EXPECTED_ROUND_TRIPS[storage.dialect]


def test_a_key_revoked_after_use_is_refused_at_once(app_client: TestClient, tenant: Tenant) -> None:
    """Keys are looked up on every request, never cached: the request right after a revocation is 401."""
    assert app_client.get(URL, params=PARAMS, headers=tenant.headers).status_code == 200
    with tenant.storage.write() as conn:
        identity.revoke_key(conn, tenant.org, tenant.admin_key)
    r = app_client.get(URL, params=PARAMS, headers=tenant.headers)
    assert r.status_code == 401
    assert "revoked" in r.json()["detail"]


@pytest.fixture
def own_pg(postgres_url: str, settings: Settings) -> Iterator[tuple[Storage, str]]:
    """A PostgreSQL store with its own pool, its sessions named so they can be killed without touching others."""
    name = f"akkill_{secrets.token_hex(4)}"
    url = str(sa.make_url(postgres_url).update_query_dict({"application_name": name}).render_as_string(
        hide_password=False))
    s = open_storage(url, settings=settings.model_copy(update={"database_url": url}))
    yield s, name
    s.dispose()


def _kill_sessions(storage: Storage, application_name: str) -> int:
    """pg_terminate_backend every session of `application_name` (from another connection), and wait until
    they are gone."""
    admin = sa.create_engine(storage.engine.url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    try:
        with admin.connect() as conn:
            sql = ("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                   "WHERE application_name = %s AND pid <> pg_backend_pid()")
            killed = int(conn.exec_driver_sql(sql, (application_name,)).scalar_one())
            left = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND pid <> pg_backend_pid()"
            for _ in range(100):
                if conn.exec_driver_sql(left, (application_name,)).scalar_one() == 0:
                    break
                time.sleep(0.02)
    finally:
        admin.dispose()
    return killed


@pytest.mark.postgres
def test_a_connection_killed_server_side_does_not_fail_the_next_request(
    own_pg: tuple[Storage, str], settings: Settings
) -> None:
    """pg_terminate_backend on every pooled session (as a PostgreSQL restart does): the next read succeeds,
    its checkouts having found the dead connections and replaced them."""
    storage, name = own_pg
    tenant = make_tenant(storage)
    app = create_app(settings.model_copy(update={"database_url": storage.url}), storage=storage)
    with TestClient(app) as client:
        assert client.get(URL, params=PARAMS, headers=tenant.headers).status_code == 200
        assert _kill_sessions(storage, name) >= 1
        for _ in range(3):
            r = client.get(URL, params=PARAMS, headers=tenant.headers)
            assert r.status_code == 200, r.text


@pytest.mark.postgres
def test_a_long_idle_connection_is_pinged_before_use(
    own_pg: tuple[Storage, str], monkeypatch: pytest.MonkeyPatch, counts: Counts
) -> None:
    """A connection idle longer than PING_AFTER_IDLE_S costs one ping at checkout; a recent one none."""
    storage, _ = own_pg
    storage.ping()
    counts.pings = 0
    storage.ping()
    assert counts.pings == 0
    monkeypatch.setattr(postgres, "PING_AFTER_IDLE_S", 0.0)
    storage.ping()
    assert counts.pings == 1
