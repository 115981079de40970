"""Fixtures for the SDK's tests.

Tests that only look at what the SDK sees take `backend`, which runs them twice over: against the
in-memory fake service, and against the real app (on SQLite and PostgreSQL) through the TestClient's
transport (sync) and `httpx.ASGITransport` (async). Tests that inspect the requests the service
received, or inject failures, take `fake`.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from sdk_fakes import READ_ONLY_KEY, READ_WRITE_KEY, Backend, FakeAuditServer

from auditkeep.api.app import create_app
from auditkeep.auth.principals import Scope
from auditkeep.settings import Settings
from auditkeep.storage import open_storage
from tests.conftest import make_tenant


@pytest.fixture
def fake() -> FakeAuditServer:
    """The in-memory service (for tests that look at what it received)."""
    return FakeAuditServer()


@pytest.fixture(scope="session")
def real_apps(settings: Settings) -> Iterator[dict[str, TestClient]]:
    """The real app per database URL, started once a session."""
    apps: dict[str, TestClient] = {}
    yield apps
    for client in apps.values():
        client.__exit__(None, None, None)
        client.app.state.storage.dispose()  # type: ignore[attr-defined]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`backend` tests run on the fake and on the real app; tests that also inspect `fake` on the fake only."""
    if "backend" in metafunc.fixturenames:
        kinds: list[object] = ["fake"]
        if "fake" not in metafunc.fixturenames:
            kinds += ["app-sqlite", pytest.param("app-postgres", marks=pytest.mark.postgres)]
        metafunc.parametrize("backend_kind", kinds)


@pytest.fixture
def backend(request: pytest.FixtureRequest, backend_kind: str, real_apps: dict[str, TestClient],
            settings: Settings) -> Backend:
    """The service the SDK talks to: the fake, or the real app on one database."""
    if backend_kind.startswith("app-"):
        url = str(request.getfixturevalue("sqlite_url" if backend_kind == "app-sqlite" else "postgres_url"))
        if url not in real_apps:
            app = create_app(settings.model_copy(update={"database_url": url}), storage=open_storage(url))
            real_apps[url] = TestClient(app).__enter__()
        app_client = real_apps[url]
        tenant = make_tenant(app_client.app.state.storage)  # type: ignore[attr-defined]
        _, read_only = tenant.service_account(Scope.READ)
        return Backend(
            base_url="http://testserver",
            key=tenant.admin_key,
            read_only_key=read_only,
            make_transport=lambda: app_client._transport,
            make_async_transport=lambda: httpx.ASGITransport(app=app_client.app),
        )
    fake: FakeAuditServer = request.getfixturevalue("fake")
    return Backend(
        base_url="http://audit.test",
        key=READ_WRITE_KEY,
        read_only_key=READ_ONLY_KEY,
        make_transport=lambda: httpx.MockTransport(fake.handler),
        make_async_transport=lambda: httpx.MockTransport(fake.handler),
    )


@pytest.fixture
def anyio_backend() -> str:
    """AsyncClient waits with asyncio."""
    return "asyncio"
