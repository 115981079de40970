"""Fixtures for the SDK's tests.

Tests that only look at what the SDK sees take `backend`; it serves the fake service today and is the
one fixture to override (for instance in a conftest with `httpx.ASGITransport(app=create_app(...))`)
to run them against the real app. Tests that inspect the requests the service received take `fake`.
"""

from __future__ import annotations

import httpx
import pytest
from sdk_fakes import READ_ONLY_KEY, READ_WRITE_KEY, Backend, FakeAuditServer


@pytest.fixture
def fake() -> FakeAuditServer:
    """The in-memory service (for tests that look at what it received)."""
    return FakeAuditServer()


@pytest.fixture
def backend(fake: FakeAuditServer) -> Backend:
    """The service the SDK talks to; override this fixture to run the same tests against the real app."""
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
