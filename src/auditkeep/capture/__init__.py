"""Capture middleware: record each request of a host application as an audit event.

`ASGIAuditMiddleware` (Starlette, FastAPI) and `WSGIAuditMiddleware` (Flask, Django) build one event
per request on the request path (a few microseconds; see bench/capture_overhead.py) and hand it to a
`Shipper`, which publishes in the background through the SDK and spools to disk while the audit
service is unreachable. Only the SDK (httpx) and the standard library are needed.

    >>> from auditkeep.capture import ASGIAuditMiddleware
    >>> app.add_middleware(ASGIAuditMiddleware, spool_dir="/var/spool/myapp-audit")
"""

from __future__ import annotations

from auditkeep.capture._asgi import ASGIAuditMiddleware
from auditkeep.capture._events import EventBuilder, RouteInfo, annotate
from auditkeep.capture._shipper import Shipper, ShipperStats
from auditkeep.capture._spool import Spool
from auditkeep.capture._wsgi import WSGIAuditMiddleware

__all__ = [
    "ASGIAuditMiddleware",
    "EventBuilder",
    "RouteInfo",
    "Shipper",
    "ShipperStats",
    "Spool",
    "WSGIAuditMiddleware",
    "annotate",
]
