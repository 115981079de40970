"""Column types whose storage differs by backend while Python sees one type."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine


def format_timestamp(value: datetime) -> str:
    """The API's timestamp text: `YYYY-MM-DDTHH:MM:SS.ffffffZ`, always UTC, always 27 characters."""
    value = value.astimezone(UTC)
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T"
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}Z"
    )


def parse_timestamp(value: str) -> datetime:
    """Inverse of `format_timestamp`."""
    return datetime.fromisoformat(value).astimezone(UTC)


class Timestamp(TypeDecorator[datetime]):
    """An aware UTC datetime: `timestamptz` on PostgreSQL; on SQLite the fixed-width text the API returns.

    The SQLite form sorts chronologically and is emitted as-is, which keeps export at the speed of
    SQLite's json_object() (no per-row date formatting).
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(27))
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return format_timestamp(value) if dialect.name == "sqlite" else value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            return parse_timestamp(value)
        assert isinstance(value, datetime)
        return value.astimezone(UTC)


# PostgreSQL keeps the payload as `json` (text, exactly as stored), not `jsonb`: jsonb rewrites numbers
# (1e21 → 1000000000000000000000), which would change the canonical form the hash chain covers.
JsonText = sa.Text().with_variant(postgresql.JSON(none_as_null=True), "postgresql")
