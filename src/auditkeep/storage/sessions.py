"""Console sessions and sign-in throttle counters (tables in tables.py, migration 0003).

A session is named by a random token that only the browser holds (in an HttpOnly cookie); the store
keeps its SHA-256, like API keys (storage/identity.py): 256 random bits need no slow hash.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError as DBIntegrityError

from auditkeep.auth.principals import Principal, Role
from auditkeep.auth.throttle import Counter
from auditkeep.storage.tables import console_sessions, organizations, signin_throttle, users


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A signed-in user, as a request sees them."""

    id: int
    principal: Principal
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Account:
    """A user who might be signing in: who they are and their stored password hash."""

    principal: Principal
    password_hash: str | None


def _principal(row: sa.Row[tuple[object, ...]]) -> Principal:
    return Principal(
        row.org_id, row.org_name, "user", row.user_id, row.email, role=Role(row.role),
        is_support=row.is_support,
    )


def _users_with_org() -> sa.Select[tuple[object, ...]]:
    return sa.select(
        users.c.id.label("user_id"), users.c.org_id, users.c.email, users.c.role, users.c.is_support,
        users.c.password_hash, organizations.c.name.label("org_name"),
    ).join(organizations, organizations.c.id == users.c.org_id)


def find_accounts(
    conn: sa.Connection, email: str, org_name: str | None = None, limit: int = 10
) -> list[Account]:
    """Users with this email (compared case-insensitively), in `org_name` if given, at most `limit`."""
    q = _users_with_org().where(sa.func.lower(users.c.email) == email.strip().lower())
    if org_name:
        q = q.where(organizations.c.name == org_name.strip())
    rows = conn.execute(q.order_by(users.c.id).limit(limit))
    return [Account(_principal(r), r.password_hash) for r in rows]


# --- sessions ----------------------------------------------------------------------------------------


def create_session(
    conn: sa.Connection, principal: Principal, *, client_ip: str, user_agent: str | None, now: datetime,
    max_age: timedelta,
) -> str:
    """Start a session for `principal`; returns the token for the cookie (stored only as a digest)."""
    token = secrets.token_urlsafe(32)
    conn.execute(
        console_sessions.insert().values(
            org_id=principal.org_id, user_id=principal.id, token_digest=token_digest(token),
            csrf_token=secrets.token_urlsafe(32), created_at=now, expires_at=now + max_age,
            client_ip=client_ip[:45], user_agent=(user_agent or "")[:512] or None,
        )
    )
    # Housekeeping on the (rare) sign-in path keeps the table small without a background job.
    conn.execute(console_sessions.delete().where(console_sessions.c.expires_at <= now))
    return token


def get_session(conn: sa.Connection, token: str, now: datetime) -> ConsoleSession | None:
    """The live session named by `token`, or None (unknown or expired)."""
    row = conn.execute(
        _users_with_org()
        .add_columns(console_sessions.c.id.label("session_id"), console_sessions.c.csrf_token,
                     console_sessions.c.expires_at)
        .join(console_sessions, console_sessions.c.user_id == users.c.id)
        .where(console_sessions.c.token_digest == token_digest(token), console_sessions.c.expires_at > now)
    ).first()
    if row is None:
        return None
    return ConsoleSession(row.session_id, _principal(row), row.csrf_token, row.expires_at)


def end_session(conn: sa.Connection, token: str) -> None:
    conn.execute(console_sessions.delete().where(console_sessions.c.token_digest == token_digest(token)))


def end_user_sessions(conn: sa.Connection, user_id: int) -> int:
    """Sign a user out everywhere (after a password change); returns how many sessions ended."""
    return conn.execute(console_sessions.delete().where(console_sessions.c.user_id == user_id)).rowcount


# --- throttle counters -------------------------------------------------------------------------------


def load_counters(conn: sa.Connection, keys: list[str], *, for_update: bool = False) -> dict[str, Counter]:
    """The stored counters of `keys` (absent keys are fresh counters)."""
    q = sa.select(signin_throttle).where(signin_throttle.c.key.in_(keys))
    if for_update:
        q = q.with_for_update()
    found = {r.key: Counter(r.failures, r.last_failure_at, r.locked_until) for r in conn.execute(q)}
    return {k: found.get(k, Counter()) for k in keys}


def save_counter(conn: sa.Connection, key: str, counter: Counter) -> None:
    values = {
        "failures": counter.failures, "last_failure_at": counter.last_failure_at,
        "locked_until": counter.locked_until,
    }
    if conn.execute(signin_throttle.update().where(signin_throttle.c.key == key).values(**values)).rowcount:
        return
    try:
        with conn.begin_nested():
            conn.execute(signin_throttle.insert().values(key=key, **values))
    except DBIntegrityError:  # a concurrent first failure inserted it meanwhile
        conn.execute(signin_throttle.update().where(signin_throttle.c.key == key).values(**values))


def clear_counter(conn: sa.Connection, key: str) -> None:
    conn.execute(signin_throttle.delete().where(signin_throttle.c.key == key))


def forget_old_counters(conn: sa.Connection, before: datetime) -> None:
    """Drop counters whose last failure and lock both lie before `before`."""
    conn.execute(
        signin_throttle.delete().where(
            signin_throttle.c.last_failure_at < before,
            sa.or_(signin_throttle.c.locked_until.is_(None), signin_throttle.c.locked_until < before),
        )
    )
