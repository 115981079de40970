"""Pure helpers shared by Client and AsyncClient: query parameters, event encoding and batching, and
reading the paging headers. No I/O here."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from datetime import date, datetime
from typing import Any, Literal, TypedDict

import httpx

from auditkeep.client._errors import AuditKeepClientError, PayloadTooLargeError
from auditkeep.ids import new_event_uuid
from auditkeep.schemas.events import MAX_BODY_BYTES, MAX_EVENTS_PER_REQUEST

__all__ = [
    "AUDIT_LOGS_PATH",
    "DEFAULT_BATCH_SIZE",
    "Filters",
    "Order",
    "date_param",
    "encode_events",
    "iter_batches",
    "last_seq",
    "next_url",
    "prepare_events",
    "query_params",
]

AUDIT_LOGS_PATH = "/api/v1/audit_logs"
DEFAULT_BATCH_SIZE = 1000
Order = Literal["asc", "desc"]
DateLike = datetime | date | str | None


class Filters(TypedDict, total=False):
    """The filters `GET /api/v1/audit_logs` understands (CONTRACT.md); all optional, combined with AND.

    `action` matches exactly, or by prefix when it ends in `*` (`"api_key.*"`); `client_ip` takes an
    address or a CIDR range; `q` is a case-insensitive substring of `log_entry` or `url`.
    """

    action: str
    user_email: str
    user_id: int
    object_type: str
    object_id: int
    source: str
    status: str
    request_type: str
    is_support_user: bool
    client_ip: str
    q: str


FILTER_NAMES = frozenset(Filters.__annotations__)


def date_param(value: DateLike) -> str | None:
    """A start/end date as the service reads it (ISO 8601; a naive date-time means UTC)."""
    if value is None or isinstance(value, str):
        return value
    return value.isoformat()


def query_params(filters: Mapping[str, Any], **extra: Any) -> dict[str, str]:
    """Query parameters for a GET: the filters (unknown names refused here, not by a 422 later) and
    the extra parameters; None means absent."""
    unknown = set(filters) - FILTER_NAMES
    if unknown:
        raise TypeError(f"unknown filter(s): {', '.join(sorted(unknown))}; known: {sorted(FILTER_NAMES)}")
    params: dict[str, str] = {}
    for name, value in (*filters.items(), *extra.items()):
        if value is None:
            continue
        if isinstance(value, bool):
            params[name] = "true" if value else "false"
        elif isinstance(value, datetime | date):
            params[name] = value.isoformat()
        else:
            params[name] = str(value)
    return params


def _json_default(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def prepare_events(events: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    """The events as a list, each with an `event_uuid`.

    A uuid (version 7, auditkeep/ids.py) is written into every event that lacks one *before* anything
    is sent, and into the caller's own dict when it is mutable: a retry, or a second `publish` of the same list after an
    error, then sends the same uuids, and the service stores each event once.
    """
    items = [events] if isinstance(events, Mapping) else list(events)
    prepared: list[MutableMapping[str, Any]] = []
    for event in items:
        if type(event) is dict:  # the common case, without the ABC checks (~1 µs an event)
            if event.get("event_uuid") is None:
                event["event_uuid"] = new_event_uuid()
            prepared.append(event)
            continue
        if not isinstance(event, Mapping):
            raise TypeError(f"an event must be a mapping, not {type(event).__name__}")
        target = event if isinstance(event, MutableMapping) else dict(event)
        if target.get("event_uuid") is None:
            target["event_uuid"] = new_event_uuid()
        prepared.append(target)
    return prepared


# ASCII-only output: a lone surrogate in an event is escaped (and refused by the service, naming the
# event) instead of failing the whole batch's encoding here.
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_json_default)


def encode_events(events: Iterable[Mapping[str, Any]]) -> list[bytes]:
    """Each event as compact UTF-8 JSON (datetimes as ISO 8601, UUIDs as strings)."""
    encode = _ENCODER.encode
    return [encode(event).encode() for event in events]


def iter_batches(encoded: list[bytes], batch_size: int = DEFAULT_BATCH_SIZE,
                 max_bytes: int = MAX_BODY_BYTES) -> Iterator[tuple[int, int, bytes]]:
    """(start, end, body) for consecutive batches of at most `batch_size` events and `max_bytes`.

    Every event's size is checked before the first batch is yielded, so an event too large for any
    request fails the call before anything is sent.
    """
    if not 1 <= batch_size <= MAX_EVENTS_PER_REQUEST:
        raise ValueError(f"batch_size must be between 1 and {MAX_EVENTS_PER_REQUEST}")
    bounds: list[tuple[int, int]] = []
    start = 0
    while start < len(encoded):
        size = 2 + len(encoded[start])  # "[" + event + "]"
        if size > max_bytes:
            raise PayloadTooLargeError(
                f"event {start} is {len(encoded[start])} bytes, more than a request may carry ({max_bytes})",
                status_code=413,
            )
        end = start + 1
        while end < len(encoded) and end - start < batch_size:
            size += 1 + len(encoded[end])  # "," + event
            if size > max_bytes:
                break
            end += 1
        bounds.append((start, end))
        start = end
    return ((s, e, b"[" + b",".join(encoded[s:e]) + b"]") for s, e in bounds)


def next_url(response: httpx.Response) -> httpx.URL | None:
    """The absolute URL of `Link: <...>; rel="next"`, resolved against the request URL (RFC 8288 allows a
    relative target), or None on the last page.

    The key travels with the request, so a link to another host is refused rather than followed.
    """
    link = response.links.get("next")
    if not link or not link.get("url"):
        return None
    target = response.request.url.join(link["url"])
    if target.host != response.request.url.host:
        raise AuditKeepClientError(f"refusing to send the API key to another host: next page at {target}")
    return target


def last_seq(response: httpx.Response) -> int | None:
    """The `X-Last-Seq` header of an `after_seq` response."""
    value = response.headers.get("X-Last-Seq")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise AuditKeepClientError(f"malformed X-Last-Seq header: {value!r}") from None
