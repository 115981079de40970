"""The SDK's exception tree: every error the client raises on purpose hangs from one root.

    AuditKeepClientError
    ├── ConfigurationError        (no API key or no service URL found)
    ├── TransportError            (connection refused, timeout, broken stream; after retries)
    ├── ResumeError               (an export cannot be resumed from the state found on disk)
    ├── ExportFileError           (a file given to read_export is not an export; says where)
    └── APIStatusError            (the service answered with an error status)
        ├── AuthenticationError   401: missing, unknown or revoked key
        ├── PermissionDeniedError 403: the key may not do this
        ├── NotFoundError         404
        ├── ConflictError         409: an event_uuid was reused with other content
        ├── PayloadTooLargeError  413: a batch over 10,000 events or 16 MB
        ├── ValidationError       422: carries FastAPI's `detail` list
        ├── RateLimitError        429: carries `retry_after` (after retries)
        └── ServerError           5xx (after retries)

The client deliberately does not reuse `auditkeep.errors`: it ships alone, without the server.
"""

from __future__ import annotations

from typing import Any

import httpx

from auditkeep.client._retry import parse_retry_after

__all__ = [
    "APIStatusError",
    "AuditKeepClientError",
    "AuthenticationError",
    "ConfigurationError",
    "ConflictError",
    "ExportFileError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "ResumeError",
    "ServerError",
    "TransportError",
    "ValidationError",
    "error_for_response",
]


class AuditKeepClientError(Exception):
    """Root of every error the auditkeep SDK raises on purpose."""


class ConfigurationError(AuditKeepClientError):
    """The client was given (or found in the environment) no API key or no service URL."""


class TransportError(AuditKeepClientError):
    """The service could not be reached or the connection broke; `__cause__` is httpx's error."""


class ResumeError(AuditKeepClientError):
    """An interrupted export cannot be resumed (the state file belongs to another query, or the
    output file was changed since)."""


class ExportFileError(AuditKeepClientError):
    """A file given to `read_export` cannot be read as audit logs (the message says where)."""


class APIStatusError(AuditKeepClientError):
    """The service answered with an error status.

    `status_code`, `detail` (the decoded JSON `detail`, or the body text) and `response` (None when the
    error was raised before sending, such as an event too large for any request) say what happened.
    """

    def __init__(self, message: str, *, status_code: int, detail: Any = None,
                 response: httpx.Response | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.detail = detail
        self.response = response


class AuthenticationError(APIStatusError):
    """401: the API key is missing, unknown or revoked."""


class PermissionDeniedError(APIStatusError):
    """403: the key is valid but may not do this (reading needs `audit_logs:read`, publishing
    `audit_logs:write`, or an admin user's key)."""


class NotFoundError(APIStatusError):
    """404: wrong URL (is the base URL the service's root?)."""


class ConflictError(APIStatusError):
    """409: an event_uuid already names an event with different content."""


class PayloadTooLargeError(APIStatusError):
    """413: a request over 10,000 events or 16 MB."""


class ValidationError(APIStatusError):
    """422: the service refused the request; `detail` is FastAPI's list of `{loc, msg, type}`.

    For `publish`, `batch_start` is the index (in the events given to `publish`) of the first event of
    the refused batch, so `bad_indices` names the offending events in the caller's own numbering.
    """

    def __init__(self, message: str, *, status_code: int = 422, detail: Any = None,
                 response: httpx.Response | None = None) -> None:
        super().__init__(message, status_code=status_code, detail=detail, response=response)
        self.batch_start = 0

    @property
    def bad_indices(self) -> list[int]:
        """Indices (in the caller's list of events) of the events the service refused."""
        found: set[int] = set()
        if isinstance(self.detail, list):
            for item in self.detail:
                loc = item.get("loc") if isinstance(item, dict) else None
                # FastAPI locates a list item as ["body", index, field...]; a single event as
                # ["body", field...].
                if isinstance(loc, list) and len(loc) > 1 and type(loc[1]) is int:
                    found.add(self.batch_start + loc[1])
        return sorted(found)


class RateLimitError(APIStatusError):
    """429 after the retries ran out; `retry_after` is the service's hint in seconds, if any."""

    def __init__(self, message: str, *, status_code: int = 429, detail: Any = None,
                 response: httpx.Response | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, status_code=status_code, detail=detail, response=response)
        self.retry_after = retry_after


class ServerError(APIStatusError):
    """5xx after the retries ran out."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
    429: RateLimitError,
}


def error_for_response(response: httpx.Response) -> APIStatusError:
    """The typed error for an error response (whose body has been read)."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    if detail is None:
        detail = response.text[:2000] or None
    summary = detail if isinstance(detail, str) else response.reason_phrase
    message = f"{response.request.method} {response.request.url.path}: {response.status_code} {summary}"
    if isinstance(detail, list) and detail:
        first = detail[0]
        if isinstance(first, dict):
            message += f" (first problem: {first.get('loc')}: {first.get('msg')})"
    status = response.status_code
    cls = ServerError if status >= 500 else _BY_STATUS.get(status, APIStatusError)
    if cls is RateLimitError:
        return RateLimitError(message, detail=detail, response=response,
                              retry_after=parse_retry_after(response.headers.get("Retry-After")))
    return cls(message, status_code=status, detail=detail, response=response)
