"""`/api/v1/streams`: deliver the organization's events to a SIEM, bus or store (issue #10; docs/streams.md).

Admins only: a stream sends the whole log (or a filtered part) somewhere else, which is a bigger grant
than reading it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from auditkeep.api.deps import CurrentPrincipal, StorageDep, authorize_admin, origin_of
from auditkeep.schemas.streams import StreamCreate, StreamPublic, StreamUpdate
from auditkeep.storage import streams as store
from auditkeep.streams import service

router = APIRouter(prefix="/api/v1/streams", tags=["Streams"])


@router.post("", status_code=201, summary="Create a stream")
async def create_stream(request: Request, principal: CurrentPrincipal, storage: StorageDep,
                        spec: StreamCreate) -> StreamPublic:
    """Start delivering events from `start_seq` (null: the next one stored) to the destination."""
    await authorize_admin(request, storage, principal)
    origin = origin_of(request)
    return await run_in_threadpool(
        lambda: service.create(storage, principal.org_id, spec, origin=origin, actor=principal))


@router.get("", summary="List streams")
async def list_streams(request: Request, principal: CurrentPrincipal, storage: StorageDep) -> dict[str, Any]:
    """`{"streams": [...]}` with each one's state, cursor and lag."""
    await authorize_admin(request, storage, principal)

    def run() -> list[StreamPublic]:
        with storage.read() as conn:
            rows = store.list_for_org(conn, principal.org_id)
        return [service.public(storage, row) for row in rows]

    return {"streams": await run_in_threadpool(run)}


@router.get("/{stream_id}", summary="One stream")
async def get_stream(stream_id: str, request: Request, principal: CurrentPrincipal,
                     storage: StorageDep) -> StreamPublic:
    await authorize_admin(request, storage, principal)

    def run() -> StreamPublic:
        with storage.read() as conn:
            row = store.get(conn, principal.org_id, stream_id)
        return service.public(storage, row)

    return await run_in_threadpool(run)


@router.patch("/{stream_id}", summary="Pause, resume, replay or change a stream")
async def update_stream(stream_id: str, request: Request, principal: CurrentPrincipal, storage: StorageDep,
                        change: StreamUpdate) -> StreamPublic:
    """`{"state": "paused"|"active"}`, `{"replay_from_seq": N}`, `{"config": {...}}` (merged; secrets
    left out are kept), `{"filter": {...}}`, `{"name": ...}`, `{"format": ...}`."""
    await authorize_admin(request, storage, principal)
    origin = origin_of(request)
    try:
        return await run_in_threadpool(
            lambda: service.update(storage, principal.org_id, stream_id, change, origin=origin, actor=principal))
    except ValidationError as exc:  # the merged config does not fit the stream's kind
        raise RequestValidationError(
            [{**e, "loc": ("body", "config", *e["loc"])} for e in exc.errors(include_url=False)]) from None


@router.delete("/{stream_id}", status_code=204, summary="Delete a stream")
async def delete_stream(stream_id: str, request: Request, principal: CurrentPrincipal,
                        storage: StorageDep) -> Response:
    await authorize_admin(request, storage, principal)
    origin = origin_of(request)
    await run_in_threadpool(lambda: service.delete(storage, principal.org_id, stream_id, origin=origin,
                                                   actor=principal))
    return Response(status_code=204)


@router.post("/{stream_id}/test", summary="Send one test event")
async def test_stream(stream_id: str, request: Request, principal: CurrentPrincipal,
                      storage: StorageDep) -> dict[str, Any]:
    """Send a record marked `"test": true` (action `auditkeep.stream_test`) now, outside the cursor:
    `{"delivered": true}` or `{"delivered": false, "error": "..."}`. Recorded as a `stream.test` event."""
    await authorize_admin(request, storage, principal)
    origin = origin_of(request)
    return await run_in_threadpool(
        lambda: service.send_test(storage, principal.org_id, stream_id, origin=origin, actor=principal))
