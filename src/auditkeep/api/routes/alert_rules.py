"""`/api/v1/alert_rules`: rules that watch the organization's events and tell people when something
happens (issue #13; docs/alerts.md).

Admins only: a rule sees every event its filter matches and sends what it found outside the service.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Request, Response
from starlette.concurrency import run_in_threadpool

from auditkeep.alerts import service
from auditkeep.alerts.templates import TEMPLATES
from auditkeep.api.deps import CurrentPrincipal, StorageDep, authorize_admin, origin_of
from auditkeep.schemas.alerts import AlertRuleCreate, AlertRulePublic, AlertRuleUpdate, TemplateCreate
from auditkeep.storage import alerts as store

router = APIRouter(prefix="/api/v1/alert_rules", tags=["Alert rules"])


@router.post("", status_code=201, summary="Create an alert rule")
async def create_rule(request: Request, principal: CurrentPrincipal, storage: StorageDep,
                      spec: AlertRuleCreate) -> AlertRulePublic:
    """Count the events stored from now on that match `filter`; fire when `threshold.count` of them fall
    within `threshold.window_seconds` (per `group_by` group)."""
    await authorize_admin(request, storage, principal)
    origin = origin_of(request)
    return await run_in_threadpool(
        lambda: service.create(storage, principal.org_id, spec, origin=origin, actor=principal))


@router.get("", summary="List alert rules")
async def list_rules(request: Request, principal: CurrentPrincipal, storage: StorageDep) -> dict[str, Any]:
    """`{"alert_rules": [...]}` with each one's state, last firing and last error."""
    await authorize_admin(request, storage, principal)

    def run() -> list[AlertRulePublic]:
        with storage.read() as conn:
            rows = store.list_for_org(conn, principal.org_id)
        return [service.public(storage, row) for row in rows]

    return {"alert_rules": await run_in_threadpool(run)}


@router.get("/templates", summary="List the built-in rules")
async def list_templates(request: Request, principal: CurrentPrincipal, storage: StorageDep) -> dict[str, Any]:
    await authorize_admin(request, storage, principal)
    return {"templates": list(TEMPLATES.values())}


@router.post("/templates/{name}", status_code=201, summary="Enable a built-in rule")
async def create_from_template(name: str, request: Request, principal: CurrentPrincipal, storage: StorageDep,
                               spec: TemplateCreate | None = Body(default=None)) -> AlertRulePublic:  # noqa: B008 - FastAPI's way to declare an optional body
    """The template's rule, named as the template (or `name`), notifying `notify` (none: the
    `alert.fired` event in the log is the only record)."""
    await authorize_admin(request, storage, principal)
    origin = origin_of(request)
    given = spec or TemplateCreate()
    return await run_in_threadpool(
        lambda: service.create_from_template(storage, principal.org_id, name, origin=origin, actor=principal,
                                             rule_name=given.name, notify=given.notify))


@router.get("/{rule_id}", summary="One alert rule")
async def get_rule(rule_id: str, request: Request, principal: CurrentPrincipal,
                   storage: StorageDep) -> AlertRulePublic:
    await authorize_admin(request, storage, principal)

    def run() -> AlertRulePublic:
        with storage.read() as conn:
            row = store.get(conn, principal.org_id, rule_id, with_state=False)
        return service.public(storage, row)

    return await run_in_threadpool(run)


@router.patch("/{rule_id}", summary="Enable, disable or change an alert rule")
async def update_rule(rule_id: str, request: Request, principal: CurrentPrincipal, storage: StorageDep,
                      change: AlertRuleUpdate) -> AlertRulePublic:
    """`{"enabled": false}`, `{"threshold": {...}}`, `{"notify": [...]}` (replaces the channels), ..."""
    await authorize_admin(request, storage, principal)
    origin = origin_of(request)
    return await run_in_threadpool(
        lambda: service.update(storage, principal.org_id, rule_id, change, origin=origin, actor=principal))


@router.delete("/{rule_id}", status_code=204, summary="Delete an alert rule")
async def delete_rule(rule_id: str, request: Request, principal: CurrentPrincipal, storage: StorageDep) -> Response:
    await authorize_admin(request, storage, principal)
    origin = origin_of(request)
    await run_in_threadpool(lambda: service.delete(storage, principal.org_id, rule_id, origin=origin,
                                                   actor=principal))
    return Response(status_code=204)


@router.post("/{rule_id}/test", summary="Send a test notification")
async def test_rule(rule_id: str, request: Request, principal: CurrentPrincipal,
                    storage: StorageDep) -> dict[str, Any]:
    """Notify each channel now with an alert marked `"test": true`: `{"channels": [{"kind", "delivered",
    "error"}]}`. Nothing is recorded as fired."""
    await authorize_admin(request, storage, principal)
    return await run_in_threadpool(service.send_test, storage, principal.org_id, rule_id)
