"""`/api/v1/holds`: legal holds (issue #12). Admins only: a hold overrides retention and erasure.

Releasing is `POST /api/v1/holds/{id}/release` with a JSON body `{"reason": ...}`, not DELETE: the hold is
not deleted (it stays on the record, released), and a reason travels better in a body than in a DELETE.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from auditkeep.api.deps import CurrentPrincipal, StorageDep, authorize_admin, origin_of
from auditkeep.holds import service
from auditkeep.schemas.holds import HoldCreate, HoldPublic, HoldRelease
from auditkeep.storage import holds as store

router = APIRouter(prefix="/api/v1/holds", tags=["Legal holds"])


@router.post("", status_code=201, summary="Place a legal hold")
async def create_hold(request: Request, principal: CurrentPrincipal, storage: StorageDep,
                      spec: HoldCreate) -> HoldPublic:
    """Hold the events matching every criterion given (none: the whole log); recorded as `hold.create`."""
    await authorize_admin(request, storage, principal)
    origin = origin_of(request)
    return await run_in_threadpool(
        lambda: service.create(storage, principal.org_id, spec, origin=origin, actor=principal))


@router.get("", summary="List legal holds")
async def list_holds(request: Request, principal: CurrentPrincipal, storage: StorageDep,
                     active: bool = False) -> dict[str, Any]:
    """`{"holds": [...]}`, oldest first; `?active=true` leaves out released ones."""
    await authorize_admin(request, storage, principal)

    def run() -> list[HoldPublic]:
        with storage.read() as conn:
            return [service.public(h) for h in store.list_for_org(conn, principal.org_id, active_only=active)]

    return {"holds": await run_in_threadpool(run)}


@router.get("/{hold_id}", summary="One legal hold")
async def get_hold(hold_id: str, request: Request, principal: CurrentPrincipal, storage: StorageDep) -> HoldPublic:
    await authorize_admin(request, storage, principal)

    def run() -> HoldPublic:
        with storage.read() as conn:
            return service.public(store.get(conn, principal.org_id, hold_id))

    return await run_in_threadpool(run)


@router.post("/{hold_id}/release", summary="Release a legal hold")
async def release_hold(hold_id: str, request: Request, principal: CurrentPrincipal, storage: StorageDep,
                       body: HoldRelease) -> HoldPublic:
    """End the hold (409 if it already ended); recorded as `hold.release`. The hold stays listed."""
    await authorize_admin(request, storage, principal)
    origin = origin_of(request)
    return await run_in_threadpool(
        lambda: service.release(storage, principal.org_id, hold_id, body.reason, origin=origin, actor=principal))
