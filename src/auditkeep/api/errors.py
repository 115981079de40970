"""The one place auditkeep's exceptions become HTTP responses (FastAPI's `{"detail": ...}` shape)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
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
    RateLimitedError,
    ReadOnlyDatabaseError,
    SecretsKeyError,
)
from auditkeep.ingest.validation import EventValidationError, json_safe
from auditkeep.schemas.errors import HTTPError

log = logging.getLogger("auditkeep.api")

_STATUS: list[tuple[type[AuditKeepError], int]] = [
    (InvalidKeyError, 401),
    (PermissionDeniedError, 403),
    (NotFoundError, 404),
    (ConflictError, 409),
    (LimitExceededError, 409),
    (PayloadTooLargeError, 413),
    (IntegrityError, 409),  # stored history does not verify (e.g. a proof over a missing event)
    (SecretsKeyError, 503),  # this node's AUDITKEEP_SECRETS_KEY_PATH differs from the one that sealed them
]


async def _auditkeep_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, InvalidRangeError):
        # A 422 in the shape the OpenAPI declares for every 422 (HTTPValidationError), naming the query
        # parameter at fault, so a client parses one shape for all of them.
        loc = ["query", exc.param] if exc.param else ["query"]
        return _validation_error([{"type": "value_error", "loc": loc, "msg": str(exc), "input": exc.value}])
    if isinstance(exc, RateLimitedError):
        # The RateLimit-* headers are added on the way out (api/ratelimit.py), as on every limited answer.
        return JSONResponse({"detail": str(exc)}, status_code=429, headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, ReadOnlyDatabaseError):
        log.error("database unavailable", extra={"error": str(exc)})
        return _read_only()
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            headers = {"WWW-Authenticate": "Key"} if status == 401 else None
            return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)
    log.error("unmapped error", exc_info=exc)
    return JSONResponse({"detail": "internal error"}, status_code=500)


# Declared on every operation under /api/v1 but the seed's GET (below), so clients and schemathesis
# (tests/api/test_schemathesis.py, its status code check) know them.
_AUTH_RESPONSES = {
    "401": "No valid API key: missing, unknown, revoked or expired (`WWW-Authenticate: Key`)",
    "403": "The key's user or service account may not do this (its role or scopes)",
}
_NOT_FOUND = "Nothing with that id in the key's organization"
_NOT_JSON = "The body is not JSON (FastAPI's own answer, before any field is read)"
# Operations that refuse a name already taken, or a hold released already (ConflictError, 409).
_CONFLICT = "Conflicts with what is stored (a name already taken, a hold already released)"
_CONFLICTS = {("post", "/api/v1/streams"), ("post", "/api/v1/alert_rules"),
              ("post", "/api/v1/alert_rules/templates/{name}"), ("patch", "/api/v1/alert_rules/{rule_id}"),
              ("post", "/api/v1/holds/{hold_id}/release")}
# Operations whose body the route reads itself (ingest: 422 for a body that is not JSON, with its index).
_RAW_BODY = {("post", "/api/v1/audit_logs")}
# Operations that answer 404 for something named in the query rather than the path.
_NOT_FOUND_BY_QUERY = {("get", "/api/v1/integrity/proofs/inclusion")}
# The seed operation keeps the spec's responses exactly (tests/api/test_openapi.py): its 401 and 403
# are served as everywhere else, but not declared.
_SEED = ("get", "/api/v1/audit_logs")


def declare_error_responses(schema: dict[str, Any]) -> None:
    """Add to an OpenAPI document the 401 and 403 every /api/v1 operation can answer, the 404 of those that
    name a resource, the 400 of those whose JSON body FastAPI parses and the 409 of those that can
    conflict, each with FastAPI's error shape (the `HTTPError` schema). A response a route declares itself
    is left as it is."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["HTTPError"] = HTTPError.model_json_schema()
    body = {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPError"}}}
    for path, operations in schema.get("paths", {}).items():
        if not path.startswith("/api/v1/"):
            continue
        for method, operation in operations.items():
            if (method, path) == _SEED:
                continue
            declared = dict(_AUTH_RESPONSES)
            if "{" in path or (method, path) in _NOT_FOUND_BY_QUERY:
                declared["404"] = _NOT_FOUND
            if "requestBody" in operation and (method, path) not in _RAW_BODY:
                declared["400"] = _NOT_JSON
            if (method, path) in _CONFLICTS:
                declared["409"] = _CONFLICT
            responses = operation.setdefault("responses", {})
            for code, description in declared.items():
                responses.setdefault(code, {"description": description, "content": body})


def _validation_error(errors: Sequence[Any]) -> JSONResponse:
    """FastAPI's 422 body, `{"detail": [...]}`, with every echoed `input` made JSON-safe: a request can
    hold values (NaN, 1e400, integers beyond 64 bits) that no JSON encoder writes, and echoing them back
    must not turn a 422 into a 500."""
    return JSONResponse({"detail": json_safe(jsonable_encoder(errors))}, status_code=422)


async def _request_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return _validation_error(exc.errors())


async def _event_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EventValidationError)
    return _validation_error(exc.errors)


# SQLite's result codes for a write the disk refused (https://sqlite.org/rescode.html). Each rolls back only
# its own transaction, so nothing half-written is left, and the next write succeeds once the cause is gone.
_SQLITE_FULL = 13
_SQLITE_READONLY = 8


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.error("database unavailable", extra={"error": str(exc).splitlines()[0]})
    code = getattr(getattr(exc, "orig", None), "sqlite_errorcode", None)
    if code is not None and code & 0xFF == _SQLITE_FULL:
        # 507 Insufficient Storage (RFC 4918): nothing is wrong with the request; space must be freed.
        return JSONResponse({"detail": "the database's disk is full; retry once space is freed"},
                            status_code=507, headers={"Retry-After": "5"})
    if code is not None and code & 0xFF == _SQLITE_READONLY:
        return _read_only()
    return JSONResponse({"detail": "the database is unavailable; retry later"}, status_code=503,
                        headers={"Retry-After": "1"})


def _read_only() -> JSONResponse:
    # The same answer whether SQLite refused the write (a connection opened while the file was read-only)
    # or storage/sqlite.py saw the mode first (connections opened before keep writable descriptors).
    return JSONResponse({"detail": "the database file is read-only; retry once it is writable"},
                        status_code=503, headers={"Retry-After": "1"})


def install(app: FastAPI) -> None:
    """Register the handlers on `app`."""
    app.add_exception_handler(AuditKeepError, _auditkeep_error)
    app.add_exception_handler(EventValidationError, _event_validation_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
