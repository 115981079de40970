"""The seed's wire models, named exactly as in spec/datafold-audit-logs.openapi.yaml (in this repository).

They describe the GET contract in /openapi.json; the hot path does not instantiate them (the response
is built by the database and streamed, see storage/events.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

# The 17 fields of AuditLogs, in the spec's (alphabetical) order; this order is used everywhere a log is
# written out (JSON objects, CSV columns).
LOG_FIELDS: tuple[str, ...] = (
    "action",
    "client_ip",
    "event_uuid",
    "is_support_user",
    "log_entry",
    "object_id",
    "object_type",
    "payload",
    "referer",
    "request_type",
    "source",
    "status",
    "timestamp",
    "url",
    "user_agent",
    "user_email",
    "user_id",
)


def _as_in_the_spec(schema: JsonDict) -> None:
    """Drop what Pydantic adds and the spec's schemas do not have: the docstring as `description`, and
    `"default": null` on optional properties. /openapi.json then equals the spec key for key (issue #9)."""
    schema.pop("description", None)
    properties = schema.get("properties")
    if isinstance(properties, dict):
        for prop in properties.values():
            if isinstance(prop, dict):
                prop.pop("default", None)


class ApiDownloadAuditLogs(BaseModel):
    """The optional GET body: a half-open time range [start_date, end_date)."""

    model_config = ConfigDict(title="ApiDownloadAuditLogs", json_schema_extra=_as_in_the_spec)

    end_date: datetime | None = Field(default=None, title="End Date")
    start_date: datetime | None = Field(default=None, title="Start Date")


def _audit_logs_schema(schema: JsonDict) -> None:
    _as_in_the_spec(schema)
    # The spec lists `required` in this order; keep it so /openapi.json matches the spec exactly.
    schema["required"] = ["timestamp", "event_uuid", "client_ip", "url"]


class AuditLogs(BaseModel):
    """One audit log entry as the API returns it."""

    model_config = ConfigDict(title="AuditLogs", json_schema_extra=_audit_logs_schema)

    action: str | None = Field(default=None, title="Action")
    client_ip: str = Field(title="Client Ip")
    event_uuid: str = Field(title="Event Uuid")
    is_support_user: bool | None = Field(default=None, title="Is Support User")
    log_entry: str | None = Field(default=None, title="Log Entry")
    object_id: int | None = Field(default=None, title="Object Id")
    object_type: str | None = Field(default=None, title="Object Type")
    payload: dict[str, Any] | None = Field(default=None, title="Payload")
    referer: str | None = Field(default=None, title="Referer")
    request_type: str | None = Field(default=None, title="Request Type")
    source: str | None = Field(default=None, title="Source")
    status: str | None = Field(default=None, title="Status")
    timestamp: str = Field(title="Timestamp")
    url: str = Field(title="Url")
    user_agent: str | None = Field(default=None, title="User Agent")
    user_email: str | None = Field(default=None, title="User Email")
    user_id: int | None = Field(default=None, title="User Id")


class ApiGetAuditLogs(BaseModel):
    """The GET response."""

    model_config = ConfigDict(title="ApiGetAuditLogs", json_schema_extra=_as_in_the_spec)

    logs: list[AuditLogs] = Field(title="Logs")
