"""The audit log page's reads, built on the API's query layer (storage/queries.py, issue #4).

The page's form becomes the same LogFilters the API's query parameters do; pages are the API's snapshot
walks (newest first, `limit` rows, resuming after the last row shown with the walk's snapshot bound), so
a page never loads more than it shows and page 1,000 costs what page 1 does; exports are the API's
JSON, NDJSON and CSV bodies, streamed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from fastapi.exceptions import RequestValidationError

from auditkeep.api.log_responses import CONTENT_TYPES, stream_csv, stream_json, stream_ndjson
from auditkeep.api.query_params import Cursor
from auditkeep.ingest import checkpointing
from auditkeep.integrity.checkpoints import Checkpoint
from auditkeep.integrity.keyring import verify_with_ring
from auditkeep.storage import Storage, stats
from auditkeep.storage.events import get_head, iter_log_json
from auditkeep.storage.pages import plan_page
from auditkeep.storage.queries import LogFilters, LogQuery
from auditkeep.storage.search import MIN_QUERY_LENGTH
from auditkeep.storage.types import format_timestamp

RANGES: dict[str, tuple[str, timedelta | None]] = {
    "1h": ("Last hour", timedelta(hours=1)),
    "24h": ("Last 24 hours", timedelta(days=1)),
    "7d": ("Last 7 days", timedelta(days=7)),
    "all": ("All time", None),
    "custom": ("Custom range", None),
}
DEFAULT_RANGE = "7d"
PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50
EXPORT_FORMATS: dict[str, str] = dict(CONTENT_TYPES.items())
_STREAMS = {"json": stream_json, "ndjson": stream_ndjson, "csv": stream_csv}
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_MAX_FILTER = 320
READ_ACTION = "audit_logs.read"


class FilterError(ValueError):
    """The page's filter form holds something that cannot be searched for."""


