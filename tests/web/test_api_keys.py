"""The API keys page: create (shown once), list, revoke with confirmation, limits, service accounts."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

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


def _row(html: str, prefix: str) -> str:
    match = re.search(rf'<tr data-prefix="{prefix}".*?</tr>', html, re.S)
    assert match, f"no row for {prefix}"
    return match.group(0)


def _cells(row: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]


def test_create_with_a_name_and_an_expiry_shows_both(tenant: Tenant, people: People, browser: Browser) -> None:
    browser.sign_in(people.admin.name)
    r = browser.post("/api-keys", {"name": "warehouse sync", "expires_in_days": "30"})
    assert r.status_code == 201
    key = _new_key(r.text)
    with tenant.storage.read() as conn:
        info = next(k for k in identity.list_keys(conn, tenant.org) if k.prefix == key[:11])
    assert info.name == "warehouse sync" and info.expires_at is not None
    assert info.expires_at - info.created_at == timedelta(days=30)
    cells = _cells(_row(browser.get("/api-keys").text, key[:11]))
    assert cells[:2] == [f"{key[:11]}…", "warehouse sync"]
    assert cells[5:7] == [f"{info.expires_at:%Y-%m-%d %H:%M} UTC", "active"]
    event = events(tenant.storage, tenant.org.id, "api_key.create")[-1]
    assert event["payload"]["name"] == "warehouse sync"
    assert event["payload"]["expires_at"] == info.expires_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_the_form_suggests_90_days_and_a_bare_post_makes_a_console_key_that_never_expires(
    tenant: Tenant, people: People, browser: Browser
) -> None:
    browser.sign_in(people.admin.name)
    page = browser.get("/api-keys").text
    assert '<option value="90" selected>in 90 days</option>' in page and '<option value="">never</option>' in page
    key = _new_key(browser.post("/api-keys").text)
    cells = _cells(_row(browser.get("/api-keys").text, key[:11]))
    assert cells[1] == "console" and cells[5] == "never" and cells[6] == "active"


def test_expired_keys_show_as_expired_and_free_their_slot(
    tenant: Tenant, people: People, browser: Browser
) -> None:
    user = people.add(Role.DEFAULT)
    with tenant.storage.write() as conn:
        _, old = identity.create_key(conn, user, name="last year", expires_at=datetime.now(UTC) - timedelta(days=1))
    browser.sign_in(user.name)
    page = browser.get("/api-keys").text
    row = _row(page, old.prefix)
    assert 'class="expired"' in row and "Revoke" not in row
    assert _cells(row)[1:2] + _cells(row)[5:7] == ["last year", f"{old.expires_at:%Y-%m-%d %H:%M} UTC", "expired"]
    assert "You have 0 of 5 active keys" in page
    for _ in range(5):
        assert browser.post("/api-keys").status_code == 201


@pytest.mark.parametrize(
    ("form", "message"),
    [({"name": "demo (make run)"}, "Choose another name: the name &#39;demo (make run)&#39; is kept for the keys "
      "auditkeep demo mints."),
     ({"name": "x" * 101}, "Choose another name: a key name has at most 100 characters."),
     ({"name": "ok", "expires_in_days": "12"}, "Choose an expiry from the list.")],
)
def test_bad_key_names_and_expiries_are_explained(
    tenant: Tenant, people: People, browser: Browser, form: dict[str, str], message: str
) -> None:
    browser.sign_in(people.admin.name)
    r = browser.post("/api-keys", form)
    assert r.status_code == 400 and message in r.text
    assert len(events(tenant.storage, tenant.org.id, "api_key.create")) == 0
