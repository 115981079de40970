"""`GET /api/v1/evidence`: an evidence bundle (issue #12), streamed as a zip; the same content as
`auditkeep evidence`. Admin or `audit_logs:read`; making one is recorded as `evidence.export`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from auditkeep.api.deps import CurrentPrincipal, StorageDep, authorize, origin_of
from auditkeep.api.query_params import FilterParamsDep
from auditkeep.api.timerange import QueryDateTime, parse_range
from auditkeep.auth.principals import Scope
from auditkeep.evidence.making import FILTER_NAMES, bundle_request, plan_bundle, write_bundle

router = APIRouter(tags=["Evidence"])
_TAKEN = frozenset((*FILTER_NAMES, "start_date", "end_date"))


def _only_taken(request: Request) -> None:
    """422 for any query parameter a bundle does not take. GET /api/v1/audit_logs ignores unknown names (as
    the Datafold API it serves does); a bundle is evidence, so a misspelt filter or a `limit` that would
    silently widen or not cut it is refused instead (FastAPI's error shape, one entry per parameter)."""
    unknown = [name for name in request.query_params if name not in _TAKEN]
    if unknown:
        raise RequestValidationError([
            {"type": "extra_forbidden", "loc": ["query", name], "input": request.query_params[name],
             "msg": "not a parameter of GET /api/v1/evidence (it takes start_date, end_date and the filters of "
                    "GET /api/v1/audit_logs; paging, order and format do not apply to a bundle)"}
            for name in dict.fromkeys(unknown)])


@router.get("/api/v1/evidence", summary="Evidence bundle", response_class=StreamingResponse,
            dependencies=[Depends(_only_taken)],
            responses={200: {"content": {"application/zip": {}}, "description": "The bundle (a zip)"}})
async def get_evidence(
    *,
    request: Request,
    principal: CurrentPrincipal,
    storage: StorageDep,
    filtered: FilterParamsDep,
    start_date: Annotated[QueryDateTime | None, Query(description="From (inclusive; naive = UTC)")] = None,
    end_date: Annotated[QueryDateTime | None, Query(description="Until (exclusive)")] = None,
) -> StreamingResponse:
    """The events of `[start_date, end_date)` matching the filters of GET /api/v1/audit_logs, with the signed
    checkpoints around them, proofs, the public key, README.txt and report.html: check it offline with
    `auditkeep verify-bundle` (docs/integrity.md §12). Any other parameter (paging, order, format, or a name
    it does not know) is a 422."""
    start, end = parse_range(b"", start_date, end_date)
    await authorize(request, storage, principal, Scope.READ)
    bundle = bundle_request(start, end, filtered.filters, filtered.given)
    plan = await run_in_threadpool(plan_bundle, storage, principal.org_id, bundle, origin_of(request),
                                   actor=principal)
    # After the plan's checkpoint and record are committed: a replica holding them serves the reading
    # (storage/replicas.py, issue #14).
    reader = await run_in_threadpool(storage.for_read)
    return StreamingResponse(write_bundle(storage, plan, reader=reader), media_type="application/zip",
                             headers={"Content-Disposition": f'attachment; filename="{plan.filename}"'})
