"""Turning a request body into validated events, or a FastAPI-shaped list of errors.

Validation happens entirely before storage, so a bad batch writes nothing (all or nothing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

import orjson
from pydantic import TypeAdapter, ValidationError

from auditkeep.errors import PayloadTooLargeError
from auditkeep.integrity.canonical import canonical_json
from auditkeep.schemas.audit_logs import LOG_FIELDS
from auditkeep.schemas.events import (
    MAX_EVENTS_PER_REQUEST,
    MAX_PAYLOAD_BYTES,
    MAX_SAFE_INTEGER,
    AuditLogCreate,
)
from auditkeep.storage.types import format_timestamp

MAX_FUTURE = timedelta(minutes=5)
MAX_PAYLOAD_DEPTH = 64

_one = TypeAdapter(AuditLogCreate)
_many = TypeAdapter(list[AuditLogCreate])


class EventValidationError(Exception):
    """Errors in FastAPI's `detail` shape: [{"type", "loc", "msg", "input"?}, ...]."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} validation error(s)")
        self.errors = errors


@dataclass(slots=True)
class NewEvent:
    """A validated event: its API log (17 fields) and which fields the client actually sent."""

    log: dict[str, Any]
    payload_json: str | None
    sent: frozenset[str]
    uuid_given: bool


def _error(loc: tuple[Any, ...], msg: str, typ: str = "value_error", inp: Any = None) -> dict[str, Any]:
    return {"type": typ, "loc": ["body", *loc], "msg": msg, "input": inp}


def _check_scalar(value: Any) -> str | None:
    if isinstance(value, str):
        return "payload strings must not contain NUL characters" if "\x00" in value else None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int) and not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return "payload integers must lie within ±(2**53 - 1) to survive JSON round trips"
    if isinstance(value, float) and not math.isfinite(value):
        return "payload numbers must be finite"
    return None


def _check_payload_value(value: Any, depth: int) -> str | None:
    """Why a payload value cannot be kept faithfully, or None."""
    if depth > MAX_PAYLOAD_DEPTH:
        return f"payload is nested deeper than {MAX_PAYLOAD_DEPTH} levels"
    if isinstance(value, dict):
        for k, v in value.items():
            if "\x00" in k:
                return "payload keys must not contain NUL characters"
            if (why := _check_payload_value(v, depth + 1)) is not None:
                return why
        return None
    if isinstance(value, list):
        for v in value:
            if (why := _check_payload_value(v, depth + 1)) is not None:
                return why
        return None
    return _check_scalar(value)


def _to_new_event(item: AuditLogCreate, index: int | None, received_at: datetime) -> NewEvent:
    loc: tuple[Any, ...] = () if index is None else (index,)
    errors: list[dict[str, Any]] = []
    payload_json: str | None = None
    if item.payload is not None:
        why = _check_payload_value(item.payload, 1)
        if why is None:
            # Stored in its canonical (JCS) form, so hashing at ingest and at verification copies the text
            # verbatim instead of re-checking the payload (docs/integrity.md).
            payload_json = canonical_json(item.payload).decode()
            if len(payload_json) > MAX_PAYLOAD_BYTES:
                why = f"payload is {len(payload_json)} bytes as JSON; the limit is {MAX_PAYLOAD_BYTES}"
        if why is not None:
            errors.append(_error((*loc, "payload"), why))
    ts = item.timestamp or received_at
    if ts > received_at + MAX_FUTURE:
        errors.append(
            _error((*loc, "timestamp"), "timestamp may not lie more than 5 minutes in the future",
                   inp=ts.isoformat())
        )
    if errors:
        raise EventValidationError(errors)
    sent = frozenset(item.model_fields_set)
    log = {name: getattr(item, name) for name in LOG_FIELDS}
    log["timestamp"] = format_timestamp(ts)
    log["event_uuid"] = str(item.event_uuid) if item.event_uuid is not None else str(uuid4())
    return NewEvent(log, payload_json, sent, item.event_uuid is not None)


def parse_events(body: bytes, received_at: datetime) -> list[NewEvent]:
    """Validate a POST body (one event or an array). Raises EventValidationError or PayloadTooLargeError."""
    stripped = body.lstrip()
    single = not stripped.startswith(b"[")
    try:
        items = [_one.validate_json(body)] if single else _many.validate_json(body)
    except ValidationError as exc:
        raise EventValidationError(
            [
                {"type": e["type"], "loc": ["body", *e["loc"]], "msg": e["msg"], "input": _jsonable(e.get("input"))}
                for e in exc.errors(include_url=False, include_context=False)
            ]
        ) from None
    if len(items) > MAX_EVENTS_PER_REQUEST:
        raise PayloadTooLargeError(
            f"{len(items)} events in one request; the limit is {MAX_EVENTS_PER_REQUEST}"
        )
    if not items:
        raise EventValidationError([_error((), "at least one event is required", "too_short", [])])
    events: list[NewEvent] = []
    errors: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        try:
            events.append(_to_new_event(item, None if single else i, received_at))
        except EventValidationError as exc:
            errors.extend(exc.errors)
    if errors:
        raise EventValidationError(errors)
    return events


def _jsonable(value: Any) -> Any:
    """Error inputs echo the client's value; keep them JSON-safe and short."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        value = value.encode("utf-8", "replace").decode("utf-8")
        return value if len(value) <= 200 else value[:200] + "…"
    if value is None or isinstance(value, bool | int | float):
        return value
    text = orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode("utf-8", "replace")
    return text if len(text) <= 200 else text[:200] + "…"
