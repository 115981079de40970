"""Signing in to the console: find the account, throttle, check the password, audit, start a session.

Which organization? Users are unique per (organization, email), so the form asks for the email and the
password, and the organization only when it is needed: the password is checked against every account
with that email (there are few), and
- no match: a failure, the same message whatever the reason (no such email, wrong password, no
  password set), so the form does not tell which emails exist;
- one match: signed in to that account's organization;
- several matches (the same person with the same password in several organizations): the form asks
  which organization, and nobody learns that except someone who knows the password.
Failures are `user.login` events (status failure) in the organization of each account the email names;
an email that names no account has no organization to file under, so it goes to the server log.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from math import ceil

from auditkeep.auth import throttle
from auditkeep.auth.passwords import WeakPasswordError, hash_password, needs_rehash, verify_password
from auditkeep.auth.principals import Principal
from auditkeep.ingest.selfaudit import Origin, audit
from auditkeep.settings import Settings
from auditkeep.storage import Storage, identity, sessions
from auditkeep.streams.secrets import load_key

log = logging.getLogger("auditkeep.web")

GENERIC_FAILURE = "Incorrect email or password."


@dataclass(frozen=True, slots=True)
class SignIn:
    """What a sign-in attempt came to: a session token, or a message for the form."""

    status_code: int
    principal: Principal | None = None
    token: str | None = None
    message: str | None = None
    needs_org: bool = False
    retry_after: int | None = None


def account_key(settings: Settings, email: str) -> str:
    """The throttle row of an account: a keyed digest of the lower-cased email, never the email itself."""
    return "account:" + _throttle_digest(settings, email.strip().lower())


def ip_key(settings: Settings, client_ip: str) -> str:
    """The throttle row of a client address: a keyed digest of it, like the account's."""
    return "ip:" + _throttle_digest(settings, client_ip)


def _throttle_digest(settings: Settings, value: str) -> str:
    """HMAC-SHA-256 under a key derived from the secrets key (AUDITKEEP_SECRETS_KEY_PATH), which every node
    shares and the database never holds. Not a plain SHA-256: with one, anyone who reads signin_throttle
    could recover its emails by hashing a list of guesses, and the row would name a person after their
    erasure (issue #12). The secrets key, not the signing key: `auditkeep signing-key rotate` must not reset
    every account's failures (docs/integrity.md §13)."""
    key = hmac.new(load_key(settings.secrets_key_path), b"auditkeep signin throttle v1", hashlib.sha256).digest()
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def _wait_text(wait: timedelta) -> str:
    seconds = max(1, ceil(wait.total_seconds()))
    if seconds < 120:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    return f"{ceil(seconds / 60)} minutes"


def _refusal_message(refusal: throttle.Refusal, for_ip: bool) -> str:
    what = "sign-ins from your network address are" if for_ip else "this account is"
    if refusal.locked:
        return (f"Too many failed sign-ins: {what} locked for a while. "
                f"Try again in {_wait_text(refusal.retry_after)}.")
    return f"Too many failed sign-ins. Wait {_wait_text(refusal.retry_after)} and try again."


def sign_in(
    storage: Storage, *, email: str, password: str, org_name: str | None, origin: Origin, now: datetime,
    max_age: timedelta,
) -> SignIn:
    """Try one sign-in (the password check runs outside any transaction: argon2 takes a while)."""
    email = email.strip()
    policies = {account_key(storage.settings, email): throttle.ACCOUNT_POLICY,
                ip_key(storage.settings, origin.client_ip): throttle.IP_POLICY}
    with storage.read() as conn:
        counters = sessions.load_counters(conn, list(policies))
    for key, policy in policies.items():
        refusal = throttle.check(counters[key], policy, now)
        if refusal is not None:
            # Not an audit event: while throttled, nothing is checked, and a flood of refused attempts
            # must not be able to fill an organization's log. The failure that started it was audited.
            log.warning("console sign-in refused by throttling",
                        extra={"client_ip": origin.client_ip, "email": email[:320], "throttle": key[:10],
                               "locked": refusal.locked})
            return SignIn(429, message=_refusal_message(refusal, key.startswith("ip:")),
                          retry_after=max(1, ceil(refusal.retry_after.total_seconds())))

    with storage.read() as conn:
        accounts = sessions.find_accounts(conn, email, org_name or None)
    if accounts:
        matches = [a for a in accounts if verify_password(a.password_hash, password)]
    else:
        verify_password(None, password)  # the same work as for a real account
        matches = []

    if not matches:
        return _failed(storage, policies=policies, accounts=accounts, email=email, origin=origin, now=now)
    if len(matches) > 1:
        return SignIn(409, needs_org=True, message="This email belongs to more than one organization. "
                      "Enter the organization you want to sign in to.")
    return _succeeded(storage, account=matches[0], password=password, email=email, origin=origin, now=now,
                      max_age=max_age)


def _failed(
    storage: Storage, *, policies: dict[str, throttle.ThrottlePolicy], accounts: list[sessions.Account],
    email: str, origin: Origin, now: datetime,
) -> SignIn:
    with storage.write() as conn:
        loaded = sessions.load_counters(conn, list(policies), for_update=True)
        counters = {k: throttle.after_failure(loaded[k], p, now) for k, p in policies.items()}
        for key, counter in counters.items():
            sessions.save_counter(conn, key, counter)
    account_counter = counters[account_key(storage.settings, email)]
    locked = {k: c.locked_until for k, c in counters.items() if c.locked_until is not None}
    for account in accounts:
        me = account.principal
        reason = "wrong password" if account.password_hash else "no console password set"
        audit(storage, me.org_id, "user.login", origin, actor=me, status="failure", object_type="user",
              object_id=me.id,
              log_entry=f"Failed console sign-in for {me.describe()}: {reason}"
              + (" (sign-ins locked)" if locked else ""),
              payload={"reason": reason, "failures": account_counter.failures,
                       "locked_until": max(locked.values()).isoformat() if locked else None})
    if not accounts:
        log.warning("console sign-in failed: no account has this email",
                    extra={"client_ip": origin.client_ip, "email": email[:320]})
    if locked:
        key, until = max(locked.items(), key=lambda kv: kv[1])
        refusal = throttle.Refusal(locked=True, retry_after=until - now)
        return SignIn(429, message=_refusal_message(refusal, key.startswith("ip:")),
                      retry_after=ceil(refusal.retry_after.total_seconds()))
    return SignIn(401, message=GENERIC_FAILURE)


def _succeeded(
    storage: Storage, *, account: sessions.Account, password: str, email: str, origin: Origin, now: datetime,
    max_age: timedelta,
) -> SignIn:
    me = account.principal
    new_hash = None
    if account.password_hash and needs_rehash(account.password_hash):
        try:
            new_hash = hash_password(password)
        except WeakPasswordError:
            new_hash = None  # set before today's rules: keep it; set-password enforces them
    with storage.write() as conn:
        sessions.clear_counter(conn, account_key(storage.settings, email))
        sessions.forget_old_counters(conn, now - timedelta(days=1))
        if new_hash is not None:
            identity.set_password_hash(conn, me.id, new_hash)
        token = sessions.create_session(conn, me, client_ip=origin.client_ip, user_agent=origin.user_agent,
                                        now=now, max_age=max_age)
    audit(storage, me.org_id, "user.login", origin, actor=me, object_type="user", object_id=me.id,
          log_entry=f"{me.describe().capitalize()} signed in to the console", payload={"method": "password"})
    return SignIn(303, principal=me, token=token)


def utcnow() -> datetime:
    return datetime.now(UTC)
