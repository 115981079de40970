"""Dependencies shared by routes: the store, the caller, and where a request came from."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from ipaddress import ip_address
from typing import Annotated

import sqlalchemy as sa
from fastapi import Depends, Request
from fastapi.security import APIKeyHeader
from starlette.concurrency import run_in_threadpool

from auditkeep.api.ratelimit import Quota, RateLimits, attach
from auditkeep.auth.keys import parse_authorization, visible_prefix
from auditkeep.auth.principals import Principal, Scope
from auditkeep.errors import InvalidKeyError, PermissionDeniedError, RateLimitedError
from auditkeep.ingest.selfaudit import Origin, audit
from auditkeep.settings import Settings
from auditkeep.storage import Storage, identity

log = logging.getLogger("auditkeep.auth")

# Declared as an APIKeyHeader so /openapi.json carries the spec's ApiKeyAuth scheme; parsing is ours.
api_key_header = APIKeyHeader(
    name="Authorization",
    scheme_name="ApiKeyAuth",
    description="Use the 'Authorization' header with the format 'Key <api-key>'",
    auto_error=False,
)


# `async def`, as they do no I/O: FastAPI runs a plain `def` dependency in its thread pool, a hop to a thread
# and back per dependency per request, which costs far more than these (docs/benchmarks.md, "CPU per read").
async def get_storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


StorageDep = Annotated[Storage, Depends(get_storage)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def client_ip(request: Request, settings: Settings) -> str:
    """The client's address; X-Forwarded-For is believed only hop by hop from trusted proxies."""
    peer = request.client.host if request.client else ""
    hops = [peer]
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded and settings.trusted_proxies:
        hops += [h.strip() for h in reversed(forwarded.split(","))]
    for hop in hops:
        try:
            addr = ip_address(hop)
        except ValueError:
            return hop if hop == peer and hop else "0.0.0.0"  # noqa: S104 - "unknown", not a bind address
        if not any(addr in net for net in settings.trusted_proxies):
            return str(addr)
    return str(ip_address(hops[-1]))


def origin_of(request: Request, source: str = "api") -> Origin:
    """The request as an audit event's origin fields."""
    settings: Settings = request.app.state.settings
    ip = client_ip(request, settings)
    try:
        ip = str(ip_address(ip))
    except ValueError:
        ip = "0.0.0.0"  # noqa: S104 - "unknown", not a bind address
    return Origin(
        source=source,
        client_ip=ip,
        url=str(request.url),
        request_type=request.method,
        referer=request.headers.get("referer"),
        user_agent=request.headers.get("user-agent"),
    )


def _authenticate(storage: Storage, key: str,
                  lookup: Callable[[], AbstractContextManager[sa.Connection]] | None = None) -> Principal:
    # Looked up afresh on every request (no cache), so a revocation takes effect at once.
    with (lookup or storage.lookup)() as conn:
        principal, stale = identity.authenticate(conn, key)
    if stale and principal.key_id is not None:
        with storage.write() as conn:
            identity.touch_key(conn, principal.key_id)
    return principal


def _throttled(request: Request, storage: Storage, limits: RateLimits, address: str, *, key: str | None,
               lockout: Quota) -> RateLimitedError:
    """The 429 for a locked-out address; the first refusal per lock-out is recorded as `auth.throttled`
    in each organization holding a key with the prefix tried (the prefix marker first, so that refusals
    with made-up prefixes cost no database lookup after their first)."""
    attach(request, lockout)
    prefix = visible_prefix(key) if key else None
    if prefix and limits.first_refusal(lockout, address, "prefix", prefix):
        with storage.lookup() as conn:
            org_ids = identity.org_ids_for_key_prefix(conn, prefix)
        for org_id in org_ids:
            if limits.first_refusal(lockout, address, "org", str(org_id)):
                audit(
                    storage, org_id, "auth.throttled", origin_of(request), status="failure",
                    log_entry=f"Refused API requests from {address} for {lockout.reset} s after "
                              f"{lockout.limit} failed authentications (key {prefix}...)",
                    payload={"key_prefix": prefix, "failures": lockout.limit, "retry_after": lockout.reset},
                )
    return RateLimitedError(
        "too many failed authentications from this address; retry later", retry_after=lockout.reset
    )


