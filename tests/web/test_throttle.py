"""Sign-in throttling: the policy's numbers (pure functions) and what the form does with them."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from auditkeep.auth import throttle
from auditkeep.auth.throttle import ACCOUNT_POLICY, IP_POLICY, Counter
from auditkeep.storage import sessions, tables
from auditkeep.web import signin
from auditkeep.web.routes import signin as signin_routes
from auditkeep.web.signin import account_key, ip_key
from tests.conftest import Tenant
from tests.web.conftest import PASSWORD, Browser, BrowserFactory, People, events

T0 = datetime(2026, 1, 1, tzinfo=UTC)
S = timedelta(seconds=1)


def _fail(counter: Counter, n: int, at: datetime, policy: throttle.ThrottlePolicy = ACCOUNT_POLICY) -> Counter:
    for _ in range(n):
        counter = throttle.after_failure(counter, policy, at)
    return counter


def test_five_failures_are_free_then_waits_double() -> None:
    """After 5 failures the next attempt waits 1 s, then 2, 4, 8, 16 s after each further failure."""
    c = _fail(Counter(), 4, T0)
    assert throttle.check(c, ACCOUNT_POLICY, T0) is None
    waits = []
    for _ in range(5):
        c = throttle.after_failure(c, ACCOUNT_POLICY, T0)
        refusal = throttle.check(c, ACCOUNT_POLICY, T0)
        assert refusal is not None and not refusal.locked
        waits.append(refusal.retry_after)
    assert waits == [1 * S, 2 * S, 4 * S, 8 * S, 16 * S]
    assert throttle.check(c, ACCOUNT_POLICY, T0 + 16 * S) is None


def test_tenth_failure_locks_the_account_for_fifteen_minutes() -> None:
    c = _fail(Counter(), 10, T0)
    refusal = throttle.check(c, ACCOUNT_POLICY, T0 + 60 * S)
    assert refusal is not None and refusal.locked and refusal.retry_after == timedelta(minutes=14)
    assert throttle.check(c, ACCOUNT_POLICY, T0 + timedelta(minutes=15)) is None
    # A lock that ended starts the count afresh: one more failure is free again.
    after = throttle.after_failure(c, ACCOUNT_POLICY, T0 + timedelta(minutes=15))
    assert after.failures == 1 and after.locked_until is None


def test_failures_are_forgotten_fifteen_minutes_after_the_last() -> None:
    c = _fail(Counter(), 7, T0)
    assert throttle.current(c, ACCOUNT_POLICY, T0 + timedelta(minutes=14)).failures == 7
    assert throttle.current(c, ACCOUNT_POLICY, T0 + timedelta(minutes=15)) == Counter()


def test_the_ip_policy_allows_more_before_slowing_and_locking() -> None:
    """Offices share addresses: 20 free failures, a lock at 100; waits are capped at 30 s."""
    c = _fail(Counter(), 20, T0, IP_POLICY)
    refusal = throttle.check(c, IP_POLICY, T0)
    assert refusal is not None and refusal.retry_after == 1 * S
    c = _fail(c, 79, T0, IP_POLICY)
    refusal = throttle.check(c, IP_POLICY, T0)
    assert refusal is not None and not refusal.locked and refusal.retry_after == 30 * S
    c = throttle.after_failure(c, IP_POLICY, T0)
    assert c.failures == 100 and c.locked_until == T0 + timedelta(minutes=15)


def _seed(tenant: Tenant, key: str, counter: Counter) -> None:
    with tenant.storage.write() as conn:
        sessions.save_counter(conn, key, counter)


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> datetime:
    """Sign-in sees one instant throughout, so a loaded machine cannot let a 1-second wait run out."""
    now = datetime.now(UTC)
    monkeypatch.setattr(signin, "utcnow", lambda: now)
    # The route imported the name itself: patching only web.signin's left it reading the real clock, and at
    # load 13 the sixth attempt came more than the 1-second wait after the fifth failure (303, not 429).
    monkeypatch.setattr(signin_routes, "utcnow", lambda: now)
    return now


def test_sixth_quick_attempt_is_asked_to_wait_even_with_the_right_password(
    tenant: Tenant, people: People, browser: Browser, frozen_clock: datetime
) -> None:
    """429 with Retry-After and a clear message; the password is not even checked."""
    admin = people.admin
    for _ in range(5):
        assert browser.sign_in(admin.name, "wrong password!!").status_code == 401
    r = browser.sign_in(admin.name, PASSWORD)
    assert r.status_code == 429
    assert "Too many failed sign-ins. Wait 1 second and try again." in r.text
    assert r.headers["retry-after"] == "1"
    assert "auditkeep_session" not in browser.client.cookies
    # Refused attempts are not audit events (a flood must not fill the log); the 5 failures are.
    assert [e["status"] for e in events(tenant.storage, tenant.org.id, "user.login")] == ["failure"] * 5


def test_tenth_failure_locks_the_account_and_says_so(tenant: Tenant, people: People, browser: Browser) -> None:
    admin = people.admin
    key = account_key(tenant.storage.settings, admin.name)
    _seed(tenant, key, Counter(9, datetime.now(UTC) - timedelta(minutes=1)))
    r = browser.sign_in(admin.name, "wrong password!!")
    assert r.status_code == 429
    assert "this account is locked for a while. Try again in 15 minutes." in r.text
    (event,) = events(tenant.storage, tenant.org.id, "user.login")
    assert event["status"] == "failure" and event["payload"]["failures"] == 10
    assert event["payload"]["locked_until"] is not None and "(sign-ins locked)" in event["log_entry"]
    r = browser.sign_in(admin.name, PASSWORD)
    assert r.status_code == 429 and "locked" in r.text


def test_a_lock_is_per_account_whatever_the_case_of_the_email(people: People, new_browser: BrowserFactory,
                                                              tenant: Tenant) -> None:
    """Another address cannot sign in to a locked account either."""
    admin = people.admin
    key = account_key(tenant.storage.settings, admin.name.upper())
    _seed(tenant, key, Counter(10, datetime.now(UTC), datetime.now(UTC) + 60 * S))
    assert new_browser().sign_in(admin.name).status_code == 429


def test_unknown_emails_are_throttled_like_real_ones(browser: Browser, frozen_clock: datetime) -> None:
    """A lock tells nothing about whether the email exists."""
    for _ in range(5):
        assert browser.sign_in("ghost@nowhere.test", "wrong password!!").status_code == 401
    assert browser.sign_in("ghost@nowhere.test", "wrong password!!").status_code == 429


def test_one_address_guessing_many_emails_is_locked(tenant: Tenant, people: People, browser: Browser) -> None:
    """The per-IP counter catches spraying across accounts; the message names the network address."""
    admin = people.admin
    _seed(tenant, ip_key(tenant.storage.settings, browser.ip), Counter(99, datetime.now(UTC) - timedelta(minutes=1)))
    r = browser.sign_in("someone-else@nowhere.test", "wrong password!!")
    assert r.status_code == 429 and "sign-ins from your network address are locked" in r.text
    r = browser.sign_in(admin.name, PASSWORD)
    assert r.status_code == 429 and "network address" in r.text


def test_success_clears_the_account_counter_but_not_the_address_counter(
    tenant: Tenant, people: People, browser: Browser
) -> None:
    admin = people.admin
    for _ in range(3):
        browser.sign_in(admin.name, "wrong password!!")
    assert browser.sign_in(admin.name).status_code == 303
    with tenant.storage.read() as conn:
        account, address = account_key(tenant.storage.settings, admin.name), ip_key(tenant.storage.settings, browser.ip)
        counters = sessions.load_counters(conn, [account, address])
    assert counters[account] == Counter()
    assert counters[address].failures == 3


def test_throttle_rows_hold_keyed_digests_that_a_guessed_email_or_address_does_not_match(
    tenant: Tenant, browser: Browser, tmp_path: Path
) -> None:
    """After failed sign-ins, signin_throttle holds neither the email nor the address, nor any unkeyed digest
    of them (a dictionary attack on the table finds nothing); its keys depend on the secrets key."""
    email = f"Guess.Me+{secrets.token_hex(4)}@Nowhere.test"
    assert browser.sign_in(email, "wrong password!!").status_code == 401
    settings = tenant.storage.settings
    mine = {account_key(settings, email), ip_key(settings, browser.ip)}
    with tenant.storage.read() as conn:
        rows = {r.key: r.failures for r in conn.execute(sa.select(tables.signin_throttle)
                                                         .where(tables.signin_throttle.c.key.in_(mine)))}
        everything = [str(k) for k in conn.execute(sa.select(tables.signin_throttle.c.key)).scalars()]
    assert rows == {account_key(settings, email): 1, ip_key(settings, browser.ip): 1}
    guesses = {v for value in (email, email.lower(), browser.ip)
               for v in (value, *(getattr(hashlib, name)(value.encode()).hexdigest()
                                  for name in ("md5", "sha1", "sha256", "sha512")))}
    assert not [k for k in everything if any(g in k for g in guesses)]
    other = settings.model_copy(update={"secrets_key_path": tmp_path / "another-secrets-key"})
    assert account_key(other, email) != account_key(settings, email)
    assert ip_key(other, browser.ip) != ip_key(settings, browser.ip)
