"""The API keys page: create (shown once), list, revoke with confirmation, limits, service accounts."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from auditkeep.auth.principals import Role, Scope
from auditkeep.storage import identity
from tests.conftest import Tenant
from tests.web.conftest import Browser, People, events


def _new_key(html: str) -> str:
    match = re.search(r'id="new-key" class="mono" value="(ak_[A-Za-z0-9_-]+)"', html)
    assert match, "no new key on the page"
    return match.group(1)


def _api(client: TestClient, key: str) -> int:
    return client.get("/api/v1/audit_logs", headers={"Authorization": f"Key {key}"}).status_code


def test_create_shows_the_key_once_and_it_works(
    tenant: Tenant, people: People, browser: Browser, app_client: TestClient
) -> None:
    browser.sign_in(people.admin.name)
    r = browser.post("/api-keys")
    assert r.status_code == 201 and r.headers["cache-control"] == "no-store"
    key = _new_key(r.text)
    assert 'data-copy="new-key"' in r.text and "will not be shown again" in r.text
    assert _api(app_client, key) == 200
    listing = browser.get("/api-keys").text
    assert key not in listing and f"{key[:11]}…" in listing
    (event,) = events(tenant.storage, tenant.org.id, "api_key.create")
    assert event["source"] == "web" and event["user_email"] == tenant.admin.name
    assert event["payload"]["key_prefix"] == key[:11] and key not in str(event)


def test_revoke_asks_first_then_the_key_gets_401(
    tenant: Tenant, people: People, browser: Browser, app_client: TestClient
) -> None:
    browser.sign_in(people.admin.name)
    key = _new_key(browser.post("/api-keys").text)
    with tenant.storage.read() as conn:
        info = next(k for k in identity.list_keys(conn, tenant.org) if k.prefix == key[:11])
    confirm = browser.get(f"/api-keys/{info.id}/revoke")
    assert confirm.status_code == 200 and "cannot be undone" in confirm.text and _api(app_client, key) == 200
    r = browser.post(f"/api-keys/{info.id}/revoke", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/api-keys?revoked={info.prefix}"
    page = browser.get(r.headers["location"]).text
    assert f"API key {info.prefix}… was revoked." in page
    assert _api(app_client, key) == 401
    (event,) = events(tenant.storage, tenant.org.id, "api_key.revoke")
    assert event["source"] == "web" and event["object_id"] == info.id
    # Revoking again changes nothing and records nothing.
    browser.post(f"/api-keys/{info.id}/revoke")
    assert len(events(tenant.storage, tenant.org.id, "api_key.revoke")) == 1


def test_the_five_key_limit_is_explained(people: People, browser: Browser) -> None:
    user = people.add(Role.DEFAULT)
    browser.sign_in(user.name)
    for _ in range(5):
        assert browser.post("/api-keys").status_code == 201
    r = browser.post("/api-keys")
    assert r.status_code == 409
    assert "You already have 5 active API keys, the most allowed. Revoke one you no longer use" in r.text
    assert "You have 5 of 5 active keys" in r.text


def test_non_admins_see_and_revoke_only_their_own_keys(
    tenant: Tenant, people: People, browser: Browser, app_client: TestClient
) -> None:
    user = people.add(Role.VIEWONLY)
    browser.sign_in(user.name)
    mine = _new_key(browser.post("/api-keys").text)
    page = browser.get("/api-keys").text
    assert mine[:11] in page and tenant.admin_key[:11] not in page
    assert "Service accounts" not in page
    with tenant.storage.read() as conn:
        admin_key = next(k for k in identity.list_keys(conn, tenant.org) if k.prefix == tenant.admin_key[:11])
    assert browser.get(f"/api-keys/{admin_key.id}/revoke").status_code == 404
    assert browser.post(f"/api-keys/{admin_key.id}/revoke").status_code == 404
    assert _api(app_client, tenant.admin_key) == 200


def test_non_admins_cannot_manage_service_accounts(tenant: Tenant, people: People, browser: Browser) -> None:
    with tenant.storage.write() as conn:
        identity.create_service_account(conn, tenant.org, "siem", frozenset({Scope.READ}))
    browser.sign_in(people.add(Role.DEFAULT).name)
    assert browser.post("/service-accounts", {"name": "x", "scopes": "audit_logs:read"}).status_code == 403
    assert browser.post("/api-keys", {"service_account": "siem"}).status_code == 403
    assert len(events(tenant.storage, tenant.org.id, "request.denied")) == 2


def test_admin_creates_a_service_account_and_a_key_for_it(
    tenant: Tenant, people: People, browser: Browser, app_client: TestClient
) -> None:
    """The key carries the account's scopes: read-only here, so it reads but cannot write."""
    browser.sign_in(people.admin.name)
    r = browser.post("/service-accounts", {"name": "siem exporter", "scopes": "audit_logs:read"},
                     follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/api-keys?created=siem+exporter#service-accounts"
    page = browser.get(r.headers["location"]).text
    assert "Service account &#39;siem exporter&#39; was created." in page
    assert 'data-account="siem exporter"' in page
    r = browser.post("/api-keys", {"service_account": "siem exporter"})
    assert r.status_code == 201 and "for service account siem exporter" in r.text
    key = _new_key(r.text)
    assert _api(app_client, key) == 200
    assert app_client.post("/api/v1/audit_logs", json={"client_ip": "10.0.0.1", "url": "https://a/"},
                           headers={"Authorization": f"Key {key}"}).status_code == 403
    (created,) = events(tenant.storage, tenant.org.id, "service_account.create")
    assert created["source"] == "web" and created["payload"] == {"name": "siem exporter",
                                                                 "scopes": ["audit_logs:read"]}
    key_event = events(tenant.storage, tenant.org.id, "api_key.create")[-1]
    assert key_event["payload"]["owner_kind"] == "service_account"


@pytest.mark.parametrize(
    ("name", "scopes", "message"),
    [("", ["audit_logs:read"], "A service account name has 1 to 100"),
     ("<b>bad</b>", ["audit_logs:read"], "A service account name has 1 to 100"),
     ("no-scopes", [], "Choose at least one scope"),
     ("bogus-scope", ["audit_logs:admin"], "Choose at least one scope")],
)
def test_service_account_form_errors_are_explained(
    people: People, browser: Browser, name: str, scopes: list[str], message: str
) -> None:
    browser.sign_in(people.admin.name)
    r = browser.post("/service-accounts", {"name": name, "scopes": scopes})
    assert r.status_code == 400 and message in r.text


def test_duplicate_service_account_is_a_conflict(tenant: Tenant, people: People, browser: Browser) -> None:
    browser.sign_in(people.admin.name)
    browser.post("/service-accounts", {"name": "dup", "scopes": "audit_logs:write"})
    r = browser.post("/service-accounts", {"name": "dup", "scopes": "audit_logs:write"})
    assert r.status_code == 409 and "A service account named &#39;dup&#39; already exists." in r.text


def test_service_account_key_limit_is_fifty(tenant: Tenant, people: People, browser: Browser) -> None:
    with tenant.storage.write() as conn:
        sa = identity.create_service_account(conn, tenant.org, "busy", frozenset({Scope.READ}))
        for _ in range(50):
            identity.create_key(conn, sa)
    browser.sign_in(people.admin.name)
    r = browser.post("/api-keys", {"service_account": "busy"})
    assert r.status_code == 409 and "This service account already has 50 active API keys" in r.text


def test_unknown_service_account_is_explained(people: People, browser: Browser) -> None:
    browser.sign_in(people.admin.name)
    r = browser.post("/api-keys", {"service_account": "ghost"})
    assert r.status_code == 404 and "That service account does not exist." in r.text
