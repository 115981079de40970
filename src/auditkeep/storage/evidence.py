"""The reads an evidence bundle plans and is made with (evidence/making.py): the seq span of a query, the
checkpoint nearest below a tree size, and the events with the columns the bundle's ledger and report need.
Built by SQLAlchemy Core and queries.select_sql, so both dialects come from one place.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from auditkeep.storage.events import STREAM_CHUNK, _driver_rows
from auditkeep.storage.integrity import CHECKPOINT_FIELDS
from auditkeep.storage.queries import LogQuery, choose_driver, select_sql
from auditkeep.storage.tables import checkpoints, organizations

if TYPE_CHECKING:
    from auditkeep.storage.base import Storage


@dataclass(frozen=True, slots=True)
class Span:
    """How many events a query matches, and their lowest and highest seq (None when there are none)."""

    count: int
    first_seq: int | None
    last_seq: int | None


def query_span(storage: Storage, conn: sa.Connection, q: LogQuery) -> Span:
    """The span of the events `q` matches (its filters, range and snapshot bound `max_seq`)."""
    inner, params = select_sql(storage, q, "seq")
    row = conn.exec_driver_sql(f"SELECT count(*), min(seq), max(seq) FROM ({inner}) AS w", params).one()
    count = int(row[0])
    return Span(count, None if not count else int(row[1]), None if not count else int(row[2]))


def checkpoint_at_most(conn: sa.Connection, org_id: int, tree_size: int) -> dict[str, Any] | None:
    """The stored checkpoint with the largest tree size <= `tree_size` (the latest signed of those), or None."""
    row = conn.execute(
        sa.select(organizations.c.name.label("org"), *(checkpoints.c[f] for f in CHECKPOINT_FIELDS))
        .join(organizations, organizations.c.id == checkpoints.c.org_id)
        .where(checkpoints.c.org_id == org_id, checkpoints.c.tree_size <= tree_size)
        .order_by(checkpoints.c.tree_size.desc(), checkpoints.c.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    record = dict(row._mapping)
    record["tree_size"] = int(record["tree_size"])
    return record


# Beside each event's JSON text (as GET /api/v1/audit_logs?include=integrity writes it), the columns the
# ledger and the report need, then the day of its timestamp (UTC). Reading them as columns spares parsing
# every JSON text again in Python: ~2.9 of ~14 CPU s per 1,000,000 events (issue #12, docs/benchmarks.md).
BUNDLE_COLUMNS = ("seq", "prev_hash", "hash", "action", "user_email", "user_id", "status", "is_support_user")
_DAY = {"sqlite": 'substr("timestamp", 1, 10)',
        "postgresql": """to_char("timestamp" AT TIME ZONE 'UTC', 'YYYY-MM-DD')"""}


def iter_bundle_rows(storage: Storage, q: LogQuery, chunk: int = STREAM_CHUNK) -> Iterator[Sequence[Sequence[Any]]]:
    """The events `q` matches as (JSON text, *BUNDLE_COLUMNS, day) rows, in chunks; one consistent snapshot."""
    columns = f"{storage.backend.log_json_sql(integrity=True)}, {', '.join(BUNDLE_COLUMNS)}, {_DAY[storage.dialect]}"
    with storage.engine.connect() as conn, conn.begin():
        q = choose_driver(conn, storage, q)
        sql, params = select_sql(storage, q, columns)
        yield from _driver_rows(conn, sql, params, chunk)
