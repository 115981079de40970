"""`/api/v1/alert_rules` (issue #13): admins only, one organization's rules, each change a self-audit
event without secrets, built-in templates in one call."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.testclient import TestClient

from auditkeep.alerts.templates import TEMPLATES
from auditkeep.auth.principals import Role, Scope
from tests.alerts.conftest import RULES, events, make_rule
from tests.conftest import Tenant, make_tenant

SECRET = "do-not-show-this-secret-0123"
SLACK = "https://hooks.slack.test/services/T000/B000/XXXXSECRET"


def payloads(client: TestClient, tenant: Tenant, action: str) -> list[dict[str, Any]]:
    return [orjson.loads(e["payload"]) if isinstance(e["payload"], str) else e["payload"]
            for e in events(client, tenant, action)]


def test_create_show_change_delete_each_audited_without_secrets(app_client: TestClient, tenant: Tenant) -> None:
    rule = make_rule(app_client, tenant, name="keys", filter={"action": "api_key.*"},
                     threshold={"count": 2, "window_seconds": 600}, group_by=["user_email"], cooldown_seconds=60,
                     notify=[{"kind": "webhook", "url": "https://hooks.test/a", "secret": SECRET},
                             {"kind": "slack", "url": SLACK}, {"kind": "email", "to": ["sec@example.com"]}])
    assert rule["notify"] == [{"kind": "webhook", "url": "https://hooks.test/a"}, {"kind": "slack"},
                              {"kind": "email", "to": ["sec@example.com"]}]
    assert rule["state"] == "enabled" and rule["threshold"] == {"count": 2, "window_seconds": 600}
    assert rule["group_by"] == ["user_email"] and rule["last_fired_at"] is None
    listed = app_client.get(RULES, headers=tenant.headers).json()["alert_rules"]
    assert [r["id"] for r in listed] == [rule["id"]]
    r = app_client.patch(f"{RULES}/{rule['id']}", json={"enabled": False, "threshold": {"count": 5,
                                                                                        "window_seconds": 60}},
                         headers=tenant.headers)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "disabled" and r.json()["threshold"]["count"] == 5
    assert app_client.delete(f"{RULES}/{rule['id']}", headers=tenant.headers).status_code == 204
    assert app_client.get(f"{RULES}/{rule['id']}", headers=tenant.headers).status_code == 404
    (created,) = payloads(app_client, tenant, "alert_rule.create")
    (updated,) = payloads(app_client, tenant, "alert_rule.update")
    (deleted,) = payloads(app_client, tenant, "alert_rule.delete")
    assert created["name"] == "keys" and updated["changed"] == ["enabled", "threshold"]
    assert deleted["rule_id"] == rule["id"]
    whole = orjson.dumps(events(app_client, tenant)).decode()
    assert SECRET not in whole and "XXXXSECRET" not in whole


def test_only_admins(app_client: TestClient, tenant: Tenant) -> None:
    """Users who are not admins, and service accounts, get 403 in FastAPI's shape, audited."""
    rule = make_rule(app_client, tenant)
    _, user_key = tenant.user(Role.DEFAULT)
    _, sa_key = tenant.service_account(Scope.READ, Scope.WRITE)
    for key in (user_key, sa_key):
        h = {"Authorization": f"Key {key}"}
        for method, url in (("GET", RULES), ("POST", RULES), ("GET", f"{RULES}/{rule['id']}"),
                            ("PATCH", f"{RULES}/{rule['id']}"), ("DELETE", f"{RULES}/{rule['id']}"),
                            ("POST", f"{RULES}/templates/api_key_changes")):
            body = {"enabled": False} if method == "PATCH" else {"name": "x", "threshold": {
                "count": 1, "window_seconds": 1}} if url == RULES and method == "POST" else None
            r = app_client.request(method, url, headers=h, json=body)
            assert r.status_code == 403, (method, url, r.text)
            assert set(r.json()) == {"detail"}
    assert app_client.get(f"{RULES}/{rule['id']}", headers=tenant.headers).json()["enabled"] is True


def test_another_organizations_rules_do_not_exist(app_client: TestClient, tenant: Tenant) -> None:
    rule = make_rule(app_client, tenant)
    other = make_tenant(tenant.storage)
    assert app_client.get(RULES, headers=other.headers).json() == {"alert_rules": []}
    for method in ("GET", "PATCH", "DELETE"):
        r = app_client.request(method, f"{RULES}/{rule['id']}", headers=other.headers,
                               json={"enabled": False} if method == "PATCH" else None)
        assert r.status_code == 404 and set(r.json()) == {"detail"}
    assert app_client.post(f"{RULES}/{rule['id']}/test", headers=other.headers).status_code == 404


def test_bad_rules_are_422_naming_the_field(app_client: TestClient, tenant: Tenant) -> None:
    for body, loc in (
        ({"name": "x", "threshold": {"count": 0, "window_seconds": 60}}, ["body", "threshold", "count"]),
        ({"name": "x", "threshold": {"count": 1, "window_seconds": 60}, "group_by": ["payload"]},
         ["body", "group_by", 0]),
        ({"name": "x", "threshold": {"count": 1, "window_seconds": 60}, "notify": [{"kind": "webhook",
                                                                                    "url": "https://h.test"}]},
         ["body", "notify", 0, "webhook", "secret"]),
        ({"name": "x", "threshold": {"count": 1, "window_seconds": 60}, "filter": {"client_ip": "nope"}},
         ["body", "filter", "client_ip"]),
    ):
        r = app_client.post(RULES, json=body, headers=tenant.headers)
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"] == loc
    make_rule(app_client, tenant, name="same")
    r = app_client.post(RULES, json={"name": "same", "threshold": {"count": 1, "window_seconds": 60}},
                        headers=tenant.headers)
    assert r.status_code == 409 and "already exists" in r.json()["detail"]


def test_templates_in_one_call(app_client: TestClient, tenant: Tenant) -> None:
    """Each built-in rule is listed and enabled by one POST, named as the template, with the given channels."""
    listed = app_client.get(f"{RULES}/templates", headers=tenant.headers).json()["templates"]
    assert [t["name"] for t in listed] == list(TEMPLATES) == [
        "support_access", "api_key_changes", "failed_signins", "large_export", "integrity_failed"]
    for name, template in TEMPLATES.items():
        r = app_client.post(f"{RULES}/templates/{name}", headers=tenant.headers)
        assert r.status_code == 201, r.text
        assert r.json()["name"] == template.title and r.json()["template"] == name
        assert r.json()["filter"] == template.rule["filter"]
    assert app_client.post(f"{RULES}/templates/integrity_failed", headers=tenant.headers).status_code == 409
    r = app_client.post(f"{RULES}/templates/support_access", headers=tenant.headers,
                        json={"name": "support (slack)", "notify": [{"kind": "slack", "url": SLACK}]})
    assert r.status_code == 201 and r.json()["notify"] == [{"kind": "slack"}]
    assert app_client.post(f"{RULES}/templates/nope", headers=tenant.headers).status_code == 404
    support = next(r for r in app_client.get(RULES, headers=tenant.headers).json()["alert_rules"]
                   if r["template"] == "support_access" and r["name"] == "Support staff access")
    assert support["filter"] == {"is_support_user": True} and support["group_by"] == ["user_email"]
