"""/metrics exposes request counts by route template and accepted events (Prometheus text format)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import Tenant


def test_metrics_count_requests_by_route_and_ingested_events(app_client: TestClient, tenant: Tenant) -> None:
    app_client.post("/api/v1/audit_logs", json=[{"client_ip": "10.0.0.1", "url": "u"}] * 3, headers=tenant.headers)
    r = app_client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'auditkeep_http_requests_total{method="POST",route="/api/v1/audit_logs",status="201"}' in text
    assert "auditkeep_ingest_events_total" in text
    assert "auditkeep_http_request_duration_seconds_bucket" in text
