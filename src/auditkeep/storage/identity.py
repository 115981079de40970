"""Organizations, users, service accounts and API keys: the small, relational side of the store."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError as DBIntegrityError

from auditkeep.auth.keys import generate_key, key_digest, visible_prefix
from auditkeep.auth.principals import Principal, Role, Scope
from auditkeep.errors import (
    ConflictError,
    InvalidKeyError,
    KeyExpiredError,
    KeyRevokedError,
    LimitExceededError,
    NotFoundError,
)
from auditkeep.integrity.chain import ZERO_HASH_HEX
from auditkeep.storage.tables import api_keys, chain_heads, organizations, service_accounts, users

# Datafold's limits on active keys.
MAX_KEYS_PER_USER = 5
MAX_KEYS_PER_SERVICE_ACCOUNT = 50
# last_used_at is written at most this often per key, so reads do not turn into writes.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Org:
    id: int
    name: str
    retention_days: int | None


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """An API key as listings show it: never the key itself."""

    id: int
    prefix: str
    owner_kind: str
    owner_name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    name: str = ""
    expires_at: datetime | None = None

    def state(self, now: datetime | None = None) -> str:
        """"active", "revoked" or "expired" (revocation wins: it was someone's decision)."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or _now()):
            return "expired"
        return "active"


# --- organizations -----------------------------------------------------------------------------------


def create_org(conn: sa.Connection, name: str) -> Org:
    """Create an organization and its empty hash chain."""
    try:
        with conn.begin_nested():
            org_id = conn.execute(
                organizations.insert().values(name=name, created_at=_now()).returning(organizations.c.id)
            ).scalar_one()
    except DBIntegrityError:
        raise ConflictError(f"organization {name!r} already exists") from None
    conn.execute(
        chain_heads.insert().values(org_id=org_id, seq=0, hash=ZERO_HASH_HEX, merkle_frontier="", first_seq=1)
    )
    return Org(org_id, name, None)


def get_org(conn: sa.Connection, name: str) -> Org:
    row = conn.execute(sa.select(organizations).where(organizations.c.name == name)).first()
    if row is None:
        raise NotFoundError(f"unknown organization {name!r}")
    return Org(row.id, row.name, row.retention_days)


def get_org_by_id(conn: sa.Connection, org_id: int) -> Org:
    row = conn.execute(sa.select(organizations).where(organizations.c.id == org_id)).first()
    if row is None:
        raise NotFoundError(f"unknown organization id {org_id}")
    return Org(row.id, row.name, row.retention_days)


def list_orgs(conn: sa.Connection) -> list[Org]:
    rows = conn.execute(sa.select(organizations).order_by(organizations.c.id))
    return [Org(r.id, r.name, r.retention_days) for r in rows]


def set_retention(conn: sa.Connection, org_id: int, days: int | None) -> None:
    conn.execute(organizations.update().where(organizations.c.id == org_id).values(retention_days=days))


# --- users and service accounts ----------------------------------------------------------------------


def create_user(conn: sa.Connection, org: Org, email: str, role: Role, *, is_support: bool = False) -> Principal:
    try:
        with conn.begin_nested():
            user_id = conn.execute(
                users.insert()
                .values(org_id=org.id, email=email, role=role.value, is_support=is_support, created_at=_now())
                .returning(users.c.id)
            ).scalar_one()
    except DBIntegrityError:
        raise ConflictError(f"user {email!r} already exists in organization {org.name!r}") from None
    return Principal(org.id, org.name, "user", user_id, email, role=role, is_support=is_support)


def _user_principal(org: Org, row: sa.Row[tuple[object, ...]]) -> Principal:
    return Principal(org.id, org.name, "user", row.id, row.email, role=Role(row.role), is_support=row.is_support)


def get_user(conn: sa.Connection, org: Org, email: str) -> Principal:
    row = conn.execute(sa.select(users).where(users.c.org_id == org.id, users.c.email == email)).first()
    if row is None:
        raise NotFoundError(f"unknown user {email!r} in organization {org.name!r}")
    return _user_principal(org, row)


def get_user_password_hash(conn: sa.Connection, org: Org, email: str) -> tuple[Principal, str | None]:
    row = conn.execute(sa.select(users).where(users.c.org_id == org.id, users.c.email == email)).first()
    if row is None:
        raise NotFoundError(f"unknown user {email!r} in organization {org.name!r}")
    return _user_principal(org, row), row.password_hash


def set_password_hash(conn: sa.Connection, user_id: int, password_hash: str) -> None:
    conn.execute(users.update().where(users.c.id == user_id).values(password_hash=password_hash))


def create_service_account(conn: sa.Connection, org: Org, name: str, scopes: frozenset[Scope]) -> Principal:
    try:
        with conn.begin_nested():
            sa_id = conn.execute(
                service_accounts.insert()
                .values(org_id=org.id, name=name, scopes=" ".join(sorted(scopes)), created_at=_now())
                .returning(service_accounts.c.id)
            ).scalar_one()
    except DBIntegrityError:
        raise ConflictError(f"service account {name!r} already exists in organization {org.name!r}") from None
    return Principal(org.id, org.name, "service_account", sa_id, name, scopes=scopes)


def _parse_scopes(text: str) -> frozenset[Scope]:
    return frozenset(Scope(s) for s in text.split())


def get_service_account(conn: sa.Connection, org: Org, name: str) -> Principal:
    row = conn.execute(
        sa.select(service_accounts).where(service_accounts.c.org_id == org.id, service_accounts.c.name == name)
    ).first()
    if row is None:
        raise NotFoundError(f"unknown service account {name!r} in organization {org.name!r}")
    return Principal(org.id, org.name, "service_account", row.id, row.name, scopes=_parse_scopes(row.scopes))


def list_principals(conn: sa.Connection, org: Org) -> list[Principal]:
    """Users then service accounts of `org`."""
    out = [_user_principal(org, r) for r in conn.execute(sa.select(users).where(users.c.org_id == org.id))]
    for r in conn.execute(sa.select(service_accounts).where(service_accounts.c.org_id == org.id)):
        out.append(Principal(org.id, org.name, "service_account", r.id, r.name, scopes=_parse_scopes(r.scopes)))
    return out


# --- API keys ----------------------------------------------------------------------------------------


def _active(now: datetime) -> sa.ColumnElement[bool]:
    """Keys neither revoked nor expired: the ones that authenticate and count toward the limit."""
    return sa.and_(
        api_keys.c.revoked_at.is_(None), sa.or_(api_keys.c.expires_at.is_(None), api_keys.c.expires_at > now)
    )


def create_key(
    conn: sa.Connection, owner: Principal, *, name: str = "", expires_at: datetime | None = None,
    lifetime: timedelta | None = None,
) -> tuple[str, ApiKeyInfo]:
    """Create a key for `owner`; returns the key (shown once, never stored) and its listing.

    It expires at `expires_at`, or `lifetime` after its creation, or never. Expired keys, like revoked
    ones, do not count toward the owner's limit of active keys.
    """
    owner_col = api_keys.c.user_id if owner.kind == "user" else api_keys.c.service_account_id
    limit = MAX_KEYS_PER_USER if owner.kind == "user" else MAX_KEYS_PER_SERVICE_ACCOUNT
    owner_table = users if owner.kind == "user" else service_accounts
    # Lock the owner's row so two concurrent creations cannot both pass the limit check (PostgreSQL;
    # SQLite writers are already serialized by BEGIN IMMEDIATE).
    conn.execute(sa.select(owner_table.c.id).where(owner_table.c.id == owner.id).with_for_update())
    now = _now()
    active = conn.execute(sa.select(sa.func.count()).where(owner_col == owner.id, _active(now))).scalar_one()
    if lifetime is not None:
        expires_at = now + lifetime
    if active >= limit:
        raise LimitExceededError(
            f"{owner.describe()} already has {active} active API keys (the limit is {limit}); revoke one first"
        )
    key = generate_key()
    key_id = conn.execute(
        api_keys.insert()
        .values(
            org_id=owner.org_id,
            user_id=owner.id if owner.kind == "user" else None,
            service_account_id=owner.id if owner.kind != "user" else None,
            prefix=visible_prefix(key),
            digest=key_digest(key),
            created_at=now,
            name=name,
            expires_at=expires_at,
        )
        .returning(api_keys.c.id)
    ).scalar_one()
    return key, ApiKeyInfo(key_id, visible_prefix(key), owner.kind, owner.name, now, None, None, name, expires_at)


def _keys_query() -> sa.Select[tuple[object, ...]]:
    return (
        sa.select(
            api_keys,
            sa.func.coalesce(users.c.email, service_accounts.c.name).label("owner_name"),
            sa.case((api_keys.c.user_id.is_not(None), "user"), else_="service_account").label("owner_kind"),
        )
        .outerjoin(users, users.c.id == api_keys.c.user_id)
        .outerjoin(service_accounts, service_accounts.c.id == api_keys.c.service_account_id)
    )


def _key_info(r: sa.Row[tuple[object, ...]]) -> ApiKeyInfo:
    return ApiKeyInfo(r.id, r.prefix, r.owner_kind, r.owner_name, r.created_at, r.last_used_at, r.revoked_at,
                      r.name, r.expires_at)


def list_keys(conn: sa.Connection, org: Org) -> list[ApiKeyInfo]:
    rows = conn.execute(_keys_query().where(api_keys.c.org_id == org.id).order_by(api_keys.c.id))
    return [_key_info(r) for r in rows]


def revoke_key(conn: sa.Connection, org: Org, key_or_prefix: str) -> ApiKeyInfo:
    """Revoke a key of `org` named by the whole key or its visible prefix (or by id, "#12")."""
    q = _keys_query().where(api_keys.c.org_id == org.id)
    if key_or_prefix.startswith("#") and key_or_prefix[1:].isdigit():
        q = q.where(api_keys.c.id == int(key_or_prefix[1:]))
    elif len(key_or_prefix) > len(visible_prefix(key_or_prefix)):
        q = q.where(api_keys.c.digest == key_digest(key_or_prefix))
    else:
        q = q.where(api_keys.c.prefix == key_or_prefix)
    rows = conn.execute(q).all()
    if not rows:
        raise NotFoundError(f"no API key {visible_prefix(key_or_prefix)!r} in organization {org.name!r}")
    if len(rows) > 1:
        raise ConflictError(f"prefix {key_or_prefix!r} names {len(rows)} keys; give the whole key")
    row = rows[0]
    if row.revoked_at is None:
        conn.execute(api_keys.update().where(api_keys.c.id == row.id).values(revoked_at=_now()))
    return _key_info(conn.execute(_keys_query().where(api_keys.c.id == row.id)).one())


# Built once, not per request: constructing and hashing this select on every request cost more CPU than
# running it on SQLite (a read's key lookup, issue #11's CPU per read). Executing the same statement object
# also reuses its memoized cache key.
_AUTHENTICATE = (
    sa.select(
        api_keys.c.id, api_keys.c.digest, api_keys.c.prefix, api_keys.c.revoked_at, api_keys.c.org_id,
        api_keys.c.last_used_at, api_keys.c.expires_at,
        organizations.c.name.label("org_name"),
        users.c.id.label("u_id"), users.c.email, users.c.role, users.c.is_support,
        service_accounts.c.id.label("sa_id"), service_accounts.c.name.label("sa_name"),
        service_accounts.c.scopes,
    )
    .join(organizations, organizations.c.id == api_keys.c.org_id)
    .outerjoin(users, users.c.id == api_keys.c.user_id)
    .outerjoin(service_accounts, service_accounts.c.id == api_keys.c.service_account_id)
    .where(api_keys.c.digest == sa.bindparam("digest"))
)


def authenticate(conn: sa.Connection, key: str) -> tuple[Principal, bool]:
    """The principal owning `key`, and whether its last_used_at is stale enough to be written.

    Raises InvalidKeyError, KeyRevokedError or KeyExpiredError.
    """
    digest = key_digest(key)
    row = conn.execute(_AUTHENTICATE, {"digest": digest}).first()
    # The index lookup already matched the digest; compare again in constant time so that no code path
    # ever decides on a secret-derived value with an early-exit comparison.
    if row is None or not hmac.compare_digest(row.digest, digest):
        raise InvalidKeyError("invalid API key")
    if row.revoked_at is not None:
        raise KeyRevokedError("this API key has been revoked")
    now = _now()
    if row.expires_at is not None and row.expires_at <= now:
        raise KeyExpiredError("API key expired")
    stale = row.last_used_at is None or row.last_used_at < now - LAST_USED_RESOLUTION
    if row.u_id is not None:
        principal = Principal(
            row.org_id, row.org_name, "user", row.u_id, row.email, role=Role(row.role),
            is_support=row.is_support, key_id=row.id, key_prefix=row.prefix,
        )
    else:
        principal = Principal(
            row.org_id, row.org_name, "service_account", row.sa_id, row.sa_name,
            scopes=_parse_scopes(row.scopes), key_id=row.id, key_prefix=row.prefix,
        )
    return principal, stale


def org_ids_for_key_prefix(conn: sa.Connection, prefix: str) -> list[int]:
    """The organizations holding a key (active or not) with this visible prefix: whom a guess was aimed at."""
    rows = conn.execute(sa.select(api_keys.c.org_id).where(api_keys.c.prefix == prefix).distinct())
    return sorted(r.org_id for r in rows)


def touch_key(conn: sa.Connection, key_id: int) -> None:
    """Record use of a key, at most once per LAST_USED_RESOLUTION."""
    now = _now()
    conn.execute(
        api_keys.update()
        .where(
            api_keys.c.id == key_id,
            sa.or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < now - LAST_USED_RESOLUTION),
        )
        .values(last_used_at=now)
    )
