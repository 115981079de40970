"""`/api-keys` and `/service-accounts`: create (shown once), list and revoke keys; admins also manage
service accounts and their keys. Creations and revocations are self-audited with source "web".
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response

from auditkeep.api.deps import StorageDep
from auditkeep.auth.keys import key_name_problem
from auditkeep.auth.principals import Principal, Scope
from auditkeep.errors import ConflictError, LimitExceededError, NotFoundError
from auditkeep.ingest.selfaudit import audit
from auditkeep.storage import Storage, identity
from auditkeep.storage.identity import ApiKeyInfo
from auditkeep.storage.sessions import ConsoleSession
from auditkeep.storage.types import format_timestamp
from auditkeep.web.deps import CurrentSession, PostSession, refuse, web_origin
from auditkeep.web.errors import PageNotFound
from auditkeep.web.security import ConsoleRoute
from auditkeep.web.templating import render

router = APIRouter(route_class=ConsoleRoute)

_PREFIX = re.compile(r"^ak_[A-Za-z0-9_-]{8}$")
_SA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$")
# The create form's expiry choices in days, as GitHub offers them; "" (the form's "never") keeps a key
# until it is revoked. The form preselects 90 days: a key nobody remembers should not live for ever.
EXPIRY_DAYS = (7, 30, 60, 90, 365)
DEFAULT_FORM_EXPIRY = 90


def _mine(key: ApiKeyInfo, me: Principal) -> bool:
    return key.owner_kind == "user" and key.owner_name == me.name


def _visible_keys(storage: Storage, me: Principal) -> list[ApiKeyInfo]:
    """Admins see every key of their organization; everyone else sees their own."""
    with storage.read() as conn:
        keys = identity.list_keys(conn, identity.get_org_by_id(conn, me.org_id))
    return [k for k in keys if me.is_admin or _mine(k, me)]


def _page(
    request: Request, storage: Storage, session: ConsoleSession, *, status_code: int = 200,
    new_key: str | None = None, new_key_info: ApiKeyInfo | None = None, error: str | None = None,
    notice: str | None = None, sa_name: str = "", key_name: str = "", expiry: str = str(DEFAULT_FORM_EXPIRY),
) -> Response:
    me = session.principal
    keys = _visible_keys(storage, me)
    accounts: list[tuple[Principal, int]] = []
    if me.is_admin:
        with storage.read() as conn:
            principals = identity.list_principals(conn, identity.get_org_by_id(conn, me.org_id))
        for p in principals:
            if p.kind == "service_account":
                active = sum(1 for k in keys if k.owner_kind == p.kind and k.owner_name == p.name
                             and k.state() == "active")
                accounts.append((p, active))
    own_active = sum(1 for k in keys if _mine(k, me) and k.state() == "active")
    return render(
        request, "api_keys.html", session, status_code=status_code, keys=keys, accounts=accounts,
        new_key=new_key, new_key_info=new_key_info, error=error, notice=notice, own_active=own_active,
        max_user_keys=identity.MAX_KEYS_PER_USER, max_sa_keys=identity.MAX_KEYS_PER_SERVICE_ACCOUNT,
        scopes=list(Scope), sa_name=sa_name, key_name=key_name, expiry=expiry, expiry_days=EXPIRY_DAYS,
    )


@router.get("/api-keys")
def api_keys_page(
    request: Request, storage: StorageDep, session: CurrentSession, revoked: str = "", created: str = ""
) -> Response:
    """The keys this user may see, and (admins) the organization's service accounts."""
    notice = None
    if _PREFIX.match(revoked):
        notice = f"API key {revoked}… was revoked. Requests using it are refused from now on."
    elif created and _SA_NAME.match(created):
        notice = f"Service account {created!r} was created. Create a key for it below."
    return _page(request, storage, session, notice=notice)


