"""Who is calling, and what they may do."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from auditkeep.errors import PermissionDeniedError


class Role(StrEnum):
    """A user's role in their organization (Datafold's)."""

    ADMIN = "admin"
    DEFAULT = "default"
    VIEWONLY = "viewonly"


class Scope(StrEnum):
    """What a service account may do."""

    READ = "audit_logs:read"
    WRITE = "audit_logs:write"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a user or a service account of one organization."""

    org_id: int
    org_name: str
    kind: str  # "user" | "service_account"
    id: int
    name: str  # the user's email or the service account's name
    role: Role | None = None
    scopes: frozenset[Scope] = frozenset()
    is_support: bool = False
    key_id: int | None = None
    key_prefix: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.kind == "user" and self.role is Role.ADMIN

    @property
    def user_email(self) -> str | None:
        return self.name if self.kind == "user" else None

    @property
    def user_id(self) -> int | None:
        return self.id if self.kind == "user" else None

    def describe(self) -> str:
        """How this principal is named in log entries."""
        who = f"user {self.name}" if self.kind == "user" else f"service account {self.name!r}"
        return f"{who} (support)" if self.is_support else who

    def can(self, scope: Scope) -> bool:
        """Reading needs admin or audit_logs:read; ingesting needs admin or audit_logs:write."""
        return self.is_admin or scope in self.scopes

    def require(self, scope: Scope) -> None:
        if not self.can(scope):
            raise PermissionDeniedError(f"{self.describe()} lacks permission {scope.value}")
