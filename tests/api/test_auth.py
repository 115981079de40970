"""Authentication and permissions on /api/v1/audit_logs (issue #2, CONTRACT.md "Permissions")."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from auditkeep.auth.principals import Role, Scope
from auditkeep.storage import identity
from tests.conftest import Tenant

URL = "/api/v1/audit_logs"
EVENT = {"client_ip": "10.0.0.1", "url": "https://app.test/x"}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Key ak_doesnotexist"}, {"Authorization": "Bearer something"}, {"Authorization": "Key "}],
    ids=["missing", "unknown", "other-scheme", "empty"],
)
def test_missing_or_unknown_key_is_401_with_www_authenticate(app_client: TestClient, headers: dict[str, str]) -> None:
    r = app_client.get(URL, headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Key"
    assert isinstance(r.json()["detail"], str)


def test_revoked_key_is_401(app_client: TestClient, tenant: Tenant) -> None:
    with tenant.storage.write() as conn:
        identity.revoke_key(conn, tenant.org, tenant.admin_key)
    r = app_client.get(URL, headers=tenant.headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Key"
    assert "revoked" in r.json()["detail"]


def test_bare_key_without_scheme_is_accepted(app_client: TestClient, tenant: Tenant) -> None:
    """Datafold's own curl example sends the key without the `Key ` scheme."""
    r = app_client.get(URL, headers={"Authorization": tenant.admin_key})
    assert r.status_code == 200


@pytest.mark.parametrize("role", [Role.DEFAULT, Role.VIEWONLY])
def test_non_admin_users_may_neither_read_nor_ingest(app_client: TestClient, tenant: Tenant, role: Role) -> None:
    _, key = tenant.user(role)
    h = {"Authorization": f"Key {key}"}
    assert app_client.get(URL, headers=h).status_code == 403
    assert app_client.post(URL, headers=h, json=EVENT).status_code == 403


def test_service_account_scopes_gate_read_and_write(app_client: TestClient, tenant: Tenant) -> None:
    _, reader = tenant.service_account(Scope.READ)
    _, writer = tenant.service_account(Scope.WRITE)
    r, w = {"Authorization": f"Key {reader}"}, {"Authorization": f"Key {writer}"}
    assert app_client.get(URL, headers=r).status_code == 200
    assert app_client.post(URL, headers=r, json=EVENT).status_code == 403
    assert app_client.post(URL, headers=w, json=EVENT).status_code == 201
    assert app_client.get(URL, headers=w).status_code == 403


def test_refused_request_is_self_audited(app_client: TestClient, tenant: Tenant) -> None:
    """A 403 leaves a `request.denied` failure event in the organization's log."""
    user, key = tenant.user(Role.VIEWONLY)
    assert app_client.get(URL, headers={"Authorization": f"Key {key}"}).status_code == 403
    logs = app_client.get(URL, headers=tenant.headers).json()["logs"]
    denied = [log for log in logs if log["action"] == "request.denied"]
    assert len(denied) == 1
    assert denied[0]["status"] == "failure"
    assert denied[0]["user_email"] == user.name
    assert denied[0]["user_id"] == user.id
    assert denied[0]["request_type"] == "GET"


def test_key_limit_per_user_is_five(tenant: Tenant) -> None:
    from auditkeep.errors import LimitExceededError

    with tenant.storage.write() as conn:
        for _ in range(4):  # the admin already has one
            identity.create_key(conn, tenant.admin)
    with pytest.raises(LimitExceededError), tenant.storage.write() as conn:
        identity.create_key(conn, tenant.admin)
    with tenant.storage.write() as conn:  # revoking one frees a slot
        identity.revoke_key(conn, tenant.org, tenant.admin_key)
        identity.create_key(conn, tenant.admin)


def test_keys_are_stored_only_as_digests(tenant: Tenant) -> None:
    import hashlib

    import sqlalchemy as sa

    from auditkeep.storage.tables import api_keys

    with tenant.storage.read() as conn:
        rows = conn.execute(sa.select(api_keys).where(api_keys.c.org_id == tenant.org.id)).all()
    assert len(rows) == 1
    stored = " ".join(str(v) for v in rows[0])
    assert tenant.admin_key not in stored
    assert rows[0].digest == hashlib.sha256(tenant.admin_key.encode()).hexdigest()
    assert rows[0].prefix == tenant.admin_key[:11]


def _expired_key(tenant: Tenant) -> str:
    from datetime import UTC, datetime, timedelta

    with tenant.storage.write() as conn:
        key, _ = identity.create_key(conn, tenant.admin, name="old",
                                     expires_at=datetime.now(UTC) - timedelta(seconds=1))
    return key


def test_expired_key_is_401_like_a_revoked_one(app_client: TestClient, tenant: Tenant) -> None:
    key = _expired_key(tenant)
    for method in (app_client.get, app_client.post):
        r = method(URL, headers={"Authorization": f"Key {key}"})
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Key"
        assert r.json() == {"detail": "API key expired"}


def test_a_key_works_until_its_expiry(app_client: TestClient, tenant: Tenant) -> None:
    from datetime import UTC, datetime, timedelta

    with tenant.storage.write() as conn:
        key, info = identity.create_key(conn, tenant.admin, name="soon", lifetime=timedelta(days=1))
    assert info.expires_at is not None and info.state() == "active"
    assert app_client.get(URL, headers={"Authorization": f"Key {key}"}).status_code == 200
    assert info.state(datetime.now(UTC) + timedelta(days=1)) == "expired"


def test_expired_keys_do_not_count_toward_the_limit(tenant: Tenant) -> None:
    from auditkeep.errors import LimitExceededError

    for _ in range(3):
        _expired_key(tenant)
    with tenant.storage.write() as conn:
        for _ in range(4):  # the admin's one active key plus these four: five active, three expired
            identity.create_key(conn, tenant.admin)
    with pytest.raises(LimitExceededError, match="already has 5 active API keys"), tenant.storage.write() as conn:
        identity.create_key(conn, tenant.admin)
    with tenant.storage.read() as conn:
        states = sorted(k.state() for k in identity.list_keys(conn, tenant.org))
    assert states == ["active"] * 5 + ["expired"] * 3
