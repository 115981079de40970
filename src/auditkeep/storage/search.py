"""The search index behind `q` (issue #13, migration 0013): what it holds, how the indexer fills it, how a
page uses it, and how a purge empties it.

The matching rule is the one `q` always had on SQLite, now on both backends: an event matches when its
`log_entry` or its `url` contains `q` as a substring, ignoring the case of A-Z only (ASCII; `É` and `é`
differ), with `q` at least MIN_QUERY_LENGTH characters. The final test is always that rule on the event
row itself (storage/queries.py); the index only proposes candidates, a superset of the matches (its
trigrams fold case more widely than ASCII and join the two fields with a newline), so results are exact
whatever the index proposes.

The index is filled behind ingest, so ingest does not pay for it (issue #13): `search_positions` says
per organization up to which seq it is complete, and a page of `q` reads candidates from the index for
seqs up to there and every event after it (the *tail*, seconds of events) from `events` itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from auditkeep.storage.queries import escape_like

if TYPE_CHECKING:
    from auditkeep.storage.base import Storage

# A trigram index serves substrings of three characters or more; shorter ones would be a scan of the
# whole log, so the API refuses them (422) rather than answer slowly or with short pages.
MIN_QUERY_LENGTH = 3
# SQLite's FTS5 entries are keyed by one integer: org_id * ORG_SHIFT + seq (2^40 seqs an organization,
# 2^23 organizations), so an organization's entries are one rowid range, in seq order.
ORG_SHIFT = 1 << 40
# How many events the indexer indexes in one transaction. SQLite has one writer, so this is also the
# longest ingest waits behind the indexer: 2,000 events take ~30 ms (docs/benchmarks.md).
INDEX_BATCH = 2_000
# A page scans at most this many unindexed events (seq after the index's position) directly. The indexer
# keeps the tail to seconds of events; a longer one (an upgraded database the indexer is still catching
# up with, or an indexer that is switched off) falls back to the scan of issue #4, bounded per page
# (pages.Q_SCAN_BUDGET), so a page may then end short with a Link.
TAIL_LIMIT = 20_000
# A term with fewer index candidates than this is served from the index: its candidates are read, tested
# and sorted (~1-2 us each). A term with more is common enough that walking the log in order and testing
# each event fills a page sooner than sorting every candidate would.
CANDIDATE_CAP = 5_000


def _q(storage: Storage, sql: str) -> str:
    return sql if storage.dialect == "sqlite" else sql.replace("?", "%s")


def fts_phrase(text: str) -> str:
    """`text` as an FTS5 phrase: with the trigram tokenizer, rows containing it as a substring."""
    return '"' + text.replace('"', '""') + '"'


def _doc_sql(storage: Storage) -> str:
    newline = "char(10)" if storage.dialect == "sqlite" else "chr(10)"
    return f"coalesce(log_entry, '') || {newline} || url"


def indexed_seq(conn: sa.Connection, storage: Storage, org_id: int) -> int:
    """The seq up to which `org_id`'s index is complete (0: nothing indexed yet)."""
    row = conn.exec_driver_sql(_q(storage, "SELECT indexed_seq FROM search_positions WHERE org_id = ?"),
                               (org_id,)).first()
    return 0 if row is None else int(row[0])


def _lock_position(conn: sa.Connection, storage: Storage, org_id: int) -> int:
    """`org_id`'s position, its row created if missing and locked (PostgreSQL) for this transaction, so
    indexers on several nodes and a purge take turns per organization. SQLite's writer lock does that."""
    run = conn.exec_driver_sql
    if storage.dialect == "sqlite":
        run("INSERT OR IGNORE INTO search_positions (org_id, indexed_seq) VALUES (?, 0)", (org_id,))
        return indexed_seq(conn, storage, org_id)
    run("INSERT INTO search_positions (org_id, indexed_seq) VALUES (%s, 0) ON CONFLICT DO NOTHING", (org_id,))
    return int(run("SELECT indexed_seq FROM search_positions WHERE org_id = %s FOR UPDATE", (org_id,))
               .scalar_one())


def lagging_orgs(storage: Storage) -> list[int]:
    """Organizations with events not indexed yet."""
    with storage.read() as conn:
        rows = conn.exec_driver_sql(
            "SELECT h.org_id FROM chain_heads h LEFT JOIN search_positions p ON p.org_id = h.org_id "
            "WHERE h.seq > coalesce(p.indexed_seq, 0) ORDER BY h.org_id").all()
    return [int(r[0]) for r in rows]


