"""Shared fixtures: real databases (SQLite and PostgreSQL), the real app, and organizations with keys.

Backends: every test that takes `storage` (or anything built on it) runs once per backend. PostgreSQL
runs against AUDITKEEP_TEST_POSTGRES_URL when it is set, else against a server that answers at
127.0.0.1:5432 as user postgres (so `make test` uses a local PostgreSQL with nothing to set); without
either, those tests skip and the summary says so in one line. With CI=true an unreachable server is a
failure, never a skip. Each test session gets its own freshly created PostgreSQL database (random name, dropped at the
end) and its own SQLite file; tests isolate from each other through fresh organizations.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from auditkeep.api.app import create_app
from auditkeep.auth.principals import Principal, Role, Scope
from auditkeep.settings import Settings
from auditkeep.storage import Storage, identity, open_storage
from auditkeep.storage.identity import Org
from auditkeep.storage.tables import streams
from auditkeep.streams.forwarder import Forwarder

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
LOCAL_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
HOW_TO_RUN_PG = (
    "start PostgreSQL at 127.0.0.1:5432 (user postgres) or set "
    "AUDITKEEP_TEST_POSTGRES_URL=postgresql://USER@HOST:PORT/DB"
)


def _local_postgres() -> str | None:
    """The local server's URL when one answers at 127.0.0.1:5432 and lets user postgres in, else None."""
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=0.5).close()
        engine = sa.create_engine(_admin_url(LOCAL_PG_URL), connect_args={"connect_timeout": 2})
        try:
            with engine.connect():
                return LOCAL_PG_URL
        finally:
            engine.dispose()
    except (OSError, sa.exc.SQLAlchemyError):
        return None


def _admin_url(url: str) -> sa.URL:
    u = sa.make_url(url)
    return u.set(drivername="postgresql+psycopg")


PG_URL = os.environ.get("AUDITKEEP_TEST_POSTGRES_URL") or (
    "postgresql://postgres@127.0.0.1:5432/test" if IN_CI else _local_postgres()
)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (dropped afterwards)."""
    if PG_URL is None:
        pytest.skip(f"no PostgreSQL server: {HOW_TO_RUN_PG} (they always run with CI=true)")
    admin = sa.create_engine(_admin_url(PG_URL), isolation_level="AUTOCOMMIT")
    name = f"auditkeep_test_{secrets.token_hex(4)}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
    except sa.exc.OperationalError as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL at {PG_URL} is unreachable in CI: {exc}")
        pytest.skip(f"PostgreSQL at {PG_URL} is unreachable ({str(exc.orig).splitlines()[0]}): {HOW_TO_RUN_PG}")
    yield str(_admin_url(PG_URL).set(database=name).render_as_string(hide_password=False))
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("sqlite") / "auditkeep.db"
    return f"sqlite:///{path}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test marked `sqlite_only` (it checks something only SQLite has, such as its fsync settings) is not
    collected for PostgreSQL at all: deselected, not skipped, since with CI=true no PostgreSQL test skips."""
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and callspec.params.get("database_url") == "postgres"
        (drop if on_postgres and item.get_closest_marker("sqlite_only") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line that says how many PostgreSQL tests skipped for want of a server, and how to run them."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "postgres" in getattr(r, "keywords", {})]
    if skipped:
        terminalreporter.write_line(f"{len(skipped)} PostgreSQL tests skipped: {HOW_TO_RUN_PG}", yellow=True)


@pytest.fixture(scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """The URL of a migrated test database, once per backend."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    keydir = tmp_path_factory.mktemp("keys")
    # The session's shared app serves thousands of requests from one address with a few keys (property
    # tests, schemathesis, pollers): limits no test of those means to hit. tests/api/test_rate_limits.py
    # builds apps with the limits it tests.
    return Settings(signing_key_path=keydir / "signing-key.pem", secrets_key_path=keydir / "secrets-key",
                    log_level="WARNING", rate_limit="100000/second", auth_failure_limit="100000/minute")


@pytest.fixture(scope="session")
def storage(database_url: str, settings: Settings) -> Iterator[Storage]:
    """A migrated store on the current backend, shared by the session."""
    s = open_storage(database_url, settings=settings.model_copy(update={"database_url": database_url}))
    yield s
    s.dispose()


@contextlib.contextmanager
def own_database(database_url: str, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database of the caller's own on `database_url`'s backend, dropped afterwards."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'own.db'}"
        return
    admin = sa.create_engine(_admin_url(database_url), isolation_level="AUTOCOMMIT")
    name = f"auditkeep_test_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield _admin_url(database_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


@pytest.fixture
def own_storage(database_url: str, settings: Settings, tmp_path: Path) -> Iterator[Storage]:
    """A database of this test's own, on the session's backend, in place of the session's shared one: for
    code that acts on every organization of a database (a rotation recorded in each, a background job that
    walks them all), which in the shared one would meet every other test's organizations, among them those
    tests/integrity_db corrupts on purpose."""
    with own_database(database_url, tmp_path) as url:
        own = open_storage(url, settings=settings.model_copy(update={"database_url": url}))
        yield own
        own.dispose()


@pytest.fixture(scope="session")
def app_client(storage: Storage, settings: Settings) -> Iterator[TestClient]:
    """The real app over the current backend, called in-process."""
    app = create_app(settings.model_copy(update={"database_url": storage.url}), storage=storage)
    with TestClient(app) as client:
        yield client


@dataclass
class Tenant:
    """A fresh organization with an admin user and key, plus helpers to add more principals."""

    storage: Storage
    org: Org
    admin: Principal
    admin_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self.admin_key}"}

    def user(self, role: Role, *, support: bool = False) -> tuple[Principal, str]:
        with self.storage.write() as conn:
            p = identity.create_user(conn, self.org, f"{secrets.token_hex(4)}@{self.org.name}.test", role,
                                     is_support=support)
            key, _ = identity.create_key(conn, p)
        return p, key

    def service_account(self, *scopes: Scope) -> tuple[Principal, str]:
        with self.storage.write() as conn:
            p = identity.create_service_account(conn, self.org, f"sa-{secrets.token_hex(4)}", frozenset(scopes))
            key, _ = identity.create_key(conn, p)
        return p, key


def make_tenant(storage: Storage) -> Tenant:
    with storage.write() as conn:
        org = identity.create_org(conn, f"org-{secrets.token_hex(6)}")
        admin = identity.create_user(conn, org, f"admin@{org.name}.test", Role.ADMIN)
        key, _ = identity.create_key(conn, admin)
    return Tenant(storage, org, admin, key)


@pytest.fixture
def tenant(storage: Storage) -> Tenant:
    """A fresh organization (so tests never see each other's events)."""
    return make_tenant(storage)


@pytest.fixture
def forwarder(storage: Storage) -> Iterator[Forwarder]:
    """A stream forwarder over the session's database, driven by the test (`run_once`), retrying fast.

    Every stream is deleted before and after, because a forwarder serves every organization's streams:
    one left by an earlier test would be retried against a receiver long gone (or one that reuses its
    port), slowing this test and muddling what it counts."""

    def clear() -> None:
        with storage.write() as conn:
            conn.execute(streams.delete())

    clear()
    fw = Forwarder(storage, storage.settings)
    fw.backoff_first = 0.01
    yield fw
    fw.stop()
    clear()
