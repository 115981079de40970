"""The erasure's SQL (issue #12): find a person's events, overwrite their personal fields, clean up after.

The one UPDATE the append-only trigger lets through (migration 0011) happens here, inside a transaction
that holds the organization's `erasure_guard` row; ingest/erasure's caller holds the head lock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from auditkeep.integrity.canonical import ERASED_MARK
from auditkeep.schemas.audit_logs import LOG_FIELDS
from auditkeep.storage.queries import ascii_lower


def _q(dialect: str, sql: str) -> str:
    return sql if dialect == "sqlite" else sql.replace("?", "%s")


def person_rows(conn: sa.Connection, org_id: int, *, user_email: str | None,
                user_id: int | None) -> Sequence[Sequence[Any]]:
    """The person's events not erased yet, in seq order: LOG_FIELDS, seq, prev_hash, hash, personal_salt,
    personal_commitment (payload as stored text). The email matches ASCII-case-insensitively, as the
    API's filter does, through the same index (migration 0007)."""
    dialect = conn.dialect.name
    cols = ", ".join(f'"{f}"' if f == "timestamp" else f for f in LOG_FIELDS)
    if dialect == "postgresql":
        cols = cols.replace("payload", "payload::text")
    param: object
    if user_email is not None:
        lower = "lower(user_email)" if dialect == "sqlite" else 'lower(user_email COLLATE "C")'
        where, param = f"{lower} = ?", ascii_lower(user_email)
    else:
        where, param = "user_id = ?", user_id
    sql = (f"SELECT {cols}, seq, prev_hash, hash, personal_salt, personal_commitment FROM events "
           f"WHERE org_id = ? AND {where} AND personal_commitment IS NULL ORDER BY seq")
    return conn.exec_driver_sql(_q(dialect, sql), (org_id, param)).all()


# The columns that hold personal text (user_id is a number: its mentions are in these).
_TEXT_COLUMNS = ("user_email", "url", "payload", "log_entry", "referer", "user_agent", "client_ip")


def mention_rows(conn: sa.Connection, org_id: int, patterns: Sequence[str],
                 exclude: Sequence[int]) -> Sequence[Sequence[Any]]:
    """The organization's events not erased yet with a personal text column matching one of the LIKE
    `patterns` (ASCII case ignored; escape character `\\`), other than the seqs in `exclude`: candidates
    the caller confirms. The columns of `person_rows`; version 1 events (personal_salt null) included, for
    the caller to refuse. One scan of the organization's events, as no index serves a substring of eight
    fields: one LIKE a column and pattern was ~2.5x cheaper than one instr() over the lower-cased
    concatenation (SQLite, 50,000 events, same run); docs/benchmarks.md has the scan's cost at 1,000,000.
    """
    if not patterns:
        return []
    dialect = conn.dialect.name
    cols = ", ".join(f'"{f}"' if f == "timestamp" else f for f in LOG_FIELDS)
    if dialect == "sqlite":
        # SQLite's LIKE ignores ASCII case; one LIKE a column and pattern.
        tests = [f"{column} LIKE ? ESCAPE '\\'" for _ in patterns for column in _TEXT_COLUMNS]
        params: list[object] = [pattern for pattern in patterns for _ in _TEXT_COLUMNS]
    else:
        # The columns lower-cased once, as one text, then the patterns (lower-case) against it: 0.8 s per
        # 200,000 rows where ILIKE a column and pattern took 3.5-5.5 s and lower() LIKE a column 1.4 s
        # (PostgreSQL 15, same session). `LIKE ANY` of an array builds that text once a row, where one
        # `LIKE` a pattern built it once a pattern (backslash is PostgreSQL's default LIKE escape, as
        # ESCAPE cannot be given with ANY). A pattern may match across two fields: the caller's
        # confirmation, field by field, drops such candidates.
        hay = " || chr(10) || ".join(f"coalesce({'payload::text' if c == 'payload' else c}, '')" for c in _TEXT_COLUMNS)
        tests = [f'lower(({hay}) COLLATE "C") LIKE ANY (?::text[])']
        params = [list(patterns)]
        cols = cols.replace("payload", "payload::text")
    sql = (f"SELECT {cols}, seq, prev_hash, hash, personal_salt, personal_commitment FROM events "
           f"WHERE org_id = ? AND personal_commitment IS NULL AND ({' OR '.join(tests)}) ORDER BY seq")
    skip = set(exclude)
    rows = conn.exec_driver_sql(_q(dialect, sql), (org_id, *params)).all()
    return [row for row in rows if row[len(LOG_FIELDS)] not in skip]


