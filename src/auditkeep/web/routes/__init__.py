"""Console pages, one module per area; `router` gathers them."""

from __future__ import annotations

from fastapi import APIRouter

from auditkeep.web.routes import alerts, api_keys, audit_logs, saved_searches, signin, streams
from auditkeep.web.security import ConsoleRoute

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
router.include_router(signin.router)
router.include_router(saved_searches.router)
router.include_router(audit_logs.router)
router.include_router(api_keys.router)
router.include_router(streams.router)
router.include_router(alerts.router)
