"""Browser-facing security: headers on every console response, no inline code, CSRF on every form,
escaping of event contents, and organizations kept apart."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from auditkeep.auth.principals import Role
from auditkeep.storage import identity
from tests.conftest import Tenant, make_tenant
from tests.web.conftest import Browser, People, events

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'


def _assert_headers(r: object) -> None:
    h = r.headers  # type: ignore[attr-defined]
    assert h["content-security-policy"] == CSP
    assert h["x-content-type-options"] == "nosniff"
    assert h["referrer-policy"] == "same-origin"
    assert h["x-frame-options"] == "DENY"


def _ingest(tenant: Tenant, client: TestClient, **fields: object) -> str:
    r = client.post("/api/v1/audit_logs", headers=tenant.headers,
                    json={"client_ip": "10.0.0.1", "url": "https://app.test/x", **fields})
    assert r.status_code == 201, r.text
    return str(r.json()["event_uuids"][0])


class _Inline(HTMLParser):
    """Collects what a strict CSP would block: inline scripts, style blocks and attributes, on* handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "style" or (tag == "script" and "src" not in names):
            self.found.append(f"<{tag}>")
        self.found += [f"{tag}[{n}]" for n in names if n == "style" or n.startswith("on")]


def _assert_no_inline_code(html: str) -> None:
    parser = _Inline()
    parser.feed(html)
    assert parser.found == []


def test_every_console_page_carries_the_security_headers_and_no_inline_code(
    tenant: Tenant, people: People, browser: Browser, app_client: TestClient
) -> None:
    uuid = _ingest(tenant, app_client, action="page.check")
    _assert_headers(browser.get("/"))
    browser.sign_in(people.admin.name)
    key_id = identity_key_id(tenant)
    for path in ("/audit-logs", f"/audit-logs/{uuid}", "/api-keys", f"/api-keys/{key_id}/revoke",
                 "/audit-logs/00000000-0000-0000-0000-000000000000"):
        r = browser.get(path)
        _assert_headers(r)
        assert r.headers["cache-control"] == "no-store"
        _assert_no_inline_code(r.text)
    for asset in ("/static/app.css", "/static/app.js", "/static/logo.svg"):
        r = browser.get(asset)
        assert r.status_code == 200
        _assert_headers(r)


def identity_key_id(tenant: Tenant) -> int:
    with tenant.storage.read() as conn:
        return identity.list_keys(conn, tenant.org)[0].id


def test_error_pages_carry_the_headers_too(people: People, browser: Browser, tenant: Tenant) -> None:
    viewer = people.add(Role.VIEWONLY)
    browser.sign_in(viewer.name)
    r = browser.get("/audit-logs")
    assert r.status_code == 403
    _assert_headers(r)
    _assert_no_inline_code(r.text)


def test_the_api_is_left_without_the_console_policy(app_client: TestClient) -> None:
    """/docs loads Swagger UI's scripts; the CSP belongs to the console's own pages."""
    assert "content-security-policy" not in app_client.get("/healthz").headers


@pytest.mark.parametrize(
    ("path", "data"),
    [("/api-keys", {}), ("/service-accounts", {"name": "csrf-sa", "scopes": "audit_logs:read"}),
     ("/signout", {})],
)
def test_posts_without_the_sessions_csrf_token_are_refused(
    tenant: Tenant, people: People, browser: Browser, path: str, data: dict[str, str]
) -> None:
    """403 and nothing happens: no key, no service account, still signed in."""
    browser.sign_in(people.admin.name)
    for token in (None, "", "another-sessions-token"):
        body = dict(data) if token is None else {**data, "csrf_token": token}
        r = browser.post(path, body, csrf=False)
        assert r.status_code == 403 and "security token" in r.text
    with tenant.storage.read() as conn:
        assert len(identity.list_keys(conn, tenant.org)) == 1
        assert [p for p in identity.list_principals(conn, tenant.org) if p.kind == "service_account"] == []
    assert browser.get("/audit-logs", follow_redirects=False).status_code == 200


def test_revoking_without_the_csrf_token_keeps_the_key(tenant: Tenant, people: People, browser: Browser,
                                                       app_client: TestClient) -> None:
    browser.sign_in(people.admin.name)
    key_id = identity_key_id(tenant)
    assert browser.post(f"/api-keys/{key_id}/revoke", {"csrf_token": "nope"}, csrf=False).status_code == 403
    assert app_client.get("/api/v1/audit_logs", headers=tenant.headers).status_code == 200


def test_another_sessions_csrf_token_does_not_work(tenant: Tenant, people: People, new_browser: object) -> None:
    """The token is tied to the session (synchronizer token), not just any valid token."""
    a, b = new_browser(), new_browser()  # type: ignore[operator]
    a.sign_in(people.admin.name)
    b.sign_in(people.add(Role.ADMIN).name)
    assert a.csrf != b.csrf
    assert a.post("/api-keys", {"csrf_token": b.csrf}, csrf=False).status_code == 403


def test_event_contents_are_shown_as_text_everywhere(
    tenant: Tenant, people: People, browser: Browser, app_client: TestClient
) -> None:
    """Every text field of an event holding markup is escaped in the table and on the detail page."""
    uuid = _ingest(tenant, app_client, action=XSS, log_entry=XSS, user_email=XSS, object_type=XSS,
                   source=XSS, status=XSS, url="https://app.test/?q=" + XSS, user_agent=XSS,
                   referer="https://r.test/" + XSS, payload={"note": XSS, XSS: [XSS]})
    browser.sign_in(people.admin.name)
    escaped = "&lt;script&gt;window.__xss=1&lt;/script&gt;"
    for path in ("/audit-logs", f"/audit-logs/{uuid}", f"/audit-logs?action={XSS}"):
        html = browser.get(path).text
        assert XSS not in html and "<img src=x" not in html
        assert escaped in html
        _assert_no_inline_code(html)


def test_people_see_only_their_own_organization(
    tenant: Tenant, people: People, browser: Browser, app_client: TestClient
) -> None:
    """Another org's events, keys and service accounts are invisible: 404 as if they did not exist."""
    other = make_tenant(tenant.storage)
    theirs = _ingest(other, app_client, action="theirs.secret", log_entry="their secret")
    mine = _ingest(tenant, app_client, action="mine.visible")
    with tenant.storage.write() as conn:
        sa = identity.create_service_account(conn, other.org, "their-sa", frozenset())
        identity.create_key(conn, sa)
        their_keys = identity.list_keys(conn, other.org)
    browser.sign_in(people.admin.name)
    table = browser.get("/audit-logs").text
    assert mine in table and theirs not in table and "their secret" not in table
    assert browser.get(f"/audit-logs/{theirs}").status_code == 404
    assert "their secret" not in browser.get("/audit-logs/export?format=ndjson").text
    keys_page = browser.get("/api-keys").text
    for k in their_keys:
        assert k.prefix not in keys_page
        assert browser.get(f"/api-keys/{k.id}/revoke").status_code == 404
        assert browser.post(f"/api-keys/{k.id}/revoke").status_code == 404
    assert "their-sa" not in keys_page
    assert browser.post("/api-keys", {"service_account": "their-sa"}).status_code == 404
    assert app_client.get("/api/v1/audit_logs", headers=other.headers).status_code == 200  # not revoked
    assert all(e["action"] != "api_key.revoke" for e in events(other.storage, other.org.id))
