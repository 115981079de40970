"""Ingest wire models: what a client may POST to /api/v1/audit_logs."""

from __future__ import annotations

import re
import socket
from datetime import UTC, datetime
from ipaddress import ip_address
from typing import Annotated, Any
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    model_validator,
)

MAX_SAFE_INTEGER = 2**53 - 1
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_EVENTS_PER_REQUEST = 10_000
MAX_BODY_BYTES = 16 * 1024 * 1024

_TEXT_FIELDS = (
    "action", "log_entry", "object_type", "referer", "request_type", "source", "status", "url",
    "user_agent", "user_email",
)
_FORBIDDEN_CHARS = re.compile("[\x00\ud800-\udfff]")
# Validation context key: the caller has checked that no text of the body can hold NUL or a lone surrogate
# (ingest/validation.py: a JSON body without a `\u0000` escape cannot; its parser refuses lone surrogates).
TEXT_IS_CLEAN = "text_is_clean"


def _normalize_ip(value: str) -> str:
    # inet_pton accepts exactly the canonical dotted quad (four decimal octets, no leading zeros), which
    # is what str(ip_address()) returns, at ~1 µs instead of ~7 µs: the common case of every ingested event.
    try:
        socket.inet_pton(socket.AF_INET, value)
        return value
    except (OSError, ValueError):
        pass
    try:
        return str(ip_address(value))
    except ValueError:
        raise ValueError("must be an IPv4 or IPv6 address") from None


def _utc(value: datetime) -> datetime:
    # A date-time without an offset means UTC (CONTRACT.md).
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 lies before datetime.min in UTC
        raise ValueError("date-time is out of range") from None


# Field length limits (issue #2): url 8 KB, user_agent 2 KB, log_entry 64 KB; short labels 256.
Label = Annotated[str, StringConstraints(max_length=256)]
Method = Annotated[str, StringConstraints(max_length=32)]
Email = Annotated[str, StringConstraints(max_length=320)]
UrlText = Annotated[str, StringConstraints(max_length=8192)]
UserAgent = Annotated[str, StringConstraints(max_length=2048)]
LogEntry = Annotated[str, StringConstraints(max_length=65_536)]
IpText = Annotated[str, StringConstraints(max_length=64), AfterValidator(_normalize_ip)]


# Integers travel through JSON (and the JCS canonical form) as IEEE doubles, so only I-JSON's safe
# range round-trips exactly; larger ids would hash differently on different clients.
SafeInt = Annotated[int, Field(ge=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER)]


class AuditLogCreate(BaseModel):
    """One event to record. `client_ip` and `url` are required; the rest may be null or absent."""

    model_config = ConfigDict(strict=True, extra="forbid", title="AuditLogCreate")

    action: Label | None = None
    client_ip: IpText
    event_uuid: UUID | None = None
    is_support_user: bool | None = None
    log_entry: LogEntry | None = None
    object_id: SafeInt | None = None
    object_type: Label | None = None
    payload: dict[str, Any] | None = None
    referer: UrlText | None = None
    request_type: Method | None = None
    source: Label | None = None
    status: Label | None = None
    timestamp: Annotated[datetime, AfterValidator(_utc)] | None = None
    url: UrlText
    user_agent: UserAgent | None = None
    user_email: Email | None = None
    user_id: SafeInt | None = None

    @model_validator(mode="after")
    def _no_nul_or_surrogates(self, info: ValidationInfo) -> AuditLogCreate:
        # PostgreSQL cannot store NUL in text and a lone surrogate cannot be encoded as UTF-8; both
        # backends must refuse the same events, so the check lives here, before any storage.
        if info.context is not None and info.context.get(TEXT_IS_CLEAN):
            return self
        for name in _TEXT_FIELDS:
            value = getattr(self, name)
            if value is not None and _FORBIDDEN_CHARS.search(value):
                raise ValueError(f"{name} must not contain NUL characters or lone surrogates")
        return self


class IngestResponse(BaseModel):
    """201 answer to an ingest: the stored (or already present) events' uuids, in input order, and how
    many of them this request stored."""

    event_uuids: list[str]
    accepted: int = Field(description="Events this request stored.")
    already_present: int = Field(
        description="Events already recorded with the same event_uuid and content (stored once, not again)."
    )
