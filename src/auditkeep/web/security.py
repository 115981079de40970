"""What keeps the console safe in a browser: security headers, cookies, CSRF tokens, safe redirects.

Every console response carries a strict Content-Security-Policy: scripts and styles only from /static,
so no inline script, inline style or attribute handler runs even if escaping were ever to fail.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Coroutine
from ipaddress import ip_address
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

from auditkeep.settings import Settings

SESSION_COOKIE = "auditkeep_session"
# Double-submit token of the sign-in form (there is no session yet to tie a synchronizer token to).
SIGNIN_COOKIE = "auditkeep_signin"

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    # same-origin keeps the Referer that self-audit events record for our own pages, and sends none
    # (so no event identifiers in URLs) to other sites.
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def is_https(request: Request) -> bool:
    """Whether the browser reached us over https (X-Forwarded-Proto is believed from trusted proxies only)."""
    if request.url.scheme == "https":
        return True
    settings: Settings = request.app.state.settings
    peer = request.client.host if request.client else ""
    try:
        trusted = any(ip_address(peer) in net for net in settings.trusted_proxies)
    except ValueError:
        trusted = False
    return trusted and request.headers.get("x-forwarded-proto", "").lower() == "https"


def apply_headers(request: Request, response: Response, *, cache: bool = False) -> Response:
    """Add the console's security headers to `response` (pages are never cached: they show secrets)."""
    response.headers.update(SECURITY_HEADERS)
    if not cache:
        response.headers["Cache-Control"] = "no-store"
    if is_https(request):
        response.headers["Strict-Transport-Security"] = "max-age=31536000"
    return response


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int | None) -> None:
    """A cookie scripts cannot read, never sent cross-site, and Secure whenever we are served over https."""
    response.set_cookie(
        name, value, max_age=max_age, path="/", httponly=True, samesite="strict", secure=is_https(request)
    )


def clear_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(name, path="/", httponly=True, samesite="strict", secure=is_https(request))


def new_token() -> str:
    return secrets.token_urlsafe(32)


def tokens_match(expected: str | None, given: str | None) -> bool:
    """Compare CSRF tokens in constant time, so response timing does not leak the expected token."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def safe_next(target: str | None) -> str:
    """A local path to return to after signing in; anything else (other hosts, //evil) becomes "/"."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


class ConsoleRoute(APIRoute):
    """A route whose every response carries the console's security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_headers(request: Request) -> Response:
            return apply_headers(request, await handler(request))

        return with_headers


class ConsoleStaticFiles(StaticFiles):
    """/static with the same headers (cacheable: the files hold nothing secret)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response
