"""`GET /api/v1/audit_logs/stats`: events and failures per time bucket and the top values of one field,
for the same range and filters as `GET /api/v1/audit_logs` (issue #13, storage/stats.py)."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Query, Request

from auditkeep.api.deps import CurrentPrincipal, StorageDep, authorize, origin_of
from auditkeep.api.query_params import FilterParamsDep
from auditkeep.api.timerange import QueryDateTime, parse_range
from auditkeep.auth.principals import Scope
from auditkeep.ingest.reads import record_read
from auditkeep.schemas.stats import AuditLogStats
from auditkeep.storage import stats
from auditkeep.storage.queries import LogQuery

router = APIRouter(tags=["Audit Logs"])


@router.get("/api/v1/audit_logs/stats", summary="Audit log activity", response_model=AuditLogStats)
async def get_stats(
    *,
    request: Request,
    principal: CurrentPrincipal,
    storage: StorageDep,
    interval: Annotated[stats.Interval, Query(description="Bucket width (UTC)")] = "hour",
    group_by: Annotated[stats.GroupBy, Query(description="The field whose most frequent values `top` lists")]
    = "action",
    start_date: Annotated[QueryDateTime | None, Query(description="Inclusive; as the read's")] = None,
    end_date: Annotated[QueryDateTime | None, Query(description="Exclusive; as the read's")] = None,
    filtered: FilterParamsDep,
) -> AuditLogStats:
    """Counts of the events `GET /api/v1/audit_logs` would return for the same range and filters: per
    `interval` bucket (with `failures`: events whose status is exactly `failure`), and the most frequent
    values of `group_by`. Recorded as an `audit_logs.read` event with `"mode": "stats"`, like any read:
    counts reveal what the log holds."""
    start, end = parse_range(await request.body(), start_date, end_date)
    await authorize(request, storage, principal, Scope.READ)
    origin = origin_of(request)
    query = LogQuery(org_id=principal.org_id, start=start, end=end, filters=filtered.filters)

    def run() -> AuditLogStats:
        record = record_read(storage, principal.org_id, origin, actor=principal,
                             log_entry=f"{principal.describe()} read the audit log's statistics",
                             payload={"mode": "stats", "start_date": start, "end_date": end,
                                      "query": filtered.given, "interval": interval, "group_by": group_by})
        # After the record's commit: a replica serves the read only once it holds that record (issue #14).
        result = stats.activity(storage.for_read(), query, interval, group_by)
        record.wait_durable()
        return AuditLogStats.model_validate(
            {"buckets": [{"start": b.start, "count": b.count, "failures": b.failures} for b in result.buckets],
             "top": [{"value": t.value, "count": t.count} for t in result.top]})

    return await anyio.to_thread.run_sync(run)
