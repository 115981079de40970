"""Rate limits (issue #11): per API key, per client address for failed authentication, memory or Redis."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from auditkeep.api.app import create_app
from auditkeep.settings import Settings
from auditkeep.storage import Storage, identity
from tests.conftest import Tenant, make_tenant

URL = "/api/v1/audit_logs"
REDIS_URL = "redis://127.0.0.1:6379"

MakeApp = Callable[..., FastAPI]


@pytest.fixture
def make_app(storage: Storage, settings: Settings) -> Iterator[MakeApp]:
    """Apps of their own (their own limits) over the current backend, with settings overridden."""
    with ExitStack() as stack:

        def make(**overrides: Any) -> FastAPI:
            app = create_app(settings.model_copy(update={"database_url": storage.url, **overrides}), storage=storage)
            stack.enter_context(TestClient(app))  # runs the lifespan for the test's duration
            return app

        yield make


def client(app: FastAPI, address: str = "203.0.113.7") -> TestClient:
    """A client of `app` calling from `address`."""
    return TestClient(app, client=(address, 50000))


def logs_of(app: FastAPI, tenant: Tenant, action: str) -> list[dict[str, Any]]:
    """The tenant's events with `action`, read from another address (the one under test may be locked out)."""
    r = client(app, "198.51.100.99").get(URL, params={"action": action}, headers=tenant.headers)
    assert r.status_code == 200, r.text
    return list(r.json()["logs"])


def guess(tenant: Tenant) -> dict[str, str]:
    """A wrong key sharing the tenant admin key's visible prefix (an attacker who saw it in a log)."""
    return {"Authorization": f"Key {tenant.admin_key[:11]}{secrets.token_urlsafe(24)}"}


def assert_quota(r: Any, limit: int, remaining: int, window: int) -> None:
    assert r.headers["ratelimit-limit"] == str(limit)
    assert r.headers["ratelimit-remaining"] == str(remaining)
    assert 1 <= int(r.headers["ratelimit-reset"]) <= window


def test_defaults_are_memory_storage_and_generous_limits() -> None:
    s = Settings()
    assert s.rate_limit_storage == "memory://"
    assert s.rate_limit == "100/second;6000/minute"
    assert s.auth_failure_limit == "20/minute"


def test_an_unreadable_limit_is_refused_at_startup() -> None:
    with pytest.raises(ValueError, match="couldn't parse rate limit string"):
        Settings(rate_limit="fast please")


def test_per_key_limit_answers_429_with_retry_after_and_headers_on_every_answer(
    make_app: MakeApp, tenant: Tenant
) -> None:
    """2xx (a streamed GET, a POST) and the 429 carry RateLimit-*; the 429 is FastAPI's shape with Retry-After."""
    c = client(make_app(rate_limit="3/minute;1000/hour"))
    r1 = c.get(URL, headers=tenant.headers)
    assert r1.status_code == 200
    assert_quota(r1, 3, 2, 60)
    r2 = c.post(URL, headers=tenant.headers, json={"client_ip": "10.0.0.1", "url": "https://app.test/x"})
    assert r2.status_code == 201
    assert_quota(r2, 3, 1, 60)
    assert_quota(c.get(URL, headers=tenant.headers), 3, 0, 60)
    r4 = c.get(URL, headers=tenant.headers)
    assert r4.status_code == 429
    assert r4.json() == {"detail": f"API key {tenant.admin_key[:11]}... is over its rate limit of 3 requests; "
                                   "retry later"}
    assert 1 <= int(r4.headers["retry-after"]) <= 60
    assert_quota(r4, 3, 0, 60)


def test_per_key_limit_is_per_key_not_per_address_or_org(make_app: MakeApp, tenant: Tenant) -> None:
    app = make_app(rate_limit="2/minute")
    _, other_key = tenant.service_account()
    other = {"Authorization": f"Key {other_key}"}
    assert [client(app, a).get(URL, headers=tenant.headers).status_code for a in ("192.0.2.1", "192.0.2.2")] == [
        200, 200]
    assert client(app, "192.0.2.3").get(URL, headers=tenant.headers).status_code == 429
    r = client(app, "192.0.2.1").get(URL, headers=other)  # same org and address, another key: its own count
    assert r.status_code == 403  # counted, then refused for want of a scope: still carries its quota
    assert_quota(r, 2, 1, 60)


