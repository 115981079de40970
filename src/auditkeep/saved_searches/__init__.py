"""Saved searches (issue #13): create, list and delete named filter sets; each change a self-audit event
(`saved_search.create`, `saved_search.delete`)."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode

from auditkeep.auth.principals import Principal
from auditkeep.ids import new_event_uuid
from auditkeep.ingest.selfaudit import Origin, audit
from auditkeep.schemas.stats import SavedSearchCreate, SavedSearchPublic
from auditkeep.storage import Storage
from auditkeep.storage import saved_searches as store

# Paging and per-view parameters are not part of a search: a saved search opens on its newest events.
# The console's notes after a save or delete, and its form token, are not filters either.
_NOT_SAVED = frozenset({"cursor", "limit", "order", "after_seq", "format", "include", "saved", "saved_error",
                        "deleted_search", "csrf_token"})


def normalize_query(query: str) -> str:
    """`query` without a leading `?`, empty values and paging parameters, re-encoded."""
    pairs = [(k, v) for k, v in parse_qsl(query.lstrip("?"), keep_blank_values=False) if k not in _NOT_SAVED]
    return urlencode(pairs)


def public(search: store.SavedSearch) -> SavedSearchPublic:
    return SavedSearchPublic(id=search.id, name=search.name, query=search.query, created_by=search.created_by,
                             created_at=search.created_at)


def create(storage: Storage, org_id: int, spec: SavedSearchCreate, *, origin: Origin,
           actor: Principal) -> SavedSearchPublic:
    """Save a named filter set (409 if the name is taken in the organization)."""
    search = store.SavedSearch(id=new_event_uuid(), org_id=org_id, name=spec.name.strip(),
                               query=normalize_query(spec.query), created_by=actor.describe(),
                               created_at=datetime.now(UTC))
    with storage.write() as conn:
        store.insert(conn, search)
        stored = store.get(conn, org_id, search.id)
    audit(storage, org_id, "saved_search.create", origin, actor=actor,
          log_entry=f"Saved search {stored.name!r} created: {stored.query or 'no filters'}",
          payload=public(stored).model_dump(mode="json"))
    return public(stored)


def list_searches(storage: Storage, org_id: int) -> list[SavedSearchPublic]:
    with storage.read() as conn:
        return [public(s) for s in store.list_for_org(conn, org_id)]


def get(storage: Storage, org_id: int, search_id: str) -> SavedSearchPublic:
    with storage.read() as conn:
        return public(store.get(conn, org_id, search_id))


def delete(storage: Storage, org_id: int, search_id: str, *, origin: Origin, actor: Principal) -> SavedSearchPublic:
    """Delete one saved search of the organization (404 if there is none)."""
    with storage.write() as conn:
        gone = store.delete(conn, org_id, search_id)
    audit(storage, org_id, "saved_search.delete", origin, actor=actor,
          log_entry=f"Saved search {gone.name!r} deleted", payload=public(gone).model_dump(mode="json"))
    return public(gone)
