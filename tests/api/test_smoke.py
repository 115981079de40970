"""Smoke: the fixtures give a working app on each backend."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import Tenant


def test_ingest_then_read_returns_the_event(app_client: TestClient, tenant: Tenant) -> None:
    """An ingested event comes back from GET with its 17 fields."""
    r = app_client.post("/api/v1/audit_logs", json={"client_ip": "10.0.0.1", "url": "https://a/b"},
                        headers=tenant.headers)
    assert r.status_code == 201, r.text
    uuid = r.json()["event_uuids"][0]
    logs = app_client.get("/api/v1/audit_logs", headers=tenant.headers).json()["logs"]
    assert [log["event_uuid"] for log in logs if log["action"] is None] == [uuid]
    assert all(len(log) == 17 for log in logs)
