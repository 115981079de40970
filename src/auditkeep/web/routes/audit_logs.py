"""`/audit-logs`: the table (newest first, paged by cursor), one event's detail, and exports.

Admins only. Every view is self-audited as `audit_logs.read` with source "web", like API reads.
"""

from __future__ import annotations

import re
from dataclasses import replace
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import Response

from auditkeep import saved_searches
from auditkeep.api.deps import StorageDep
from auditkeep.api.encoding import encoded_response, negotiate
from auditkeep.ingest.reads import record_read
from auditkeep.storage import Storage
from auditkeep.storage.sessions import ConsoleSession
from auditkeep.web import insight, queries
from auditkeep.web.deps import AdminSession, web_origin
from auditkeep.web.errors import PageNotFound
from auditkeep.web.queries import EXPORT_FORMATS, FilterError, LogFilter
from auditkeep.web.security import ConsoleRoute
from auditkeep.web.signin import utcnow
from auditkeep.web.templating import render

router = APIRouter(route_class=ConsoleRoute)


def _read_audited(
    request: Request, storage: Storage, session: ConsoleSession, what: str, payload: dict[str, object]
) -> None:
    me = session.principal
    record_read(storage, me.org_id, web_origin(request), actor=me,
                log_entry=f"{me.describe().capitalize()} {what} in the console", payload=payload).wait_durable()


def _page_size(value: str | None) -> int:
    return int(value) if value and value.isdigit() and int(value) in queries.PAGE_SIZES else (
        queries.DEFAULT_PAGE_SIZE
    )


def _url(path: str, params: dict[str, str]) -> str:
    return f"{path}?{urlencode(params)}" if params else path


@router.get("/audit-logs")
def audit_log_page(request: Request, storage: StorageDep, session: AdminSession) -> Response:
    """The table of the organization's events, newest first, one page at a time."""
    params = dict(request.query_params)
    f = LogFilter.from_params(params)
    limit = _page_size(params.get("limit"))
    cursor = params.get("cursor") or None
    error = None
    logs: list[dict[str, object]] = []
    next_cursor = None
    chart = None
    now = utcnow()
    reader = storage.for_read()  # a replica holding every write so far (storage/replicas.py), else the primary
    try:
        logs, next_cursor = queries.log_page(reader, session.principal.org_id, f, cursor=cursor, limit=limit,
                                             now=now)
        chart = insight.chart(reader, session.principal.org_id, f, now)
    except FilterError as exc:
        error = str(exc)
    _read_audited(request, storage, session, "viewed the audit log",
                  {"filter": f.params(), "page_size": limit, "page": "next" if cursor else "first"})
    keep = f.params() | ({"limit": str(limit)} if limit != queries.DEFAULT_PAGE_SIZE else {})
    return render(
        request, "audit_logs.html", session, status_code=400 if error else 200,
        f=f, logs=logs, error=error, limit=limit, ranges=queries.RANGES, page_sizes=queries.PAGE_SIZES,
        # Detail links carry the list's filter and page, so "back" returns to the same rows.
        query=urlencode(keep | ({"cursor": cursor} if cursor else {})), is_first_page=cursor is None,
        next_url=_url("/audit-logs", keep | {"cursor": next_cursor}) if next_cursor else None,
        first_url=_url("/audit-logs", keep),
        # The "Show reads" switch: the same view with audit_logs.read events shown or hidden (issue #9).
        reads_url=_url("/audit-logs", replace(f, reads="" if f.reads else "1").params()
                       | {k: v for k, v in keep.items() if k == "limit"}),
        clear_urls={name: _url("/audit-logs", f.without(name).params() | {"limit": str(limit)})
                    for name, _ in f.active_filters},
        export_urls={fmt: _url("/audit-logs/export", f.params() | {"format": fmt, "order": "desc"})
                     for fmt in EXPORT_FORMATS},
        integrity=queries.integrity_status(reader, session.principal.org_id),
        chart=chart, chart_width=insight.WIDTH, chart_height=insight.HEIGHT,
        saved_searches=saved_searches.list_searches(reader, session.principal.org_id),
        search_query=urlencode(f.params()), notes={k: params[k] for k in ("saved", "saved_error", "deleted_search")
                                                   if params.get(k)},
    )


@router.get("/audit-logs/export")
def export_logs(request: Request, storage: StorageDep, session: AdminSession) -> Response:
    """Every event the current filter matches, as a JSON, NDJSON or CSV download (streamed), newest first
    unless `order=asc`."""
    params = dict(request.query_params)
    fmt = params.get("format", "json")
    if fmt not in EXPORT_FORMATS:
        raise PageNotFound(f"There is no export format {fmt[:20]!r}; choose JSON, NDJSON or CSV.", session)
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise PageNotFound(f"There is no order {order[:20]!r}; choose asc or desc.", session)
    f = LogFilter.from_params(params)
    now = utcnow()
    try:
        f.bounds(now)
    except FilterError as exc:
        raise PageNotFound(str(exc), session) from None
    body = queries.export(storage.for_read(), session.principal.org_id, f, fmt, now, descending=order == "desc")
    _read_audited(request, storage, session, f"exported the audit log as {fmt.upper()}",
                  {"filter": f.params(), "format": fmt, "order": order})
    org = re.sub(r"[^A-Za-z0-9._-]+", "-", session.principal.org_name)[:60] or "org"
    filename = f"auditlog-{org}-{now:%Y%m%dT%H%M%SZ}.{fmt}"
    # Compressed as the API's exports are (api/encoding.py): browsers ask for zstd and gzip and save the
    # decoded bytes.
    return encoded_response(body, negotiate(request.headers.get("accept-encoding")), media_type=EXPORT_FORMATS[fmt],
                            headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@router.get("/audit-logs/{event_uuid}")
def audit_log_detail(event_uuid: str, request: Request, storage: StorageDep, session: AdminSession) -> Response:
    """One event with every field and its payload pretty-printed."""
    # On a replica holding every write so far (storage/replicas.py, issue #14); the record below, on the primary.
    log = queries.find_log(storage.for_read(), session.principal.org_id, event_uuid)
    if log is None:
        raise PageNotFound("There is no event with that id in your organization.", session)
    _read_audited(request, storage, session, f"viewed event {event_uuid}", {"event_uuid": event_uuid})
    back = {k: v for k, v in request.query_params.items()
            if k in {"cursor", "limit"} or k in LogFilter.__dataclass_fields__}
    return render(request, "audit_log_detail.html", session, log=log,
                  back_url=_url("/audit-logs", back))
