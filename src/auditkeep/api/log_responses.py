"""Bodies and paging headers of `GET /api/v1/audit_logs`: JSON (the seed's), NDJSON, CSV and OCSF, all streamed
in constant memory, zstd- or gzip-encoded when the client accepts it (issue #4, #10, #14: api/encoding.py).

Every format is assembled from texts the database builds per row, JSON objects or CSV records (the
export's speed, see docs/benchmarks.md); Python only joins them.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlencode

import orjson
from fastapi.responses import StreamingResponse

from auditkeep.api.encoding import encoded_response
from auditkeep.api.query_params import Cursor, Format, LogParams
from auditkeep.ingest.read_rules import WalkMark
from auditkeep.schemas.audit_logs import LOG_FIELDS
from auditkeep.storage import Storage
from auditkeep.storage.coverage import range_skips_inside
from auditkeep.storage.events import iter_log_csv, iter_log_json
from auditkeep.storage.pages import Page, RequestConnection, plan_page
from auditkeep.storage.queries import LogFilters, LogQuery
from auditkeep.streams import ocsf

CONTENT_TYPES: dict[Format, str] = {
    "json": "application/json",
    "ndjson": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
}
_INTEGRITY_FIELDS = ("seq", "prev_hash", "hash", "personal_salt", "personal_commitment")


def _json_chunks(storage: Storage, page: Page) -> Iterator[list[str]]:
    if page.prefetched is not None:
        yield page.prefetched
    else:
        yield from iter_log_json(storage, page.query)


def stream_json(storage: Storage, page: Page, statement: bytes | None = None) -> Iterator[bytes]:
    """`{"logs": [...]}`, assembled from database-built JSON objects chunk by chunk; with a query
    statement, `{"query": {...}, "logs": [...]}` (the statement first, so a cut-off file keeps it)."""
    yield b'{"query":' + statement + b',"logs":[' if statement is not None else b'{"logs":['
    sep = ""
    for chunk in _json_chunks(storage, page):
        if not chunk:
            continue
        yield (sep + ",".join(chunk)).encode()
        sep = ","
    yield b"]}"


def stream_ndjson(storage: Storage, page: Page, statement: bytes | None = None) -> Iterator[bytes]:
    """One JSON object a line; with a query statement, `{"query": {...}}` is the first line."""
    if statement is not None:
        yield b'{"query":' + statement + b"}\n"
    for chunk in _json_chunks(storage, page):
        if chunk:
            yield ("\n".join(chunk) + "\n").encode()


def stream_csv(storage: Storage, page: Page, statement: bytes | None = None) -> Iterator[bytes]:
    """RFC 4180 CSV: a header of the field names, then one record a log. Text cells are quoted, so null
    (an empty cell) differs from "" (`""`); booleans true/false; payload as JSON text. CSV has no place
    for a query statement: a verifier holds a CSV export to completeness (docs/integrity.md §6)."""
    header = (*LOG_FIELDS, *_INTEGRITY_FIELDS) if page.query.integrity else LOG_FIELDS
    yield (",".join(header) + "\r\n").encode()
    for chunk in iter_log_csv(storage, page.query):
        if chunk:
            yield ("\r\n".join(chunk) + "\r\n").encode()


def stream_ocsf(storage: Storage, page: Page, tenant: str) -> Iterator[bytes]:
    """NDJSON of OCSF objects, the bytes an `ocsf` stream sends for the same events (streams/ocsf.py)."""
    for chunk in _json_chunks(storage, page):
        if chunk:
            yield ("\n".join(ocsf.convert(chunk, tenant)) + "\n").encode()


_STREAMS = {"json": stream_json, "ndjson": stream_ndjson, "csv": stream_csv}


_FILTERS = frozenset(LogFilters.__dataclass_fields__) - {"action_prefix"}


def _walk_filtered(storage: Storage, params: LogParams, page: Page, walk: tuple[WalkMark, bytes] | None) -> bool:
    """Whether the export's walk is `filtered` (see `_statement`). A later page of the same recorded walk
    (its cursor authentic and bound to this reader and query: ingest/read_rules.trace_walk) takes it from
    the cursor, so the range is scanned once per walk, not once per page; any other page decides afresh."""
    if any(name in _FILTERS for name in params.given):
        return True
    cursor = params.cursor
    if (cursor is not None and cursor.filtered is not None and walk is not None
            and cursor.walk is not None and cursor.walk == walk[0]):
        return cursor.filtered
    q = page.query
    return q.max_seq is not None and range_skips_inside(storage, q.org_id, q.start, q.end, q.max_seq)


def _statement(params: LogParams, page: Page, filtered: bool) -> bytes:
    """The query that produced an include=integrity export, so a verifier can tell whether seqs absent
    between the ones it holds were left out by the query (`filtered`) or removed (issue #9).

    `filtered` describes the whole walk (its range and filters, at its snapshot), not one page: the
    pages of one export all say the same. Limit, cursor and after_seq's window only cut a walk where
    the next page continues it, so they never make it filtered. Not signed: docs/integrity.md §8.
    """
    q = page.query
    filters = {name: value for name, value in params.given.items() if name in _FILTERS}
    statement = {
        "start_date": q.start, "end_date": q.end, "filters": filters,
        "order": "seq" if q.by_seq else "desc" if q.descending else "asc",
        "after_seq": q.after_seq, "cursor": params.cursor is not None, "limit": q.limit,
        "filtered": filtered,
    }
    return orjson.dumps(statement)


def _link(path: str, params: LogParams, page: Page, start: str | None, end: str | None, *,
          walk: tuple[WalkMark, bytes] | None, filtered: bool | None = None) -> str | None:
    """The `Link` header for the next page (a path-absolute reference, RFC 8288), or None; its cursor
    names the recorded `walk` and is signed with its key."""
    if not page.more:
        return None
    query: dict[str, str] = {k: v for k, v in params.given.items() if k not in {"cursor", "after_seq"}}
    if start is not None:
        query["start_date"] = start
    if end is not None:
        query["end_date"] = end
    if page.query.by_seq:
        assert page.last_seq is not None
        query["after_seq"] = str(page.last_seq)
    else:
        assert page.next_after is not None and page.query.max_seq is not None
        mark, key = walk if walk is not None else (None, None)
        query["cursor"] = Cursor(page.next_after, page.query.max_seq, page.query.descending, mark,
                                 filtered=filtered if mark is not None else None).encode(key)
    return f'<{path}?{urlencode(query)}>; rel="next"'


def log_response(storage: Storage, params: LogParams, page_query: LogQuery, path: str, *, tenant: str,
                 walk: tuple[WalkMark, bytes] | None = None,
                 through_event: tuple[str, str] | None = None,
                 shared: RequestConnection | None = None) -> StreamingResponse:
    """Plan the page (snapshot, page end: headers go first), then stream it in the asked format.

    `tenant`: the organization's name (OCSF's metadata.tenant_uid); `walk`: the recorded walk (and the key)
    its next page's cursor names; `through_event`: the record a new walk's snapshot ends at
    (storage.pages.plan_page); `shared`: the request's connection to plan on (storage.pages.RequestConnection).
    Blocking (it reads the database): call it in a worker thread.
    """
    page = plan_page(storage, page_query, prefetch_json=params.format != "csv", through_event=through_event,
                     shared=shared)
    # The body depends on Accept (format) and Accept-Encoding (api/encoding.py adds it).
    headers: dict[str, str] = {"Vary": "Accept"}
    if page.last_seq is not None:
        headers["X-Last-Seq"] = str(page.last_seq)
    statement = filtered = None
    if page_query.integrity and params.format in ("json", "ndjson"):
        filtered = _walk_filtered(storage, params, page, walk)
        statement = _statement(params, page, filtered)
    if (link := _link(path, params, page, page_query.start, page_query.end, walk=walk,
                      filtered=filtered)) is not None:
        headers["Link"] = link
    body: Iterator[bytes]
    if params.format == "ocsf":
        body = stream_ocsf(storage, page, tenant)
    else:
        body = _STREAMS[params.format](storage, page, statement)
    media_type = "application/x-ndjson" if params.format == "ocsf" else CONTENT_TYPES[params.format]
    return encoded_response(body, params.coding, media_type=media_type, headers=headers,
                            in_memory=page.prefetched is not None)
