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
# A page first tests `q` on this many events of its walk (per row of `limit`): a term that fills the page
# there is common, and walking serves it at once without asking the index (whose candidates would be many).
DENSE_PROBE_PER_ROW = 20
# SQLite: the candidates of a text of more than three trigrams are the events holding its rarest three
# (match_expression), each trigram's entries counted up to TRIGRAM_PROBE_CAP, at most MAX_TRIGRAM_PROBES.
RAREST_TRIGRAMS = 3
TRIGRAM_PROBE_CAP = 1_000
MAX_TRIGRAM_PROBES = 16


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


def reindex(conn: sa.Connection, storage: Storage, org_id: int, seqs: list[int]) -> int:
    """Replace the index entries of `org_id`'s `seqs` by what their rows hold now, inside the caller's
    transaction (an erasure rewriting them, issue #12): the old text must not stay searchable or stored.
    Seqs the indexer has not reached yet are left to it. SQLite: FTS5 (before 3.42's secure-delete) keeps a
    deleted entry's terms in its segments until they are merged, so the erasure's caller merges them
    (`merge_all`). Returns how many entries were rewritten."""
    position = _lock_position(conn, storage, org_id)
    done = [seq for seq in seqs if seq <= position]
    run = conn.exec_driver_sql
    for start in range(0, len(done), 500):
        chunk = done[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        if storage.dialect == "sqlite":
            base = org_id * ORG_SHIFT
            run(f"DELETE FROM search_fts WHERE rowid IN ({marks})", tuple(base + seq for seq in chunk))
            run(f"INSERT INTO search_fts (rowid, doc) SELECT org_id * {ORG_SHIFT} + seq, {_doc_sql(storage)} "
                f"FROM events WHERE org_id = ? AND seq IN ({marks})", (org_id, *chunk))
        else:
            run(_q(storage, "UPDATE search_docs AS d SET doc = coalesce(e.log_entry, '') || chr(10) || e.url "
                f"FROM events AS e WHERE d.org_id = ? AND d.seq IN ({marks}) AND e.org_id = d.org_id AND e.seq = d.seq "
                'AND e."timestamp" = d."timestamp"'), (org_id, *chunk))
    return len(done)


def merge_all(conn: sa.Connection, storage: Storage) -> None:
    """SQLite: merge the FTS5 index into one segment, which drops every deleted entry's terms for good
    (an erasure's last step). PostgreSQL: nothing; the old row versions go with VACUUM, as the events' do."""
    if storage.dialect == "sqlite":
        conn.exec_driver_sql("INSERT INTO search_fts (search_fts) VALUES ('optimize')")


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


def match_expression(conn: sa.Connection, storage: Storage, org_id: int, text: str, through: int) -> str:
    """What selects the index's candidates for `text` (a superset of its matches): on PostgreSQL an ILIKE
    pattern (pg_trgm takes its trigrams); on SQLite an FTS5 query.

    On SQLite a long text's phrase made FTS5 read the entry list of every trigram in it, common ones
    included ("datasources/31337": 48-71 ms over 1,000,000 events, for 3 matches); so each trigram's
    entries are counted up to TRIGRAM_PROBE_CAP (cheap: FTS5 stops there) and the candidates are the
    events holding the RAREST_TRIGRAMS rarest (0.4 ms)."""
    if storage.dialect != "sqlite":
        return f"%{escape_like(text)}%"
    grams = sorted({text[i:i + 3] for i in range(len(text) - 2)})
    if len(grams) <= RAREST_TRIGRAMS:
        return fts_phrase(text)
    if len(grams) > MAX_TRIGRAM_PROBES:
        step = len(grams) / MAX_TRIGRAM_PROBES
        grams = [grams[int(i * step)] for i in range(MAX_TRIGRAM_PROBES)]
    counts = {g: count_candidates(conn, storage, org_id, fts_phrase(g), through, cap=TRIGRAM_PROBE_CAP)
              for g in grams}
    rarest = sorted(grams, key=lambda g: counts[g])[:RAREST_TRIGRAMS]
    return " AND ".join(fts_phrase(g) for g in rarest)


def count_candidates(conn: sa.Connection, storage: Storage, org_id: int, match: str, through: int, *,
                     cap: int = CANDIDATE_CAP) -> int:
    """How many of `org_id`'s index entries up to seq `through` `match` selects, counted up to `cap`."""
    if storage.dialect == "sqlite":
        base = org_id * ORG_SHIFT
        sql = ("SELECT count(*) FROM (SELECT 1 FROM search_fts WHERE search_fts MATCH ? AND rowid > ? "
               "AND rowid <= ? LIMIT ?)")
        params: tuple[Any, ...] = (match, base, base + through, cap)
    else:
        sql = ("SELECT count(*) FROM (SELECT 1 FROM search_docs WHERE org_id = %s AND seq <= %s "
               "AND doc ILIKE %s LIMIT %s) AS c")
        params = (org_id, through, match, cap)
    return int(conn.exec_driver_sql(sql, params).scalar_one())


def keys_sql(storage: Storage, org_id: int, match: str, through: int, max_seq: int) -> tuple[str, tuple[Any, ...]]:
    """A subquery (`?` placeholders) of the keys (k_seq; and k_ts on PostgreSQL) of the events that may
    match up to `max_seq`: the index's candidates (`match`) up to seq `through`, then every event after
    it (the tail). The caller tests the matching rule on each (LogQuery.keys)."""
    if storage.dialect == "sqlite":
        base = org_id * ORG_SHIFT
        return ("SELECT rowid - ? AS k_seq FROM search_fts WHERE search_fts MATCH ? AND rowid > ? AND rowid <= ? "
                "UNION ALL SELECT seq FROM events WHERE org_id = ? AND seq > ? AND seq <= ?",
                (base, match, base, base + through, org_id, through, max_seq))
    return ('SELECT "timestamp" AS k_ts, seq AS k_seq FROM search_docs WHERE org_id = ? AND seq <= ? '
            'AND doc ILIKE ? UNION ALL SELECT "timestamp", seq FROM events WHERE org_id = ? AND seq > ? '
            "AND seq <= ?",
            (org_id, through, match, org_id, through, max_seq))
