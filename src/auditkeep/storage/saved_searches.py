"""Saved search rows (issue #13): a named filter set of one organization, kept as a query string."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from auditkeep.errors import ConflictError, NotFoundError
from auditkeep.storage.tables import saved_searches

# Enough for every useful search of an organization; a bound keeps the console's list and the API's small.
MAX_PER_ORG = 200


@dataclass(frozen=True, slots=True)
class SavedSearch:
    id: str
    org_id: int
    name: str
    query: str
    created_by: str
    created_at: datetime


def _saved(row: sa.Row[Any]) -> SavedSearch:
    m = row._mapping
    return SavedSearch(m["id"], m["org_id"], m["name"], m["query"], m["created_by"], m["created_at"])


def insert(conn: sa.Connection, search: SavedSearch) -> None:
    """Store `search`; ConflictError if its organization has one of that name or MAX_PER_ORG already."""
    t = saved_searches
    count = conn.execute(sa.select(sa.func.count()).select_from(t).where(t.c.org_id == search.org_id)).scalar_one()
    if count >= MAX_PER_ORG:
        raise ConflictError(f"an organization keeps at most {MAX_PER_ORG} saved searches; delete one first")
    taken = conn.execute(sa.select(t.c.id).where(t.c.org_id == search.org_id, t.c.name == search.name)).first()
    if taken is not None:
        raise ConflictError(f"a saved search named {search.name!r} exists already")
    conn.execute(t.insert().values(id=search.id, org_id=search.org_id, name=search.name, query=search.query,
                                   created_by=search.created_by, created_at=search.created_at))


def list_for_org(conn: sa.Connection, org_id: int) -> list[SavedSearch]:
    """The organization's saved searches by name."""
    t = saved_searches
    rows = conn.execute(sa.select(t).where(t.c.org_id == org_id).order_by(t.c.name, t.c.id)).all()
    return [_saved(r) for r in rows]


def get(conn: sa.Connection, org_id: int, search_id: str) -> SavedSearch:
    """One saved search of `org_id` (NotFoundError for another organization's id, as for an unknown one)."""
    t = saved_searches
    row = conn.execute(sa.select(t).where(t.c.org_id == org_id, t.c.id == search_id)).first()
    if row is None:
        raise NotFoundError("no such saved search")
    return _saved(row)


def delete(conn: sa.Connection, org_id: int, search_id: str) -> SavedSearch:
    """Remove one saved search of `org_id` and return it (NotFoundError if there is none)."""
    found = get(conn, org_id, search_id)
    t = saved_searches
    conn.execute(t.delete().where(t.c.org_id == org_id, t.c.id == search_id))
    return found