def index_batch(storage: Storage, org_id: int, batch: int = INDEX_BATCH) -> int:
    """Index `org_id`'s next up to `batch` events after its position, and move the position past them in
    the same transaction (so a crash loses nothing and indexes nothing twice); how many were indexed."""
    with storage.write() as conn:
        run = conn.exec_driver_sql
        position = _lock_position(conn, storage, org_id)
        first, head = run(_q(storage, "SELECT first_seq, seq FROM chain_heads WHERE org_id = ?"), (org_id,)).one()
        start = max(position, int(first) - 1)  # a purged prefix is never indexed
        end = min(int(head), start + batch)
        if end <= position:
            return 0
        doc = _doc_sql(storage)
        if storage.dialect == "sqlite":
            # Straight from events to the index in SQL: no row crosses into Python.
            run(f"INSERT INTO search_fts (rowid, doc) SELECT org_id * {ORG_SHIFT} + seq, {doc} FROM events "
                "WHERE org_id = ? AND seq > ? AND seq <= ?", (org_id, start, end))
        else:
            run(f'INSERT INTO search_docs (org_id, seq, "timestamp", doc) SELECT org_id, seq, "timestamp", {doc} '
                "FROM events WHERE org_id = %s AND seq > %s AND seq <= %s", (org_id, start, end))
        run(_q(storage, "UPDATE search_positions SET indexed_seq = ? WHERE org_id = ?"), (end, org_id))
    return end - start


def forget(conn: sa.Connection, storage: Storage, org_id: int, first: int, last: int) -> None:
    """Remove the index entries of `org_id`'s seqs `first`..`last`, inside the caller's transaction (a
    purge deleting those events)."""
    _lock_position(conn, storage, org_id)
    if storage.dialect == "sqlite":
        base = org_id * ORG_SHIFT
        conn.exec_driver_sql("DELETE FROM search_fts WHERE rowid >= ? AND rowid <= ?", (base + first, base + last))
    else:
        conn.exec_driver_sql("DELETE FROM search_docs WHERE org_id = %s AND seq >= %s AND seq <= %s",
                             (org_id, first, last))


def index_entries(storage: Storage, org_id: int) -> list[int]:
    """The seqs `org_id` has index entries for, in order (for tests and checks)."""
    with storage.read() as conn:
        if storage.dialect == "sqlite":
            base = org_id * ORG_SHIFT
            rows = conn.exec_driver_sql("SELECT rowid - ? FROM search_fts WHERE rowid >= ? AND rowid < ? "
                                        "ORDER BY rowid", (base, base, base + ORG_SHIFT)).all()
        else:
            rows = conn.exec_driver_sql("SELECT seq FROM search_docs WHERE org_id = %s ORDER BY seq",
                                        (org_id,)).all()
    return [int(r[0]) for r in rows]


def count_candidates(conn: sa.Connection, storage: Storage, org_id: int, text: str, through: int, *,
                     cap: int = CANDIDATE_CAP) -> int:
    """How many of `org_id`'s index entries up to seq `through` propose `text`, counted up to `cap`."""
    if storage.dialect == "sqlite":
        base = org_id * ORG_SHIFT
        sql = ("SELECT count(*) FROM (SELECT 1 FROM search_fts WHERE search_fts MATCH ? AND rowid > ? "
               "AND rowid <= ? LIMIT ?)")
        params: tuple[Any, ...] = (fts_phrase(text), base, base + through, cap)
    else:
        sql = ("SELECT count(*) FROM (SELECT 1 FROM search_docs WHERE org_id = %s AND seq <= %s "
               "AND doc ILIKE %s LIMIT %s) AS c")
        params = (org_id, through, f"%{escape_like(text)}%", cap)
    return int(conn.exec_driver_sql(sql, params).scalar_one())


def keys_sql(storage: Storage, org_id: int, text: str, through: int, max_seq: int) -> tuple[str, tuple[Any, ...]]:
    """A subquery (`?` placeholders) of the keys (k_seq; and k_ts on PostgreSQL) of the events that may
    match `text` up to `max_seq`: the index's candidates up to seq `through`, then every event after it
    (the tail). The caller tests the matching rule on each (LogQuery.keys)."""
    if storage.dialect == "sqlite":
        base = org_id * ORG_SHIFT
        return ("SELECT rowid - ? AS k_seq FROM search_fts WHERE search_fts MATCH ? AND rowid > ? AND rowid <= ? "
                "UNION ALL SELECT seq FROM events WHERE org_id = ? AND seq > ? AND seq <= ?",
                (base, fts_phrase(text), base, base + through, org_id, through, max_seq))
    return ('SELECT "timestamp" AS k_ts, seq AS k_seq FROM search_docs WHERE org_id = ? AND seq <= ? '
            'AND doc ILIKE ? UNION ALL SELECT "timestamp", seq FROM events WHERE org_id = ? AND seq > ? '
            "AND seq <= ?",
            (org_id, through, f"%{escape_like(text)}%", org_id, through, max_seq))
