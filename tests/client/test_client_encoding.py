"""The SDK's export reads zstd and gzip bodies alike, and asks for zstd by default (issue #14)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from auditkeep.client import Client
from tests.conftest import Tenant

ACTION = "sdk.encoding"


class Recording(httpx.BaseTransport):
    """The app's transport, noting each response's Content-Encoding."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.codings: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        self.codings.append(response.headers.get("content-encoding", "identity"))
        return response


@pytest.mark.parametrize("fmt", ["json", "ndjson", "csv"])
def test_export_files_are_equal_whatever_the_coding(app_client: TestClient, tenant: Tenant, tmp_path: Path,
                                                    fmt: str) -> None:
    """The same export through zstd (httpx's default ask), gzip and identity writes the same file."""
    events = [{"client_ip": "10.0.0.1", "url": f"https://app.test/{n}", "action": ACTION, "log_entry": f"n={n}"}
              for n in range(30)]
    assert app_client.post("/api/v1/audit_logs", json=events, headers=tenant.headers).status_code == 201
    files = {}
    for ask in (None, "gzip", "identity"):
        transport = Recording(app_client._transport)
        headers = {"Accept-Encoding": ask} if ask else None
        with Client(tenant.admin_key, "http://testserver", transport=transport, headers=headers) as client:
            client.export(fmt, tmp_path / f"{ask}.{fmt}", page_size=10, action=ACTION)  # type: ignore[arg-type]
        assert set(transport.codings) == {ask or "zstd"}
        files[ask] = (tmp_path / f"{ask}.{fmt}").read_bytes()
    assert files[None] == files["gzip"] == files["identity"]
    assert files[None].count(b"sdk.encoding") == 30