def admit(request: Request, storage: Storage, key: str | None,
          lookup: Callable[[], AbstractContextManager[sa.Connection]] | None = None) -> Principal:
    """The caller, within the rate limits: 429 for a locked-out address or a key over its limit, 401 for a
    missing or bad key. A missing key is not counted as a failure: it guesses nothing. Blocking: call it in
    a worker thread. `lookup` gives the connection the key is looked up on (default `storage.lookup`)."""
    limits: RateLimits = request.app.state.rate_limits
    address = client_ip(request, request.app.state.settings)
    lockout = limits.lockout(address)
    if lockout is not None:
        raise _throttled(request, storage, limits, address, key=key, lockout=lockout)
    if key is None:
        raise InvalidKeyError("missing API key: send 'Authorization: Key <api-key>'")
    try:
        principal = _authenticate(storage, key, lookup)
    except InvalidKeyError as exc:
        # No organization to file this under: it goes to the server log (the key's visible prefix
        # only, never the key).
        log.warning(
            "authentication failed",
            extra={"client_ip": address, "key_prefix": key[:11], "reason": str(exc), "path": request.url.path},
        )
        lockout = limits.failed(address)
        if lockout is not None:
            raise _throttled(request, storage, limits, address, key=key, lockout=lockout) from exc
        raise
    assert principal.key_id is not None  # every API principal comes from a key
    quota, allowed = limits.hit_key(principal.key_id)
    attach(request, quota)
    if not allowed:
        assert quota is not None
        raise RateLimitedError(f"API key {principal.key_prefix}... is over its rate limit of {quota.limit} "
                               f"requests; retry later", retry_after=quota.reset)
    return principal


async def get_principal(
    request: Request,
    storage: StorageDep,
    authorization: Annotated[str | None, Depends(api_key_header)],
) -> Principal:
    """The caller named by the API key; 401 otherwise (and the attempt is logged with its address), 429
    over a rate limit (api/ratelimit.py). Every API route depends on this, so the limits cover them all."""
    return await run_in_threadpool(admit, request, storage, parse_authorization(authorization))


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def _record_denial(request: Request, storage: Storage, principal: Principal, needed: str) -> PermissionDeniedError:
    """Record the refusal in the organization's log; the PermissionDeniedError (403) to raise."""
    audit(
        storage,
        principal.org_id,
        "request.denied",
        origin_of(request),
        actor=principal,
        status="failure",
        log_entry=f"Refused {request.method} {request.url.path} to {principal.describe()}: needs {needed}",
        payload={"required": needed},
    )
    return PermissionDeniedError(f"{principal.describe()} lacks permission {needed}")


async def _deny(request: Request, storage: Storage, principal: Principal, needed: str) -> None:
    """Record the refusal in the organization's log, then raise PermissionDeniedError (403)."""
    raise await run_in_threadpool(_record_denial, request, storage, principal, needed)


def authorize_in_thread(request: Request, storage: Storage, principal: Principal, scope: Scope) -> None:
    """`authorize` for code already in a worker thread."""
    if not principal.can(scope):
        raise _record_denial(request, storage, principal, scope.value)


async def authorize(request: Request, storage: Storage, principal: Principal, scope: Scope) -> None:
    """Raise PermissionDeniedError (403) unless `principal` has `scope`; a refusal is self-audited."""
    if not principal.can(scope):
        await _deny(request, storage, principal, scope.value)


async def authorize_admin(request: Request, storage: Storage, principal: Principal) -> None:
    """Raise PermissionDeniedError (403) unless `principal` is an admin user; a refusal is self-audited."""
    if not principal.is_admin:
        await _deny(request, storage, principal, "admin")
