"""The same read returns the same bytes on SQLite and PostgreSQL, in every format (issue #9)."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from auditkeep.api.app import create_app
from auditkeep.ingest import service
from auditkeep.settings import Settings
from auditkeep.storage import open_storage
from tests.conftest import Tenant, make_tenant

URL = "/api/v1/audit_logs"
RANGE = {"start_date": "2024-03-01T00:00:00Z", "end_date": "2024-03-02T00:00:00Z"}
TRICKY = 'quote " backslash \\ newline \n tab \t cr \r bell \x07 unit \x1f del \x7f ls \u2028 é 中文 😀'
EVENTS = [
    {"event_uuid": "0190a0e0-0000-7000-8000-000000000001", "timestamp": "2024-03-01T10:00:00.000001Z",
     "client_ip": "203.0.113.7", "url": "https://app.example/d/42?q=a&b=\"c\"", "action": "datasource.update",
     "log_entry": TRICKY, "user_email": "Ann@Example.com", "user_id": 9007199254740991, "object_id": -9007199254740991,
     "object_type": "datasource", "is_support_user": True, "referer": "=HYPERLINK(\"x\")", "request_type": "PUT",
     "source": "web", "status": "success", "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
     "payload": {"nested": {"list": [1, 2.5, -0.0, 1e21, 1e-7, 0.1, 123456789.125, None, True, "x"], "deep": [[[{}]]]},
                 "text": TRICKY, "big": 9007199254740991, "neg": -9007199254740991, "empty": "", "null": None,
                 "ünï": {"b": 1, "a": 2}}},
    {"event_uuid": "0190a0e0-0000-7000-8000-000000000002", "timestamp": "2024-03-01T10:00:00Z",
     "client_ip": "2001:db8::1", "url": "https://app.example/", "is_support_user": False, "payload": {}},
    {"event_uuid": "0190a0e0-0000-7000-8000-000000000003", "timestamp": "2024-03-01T23:59:59.999999Z",
     "client_ip": "10.0.0.1", "url": "https://app.example/x", "action": "", "log_entry": "",
     "payload": {"f": 3.141592653589793, "e": 6.02214076e23, "s": "\\u0041"}},
]


@pytest.fixture(scope="module")
def both(sqlite_url: str, postgres_url: str, settings: Settings) -> Iterator[list[tuple[TestClient, Tenant]]]:
    """The real app on each backend, each with a fresh organization holding EVENTS. Both draw the same
    salts (canonical form v2 salts each event's personal fields at random), so the chain hashes are alike too."""
    apps = []
    same_salts = SimpleNamespace(urandom=lambda n: bytes(i % 251 for i in range(n)))
    for url in (sqlite_url, postgres_url):
        storage = open_storage(url, settings=settings.model_copy(update={"database_url": url}))
        client = TestClient(create_app(settings.model_copy(update={"database_url": url}), storage=storage))
        client.__enter__()
        tenant = make_tenant(storage)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(service, "os", same_salts)
            posted = client.post(URL, json=EVENTS, headers=tenant.headers)
        assert posted.status_code == 201, posted.text
        apps.append((client, tenant))
    yield apps
    for client, tenant in apps:
        client.__exit__(None, None, None)
        tenant.storage.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("fmt", ["json", "ndjson", "csv"])
@pytest.mark.parametrize("integrity", [False, True], ids=["plain", "integrity"])
def test_a_read_returns_the_same_bytes_on_both_backends(
    both: list[tuple[TestClient, Tenant]], fmt: str, integrity: bool
) -> None:
    """Unicode, escapes, nulls, nested payloads, floats and big integers come out byte for byte alike."""
    params = {**RANGE, "format": fmt, **({"include": "integrity"} if integrity else {})}
    bodies = []
    for client, tenant in both:
        r = client.get(URL, params=params, headers=tenant.headers)
        assert r.status_code == 200, r.text
        bodies.append(r.content)
    sqlite_body, postgres_body = bodies
    assert postgres_body == sqlite_body
    if fmt != "csv":
        # Compact, with the string escapes of RFC 8259 (control characters as lower-case \u00XX).
        assert b'"log_entry":"quote \\" backslash \\\\ newline \\n tab \\t cr \\r bell \\u0007 unit \\u001f' in (
            sqlite_body)
        assert b'"object_id":-9007199254740991,"object_type":"datasource","payload":{"big":9007199254740991,' in (
            sqlite_body)
        assert b'" : ' not in sqlite_body and b'", "' not in sqlite_body
