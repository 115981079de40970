"""Turning a request body into validated events, or a FastAPI-shaped list of errors.

Validation happens entirely before storage, so a bad batch writes nothing (all or nothing).
"""

from __future__ import annotations

import math
import re
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from orjson import Fragment
from pydantic import TypeAdapter, ValidationError

from auditkeep.errors import PayloadTooLargeError
from auditkeep.ids import new_event_uuid
from auditkeep.integrity.canonical import canonical_json
from auditkeep.schemas.audit_logs import LOG_FIELDS
from auditkeep.schemas.events import (
    MAX_EVENTS_PER_REQUEST,
    MAX_PAYLOAD_BYTES,
    MAX_SAFE_INTEGER,
    TEXT_IS_CLEAN,
    AuditLogCreate,
)
from auditkeep.storage.types import format_timestamp

MAX_FUTURE = timedelta(minutes=5)
MAX_PAYLOAD_DEPTH = 64

_SURROGATE = re.compile("[\ud800-\udfff]")
_MODEL_IS_LOG = tuple(AuditLogCreate.model_fields) == LOG_FIELDS
_SENT: dict[frozenset[str], frozenset[str]] = {}
_one = TypeAdapter(AuditLogCreate)
_many = TypeAdapter(list[AuditLogCreate])


class EventValidationError(Exception):
    """Errors in FastAPI's `detail` shape: [{"type", "loc", "msg", "input"?}, ...]."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} validation error(s)")
        self.errors = errors


@dataclass(slots=True)
class NewEvent:
    """A validated event: its API log (17 fields) and which fields the client actually sent.

    The log's payload is an `orjson.Fragment` of `payload_json`, its canonical text (or None).
    """

    log: dict[str, Any]
    payload_json: str | None
    sent: AbstractSet[str]
    uuid_given: bool


def _error(loc: tuple[Any, ...], msg: str, typ: str = "value_error", inp: Any = None) -> dict[str, Any]:
    return {"type": typ, "loc": ["body", *loc], "msg": msg, "input": inp}


_NUL_STRING = "payload strings must not contain NUL characters"
_NUL_KEY = "payload keys must not contain NUL characters"
_UNSAFE_INT = "payload integers must lie within ±(2**53 - 1) to survive JSON round trips"
_NOT_FINITE = "payload numbers must be finite"
_TOO_DEEP = f"payload is nested deeper than {MAX_PAYLOAD_DEPTH} levels"


class _Walk:
    """One pass over a payload: the first reason it cannot be kept faithfully (depth-first, keys before
    their values), and whether it is *plain* (no float, every key ASCII), the case in which its canonical
    form is orjson's sorted output (integrity/canonical.py). One walk instead of a check here and another
    in canonical_json: exact type tests, since the JSON parser makes only exact builtins."""

    __slots__ = ("plain",)

    def __init__(self) -> None:
        self.plain = True

    def value(self, value: Any, depth: int) -> str | None:
        if depth > MAX_PAYLOAD_DEPTH:
            return _TOO_DEEP
        kind = type(value)
        if kind is str:
            return _NUL_STRING if "\x00" in value else None
        if kind is dict:
            for key, item in value.items():
                if "\x00" in key:
                    return _NUL_KEY
                if not key.isascii():
                    self.plain = False
                if (why := self.value(item, depth + 1)) is not None:
                    return why
            return None
        if kind is list:
            for item in value:
                if (why := self.value(item, depth + 1)) is not None:
                    return why
            return None
        if kind is int:
            return None if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else _UNSAFE_INT
        if kind is float:
            self.plain = False
            return None if math.isfinite(value) else _NOT_FINITE
        return None  # bool, None


def _payload_json(payload: dict[str, Any]) -> tuple[str | None, str | None]:
    """(canonical JSON text, None) for a payload that can be kept, else (None, why)."""
    walk = _Walk()
    why = walk.value(payload, 1)
    if why is not None:
        return None, why
    # Stored in its canonical (JCS) form, so hashing at ingest and at verification copies the text
    # verbatim instead of re-checking the payload (docs/integrity.md).
    text = canonical_json(payload, plain=walk.plain).decode()
    if len(text) > MAX_PAYLOAD_BYTES:
        return None, f"payload is {len(text)} bytes as JSON; the limit is {MAX_PAYLOAD_BYTES}"
    return text, None


def _timestamp_text(ts: datetime) -> str:
    """format_timestamp for an aware UTC datetime, through datetime's C isoformat (~0.3 µs, not ~1.5)."""
    text = ts.isoformat(timespec="microseconds")
    return text[:-6] + "Z" if len(text) == 32 and text.endswith("+00:00") else format_timestamp(ts)


