"""auditkeep's Python SDK: read, poll, export and publish audit logs over HTTP.

It needs only httpx (and auditkeep's wire models), so it can be installed next to any application.

    >>> from auditkeep.client import Client
    >>> with Client() as client:  # AUDITKEEP_API_KEY / AUDITKEEP_URL, or DATAFOLD_API_KEY / DATAFOLD_HOST
    ...     for log in client.iter_audit_logs(start_date="2024-05-01", action="api_key.*"):
    ...         print(log["timestamp"], log["user_email"], log["action"])
"""

from __future__ import annotations

from auditkeep.client._async_client import AsyncClient, AsyncLogPoll
from auditkeep.client._client import Client, LogPoll, Published
from auditkeep.client._errors import (
    APIStatusError,
    AuditKeepClientError,
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    ExportFileError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    ResumeError,
    ServerError,
    TransportError,
    ValidationError,
)
from auditkeep.client._export import ExportFormat, ExportResult
from auditkeep.client._files import read_export
from auditkeep.client._retry import RetryPolicy
from auditkeep.client._wire import Filters, Order

__all__ = [
    "APIStatusError",
    "AsyncClient",
    "AsyncLogPoll",
    "AuditKeepClientError",
    "AuthenticationError",
    "Client",
    "ConfigurationError",
    "ConflictError",
    "ExportFileError",
    "ExportFormat",
    "ExportResult",
    "Filters",
    "LogPoll",
    "NotFoundError",
    "Order",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Published",
    "RateLimitError",
    "ResumeError",
    "RetryPolicy",
    "ServerError",
    "TransportError",
    "ValidationError",
    "read_export",
]
