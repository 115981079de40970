"""Signing in and out of the console: cookies, sessions, org resolution, audit events, redirects."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta

import pytest
from argon2 import PasswordHasher

from auditkeep.auth.passwords import needs_rehash, verify_password
from auditkeep.auth.principals import Role
from auditkeep.storage import identity, sessions
from auditkeep.storage.tables import console_sessions
from tests.conftest import Tenant, make_tenant
from tests.web.conftest import PASSWORD, Browser, BrowserFactory, People, events, form_token


def _cookie_header(r: object, name: str) -> str:
    headers = [h for h in r.headers.get_list("set-cookie") if h.startswith(f"{name}=")]  # type: ignore[attr-defined]
    assert len(headers) == 1, headers
    return headers[0]


def test_signed_out_visitor_to_root_gets_the_sign_in_form(browser: Browser) -> None:
    """`/` shows the form itself (200), not a redirect, with its double-submit token."""
    r = browser.get("/", follow_redirects=False)
    assert r.status_code == 200
    assert 'action="/signin"' in r.text and 'name="email"' in r.text and 'type="password"' in r.text
    token = form_token(r.text, "signin_token")
    assert token in _cookie_header(r, "auditkeep_signin")


def test_sign_in_sets_an_httponly_samesite_strict_session_cookie(people: People, browser: Browser) -> None:
    """Over http the cookie is HttpOnly and SameSite=Strict, not Secure (the browser would drop it)."""
    r = browser.sign_in(people.admin.name)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = _cookie_header(r, "auditkeep_session").lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert "max-age=28800" in cookie
    assert "secure" not in cookie
    assert browser.get("/", follow_redirects=False).headers["location"] == "/audit-logs"


def test_over_https_the_session_cookie_is_secure(people: People, new_browser: BrowserFactory) -> None:
    """Served over https, both cookies are Secure and pages send HSTS."""
    b = new_browser(base_url="https://testserver")
    page = b.get("/")
    assert "secure" in _cookie_header(page, "auditkeep_signin").lower()
    assert page.headers["strict-transport-security"] == "max-age=31536000"
    r = b.sign_in(people.admin.name)
    assert r.status_code == 303
    assert "; secure" in _cookie_header(r, "auditkeep_session").lower()


def test_successful_sign_in_is_a_user_login_success_event(tenant: Tenant, people: People, browser: Browser) -> None:
    """user.login, status success, source web, with the actor and the client address."""
    admin = people.admin
    browser.sign_in(admin.name)
    (event,) = events(tenant.storage, tenant.org.id, "user.login")
    assert event["status"] == "success" and event["source"] == "web"
    assert event["user_email"] == admin.name and event["user_id"] == admin.id
    assert event["client_ip"] == browser.ip
    assert event["request_type"] == "POST" and event["url"].endswith("/signin")


def test_wrong_password_fails_with_a_generic_message_and_a_failure_event(
    tenant: Tenant, people: People, browser: Browser
) -> None:
    """401, the same words as for an unknown email; user.login failure filed in the account's org."""
    admin = people.admin
    r = browser.sign_in(admin.name, "not the password at all")
    assert r.status_code == 401
    assert "Incorrect email or password." in r.text
    assert "auditkeep_session=" not in r.headers.get("set-cookie", "")
    (event,) = events(tenant.storage, tenant.org.id, "user.login")
    assert event["status"] == "failure" and event["source"] == "web"
    assert event["user_email"] == admin.name
    assert event["payload"]["reason"] == "wrong password" and event["payload"]["failures"] == 1


def test_account_without_a_password_cannot_sign_in(tenant: Tenant, people: People, browser: Browser) -> None:
    user = people.add(Role.ADMIN, password=False)
    r = browser.sign_in(user.name, PASSWORD)
    assert r.status_code == 401 and "Incorrect email or password." in r.text
    (event,) = events(tenant.storage, tenant.org.id, "user.login")
    assert event["payload"]["reason"] == "no console password set"


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_unknown_email_goes_to_the_server_log(browser: Browser) -> None:
    """No organization to file it under: a warning with the client address, and the generic message."""
    capture = _Capture()
    logger = logging.getLogger("auditkeep.web")
    logger.addHandler(capture)
    try:
        r = browser.sign_in("nobody@nowhere.test", PASSWORD)
    finally:
        logger.removeHandler(capture)
    assert r.status_code == 401 and "Incorrect email or password." in r.text
    (record,) = [rec for rec in capture.records if "no account has this email" in rec.getMessage()]
    assert record.email == "nobody@nowhere.test"  # type: ignore[attr-defined]
    assert record.client_ip == browser.ip  # type: ignore[attr-defined]


def test_email_is_matched_case_insensitively(people: People, browser: Browser) -> None:
    admin = people.admin
    assert browser.sign_in(admin.name.upper()).status_code == 303


def test_sign_in_form_without_its_token_is_refused(people: People, browser: Browser) -> None:
    """Login CSRF: a POST without the double-submit token (or with another) starts no session."""
    browser.get("/")
    for token in ("", "forged"):
        r = browser.post("/signin", {"email": people.admin.name, "password": PASSWORD, "signin_token": token},
                         csrf=False)
        assert r.status_code == 403 and "expired" in r.text
        assert "auditkeep_session" not in browser.client.cookies