def firing_bodies(conn: sa.Connection, org_id: int, patterns: Sequence[str]) -> list[tuple[str, str]]:
    """(id, body JSON text) of the organization's alert firings whose body matches one of the LIKE
    `patterns` (candidates, as in mention_rows): a firing's `group` holds the values its rule groups by."""
    if not patterns:
        return []
    dialect = conn.dialect.name
    like = "LIKE" if dialect == "sqlite" else "ILIKE"
    tests = " OR ".join(f"body {like} ? ESCAPE '\\'" for _ in patterns)
    sql = f"SELECT id, body FROM alert_firings WHERE org_id = ? AND ({tests})"
    return [(str(r[0]), str(r[1])) for r in conn.exec_driver_sql(_q(dialect, sql), (org_id, *patterns))]


def set_firing_body(conn: sa.Connection, firing_id: str, body: str) -> None:
    """Replace one firing's body (the erasure's rewrite of the values it held)."""
    conn.exec_driver_sql(_q(conn.dialect.name, "UPDATE alert_firings SET body = ? WHERE id = ?"), (body, firing_id))


def forget_query_digests(conn: sa.Connection, org_id: int) -> int:
    """Drop the organization's polling sessions: their keys are digests of queries, which may hold the
    erased values (each reader's next poll then writes a new read record); how many were dropped."""
    return conn.exec_driver_sql(_q(conn.dialect.name, "DELETE FROM read_sessions WHERE org_id = ?"),
                                (org_id,)).rowcount


def overwrite(conn: sa.Connection, org_id: int, erased: Sequence[tuple[int, object, str]]) -> None:
    """Replace the personal fields of (seq, timestamp, commitment) events by their erased form, under the
    organization's erasure_guard row. The timestamp lets PostgreSQL go to the one partition. SQLite's
    secure_delete stays on for the rest of the transaction; `done` turns it off."""
    dialect = conn.dialect.name
    if dialect == "sqlite":
        # Freed and rewritten space is overwritten with zeros, so the values do not linger in free pages
        # or in the slack of the pages the update rewrites (the WAL is truncated after the commit).
        conn.exec_driver_sql("PRAGMA secure_delete = ON")
    conn.exec_driver_sql(_q(dialect, "INSERT INTO erasure_guard (org_id) VALUES (?)"), (org_id,))
    erased_form = f"""client_ip = '{ERASED_MARK}', url = '{ERASED_MARK}', log_entry = NULL, payload = NULL,
        referer = NULL, user_agent = NULL, user_email = NULL, user_id = NULL, client_ip_key = NULL,
        personal_salt = NULL"""
    if dialect == "sqlite":
        # In-process, a statement a row costs no round trip (10,000 rows: 0.23 CPU s, docs/benchmarks.md).
        conn.exec_driver_sql(f"""UPDATE events SET {erased_form}, personal_commitment = ?
            WHERE org_id = ? AND seq = ? AND "timestamp" = ?""",
                             [(commitment, org_id, seq, ts) for seq, ts, commitment in erased])
    else:
        # One statement for every row, joined to the arrays of (seq, timestamp, commitment): one plan and
        # one execution where a statement a row was planned and executed 10,000 times over the partitioned
        # table (docs/benchmarks.md, "Erasure").
        seqs = [seq for seq, _, _ in erased]
        stamps = [ts for _, ts, _ in erased]
        commitments = [commitment for _, _, commitment in erased]
        conn.exec_driver_sql(
            f"""UPDATE events AS e SET {erased_form}, personal_commitment = u.commitment
            FROM unnest(%s::bigint[], %s::timestamptz[], %s::text[]) AS u(seq, ts, commitment)
            WHERE e.org_id = %s AND e.seq = u.seq AND e."timestamp" = u.ts""",
            (seqs, stamps, commitments, org_id))
    conn.exec_driver_sql(_q(dialect, "DELETE FROM erasure_guard WHERE org_id = ?"), (org_id,))


def done(conn: sa.Connection) -> None:
    """The erasure's last statement in its transaction (after the search index is rewritten, under the
    same secure_delete): the pooled SQLite connection goes back as it came."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("PRAGMA secure_delete = OFF")


def scrub_after(engine: sa.Engine) -> bool:
    """After the commit: on SQLite, copy the WAL into the database and truncate it, so the old page images
    (which still hold the values) leave the WAL file. False if readers kept the checkpoint from
    completing (it then happens at a later checkpoint). PostgreSQL: nothing here (docs/integrity.md §13)."""
    if engine.dialect.name != "sqlite":
        return True
    with engine.connect() as conn:
        dbapi = conn.connection.dbapi_connection
        assert isinstance(dbapi, sqlite3.Connection)
        # main only: unnamed, it would checkpoint every attached database, and the search index's file is
        # attached read-only (storage/search_file.py; search.settle checkpoints it).
        busy, _, _ = dbapi.execute("PRAGMA main.wal_checkpoint(TRUNCATE)").fetchone()
    return busy == 0