@dataclass(frozen=True, slots=True)
class LogFilter:
    """The page's filter form: a time range (preset or custom, UTC) and the API's filters."""

    range: str = DEFAULT_RANGE
    start: str = ""  # custom range, "YYYY-MM-DDTHH:MM" as <input type="datetime-local"> sends it (UTC)
    end: str = ""
    q: str = ""  # text in the log entry or URL
    action: str = ""  # exact, or a prefix ending in "*"
    user_email: str = ""
    source: str = ""
    status: str = ""
    reads: str = ""  # "1": show audit_logs.read events, hidden by default (issue #9)

    @classmethod
    def from_params(cls, params: dict[str, str]) -> LogFilter:
        values = {f.name: params.get(f.name, "").replace("\x00", "").strip()[:_MAX_FILTER] for f in fields(cls)}
        if values["range"] not in RANGES:
            values["range"] = DEFAULT_RANGE
        values["reads"] = "1" if values["reads"] == "1" else ""
        return cls(**values)

    def params(self) -> dict[str, str]:
        """The filter as query parameters (empty ones left out), for links that keep it."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}
        if self.range != "custom":
            out.pop("start", None)
            out.pop("end", None)
        return out

    def without(self, name: str) -> LogFilter:
        return replace(self, **{name: ""})

    def bounds(self, now: datetime) -> tuple[str | None, str | None]:
        """[start, end) as API timestamp text; FilterError for an unreadable or reversed custom range."""
        if self.range == "all":
            return None, None
        span = RANGES[self.range][1]
        if span is not None:
            return format_timestamp(now - span), None
        start, end = _parse_local(self.start, "start"), _parse_local(self.end, "end")
        if start is not None and end is not None and end <= start:
            raise FilterError("The end of the range must come after its start.")
        return start, end

    def filters(self) -> LogFilters:
        """The API's filters for this form ("*" at the end of an action makes it a prefix); FilterError for
        a search text shorter than the search index serves."""
        if self.q and len(self.q) < MIN_QUERY_LENGTH:
            raise FilterError(f"Search for at least {MIN_QUERY_LENGTH} characters.")
        prefix = self.action[:-1] if self.action.endswith("*") else None
        return LogFilters(
            action=None if prefix is not None else self.action or None, action_prefix=prefix,
            user_email=self.user_email or None, source=self.source or None, status=self.status or None,
            q=self.q or None,
        )

    @property
    def hides_reads(self) -> bool:
        """Whether audit_logs.read events are left out: unless shown, or the action filter asks for them.
        Every read writes one, so they would drown what people look for (issue #9)."""
        if self.reads or self.action == READ_ACTION:
            return False
        return not (self.action.endswith("*") and READ_ACTION.startswith(self.action[:-1]))

    @property
    def active_filters(self) -> list[tuple[str, str]]:
        """(name, value) of the exact-match filters in use, for the page's filter chips."""
        names = ("q", "action", "user_email", "source", "status")
        return [(n, getattr(self, n)) for n in names if getattr(self, n)]


def _parse_local(value: str, which: str) -> str | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise FilterError(f"The {which} of the range is not a date and time (YYYY-MM-DD HH:MM).") from None
    return format_timestamp(moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment)


def _cursor(text: str) -> Cursor:
    try:
        cursor = Cursor.decode(text)
    except RequestValidationError:
        cursor = None
    if cursor is None or not cursor.descending:
        raise FilterError("That page link is not valid any more; start from the newest events.")
    return cursor


def log_query(org_id: int, f: LogFilter, now: datetime, **kwargs: Any) -> LogQuery:
    """The storage query of the page's filters (the table's, the export's and the chart's)."""
    start, end = f.bounds(now)
    if f.hides_reads:
        # The chart's stats serve this very clause from their rollup (storage/stats.py), so it is theirs.
        kwargs |= {"extra_where": (stats.HIDE_READS_WHERE,), "extra_params": (READ_ACTION,)}
    return LogQuery(org_id=org_id, start=start, end=end, filters=f.filters(), **kwargs)


def log_page(
    storage: Storage, org_id: int, f: LogFilter, *, cursor: str | None, limit: int, now: datetime
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of logs, newest first, and the cursor of the next page (None on the last page)."""
    after = _cursor(cursor) if cursor else None
    q = log_query(org_id, f, now, descending=True, limit=limit, after=after.position if after else None,
               max_seq=after.max_seq if after else None)
    page = plan_page(storage, q)
    logs = [orjson.loads(row) for chunk in iter_log_json(storage, page.query) for row in chunk]
    if not page.more or page.next_after is None or page.query.max_seq is None:
        return logs, None
    return logs, Cursor(page.next_after, page.query.max_seq, descending=True).encode()


def find_log(storage: Storage, org_id: int, event_uuid: str) -> dict[str, Any] | None:
    """One event of `org_id` (with seq and hashes), or None; another organization's uuid is None too."""
    if not _UUID.match(event_uuid):
        return None
    q = LogQuery(org_id=org_id, integrity=True, limit=1, extra_where=("event_uuid = ?",),
                 extra_params=(event_uuid.lower(),))
    rows = [row for chunk in iter_log_json(storage, q) for row in chunk]
    return dict(orjson.loads(rows[0])) if rows else None


def export(
    storage: Storage, org_id: int, f: LogFilter, fmt: str, now: datetime, *, descending: bool = True
) -> Iterator[bytes]:
    """Every log the filter matches as `fmt`, streamed: the bytes the API sends for the same query and
    `order` (newest first by default, as the page shows them; issue #9).

    The snapshot is fixed here, before the download starts: events recorded meanwhile (such as the
    self-audit of this export) are not in it.
    """
    page = plan_page(storage, log_query(org_id, f, now, descending=descending))
    return _STREAMS[fmt](storage, page)


@dataclass(frozen=True, slots=True)
class IntegrityStatus:
    """The page's integrity line: the chain head now, and the latest signed checkpoint (issue #3)."""

    head_seq: int
    head_hash: str
    checkpoint: Checkpoint | None
    signature_valid: bool | None  # the checkpoint's signature checked against this server's public key

    @property
    def events_since(self) -> int:
        return self.head_seq - self.checkpoint.tree_size if self.checkpoint is not None else self.head_seq


def integrity_status(storage: Storage, org_id: int) -> IntegrityStatus:
    """One head read, one checkpoint read and one Ed25519 verification: cheap enough for every page view.

    (A full re-verification of the chain scans every event; that is `auditkeep verify` and
    GET /api/v1/integrity/verify, not a page view.)
    """
    head = get_head(storage, org_id)
    latest = checkpointing.list_checkpoints(storage, org_id)
    if not latest:
        return IntegrityStatus(head.seq, head.hash, None, None)
    checkpoint = latest[-1]
    return IntegrityStatus(head.seq, head.hash, checkpoint,
                           verify_with_ring(checkpoint, checkpointing.public_keys(storage)))
