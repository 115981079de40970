"""The GET range: a JSON body `{start_date, end_date}` (whatever the Content-Type) or query parameters,
and the one way every endpoint reads a date-time query parameter (`QueryDateTime`)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import BeforeValidator, TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

from auditkeep.schemas.audit_logs import ApiDownloadAuditLogs
from auditkeep.storage.types import format_timestamp

_DATETIME: TypeAdapter[datetime] = TypeAdapter(datetime)
# A time then a space and an offset's digits: an unencoded `+` in a URL query arrives as a space.
_SPACED_OFFSET = re.compile(r"\d:\d\d(?::\d\d(?:\.\d+)?)? \d\d(?::?\d\d)?$")


def strict_datetime(value: Any) -> Any:
    """A query parameter read as strictly as the JSON body reads its dates, and in UTC (issue #9).

    The spec's `format: date-time` is RFC 3339's: a date alone (`2026-01-01`), which lax parsing would take
    as midnight, is refused. Converting to UTC here makes an offset that leaves datetime's range (year 1
    at +01:00) a 422 instead of an OverflowError wherever the value is used later.
    """
    if not isinstance(value, str):
        return value
    try:
        parsed = _DATETIME.validate_json(orjson.dumps(value), strict=True)
    except ValidationError as exc:
        msg = str(exc.errors(include_url=False)[0]["msg"])
        if _SPACED_OFFSET.search(value):
            msg += " (encode + as %2B in a URL: a bare + arrives as a space)"
        raise PydanticCustomError("datetime_parsing", msg) from None
    try:
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError("datetime_parsing", "date-time is out of range once converted to UTC") from None


# Every date-time query parameter of the API: RFC 3339, naive = UTC, returned as an aware UTC datetime.
QueryDateTime = Annotated[datetime, BeforeValidator(strict_datetime)]


def _utc(value: datetime | None, loc: list[Any]) -> str | None:
    if value is None:
        return None
    try:
        # A date-time without an offset means UTC.
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise RequestValidationError(
            [{"type": "value_error", "loc": loc, "msg": "date-time is out of range", "input": str(value)}]
        ) from None
    return format_timestamp(value)


def parse_range(
    body: bytes, query_start: datetime | None, query_end: datetime | None
) -> tuple[str | None, str | None]:
    """The half-open range [start, end) as API timestamp text (None = unbounded); 422 when invalid.

    The body is read as JSON whatever the Content-Type says: curl's --data sends
    application/x-www-form-urlencoded, and Datafold's own example does exactly that.
    """
    where = "query"
    start, end = query_start, query_end
    if body.strip():
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RequestValidationError(
                [{"type": "json_invalid", "loc": ["body", exc.pos], "msg": "JSON decode error",
                  "input": {}, "ctx": {"error": exc.msg}}]
            ) from None
        if data is not None:
            try:
                # Strict JSON mode: date-times must be RFC 3339 strings (lax mode would take 12 as a
                # Unix time, which no client of this API means).
                parsed = ApiDownloadAuditLogs.model_validate_json(body, strict=True)
            except ValidationError as exc:
                raise RequestValidationError(
                    [{**e, "loc": ["body", *e["loc"]]} for e in exc.errors(include_url=False)]
                ) from None
            if parsed.start_date is not None or parsed.end_date is not None:
                if query_start is not None or query_end is not None:
                    raise RequestValidationError(
                        [{"type": "value_error", "loc": ["query", "start_date" if query_start else "end_date"],
                          "msg": "give the range in the JSON body or as query parameters, not both",
                          "input": None}]
                    )
                where = "body"
                start, end = parsed.start_date, parsed.end_date
    start_text = _utc(start, [where, "start_date"])
    end_text = _utc(end, [where, "end_date"])
    if start_text is not None and end_text is not None and end_text < start_text:
        raise RequestValidationError(
            [{"type": "value_error", "loc": [where, "end_date"], "msg": "end_date must not be before start_date",
              "input": end_text}]
        )
    return start_text, end_text
