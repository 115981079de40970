"""`/api/v1/saved_searches`: named filter sets of the organization (issue #13), for anyone who may read
the log (they hold filters, not events). Creating and deleting one is a self-audit event."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from auditkeep import saved_searches as service
from auditkeep.api.deps import CurrentPrincipal, StorageDep, authorize, origin_of
from auditkeep.auth.principals import Scope
from auditkeep.schemas.errors import HTTPError
from auditkeep.schemas.stats import SavedSearchCreate, SavedSearchList, SavedSearchPublic

router = APIRouter(prefix="/api/v1/saved_searches", tags=["Saved searches"])


@router.post("", status_code=201, summary="Save a search", responses={409: {
    "model": HTTPError, "description": "The name is taken, or the organization keeps 200 saved searches"}})
async def create_saved_search(request: Request, principal: CurrentPrincipal, storage: StorageDep,
                              spec: SavedSearchCreate) -> SavedSearchPublic:
    """Store `query` (the filters as a query string; paging parameters are dropped) under `name`, unique in
    the organization (409 otherwise); recorded as `saved_search.create`. Open it as
    `GET /api/v1/audit_logs?{query}` or in the console at `/audit-logs?{query}`."""
    await authorize(request, storage, principal, Scope.READ)
    origin = origin_of(request)
    return await run_in_threadpool(
        lambda: service.create(storage, principal.org_id, spec, origin=origin, actor=principal))


@router.get("", summary="List saved searches")
async def list_saved_searches(request: Request, principal: CurrentPrincipal,
                              storage: StorageDep) -> SavedSearchList:
    """`{"saved_searches": [...]}` of the caller's organization, by name."""
    await authorize(request, storage, principal, Scope.READ)
    found = await run_in_threadpool(lambda: service.list_searches(storage, principal.org_id))
    return SavedSearchList(saved_searches=found)


@router.get("/{search_id}", summary="One saved search")
async def get_saved_search(search_id: str, request: Request, principal: CurrentPrincipal,
                           storage: StorageDep) -> SavedSearchPublic:
    await authorize(request, storage, principal, Scope.READ)
    return await run_in_threadpool(lambda: service.get(storage, principal.org_id, search_id))


@router.delete("/{search_id}", status_code=204, summary="Delete a saved search")
async def delete_saved_search(search_id: str, request: Request, principal: CurrentPrincipal,
                              storage: StorageDep) -> Response:
    """Recorded as `saved_search.delete`; 404 for an unknown id or another organization's."""
    await authorize(request, storage, principal, Scope.READ)
    origin = origin_of(request)
    await run_in_threadpool(
        lambda: service.delete(storage, principal.org_id, search_id, origin=origin, actor=principal))
    return Response(status_code=204)