def _to_new_event(item: AuditLogCreate, index: int | None, received_at: datetime) -> NewEvent:
    errors: list[dict[str, Any]] = []
    payload_json: str | None = None
    fields = item.__dict__  # the 17 fields, validated; read once instead of 17 getattr calls
    if (payload := fields["payload"]) is not None:
        payload_json, why = _payload_json(payload)
        if why is not None:
            errors.append(_error((() if index is None else (index,)) + ("payload",), why))
    ts = fields["timestamp"] or received_at
    if ts > received_at + MAX_FUTURE:
        errors.append(
            _error((() if index is None else (index,)) + ("timestamp",),
                   "timestamp may not lie more than 5 minutes in the future", inp=ts.isoformat())
        )
    if errors:
        raise EventValidationError(errors)
    # The model's own dict becomes the log when its fields are exactly the 17 (no copy; the model is dropped).
    log = fields if _MODEL_IS_LOG else {name: fields[name] for name in LOG_FIELDS}
    log["timestamp"] = _timestamp_text(ts)
    uuid = fields["event_uuid"]
    log["event_uuid"] = str(uuid) if uuid is not None else new_event_uuid()
    if payload_json is not None:
        # The parsed payload is not needed any more (a retry compares payloads in service._same_content):
        # ~1 KB an event less while the batch is written.
        log["payload"] = Fragment(payload_json)
    return NewEvent(log, payload_json, _interned(item.model_fields_set), uuid is not None)


def _interned(sent: AbstractSet[str]) -> frozenset[str]:
    """One shared set per combination of fields sent (a batch has a few): a 17-name set is ~0.7 KB."""
    key = frozenset(sent)
    return _SENT.setdefault(key, key) if len(_SENT) < 4096 else key


def parse_events(body: bytes, received_at: datetime) -> list[NewEvent]:
    """Validate a POST body (one event or an array). Raises EventValidationError or PayloadTooLargeError."""
    stripped = body.lstrip()
    single = not stripped.startswith(b"[")
    # JSON text can carry NUL only as the escape \u0000, and the parser refuses lone surrogates, so a body
    # without that escape (nearly every body) skips the per-field text check (~3 µs an event).
    context = {TEXT_IS_CLEAN: b"\\u0000" not in body}
    try:
        items = [_one.validate_json(body, context=context)] if single else _many.validate_json(body, context=context)
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
        return json_safe(value)
    text = orjson.dumps(json_safe(value), option=orjson.OPT_NON_STR_KEYS).decode()
    return text if len(text) <= 200 else text[:200] + "…"


def json_safe(value: Any) -> Any:
    """`value` with what a JSON encoder may refuse made text: an integer outside 64 bits (orjson raises
    "Integer exceeds 64-bit range") as its decimal digits, NaN and ±infinity (which a JSON body can
    carry as `NaN`, `Infinity` or `1e400`, but JSON output cannot) as "NaN", "Infinity" and "-Infinity",
    a lone surrogate as "?", anything else as its `str`. Error bodies echo hostile input with it."""
    kind = type(value)
    if value is None or kind is bool:
        return value
    if kind is str:
        return value.encode("utf-8", "replace").decode("utf-8") if _SURROGATE.search(value) else value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {str(json_safe(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return json_safe(str(value))
