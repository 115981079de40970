"""/api/v1/saved_searches (issue #13): create, list, open, delete, per organization, self-audited."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from auditkeep.auth.principals import Scope
from tests.conftest import Tenant, make_tenant

URL = "/api/v1/saved_searches"


def _events(client: TestClient, tenant: Tenant, action: str) -> list[dict[str, Any]]:
    r = client.get("/api/v1/audit_logs", params={"action": action}, headers=tenant.headers)
    assert r.status_code == 200, r.text
    return list(r.json()["logs"])


def test_create_list_get_delete_each_change_a_self_audit_event(app_client: TestClient, tenant: Tenant) -> None:
    """A saved search keeps its filters (paging dropped), is listed by name, and create/delete are events."""
    r = app_client.post(URL, json={"name": "Failed sign-ins", "query": "?action=user.login&status=failure"
                                   "&cursor=abc&limit=50"}, headers=tenant.headers)
    assert r.status_code == 201, r.text
    saved = r.json()
    assert saved["query"] == "action=user.login&status=failure"
    assert saved["created_by"] == tenant.admin.describe()
    r2 = app_client.post(URL, json={"name": "A first", "query": ""}, headers=tenant.headers)
    assert r2.status_code == 201
    listed = app_client.get(URL, headers=tenant.headers).json()["saved_searches"]
    assert [s["name"] for s in listed] == ["A first", "Failed sign-ins"]
    assert app_client.get(f"{URL}/{saved['id']}", headers=tenant.headers).json() == saved
    created = _events(app_client, tenant, "saved_search.create")
    assert [e["payload"]["id"] for e in created] == [saved["id"], r2.json()["id"]]
    assert app_client.delete(f"{URL}/{saved['id']}", headers=tenant.headers).status_code == 204
    assert [s["name"] for s in app_client.get(URL, headers=tenant.headers).json()["saved_searches"]] == ["A first"]
    deleted = _events(app_client, tenant, "saved_search.delete")
    assert [e["payload"]["name"] for e in deleted] == ["Failed sign-ins"]
    r = app_client.delete(f"{URL}/{saved['id']}", headers=tenant.headers)
    assert r.status_code == 404
    assert "detail" in r.json()


def test_a_taken_name_is_409(app_client: TestClient, tenant: Tenant) -> None:
    body = {"name": "Exports", "query": "action=export.*"}
    assert app_client.post(URL, json=body, headers=tenant.headers).status_code == 201
    r = app_client.post(URL, json=body, headers=tenant.headers)
    assert r.status_code == 409
    assert "exists" in r.json()["detail"]


def test_saved_searches_are_per_organization(app_client: TestClient, storage: Any, tenant: Tenant) -> None:
    """Another organization neither lists, opens nor deletes them (404, as for an unknown id); it may use
    the same name."""
    other = make_tenant(storage)
    saved = app_client.post(URL, json={"name": "Mine", "query": "status=failure"}, headers=tenant.headers).json()
    assert app_client.get(URL, headers=other.headers).json() == {"saved_searches": []}
    assert app_client.get(f"{URL}/{saved['id']}", headers=other.headers).status_code == 404
    assert app_client.delete(f"{URL}/{saved['id']}", headers=other.headers).status_code == 404
    assert app_client.post(URL, json={"name": "Mine", "query": ""}, headers=other.headers).status_code == 201
    assert len(app_client.get(URL, headers=tenant.headers).json()["saved_searches"]) == 1


def test_reading_is_needed(app_client: TestClient, tenant: Tenant) -> None:
    """A write-only key may not list or save searches (403)."""
    _, key = tenant.service_account(Scope.WRITE)
    headers = {"Authorization": f"Key {key}"}
    assert app_client.get(URL, headers=headers).status_code == 403
    assert app_client.post(URL, json={"name": "x", "query": ""}, headers=headers).status_code == 403


def test_bad_names_are_422(app_client: TestClient, tenant: Tenant) -> None:
    for body in ({"name": "", "query": ""}, {"name": "a\nb", "query": ""}, {"name": "x" * 201, "query": ""}):
        r = app_client.post(URL, json=body, headers=tenant.headers)
        assert r.status_code == 422, body
