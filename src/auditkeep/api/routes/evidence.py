"""`GET /api/v1/evidence`: an evidence bundle (issue #12), streamed as a zip; the same content as
`auditkeep evidence`. Admin or `audit_logs:read`; making one is recorded as `evidence.export`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from auditkeep.api.deps import CurrentPrincipal, StorageDep, authorize, origin_of
from auditkeep.api.query_params import LogParamsDep
from auditkeep.api.timerange import QueryDateTime, parse_range
from auditkeep.auth.principals import Scope
from auditkeep.evidence.making import bundle_request, plan_bundle, write_bundle

router = APIRouter(tags=["Evidence"])


@router.get("/api/v1/evidence", summary="Evidence bundle", response_class=StreamingResponse,
            responses={200: {"content": {"application/zip": {}}, "description": "The bundle (a zip)"}})
async def get_evidence(
    *,
    request: Request,
    principal: CurrentPrincipal,
    storage: StorageDep,
    params: LogParamsDep,
    start_date: Annotated[QueryDateTime | None, Query(description="From (inclusive; naive = UTC)")] = None,
    end_date: Annotated[QueryDateTime | None, Query(description="Until (exclusive)")] = None,
) -> StreamingResponse:
    """The events of `[start_date, end_date)` matching the filters of GET /api/v1/audit_logs, with the signed
    checkpoints around them, proofs, the public key, README.txt and report.html: check it offline with
    `auditkeep verify-bundle` (docs/integrity.md §12). Paging, order and format parameters do not apply."""
    start, end = parse_range(b"", start_date, end_date)
    await authorize(request, storage, principal, Scope.READ)
    bundle = bundle_request(start, end, params.filters, params.given)
    plan = await run_in_threadpool(plan_bundle, storage, principal.org_id, bundle, origin_of(request),
                                   actor=principal)
    return StreamingResponse(write_bundle(storage, plan), media_type="application/zip",
                             headers={"Content-Disposition": f'attachment; filename="{plan.filename}"'})
