"""`GET /api/v1/audit_logs?user_email=` matches any ASCII case and returns addresses as stored (issue #9)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import Tenant

URL = "/api/v1/audit_logs"


def test_user_email_filter_ignores_ascii_case(app_client: TestClient, tenant: Tenant) -> None:
    events = [{"client_ip": "10.0.0.1", "url": f"https://x/{i}", "action": "ci", "user_email": e}
              for i, e in enumerate(["Ann@Example.com", "ann@example.com", "bob@example.com", "ÄNN@example.com"])]
    posted = app_client.post(URL, json=events, headers=tenant.headers)
    assert posted.status_code == 201
    r = app_client.get(URL, params={"user_email": "ANN@EXAMPLE.COM", "action": "ci"}, headers=tenant.headers)
    assert r.status_code == 200
    assert [log["user_email"] for log in r.json()["logs"]] == ["Ann@Example.com", "ann@example.com"]
    r = app_client.get(URL, params={"user_email": "änn@example.com", "action": "ci"}, headers=tenant.headers)
    assert r.json()["logs"] == []
