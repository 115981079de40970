"""The ASGI middleware (Starlette, FastAPI, any ASGI 3 application)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote

from auditkeep.capture._events import ANNOTATION_KEY, URL_SAFE, RouteInfo, header_text
from auditkeep.capture._middleware import AuditMiddleware

__all__ = ["ASGIAuditMiddleware"]

logger = logging.getLogger("auditkeep.capture")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _route(scope: Scope) -> RouteInfo:
    # Starlette's and FastAPI's routers leave the matched route in the scope.
    route = scope.get("route")
    return RouteInfo(scope.get("method", "GET"), scope.get("path", ""),
                     getattr(route, "path", None), getattr(route, "name", None))


def _url(scope: Scope, host: str | None, include_query: bool) -> str:
    raw_path = scope.get("raw_path")
    # The path as the client sent it (percent-encoded), not as decoded for routing.
    path = quote(raw_path, safe=URL_SAFE) if raw_path else quote(scope.get("path", ""), safe=URL_SAFE)
    if host is None:
        server = scope.get("server")
        host = f"{server[0]}:{server[1]}" if server else ""
    url = f"{scope.get('scheme', 'http')}://{host}{path}"
    query = scope.get("query_string")
    if include_query and query:
        url += "?" + quote(query, safe=URL_SAFE + "?")
    return url


class ASGIAuditMiddleware(AuditMiddleware[ASGIApp]):
    """Records every HTTP request of the wrapped application as an audit event.

    Example:
        >>> from fastapi import FastAPI
        >>> from auditkeep.capture import ASGIAuditMiddleware
        >>> app = FastAPI()
        >>> app.add_middleware(
        ...     ASGIAuditMiddleware,
        ...     get_user=lambda scope: (scope["state"]["user"].email, scope["state"]["user"].id)
        ...     if "user" in scope.get("state", {}) else None,
        ...     actions={"delete_datasource": "datasource.delete"},  # route name -> action
        ...     spool_dir="/var/spool/myapp-audit",
        ... )

    The event: `client_ip` (the peer; X-Forwarded-For only from `trusted_proxies`), `url`, `referer`,
    `user_agent`, `request_type` (the method), `status` ("success" below 400, else "failure"; the code
    and the duration go in `payload`), the user from `get_user(scope)` (called when the response
    starts, so state the handlers set is visible), `action` from `actions` (a dict keyed by route name,
    "METHOD /template" or "/template", or a callable taking a `RouteInfo`; default "METHOD /template")
    and `source`. Handlers can add to it with `auditkeep.capture.annotate(request, ...)`.

    Events are shipped by a `Shipper` (pass one to share it, or the options to make one); the
    application's lifespan startup starts it and its shutdown flushes it. WebSocket connections and
    `exclude_paths` (exact paths, e.g. health checks) are not recorded.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._lifespan_send(send))
            return
        if scope["type"] != "http" or scope["path"] in self.builder.exclude_paths:
            await self.app(scope, receive, send)
            return
        started = time.time()
        t0 = time.perf_counter()
        status = 500  # if the application fails before answering, the server answers 500
        user: tuple[Any, Any] | None = None

        async def send_and_watch(message: Message) -> None:
            nonlocal status, user
            if message["type"] == "http.response.start":
                status = message["status"]
                user = self.builder.user(scope)
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            # The event is built later, in the shipper's thread, from the scope (which nothing touches
            # once the request is over); only what must be read now is passed along.
            try:
                self.shipper.defer(self._event, scope, status, started, time.perf_counter() - t0,
                                   user if user is not None else self.builder.user(scope))
            except Exception:
                logger.exception("could not record the audit event of a request")

    def _event(self, scope: Scope, status: int, started: float, duration: float,
               user: tuple[Any, Any]) -> dict[str, Any]:
        host = referer = user_agent = forwarded_for = None
        for name, value in scope.get("headers", ()):
            if name == b"host":
                host = value.decode("latin-1")
            elif name == b"referer":
                referer = header_text(value)
            elif name == b"user-agent":
                user_agent = header_text(value)
            elif name == b"x-forwarded-for":
                text = value.decode("latin-1")
                forwarded_for = text if forwarded_for is None else f"{forwarded_for},{text}"
        client = scope.get("client")
        return self.builder.build(
            route=_route(scope), url=_url(scope, host, self.builder.include_query),
            peer=client[0] if client else None, forwarded_for=forwarded_for, referer=referer,
            user_agent=user_agent, status_code=status, started=started, duration=duration, user=user,
            annotations=scope.get(ANNOTATION_KEY),
        )

    def _lifespan_send(self, send: Send) -> Send:
        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                self.shipper.start()
            elif message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                self.shipper.close()
            await send(message)

        return lifespan_send
