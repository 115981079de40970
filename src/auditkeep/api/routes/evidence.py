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
from auditkeep.api.query_params import Q_DESCRIPTION, LogParams, SafeId, Text, log_params
from auditkeep.api.timerange import QueryDateTime, parse_range
from auditkeep.auth.principals import Scope
from auditkeep.evidence.making import FILTER_NAMES, bundle_request, plan_bundle, write_bundle
from auditkeep.storage.search import MIN_QUERY_LENGTH

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


def _filters(
    *,
    action: Annotated[str | None, Query(max_length=256, description="Exact action, or a prefix ending in `*`")]
    = None,
    user_email: Text = None,
    user_id: SafeId = None,
    object_type: Text = None,
    object_id: SafeId = None,
    source: Text = None,
    status: Text = None,
    request_type: Text = None,
    is_support_user: bool | None = None,
    client_ip: Annotated[str | None, Query(max_length=64, description="An address or a CIDR range")] = None,
    q: Annotated[str | None, Query(min_length=MIN_QUERY_LENGTH, max_length=1024, description=Q_DESCRIPTION)]
    = None,
) -> LogParams:
    """GET /api/v1/audit_logs's filters, parsed by its own parser, and nothing else (so OpenAPI lists only them)."""
    return log_params(action=action, user_email=user_email, user_id=user_id, object_type=object_type,
                      object_id=object_id, source=source, status=status, request_type=request_type,
                      is_support_user=is_support_user, client_ip=client_ip, q=q)


@router.get("/api/v1/evidence", summary="Evidence bundle", response_class=StreamingResponse,
            dependencies=[Depends(_only_taken)],
            responses={200: {"content": {"application/zip": {}}, "description": "The bundle (a zip)"}})
async def get_evidence(
    *,
    request: Request,
    principal: CurrentPrincipal,
    storage: StorageDep,
    params: Annotated[LogParams, Depends(_filters)],
    start_date: Annotated[QueryDateTime | None, Query(description="From (inclusive; naive = UTC)")] = None,
    end_date: Annotated[QueryDateTime | None, Query(description="Until (exclusive)")] = None,
) -> StreamingResponse:
    """The events of `[start_date, end_date)` matching the filters of GET /api/v1/audit_logs, with the signed
    checkpoints around them, proofs, the public key, README.txt and report.html: check it offline with
    `auditkeep verify-bundle` (docs/integrity.md §12). Any other parameter (paging, order, format, or a name
    it does not know) is a 422."""
    start, end = parse_range(b"", start_date, end_date)
    await authorize(request, storage, principal, Scope.READ)
    bundle = bundle_request(start, end, params.filters, params.given)
    plan = await run_in_threadpool(plan_bundle, storage, principal.org_id, bundle, origin_of(request),
                                   actor=principal)
    return StreamingResponse(write_bundle(storage, plan), media_type="application/zip",
                             headers={"Content-Disposition": f'attachment; filename="{plan.filename}"'})
