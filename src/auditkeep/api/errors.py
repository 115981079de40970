"""The one place auditkeep's exceptions become HTTP responses (FastAPI's `{"detail": ...}` shape)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from auditkeep.errors import (
    AuditKeepError,
    ConflictError,
    IntegrityError,
    InvalidKeyError,
    InvalidRangeError,
    LimitExceededError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
)
from auditkeep.ingest.validation import EventValidationError

log = logging.getLogger("auditkeep.api")

_STATUS: list[tuple[type[AuditKeepError], int]] = [
    (InvalidKeyError, 401),
    (PermissionDeniedError, 403),
    (NotFoundError, 404),
    (ConflictError, 409),
    (LimitExceededError, 409),
    (PayloadTooLargeError, 413),
    (InvalidRangeError, 422),
    (IntegrityError, 409),  # stored history does not verify (e.g. a proof over a missing event)
]


async def _auditkeep_error(request: Request, exc: Exception) -> JSONResponse:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            headers = {"WWW-Authenticate": "Key"} if status == 401 else None
            return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)
    log.error("unmapped error", exc_info=exc)
    return JSONResponse({"detail": "internal error"}, status_code=500)


async def _event_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EventValidationError)
    # Re-raised as FastAPI's own type so the body is exactly what FastAPI renders for any 422.
    from fastapi.exception_handlers import request_validation_exception_handler

    return await request_validation_exception_handler(request, RequestValidationError(exc.errors))


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.error("database unavailable", extra={"error": str(exc).splitlines()[0]})
    return JSONResponse(
        {"detail": "the database is unavailable; retry later"}, status_code=503, headers={"Retry-After": "1"}
    )


def install(app: FastAPI) -> None:
    """Register the handlers on `app`."""
    app.add_exception_handler(AuditKeepError, _auditkeep_error)
    app.add_exception_handler(EventValidationError, _event_validation_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
