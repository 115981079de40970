"""The reads an evidence bundle plans with (evidence/making.py): the seq span of a query and the checkpoint
nearest below a tree size. Built by SQLAlchemy Core and queries.select_sql, so both dialects come from one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from auditkeep.storage.integrity import CHECKPOINT_FIELDS
from auditkeep.storage.queries import LogQuery, select_sql
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
