"""`/api/v1/audit_logs`: the Datafold-compatible read (streamed) and the ingest endpoint."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from functools import partial
from typing import Annotated, Any

import anyio.to_thread
from anyio import CapacityLimiter
from anyio.lowlevel import RunVar
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute

try:  # FastAPI's telemetry hooks are recent (0.165 has them); pyproject allows fastapi>=0.115, which has none
    from fastapi.telemetry import get_telemetry_data
except ImportError:  # pragma: no cover - only with an older FastAPI
    get_telemetry_data = None  # type: ignore[assignment]

from auditkeep.api.deps import (
    CurrentPrincipal,
    StorageDep,
    admit,
    api_key_header,
    authorize,
    authorize_in_thread,
    get_storage,
    origin_of,
)
from auditkeep.api.log_responses import log_response
from auditkeep.api.metrics import EVENTS_ACCEPTED
from auditkeep.api.query_params import LogParams, LogParamsDep, Unsure, plain_datetime, plain_log_params
from auditkeep.api.timerange import QueryDateTime, parse_range
from auditkeep.auth.keys import parse_authorization
from auditkeep.auth.principals import Principal, Scope
from auditkeep.errors import PayloadTooLargeError
from auditkeep.ingest.pipeline import ingest_body
from auditkeep.ingest.read_rules import cursor_keys, trace_poll, trace_walk
from auditkeep.ingest.selfaudit import Origin
from auditkeep.schemas.audit_logs import ApiGetAuditLogs
from auditkeep.schemas.events import MAX_BODY_BYTES, IngestResponse
from auditkeep.storage import Storage
from auditkeep.storage.pages import RequestConnection

router = APIRouter(tags=["Audit Logs"])

# Reads run in threads of their own, at most READ_THREADS at once per process (issue #11). In the default
# thread pool, 45 concurrent reads held all of its 40 tokens, so the key lookup of every other request,
# ingest's included, queued behind them; and every runnable reader thread is one more taker of the GIL
# from ingest's. bench/load.py, 45 readers and paced ingest, one SQLite worker (load ~8, one run each):
# 8 threads 174 reads/s alone, 2,451 events/s of ingest beside them; 16: 222 and 2,865; 40: 203-254 and
# 1,675-1,782 (docs/benchmarks.md, "Load").
READ_THREADS = 16
_READS: RunVar[CapacityLimiter] = RunVar("auditkeep_read_threads")


def _read_threads() -> CapacityLimiter:
    try:
        return _READS.get()
    except LookupError:
        limiter = CapacityLimiter(READ_THREADS)
        _READS.set(limiter)
        return limiter


class _ReadRoute(APIRoute):
    """The read's route: FastAPI's, with its declared parameters (so /openapi.json describes them), but a
    request whose parameters are plainly valid skips FastAPI's dependency machinery (issue #11, "CPU per
    read" in docs/benchmarks.md): they are parsed by `plain_log_params` and the endpoint is called with what
    FastAPI would have passed it. Any other request (a value FastAPI must judge, dependency overrides, or
    FastAPI's telemetry switched on) goes through FastAPI's own handler, so its 422s are FastAPI's."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        declared = super().get_route_handler()

        async def handler(request: Request) -> Response:
            telemetry = get_telemetry_data is not None and get_telemetry_data() is not None
            if not telemetry and not request.app.dependency_overrides:
                query = request.query_params
                try:
                    params = plain_log_params(query, request.headers)
                    start_date = plain_datetime(query.get("start_date"))
                    end_date = plain_datetime(query.get("end_date"))
                except Unsure:
                    pass
                else:
                    return await get_audit_logs(request=request, authorization=await api_key_header(request),
                                                storage=await get_storage(request), params=params,
                                                start_date=start_date, end_date=end_date)
            return await declared(request)

        return handler


async def get_audit_logs(
    *,
    request: Request,
    authorization: Annotated[str | None, Depends(api_key_header)],
    storage: StorageDep,
    params: LogParamsDep,
    start_date: Annotated[QueryDateTime | None, Query(description="Alternative to the body's start_date")] = None,
    end_date: Annotated[QueryDateTime | None, Query(description="Alternative to the body's end_date")] = None,
) -> StreamingResponse:
    """Audit logs of the caller's organization in [start_date, end_date), oldest first, streamed.

    Extensions (issue #4): filters, `order`, `limit` + `cursor` paging, `after_seq` polling, formats.
    """
    start, end = parse_range(await request.body(), start_date, end_date)
    read = partial(_recorded_read, request, storage, parse_authorization(authorization), params=params,
                   start=start, end=end)
    return await anyio.to_thread.run_sync(read, limiter=_read_threads())


# Added here, not with @router.get (which takes no route class), so the route keeps its place before the POST's.
router.add_api_route("/api/v1/audit_logs", get_audit_logs, methods=["GET"], response_model=ApiGetAuditLogs,
                     summary="Get Audit Logs",
                     responses={200: {"content": {"application/x-ndjson": {}, "text/csv": {}}}},
                     route_class_override=_ReadRoute)


def _recorded_read(request: Request, storage: Storage, key: str | None, *, params: LogParams,
                   start: str | None, end: str | None) -> StreamingResponse:
    """Admit the caller (the key, the rate limits: api/deps.admit) and authorize the read, record it (unless
    its walk's or poll session's record covers it: ingest/read_rules.py), then plan and encode its page
    while the record is flushed; return once the record is on disk (ingest/reads.py).

    One worker thread for all of it: each hop between the event loop and a thread cost ~0.5 ms on a busy
    machine (docs/benchmarks.md), and the key lookup had a hop of its own until issue #11's CPU per read.
    So this route, unlike the others, checks its parameters (422) before the key (401, 429). Without
    replicas the key lookup and the page share one connection (storage.pages.RequestConnection, issue #14);
    with them the page is read on a replica once its record is committed and the replica holds it
    (storage/replicas.py), and the key lookup, the record and cursor keys go to the primary."""
    shared = RequestConnection(storage) if storage.replicas is None else None
    try:
        principal = admit(request, storage, key, None if shared is None else shared.lookup)
        authorize_in_thread(request, storage, principal, Scope.READ)
        return _read(storage, principal, origin_of(request), params=params, start=start, end=end,
                     path=request.url.path, shared=shared)
    finally:
        if shared is not None:
            shared.close()


def _read(storage: Storage, principal: Principal, origin: Origin, *, params: LogParams, start: str | None,
          end: str | None, path: str, shared: RequestConnection | None) -> StreamingResponse:
    query = params.query(principal.org_id, start, end)
    stated: dict[str, Any] = {"start_date": query.start, "end_date": query.end, "format": params.format}
    if params.given:
        stated["query"] = {k: v for k, v in params.given.items() if k != "after_seq"}
    entry = f"{principal.describe()} read the audit log"
    if params.after_seq is not None:
        trace = trace_poll(storage, origin, actor=principal, log_entry=entry, query=stated,
                           after_seq=params.after_seq)
        response = log_response(storage.for_read(), params, query, path, tenant=principal.org_name,
                                shared=shared)
    else:
        keys = cursor_keys(storage, principal.org_id)  # the current one, which signs new cursors, first
        key = keys[0]
        trace = trace_walk(storage, origin, actor=principal, log_entry=entry, query=stated,
                           mark=params.walk_mark(keys), snapshot=query.max_seq, keys=keys)
        through = None
        if trace.record is not None and query.max_seq is None:  # a new walk reads through its own record
            through = (trace.record.uuid, trace.record.timestamp)
        response = log_response(storage.for_read(), params, query, path, tenant=principal.org_name,
                                through_event=through, shared=shared,
                                walk=None if trace.walk is None else (trace.walk, key))
    trace.wait_durable()
    return response


async def _read_body(request: Request) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise PayloadTooLargeError(f"request body over {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PayloadTooLargeError(f"request body over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


_INGEST_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "anyOf": [
                        {"$ref": "#/components/schemas/AuditLogCreate"},
                        {"type": "array", "items": {"$ref": "#/components/schemas/AuditLogCreate"},
                         "maxItems": 10_000},
                    ],
                    "title": "Events",
                }
            }
        },
    }
}


@router.post(
    "/api/v1/audit_logs",
    status_code=201,
    response_model=IngestResponse,
    summary="Record Audit Logs",
    openapi_extra=_INGEST_OPENAPI,
    responses={
        409: {"description": "An event_uuid is already recorded with different content"},
        413: {"description": "More than 10,000 events or 16 MB"},
        422: {"description": "Validation Error (nothing was stored)"},
    },
)
async def post_audit_logs(request: Request, principal: CurrentPrincipal, storage: StorageDep) -> JSONResponse:
    """Record one event or an array of events, all or nothing. A 201 means they are durable.

    The answer lists every event's `event_uuid` in input order, and counts them: `accepted` were stored
    by this request, `already_present` were recorded before with the same `event_uuid` and content (or
    repeat one earlier in the same request) and are not stored again.
    """
    await authorize(request, storage, principal, Scope.WRITE)
    body = await _read_body(request)
    recorded = await ingest_body(storage, principal.org_id, body)
    EVENTS_ACCEPTED.inc(len(recorded.event_uuids))
    return JSONResponse({"event_uuids": recorded.event_uuids, "accepted": recorded.accepted,
                         "already_present": recorded.already_present}, status_code=201)