def test_twenty_failures_lock_the_address_out_even_for_the_right_key(make_app: MakeApp, tenant: Tenant) -> None:
    """The 21st request is 429 with a correct key; auth.throttled is recorded once, in the org tried."""
    app = make_app(auth_failure_limit=Settings().auth_failure_limit)  # the default: 20/minute
    bystander = make_tenant(tenant.storage)
    c = client(app)
    assert [c.get(URL, headers=guess(tenant)).status_code for _ in range(20)] == [401] * 20
    for headers in (tenant.headers, guess(tenant), {}, tenant.headers):
        r = c.get(URL, headers=headers)
        assert r.status_code == 429
        assert r.json() == {"detail": "too many failed authentications from this address; retry later"}
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert_quota(r, 20, 0, 60)
    assert c.post(URL, headers=tenant.headers, json={}).status_code == 429  # every API route
    assert client(app, "203.0.113.8").get(URL, headers=tenant.headers).status_code == 200  # other addresses
    throttled = logs_of(app, tenant, "auth.throttled")
    assert len(throttled) == 1
    assert throttled[0]["status"] == "failure"
    assert throttled[0]["client_ip"] == "203.0.113.7"
    assert throttled[0]["user_email"] is None
    assert throttled[0]["log_entry"].startswith("Refused API requests from 203.0.113.7 for ")
    assert f"key {tenant.admin_key[:11]}..." in throttled[0]["log_entry"]
    assert logs_of(app, bystander, "auth.throttled") == []


def test_missing_keys_are_not_counted_as_failures(make_app: MakeApp, tenant: Tenant) -> None:
    """A request without a key guesses nothing: 401 every time, and no lock-out."""
    c = client(make_app(auth_failure_limit="2/minute"))
    assert [c.get(URL).status_code for _ in range(5)] == [401] * 5
    assert c.get(URL, headers=tenant.headers).status_code == 200


def test_the_lockout_ends_with_its_window_and_a_new_one_is_recorded_again(
    make_app: MakeApp, tenant: Tenant
) -> None:
    app = make_app(auth_failure_limit="2/2 second")
    c = client(app)
    assert [c.get(URL, headers=guess(tenant)).status_code for _ in range(3)] == [401, 401, 429]
    waited = c.get(URL, headers=tenant.headers)
    assert waited.status_code == 429
    time.sleep(int(waited.headers["retry-after"]) + 1)
    assert c.get(URL, headers=tenant.headers).status_code == 200
    assert [c.get(URL, headers=guess(tenant)).status_code for _ in range(3)] == [401, 401, 429]
    assert len(logs_of(app, tenant, "auth.throttled")) == 2


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"auditkeep-test-{secrets.token_hex(6)}"
    yield prefix
    conn = redis.Redis.from_url(REDIS_URL)
    for key in conn.scan_iter(f"{prefix}:*"):
        conn.delete(key)
    conn.close()


def test_redis_storage_shares_limits_between_app_instances(
    make_app: MakeApp, tenant: Tenant, redis_prefix: str
) -> None:
    shared = {"rate_limit_storage": REDIS_URL, "rate_limit_key_prefix": redis_prefix}
    a, b = client(make_app(rate_limit="3/minute", **shared)), client(make_app(rate_limit="3/minute", **shared))
    assert_quota(a.get(URL, headers=tenant.headers), 3, 2, 60)
    assert_quota(b.get(URL, headers=tenant.headers), 3, 1, 60)
    assert_quota(a.get(URL, headers=tenant.headers), 3, 0, 60)
    assert b.get(URL, headers=tenant.headers).status_code == 429
    # Keyed by the key's id, never its text.
    conn = redis.Redis.from_url(REDIS_URL)
    names = [k.decode() for k in conn.scan_iter(f"{redis_prefix}:*")]
    conn.close()
    with tenant.storage.lookup() as db:
        key_id = identity.authenticate(db, tenant.admin_key)[0].key_id
    assert len(names) == 1
    assert f"/key/{key_id}/" in names[0]
    assert tenant.admin_key not in names[0] and tenant.admin_key[:11] not in names[0]


def test_redis_storage_shares_the_lockout(make_app: MakeApp, tenant: Tenant, redis_prefix: str) -> None:
    shared = {"rate_limit_storage": REDIS_URL, "rate_limit_key_prefix": redis_prefix, "auth_failure_limit": "3/minute"}
    a, b = make_app(**shared), make_app(**shared)
    assert [client(a).get(URL, headers=guess(tenant)).status_code for _ in range(3)] == [401] * 3
    assert client(b).get(URL, headers=tenant.headers).status_code == 429
    assert client(b, "203.0.113.9").get(URL, headers=tenant.headers).status_code == 200
    assert len(logs_of(b, tenant, "auth.throttled")) == 1


def test_memory_storage_is_per_process(make_app: MakeApp, tenant: Tenant) -> None:
    """Two apps with memory:// each count on their own (hence Redis for several workers)."""
    a, b = client(make_app(rate_limit="1/minute")), client(make_app(rate_limit="1/minute"))
    assert a.get(URL, headers=tenant.headers).status_code == 200
    assert a.get(URL, headers=tenant.headers).status_code == 429
    assert b.get(URL, headers=tenant.headers).status_code == 200


def test_the_console_is_not_counted(make_app: MakeApp, tenant: Tenant) -> None:
    """Console pages carry no RateLimit-* headers; its sign-in has its own throttle (auth/throttle.py)."""
    r = client(make_app(rate_limit="1/minute")).get("/")
    assert r.status_code == 200
    assert "ratelimit-limit" not in r.headers