def test_email_in_two_orgs_with_one_password_asks_for_the_organization(
    tenant: Tenant, people: People, browser: Browser, password_hash: str
) -> None:
    """Ambiguous only to someone who knows the password: then the form asks which organization."""
    other = make_tenant(tenant.storage)
    email = f"both-{tenant.org.name}@people.test"
    people.add(Role.ADMIN, email)
    with tenant.storage.write() as conn:
        u = identity.create_user(conn, other.org, email, Role.VIEWONLY)
        identity.set_password_hash(conn, u.id, password_hash)
    r = browser.sign_in(email)
    assert r.status_code == 409 and "more than one organization" in r.text
    assert "<details class=\"org-choice\" open>" in r.text
    assert events(tenant.storage, tenant.org.id, "user.login") == []  # nothing failed
    r = browser.sign_in(email, organization=other.org.name)
    assert r.status_code == 303
    assert browser.get("/", follow_redirects=False).headers["location"] == "/api-keys"  # viewonly there
    assert other.org.name in browser.get("/api-keys").text


def test_email_in_two_orgs_signs_in_where_the_password_matches(
    tenant: Tenant, people: People, browser: Browser
) -> None:
    other = make_tenant(tenant.storage)
    email = f"two-{tenant.org.name}@people.test"
    people.add(Role.ADMIN, email)
    with tenant.storage.write() as conn:
        identity.create_user(conn, other.org, email, Role.ADMIN)  # no password there
    assert browser.sign_in(email).status_code == 303
    assert tenant.org.name in browser.get("/audit-logs").text


def test_sign_out_ends_the_session_on_the_server(tenant: Tenant, people: People, browser: Browser) -> None:
    """After sign-out a copied cookie no longer works; user.logout is audited."""
    browser.sign_in(people.admin.name)
    token = browser.client.cookies["auditkeep_session"]
    r = browser.post("/signout", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert "max-age=0" in _cookie_header(r, "auditkeep_session").lower()
    browser.client.cookies.set("auditkeep_session", token)
    r = browser.get("/audit-logs", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/?next=/audit-logs"
    assert [e["status"] for e in events(tenant.storage, tenant.org.id, "user.logout")] == ["success"]


def test_sign_out_needs_the_csrf_token(people: People, browser: Browser) -> None:
    browser.sign_in(people.admin.name)
    assert browser.post("/signout", {"csrf_token": "x"}).status_code == 403
    assert browser.get("/audit-logs", follow_redirects=False).status_code == 200


def test_expired_session_sends_the_visitor_to_sign_in(tenant: Tenant, people: People, browser: Browser) -> None:
    browser.sign_in(people.admin.name)
    with tenant.storage.write() as conn:
        conn.execute(console_sessions.update().where(console_sessions.c.user_id == tenant.admin.id)
                     .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    r = browser.get("/api-keys", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/?next=/api-keys"


def test_sign_in_returns_to_the_page_asked_for(people: People, browser: Browser) -> None:
    page = browser.get("/api-keys")  # redirected to the form, which remembers where to go
    assert 'name="next" value="/api-keys"' in page.text
    r = browser.client.post("/signin", data={"email": people.admin.name, "password": PASSWORD, "next": "/api-keys",
                                             "signin_token": form_token(page.text, "signin_token")},
                            follow_redirects=False)
    assert r.headers["location"] == "/api-keys"


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example", "javascript:x"])
def test_sign_in_never_redirects_off_site(people: People, browser: Browser, target: str) -> None:
    page = browser.get("/")
    r = browser.client.post("/signin", data={"email": people.admin.name, "password": PASSWORD, "next": target,
                                             "signin_token": form_token(page.text, "signin_token")},
                            follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_session_token_is_stored_only_as_a_digest(tenant: Tenant, people: People, browser: Browser) -> None:
    browser.sign_in(people.admin.name)
    token = browser.client.cookies["auditkeep_session"]
    with tenant.storage.read() as conn:
        digests = [r.token_digest for r in conn.execute(
            console_sessions.select().where(console_sessions.c.user_id == tenant.admin.id))]
    assert len(digests) == 1 and token not in digests[0]
    assert re.fullmatch(r"[0-9a-f]{64}", digests[0])


def test_signing_in_again_ends_the_previous_session(tenant: Tenant, people: People, browser: Browser) -> None:
    browser.sign_in(people.admin.name)
    first = browser.client.cookies["auditkeep_session"]
    # A second tab that still shows the form (signed in meanwhile in the first) signs in again.
    browser.client.cookies.set("auditkeep_signin", "second-tab")
    r = browser.post("/signin", {"email": people.admin.name, "password": PASSWORD, "signin_token": "second-tab"},
                     csrf=False, follow_redirects=False)
    assert r.status_code == 303
    with tenant.storage.read() as conn:
        assert sessions.get_session(conn, first, datetime.now(UTC)) is None
        rows = conn.execute(console_sessions.select().where(console_sessions.c.user_id == tenant.admin.id)).all()
    assert len(rows) == 1


def test_a_hash_with_old_parameters_is_upgraded_at_sign_in(tenant: Tenant, people: People, browser: Browser) -> None:
    """Weaker argon2 parameters (an older release's) are replaced by today's once the password is known."""
    weak = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
    user = people.add(Role.ADMIN, password=False)
    with tenant.storage.write() as conn:
        identity.set_password_hash(conn, user.id, weak)
    assert browser.sign_in(user.name).status_code == 303
    with tenant.storage.read() as conn:
        upgraded = identity.get_user_password_hash(conn, tenant.org, user.name)[1]
    assert upgraded != weak and upgraded is not None and not needs_rehash(upgraded)
    assert verify_password(upgraded, PASSWORD)
