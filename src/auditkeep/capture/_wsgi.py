"""The WSGI middleware (Flask, Django, any WSGI application)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any
from urllib.parse import quote

from auditkeep.capture._events import ANNOTATION_KEY, URL_SAFE, RouteInfo, header_text
from auditkeep.capture._middleware import AuditMiddleware

__all__ = ["WSGIAuditMiddleware"]

logger = logging.getLogger("auditkeep.capture")

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


def _header(environ: Environ, name: str) -> str | None:
    # PEP 3333 hands headers over latin-1-decoded; undo that to read UTF-8 ones right.
    value = environ.get(name)
    return None if value is None else header_text(value.encode("latin-1", "replace"))


def _url(environ: Environ, include_query: bool) -> str:
    host = environ.get("HTTP_HOST")
    if not host:
        host = environ.get("SERVER_NAME", "")
        port = environ.get("SERVER_PORT")
        if port and port not in ("80", "443"):
            host = f"{host}:{port}"
    # PEP 3333 hands the path over as latin-1-decoded bytes; quote them back as they came.
    path = quote((environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")).encode("latin-1"),
                 safe=URL_SAFE)
    url = f"{environ.get('wsgi.url_scheme', 'http')}://{host}{path}"
    query = environ.get("QUERY_STRING")
    if include_query and query:
        url += "?" + quote(query.encode("latin-1"), safe=URL_SAFE + "?")
    return url


class WSGIAuditMiddleware(AuditMiddleware[WSGIApp]):
    """Records every request of the wrapped WSGI application as an audit event.

    Example (Flask):
        >>> from flask import Flask, g
        >>> from auditkeep.capture import WSGIAuditMiddleware
        >>> app = Flask(__name__)
        >>> app.wsgi_app = WSGIAuditMiddleware(
        ...     app.wsgi_app,
        ...     get_user=lambda environ: (g.user.email, g.user.id) if "user" in g else None,
        ...     actions={"delete_datasource": "datasource.delete"},  # endpoint -> action
        ...     spool_dir="/var/spool/myapp-audit",
        ... )

    Example (Django, wsgi.py):
        >>> application = WSGIAuditMiddleware(get_wsgi_application(), spool_dir="/var/spool/audit")

    `get_user(environ)` runs when the application calls `start_response`, while Flask's request
    context (`g`, `current_user`) is still active. Flask's matched rule gives the route template and
    endpoint; Django does not expose its resolver here, so a Django application names its actions with
    `auditkeep.capture.annotate(request, action=..., user_email=..., user_id=...)` in a view or a
    Django middleware (the request's `environ` is the one this middleware sees), or with an `actions`
    callable on the path. The rest is as for `ASGIAuditMiddleware`. The shipper is flushed at
    interpreter exit (or call `middleware.shipper.close()`).
    """

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "") in self.builder.exclude_paths:
            return self.app(environ, start_response)
        started = time.time()
        t0 = time.perf_counter()
        seen: dict[str, Any] = {}

        def start_and_watch(status: str, headers: list[tuple[str, str]],
                            exc_info: ExcInfo | None = None) -> Callable[[bytes], object]:
            try:
                seen["status"] = int(status[:3])
            except ValueError:
                seen["status"] = 500
            # Werkzeug's request (Flask's) is still in the environ here, and Flask's request context
            # is still active; both are gone once the application returns.
            rule = getattr(environ.get("werkzeug.request"), "url_rule", None)
            if rule is not None:
                seen["route"] = (getattr(rule, "rule", None), getattr(rule, "endpoint", None))
            seen["user"] = self.builder.user(environ)
            return start_response(status, headers, exc_info)

        def record() -> None:
            # Built later, in the shipper's thread; the user is read now, inside the request.
            try:
                user = seen["user"] if "user" in seen else self.builder.user(environ)
                self.shipper.defer(self._event, environ, seen, started, time.perf_counter() - t0, user)
            except Exception:
                logger.exception("could not record the audit event of a request")

        try:
            result = self.app(environ, start_and_watch)
        except BaseException:
            record()
            raise
        if "status" in seen:
            record()
            return result
        # The application answers lazily (start_response on the first iteration): record at close().
        return _RecordOnClose(result, record)

    def _event(self, environ: Environ, seen: dict[str, Any], started: float, duration: float,
               user: tuple[Any, Any]) -> dict[str, Any]:
        route_path, route_name = seen.get("route", (None, None))
        route = RouteInfo(environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", ""),
                          route_path, route_name)
        return self.builder.build(
            route=route, url=_url(environ, self.builder.include_query), peer=environ.get("REMOTE_ADDR"),
            forwarded_for=environ.get("HTTP_X_FORWARDED_FOR"), referer=_header(environ, "HTTP_REFERER"),
            user_agent=_header(environ, "HTTP_USER_AGENT"), status_code=seen.get("status", 500), started=started,
            duration=duration, user=user, annotations=environ.get(ANNOTATION_KEY),
        )


class _RecordOnClose:
    """Passes a response body through and records the event when the server closes it."""

    def __init__(self, body: Iterable[bytes], record: Callable[[], None]) -> None:
        self._body = body
        self._record = record

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._record()
