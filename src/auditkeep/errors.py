"""One exception tree for auditkeep; `api/errors.py` maps it to HTTP in one place.

    AuditKeepError
    ├── NotFoundError              (unknown organization, user, key, event)
    ├── ConflictError              (duplicate name, event_uuid reused with other content)
    ├── LimitExceededError         (too many active keys)
    ├── AuthError
    │   ├── InvalidKeyError        (missing, malformed or unknown key → 401)
    │   │   ├── KeyRevokedError
    │   │   └── KeyExpiredError    (past its expires_at: refused like a revoked key)
    │   └── PermissionDeniedError  (known principal, not allowed → 403)
    ├── PayloadTooLargeError       (ingest batch over its limits → 413)
    ├── RateLimitedError           (a key over its rate limit, an address locked out → 429)
    ├── InvalidRangeError          (a seq or tree size outside what the log holds → 422)
    ├── IntegrityError             (→ 409)
    │   ├── ChainBrokenError       (verification found a bad seq)
    │   └── CheckpointError        (a checkpoint not signed by this server for this organization)
    ├── SecretsKeyError            (this node's secrets key does not open a stream's secrets → 503)
    └── ReadOnlyDatabaseError      (SQLite's database file is not writable by this process → 503)
"""

from __future__ import annotations


class AuditKeepError(Exception):
    """Root of every error auditkeep raises on purpose."""


class NotFoundError(AuditKeepError):
    """The named thing does not exist (in this organization)."""


class ConflictError(AuditKeepError):
    """The request contradicts what is stored."""


class LimitExceededError(AuditKeepError):
    """A per-owner limit (such as active API keys) would be exceeded."""


class AuthError(AuditKeepError):
    """Authentication or authorization failed."""


class InvalidKeyError(AuthError):
    """The API key is missing, malformed or unknown."""


class KeyRevokedError(InvalidKeyError):
    """The API key was revoked."""


class KeyExpiredError(InvalidKeyError):
    """The API key is past its expiry."""


class PermissionDeniedError(AuthError):
    """The caller is known but may not do this."""


class PayloadTooLargeError(AuditKeepError):
    """An ingest request is over its size or count limit."""


class RateLimitedError(AuditKeepError):
    """Too many requests by one key, or too many failed authentications from one address.

    `retry_after` is the whole number of seconds until the window that refused the request ends.
    """

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InvalidRangeError(AuditKeepError):
    """A seq, tree size or proof range outside what the organization's log holds.

    `param` names the request parameter at fault and `value` what it held, when the range came from one:
    the API answers with them in FastAPI's validation error shape.
    """

    def __init__(self, message: str, *, param: str | None = None, value: object = None) -> None:
        super().__init__(message)
        self.param = param
        self.value = value


class IntegrityError(AuditKeepError):
    """Stored history does not verify."""


class ChainBrokenError(IntegrityError):
    """The hash chain or Merkle tree is broken at `seq`."""

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"seq {seq}: {reason}")
        self.seq = seq
        self.reason = reason


class CheckpointError(IntegrityError):
    """A checkpoint handed in for verification is not one this server signed for this organization."""


class SecretsKeyError(AuditKeepError):
    """The secrets key file is unreadable, or does not open what was sealed with it (streams/secrets.py):
    the node is misconfigured, not the request."""


class ReadOnlyDatabaseError(AuditKeepError):
    """The SQLite database file is not writable by this process (its mode or owner was changed), so no
    write is attempted: the same answer a connection opened now would get (SQLITE_READONLY)."""
