"""Console fixtures: a browser-like client per test (own cookie jar, own client address) and users with
passwords. argon2 is slow on purpose, so the password is hashed once per session.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from auditkeep.auth.passwords import hash_password
from auditkeep.auth.principals import Principal, Role
from auditkeep.storage import Storage, identity
from auditkeep.storage.events import iter_chain
from tests.conftest import Tenant

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="session")
def password_hash() -> str:
    return hash_password(PASSWORD)


def random_ip() -> str:
    """A documentation-range address (RFC 5737), fresh per client so throttling never leaks across tests."""
    return f"198.51.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


def form_token(html: str, name: str = "csrf_token") -> str:
    match = re.search(rf'name="{name}" value="([^"]+)"', html)
    assert match, f"no {name} in the page"
    return match.group(1)


class Browser:
    """A TestClient that behaves like one browser: its own cookies and client address."""

    def __init__(self, client: TestClient, ip: str) -> None:
        self.client = client
        self.ip = ip
        self.csrf: str | None = None

    def get(self, url: str, **kwargs: object) -> Response:
        return self.client.get(url, **kwargs)  # type: ignore[arg-type]

    def post(self, url: str, data: dict[str, object] | None = None, *, csrf: bool = True,
             **kwargs: object) -> Response:
        data = dict(data or {})
        if csrf and "csrf_token" not in data and self.csrf:
            data["csrf_token"] = self.csrf
        return self.client.post(url, data=data, **kwargs)  # type: ignore[arg-type]

    def sign_in(self, email: str, password: str = PASSWORD, organization: str = "",
                follow_redirects: bool = False) -> Response:
        page = self.client.get("/")
        token = form_token(page.text, "signin_token")
        r = self.client.post("/signin", data={"email": email, "password": password, "signin_token": token,
                                              "organization": organization}, follow_redirects=follow_redirects)
        if r.status_code == 303:
            self.csrf = form_token(self.client.get("/api-keys").text)
        return r


BrowserFactory = Callable[..., Browser]


@pytest.fixture
def new_browser(app_client: TestClient) -> Iterator[BrowserFactory]:
    """Makes independent browsers (another person, another address) on the test app."""
    made: list[TestClient] = []

    def make(base_url: str = "http://testserver", ip: str | None = None) -> Browser:
        ip = ip or random_ip()
        client = TestClient(app_client.app, base_url=base_url, client=(ip, 50000))
        made.append(client)
        return Browser(client, ip)

    yield make
    for client in made:
        client.close()


@pytest.fixture
def browser(new_browser: BrowserFactory) -> Browser:
    return new_browser()


def events(storage: Storage, org_id: int, action: str | None = None) -> list[dict[str, Any]]:
    """The organization's stored events (optionally of one action), in seq order."""
    return [e for e in iter_chain(storage, org_id) if action is None or e["action"] == action]


@dataclass
class People:
    """Users of one tenant with console passwords."""

    tenant: Tenant
    password_hash: str

    def add(self, role: Role, email: str | None = None, *, password: bool = True) -> Principal:
        with self.tenant.storage.write() as conn:
            user = identity.create_user(conn, self.tenant.org, email or f"{secrets.token_hex(4)}@people.test", role)
            if password:
                identity.set_password_hash(conn, user.id, self.password_hash)
        return user

    @property
    def admin(self) -> Principal:
        """The tenant's admin, given the password."""
        with self.tenant.storage.write() as conn:
            identity.set_password_hash(conn, self.tenant.admin.id, self.password_hash)
        return self.tenant.admin


@pytest.fixture
def people(tenant: Tenant, password_hash: str) -> People:
    return People(tenant, password_hash)
