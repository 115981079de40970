"""Polling sessions of the audit log (table `read_sessions`, migration 0008): which read record covers a
reader's polls with one filter set, and since when (issue #9; the rule is in ingest/read_rules.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from auditkeep.storage.base import Storage
from auditkeep.storage.tables import read_sessions


@dataclass(frozen=True, slots=True)
class ReadSession:
    """The record covering a reader's polls with one filter set, and when it was written."""

    record_uuid: str
    started_at: datetime


def find_session(storage: Storage, org_id: int, reader: str, query_digest: str) -> ReadSession | None:
    """The session of `reader` polling with `query_digest`, or None (one primary-key lookup)."""
    q = sa.select(read_sessions.c.record_uuid, read_sessions.c.started_at).where(
        read_sessions.c.org_id == org_id, read_sessions.c.reader == reader,
        read_sessions.c.query_digest == query_digest)
    with storage.lookup() as conn:
        row = conn.execute(q).first()
    return None if row is None else ReadSession(row.record_uuid, row.started_at)


def start_session(storage: Storage, org_id: int, reader: str, query_digest: str, session: ReadSession) -> None:
    """Make `session` the one covering `reader`'s polls with `query_digest`, replacing an older one."""
    insert = sqlite.insert if storage.dialect == "sqlite" else postgresql.insert
    stmt = insert(read_sessions).values(org_id=org_id, reader=reader, query_digest=query_digest,
                                        record_uuid=session.record_uuid, started_at=session.started_at)
    stmt = stmt.on_conflict_do_update(
        index_elements=[read_sessions.c.org_id, read_sessions.c.reader, read_sessions.c.query_digest],
        set_={"record_uuid": stmt.excluded.record_uuid, "started_at": stmt.excluded.started_at},
    )
    with storage.write() as conn:
        conn.execute(stmt)