@router.post("/api-keys")
def create_key(
    request: Request, storage: StorageDep, session: PostSession, *,
    service_account: Annotated[str, Form(max_length=200)] = "",
    name: Annotated[str, Form(max_length=400)] = "",
    expires_in_days: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    """Create a key (named, "console" if left blank; expiring after a chosen number of days, or never) for
    the signed-in user, or (admins) for a service account; shown once."""
    me = session.principal
    if service_account and not me.is_admin:
        raise refuse(request, storage, session, "Only admins can create keys for service accounts.")
    name = name.strip() or "console"
    if problem := key_name_problem(name):
        return _page(request, storage, session, status_code=400, key_name=name, expiry=expires_in_days,
                     error=f"Choose another name: {problem}.")
    if expires_in_days and expires_in_days not in {str(d) for d in EXPIRY_DAYS}:
        return _page(request, storage, session, status_code=400, key_name=name,
                     error="Choose an expiry from the list.")
    lifetime = timedelta(days=int(expires_in_days)) if expires_in_days else None
    try:
        with storage.write() as conn:
            org = identity.get_org_by_id(conn, me.org_id)
            owner = identity.get_service_account(conn, org, service_account) if service_account else (
                identity.get_user(conn, org, me.name)
            )
            key, info = identity.create_key(conn, owner, name=name, lifetime=lifetime)
    except LimitExceededError as exc:
        return _page(request, storage, session, status_code=409, error=_limit_message(exc, bool(service_account)))
    except NotFoundError:
        return _page(request, storage, session, status_code=404, error="That service account does not exist.")
    audit(storage, me.org_id, "api_key.create", web_origin(request), actor=me, object_type="api_key",
          object_id=info.id, log_entry=f"API key {info.prefix}… ({name}) created for {owner.describe()} in the console",
          payload={"key_prefix": info.prefix, "owner": owner.name, "owner_kind": owner.kind, "name": name,
                   "expires_at": format_timestamp(info.expires_at) if info.expires_at else None})
    return _page(request, storage, session, status_code=201, new_key=key, new_key_info=info)


def _limit_message(exc: LimitExceededError, for_sa: bool) -> str:
    limit = identity.MAX_KEYS_PER_SERVICE_ACCOUNT if for_sa else identity.MAX_KEYS_PER_USER
    who = "This service account" if for_sa else "You"
    return (f"{who} already {'has' if for_sa else 'have'} {limit} active API keys, the most allowed. "
            "Revoke one you no longer use, then create the new one.")


def _key_for(storage: Storage, session: ConsoleSession, key_id: int) -> ApiKeyInfo:
    me = session.principal
    key = next((k for k in _visible_keys(storage, me) if k.id == key_id), None)
    if key is None:
        raise PageNotFound("There is no such API key among the keys you can manage.", session)
    return key


@router.get("/api-keys/{key_id}/revoke")
def confirm_revoke(key_id: int, request: Request, storage: StorageDep, session: CurrentSession) -> Response:
    """Ask before revoking: it cannot be undone."""
    key = _key_for(storage, session, key_id)
    return render(request, "revoke_confirm.html", session, key=key)


@router.post("/api-keys/{key_id}/revoke")
def revoke_key(key_id: int, request: Request, storage: StorageDep, session: PostSession) -> Response:
    """Revoke a key (own keys; admins: any key of the organization)."""
    key = _key_for(storage, session, key_id)
    me = session.principal
    if key.revoked_at is None:
        with storage.write() as conn:
            info = identity.revoke_key(conn, identity.get_org_by_id(conn, me.org_id), f"#{key.id}")
        audit(storage, me.org_id, "api_key.revoke", web_origin(request), actor=me, object_type="api_key",
              object_id=info.id,
              log_entry=f"API key {info.prefix}… of {info.owner_kind} {info.owner_name} revoked in the console",
              payload={"key_prefix": info.prefix, "owner": info.owner_name, "owner_kind": info.owner_kind})
    return RedirectResponse(f"/api-keys?revoked={key.prefix}", status_code=303)


@router.post("/service-accounts")
def create_service_account(
    request: Request, storage: StorageDep, session: PostSession,
    name: Annotated[str, Form(max_length=200)] = "",
    scopes: Annotated[list[str] | None, Form()] = None,
) -> Response:
    """Create a service account with the chosen scopes (admins only)."""
    me = session.principal
    if not me.is_admin:
        raise refuse(request, storage, session, "Only admins can create service accounts.")
    name = name.strip()
    chosen = frozenset(Scope(s) for s in scopes or [] if s in {sc.value for sc in Scope})
    if not _SA_NAME.match(name):
        return _page(request, storage, session, status_code=400, sa_name=name,
                     error="A service account name has 1 to 100 letters, digits, spaces, dots, dashes or "
                     "underscores, starting with a letter or digit.")
    if not chosen:
        return _page(request, storage, session, status_code=400, sa_name=name,
                     error="Choose at least one scope for the service account.")
    try:
        with storage.write() as conn:
            account = identity.create_service_account(conn, identity.get_org_by_id(conn, me.org_id), name, chosen)
    except ConflictError:
        return _page(request, storage, session, status_code=409, sa_name=name,
                     error=f"A service account named {name!r} already exists.")
    audit(storage, me.org_id, "service_account.create", web_origin(request), actor=me,
          object_type="service_account", object_id=account.id,
          log_entry=f"Service account {name!r} created in the console with scopes {' '.join(sorted(chosen))}",
          payload={"name": name, "scopes": sorted(chosen)})
    return RedirectResponse(f"/api-keys?{urlencode({'created': name})}#service-accounts", status_code=303)
