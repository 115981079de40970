"""Turning one request of the host application into one audit event (shared by ASGI and WSGI).

Everything here runs on the request path, so it is kept to dictionary work: address parsing is cached,
and nothing touches the network or the disk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from datetime import UTC, datetime
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from typing import Any, NamedTuple

from auditkeep.ids import new_event_uuid

__all__ = ["Actions", "EventBuilder", "GetUser", "RouteInfo", "annotate"]

logger = logging.getLogger("auditkeep.capture")

ANNOTATION_KEY = "auditkeep.event"
UNKNOWN_IP = "0.0.0.0"  # noqa: S104 (a placeholder value recorded in events, not a bind address)
# Field limits of the ingest API (schemas/events.py). One over-long field would make the service refuse
# a whole batch with a 422, so captured values are cut to fit instead.
_LIMITS = {"url": 8192, "referer": 8192, "user_agent": 2048, "request_type": 32, "action": 256,
           "user_email": 320, "source": 256, "object_type": 256, "status": 256, "log_entry": 65_536}
_MAX_SAFE_INTEGER = 2**53 - 1
# Characters left as they are when a URL is rebuilt: RFC 3986's reserved and unreserved ones, and "%" so
# that what arrived percent-encoded is not encoded twice.
URL_SAFE = "/:@!$&'()*+,;=-._~%"
_ANNOTATABLE = frozenset({"action", "is_support_user", "log_entry", "object_id", "object_type", "payload",
                          "source", "status", "user_email", "user_id"})


class RouteInfo(NamedTuple):
    """What an action mapping is asked about: the method, the path, and the matched route if known."""

    method: str
    path: str
    route_path: str | None  # the route's template, e.g. "/items/{item_id}" or "/items/<int:item_id>"
    route_name: str | None  # Starlette's route name / Flask's endpoint


GetUser = Callable[[Any], "tuple[str | None, int | None] | None"]
Actions = Mapping[str, str] | Callable[[RouteInfo], "str | None"]


def annotate(request: Any, **fields: Any) -> None:
    """Add to (or override in) the audit event of the current request, from inside the host's handler.

    `request` is an ASGI scope or WSGI environ, or any object with `.scope` (Starlette's Request) or
    `.environ` (Flask's and Django's). Fields: action, object_type, object_id, log_entry, payload
    (merged), user_email, user_id, is_support_user, source, status.

    Example:
        >>> @app.delete("/datasources/{ds_id}")
        ... async def delete_datasource(ds_id: int, request: Request):
        ...     annotate(request, action="datasource.delete", object_type="datasource", object_id=ds_id)
    """
    unknown = set(fields) - _ANNOTATABLE
    if unknown:
        raise TypeError(f"cannot annotate {', '.join(sorted(unknown))}; allowed: {sorted(_ANNOTATABLE)}")
    target = getattr(request, "scope", None) or getattr(request, "environ", None) or request
    if not isinstance(target, MutableMapping):
        raise TypeError("annotate() needs an ASGI scope, a WSGI environ, or a request object holding one")
    existing = target.setdefault(ANNOTATION_KEY, {})
    payload = fields.pop("payload", None)
    existing.update(fields)
    if payload:
        existing.setdefault("payload", {}).update(payload)


@lru_cache(maxsize=4096)
def _normalize_ip(text: str) -> str | None:
    try:
        return str(ip_address(text.strip().strip("[]")))
    except ValueError:
        return None


def header_text(raw: bytes) -> str:
    """A header value as text: UTF-8 when it is (browsers send non-ASCII referers so), else latin-1."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _cut(value: str | None, field: str) -> str | None:
    if value is None:
        return None
    limit = _LIMITS[field]
    return value if len(value) <= limit else value[:limit]


class EventBuilder:
    """The capture settings shared by both middlewares, and the event they produce for a request."""

    def __init__(self, *, get_user: GetUser | None = None, actions: Actions | None = None,
                 source: str = "capture", trusted_proxies: Iterable[str] = (),
                 exclude_paths: Iterable[str] = (), include_query: bool = True) -> None:
        self.get_user = get_user
        self.actions = actions
        self.source = source
        self.trusted: tuple[IPv4Network | IPv6Network, ...] = tuple(
            ip_network(net, strict=False) for net in trusted_proxies
        )
        self.exclude_paths = frozenset(exclude_paths)
        self.include_query = include_query
        self._trusted_cache: dict[str, bool] = {}

    # -- pieces ----------------------------------------------------------------------------------
    def _is_trusted(self, ip: str) -> bool:
        known = self._trusted_cache.get(ip)
        if known is None:
            address = ip_address(ip)
            known = any(address in net for net in self.trusted)
            if len(self._trusted_cache) < 4096:
                self._trusted_cache[ip] = known
        return known

    def client_ip(self, peer: str | None, forwarded_for: str | None) -> tuple[str, str | None]:
        """(client_ip, the raw peer when it is not an address). X-Forwarded-For is believed only when
        the peer is a trusted proxy, read from the right, skipping trusted hops, so that a client
        cannot choose the address recorded for it."""
        ip = _normalize_ip(peer) if peer else None
        if ip is None:
            return UNKNOWN_IP, peer
        if forwarded_for and self.trusted and self._is_trusted(ip):
            for hop in reversed(forwarded_for.split(",")):
                hop_ip = _normalize_ip(hop)
                if hop_ip is None:
                    break
                ip = hop_ip
                if not self._is_trusted(hop_ip):
                    break
        return ip, None

    def action(self, route: RouteInfo) -> str:
        """The event's action: from the mapping (route name, then "METHOD template", then template),
        else "METHOD template" (the raw path when no route matched)."""
        template = route.route_path or route.path
        default = f"{route.method} {template}"
        if self.actions is None:
            return default
        if callable(self.actions):
            return self.actions(route) or default
        for key in (route.route_name, default, route.route_path):
            if key is not None and key in self.actions:
                return self.actions[key]
        return default

    def user(self, request: Any) -> tuple[Any, Any]:
        """(email, id) from the application's callable; (None, None) if it has none or fails."""
        if self.get_user is None:
            return None, None
        try:
            found = self.get_user(request)
        except Exception:
            # The host's request must not fail because of its audit hook; the event is still recorded.
            logger.exception("get_user raised; recording the event without a user")
            return None, None
        if not found:
            return None, None
        return found[0], found[1]

    # -- the event -------------------------------------------------------------------------------
    def build(self, *, route: RouteInfo, url: str, peer: str | None, forwarded_for: str | None,
              referer: str | None, user_agent: str | None, status_code: int, started: float,
              duration: float, user: tuple[Any, Any], annotations: Mapping[str, Any] | None) -> dict[str, Any]:
        """The audit event for a finished request (`started` is a Unix time, `duration` in seconds)."""
        client_ip, raw_peer = self.client_ip(peer, forwarded_for)
        email, user_id = user
        payload: dict[str, Any] = {"status_code": status_code, "duration_ms": round(duration * 1000, 3)}
        if raw_peer is not None:
            payload["peer"] = raw_peer
        if user_id is not None and (type(user_id) is not int or abs(user_id) > _MAX_SAFE_INTEGER):
            # user_id is an integer field; another kind of id is kept, in the payload.
            payload["user_id"] = str(user_id)
            user_id = None
        event: dict[str, Any] = {
            "event_uuid": new_event_uuid(),
            "timestamp": datetime.fromtimestamp(started, UTC).isoformat(),
            "client_ip": client_ip,
            "url": _cut(url, "url"),
            "referer": _cut(referer, "referer"),
            "user_agent": _cut(user_agent, "user_agent"),
            "request_type": _cut(route.method, "request_type"),
            "status": "success" if status_code < 400 else "failure",
            "action": _cut(self.action(route), "action"),
            "source": self.source,
            "user_email": _cut(email if isinstance(email, str) else None, "user_email"),
            "user_id": user_id,
            "payload": payload,
        }
        if annotations:
            for name, value in annotations.items():
                if name == "payload":
                    payload.update(value)
                elif name in _LIMITS and isinstance(value, str):
                    event[name] = _cut(value, name)
                else:
                    event[name] = value
        return event
