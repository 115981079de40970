"""Leases on rows (streams, alert rules): a row that names its holder and until when, so that of several
nodes sharing one database only one works on it at a time (issue #10, #13).

A table that takes leases has `id`, `lease_owner` and `lease_until` columns. Taking one is one conditional
UPDATE, so two nodes racing for a free row cannot both win it: the database decides.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa


def free_or_mine(table: sa.Table, now: datetime, owner: str) -> sa.ColumnElement[bool]:
    """The rows whose lease is free, expired, or `owner`'s."""
    c = table.c
    return sa.or_(c.lease_owner.is_(None), c.lease_until < now, c.lease_owner == owner)


def acquire(conn: sa.Connection, table: sa.Table, row_id: Any, owner: str, *, now: datetime, ttl: float) -> bool:
    """Take or renew the lease of row `row_id`; False when another node holds it."""
    result = conn.execute(
        table.update()
        .where(table.c.id == row_id, free_or_mine(table, now, owner))
        .values(lease_owner=owner, lease_until=now + timedelta(seconds=ttl))
    )
    return result.rowcount == 1


def release(conn: sa.Connection, table: sa.Table, row_id: Any, owner: str) -> None:
    """Give the lease back (only if `owner` still holds it), so another node need not wait for it to expire."""
    conn.execute(table.update().where(table.c.id == row_id, table.c.lease_owner == owner)
                 .values(lease_owner=None, lease_until=None))
