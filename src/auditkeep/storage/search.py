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

Where it lives: on PostgreSQL, tables of the database (migration 0013), changed by a purge or an erasure
in their own transaction. On SQLite, a database file of its own (storage/search_file.py), ATTACHed as
`search`, so its writes never take the events database's writer lock; a purge or an erasure commits
first and the index follows right after (`settle`), from what was committed. A crash in between leaves
work that the indexer's next pass finishes (the purged prefix is below `floor`; an erasure's seqs are
in `search_pending`, written before the erasure commits).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from auditkeep.storage import search_file
from auditkeep.storage.queries import escape_like, q_clause

if TYPE_CHECKING:
    from auditkeep.storage.base import Storage

# A trigram index serves substrings of three characters or more; shorter ones would be a scan of the
# whole log, so the API refuses them (422) rather than answer slowly or with short pages.
MIN_QUERY_LENGTH = 3
# SQLite's FTS5 entries are keyed by one integer: org_id * ORG_SHIFT + seq (2^40 seqs an organization,
# 2^23 organizations), so an organization's entries are one rowid range, in seq order.
ORG_SHIFT = 1 << 40
# How many events the indexer indexes in one transaction (2,000 take ~30 ms). On SQLite ingest no longer
# waits for it (the index has its own file); larger batches would cost less FTS5 CPU an event (20,000:
# 11.5 against 14.3 us, FTS5 alone, 60,000 rows) but were not measured end to end (docs/benchmarks.md).
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
# A page first tests `q` on this many events of its walk (per row of `limit`). A term found there at least
# DENSE_MATCHES_PER_ROW times per row, whose full page lies within the walk's first DENSE_WALK_PER_ROW
# events per row, is walked without asking the index, whose candidates would be many: a 3% term's 5,000
# took 14 ms to count through PostgreSQL's trigram index over 1,000,000 events (the bitmap of all its
# candidates is built first, so it grows with the log), against a few ms to walk. Rarer terms pay the
# probe (~2 ms) and use the index.
DENSE_PROBE_PER_ROW = 20
DENSE_MATCHES_PER_ROW = 0.25
DENSE_WALK_PER_ROW = 100
# The candidates of a text of more than three trigrams are the events holding its rarest three: on SQLite
# (match_expression) each trigram's entries counted up to TRIGRAM_PROBE_CAP, at most MAX_TRIGRAM_PROBES;
# on PostgreSQL by a sample's counts (storage/trigrams.py).
RAREST_TRIGRAMS = 3
TRIGRAM_PROBE_CAP = 1_000
MAX_TRIGRAM_PROBES = 16


def _q(storage: Storage, sql: str) -> str:
    return sql if storage.dialect == "sqlite" else sql.replace("?", "%s")


_FTS = f"{search_file.SCHEMA}.search_fts"  # SQLite: in the search file, ATTACHed as `search`


def _positions(storage: Storage) -> str:
    return f"{search_file.SCHEMA}.search_positions" if storage.dialect == "sqlite" else "search_positions"


def fts_terms(text: str) -> str:
    """An FTS5 query for the rows holding every trigram of `text` (at least 3 characters): a superset of
    the rows containing it, as the index keeps no positions to test their order (search_file.DETAIL)."""
    grams = dict.fromkeys(text[i:i + 3] for i in range(len(text) - 2))
    return " AND ".join('"' + g.replace('"', '""') + '"' for g in grams)


def _doc_sql(storage: Storage) -> str:
    newline = "char(10)" if storage.dialect == "sqlite" else "chr(10)"
    return f"coalesce(log_entry, '') || {newline} || url"


_DOC_SQLITE = "coalesce(log_entry, '') || char(10) || url"


def indexed_seq(conn: sa.Connection, storage: Storage, org_id: int) -> int:
    """The seq up to which `org_id`'s index is complete (0: nothing indexed yet). SQLite: 0 too when the
    event there has another chain hash than the index recorded (an index of another state of the events,
    `stale_orgs`, not rebuilt yet): `q` then scans rather than trust it."""
    if storage.dialect == "sqlite":
        row = conn.exec_driver_sql(
            f"SELECT CASE WHEN e.seq IS NULL OR e.hash = p.indexed_hash THEN p.indexed_seq ELSE 0 END "
            f"FROM {_positions(storage)} p LEFT JOIN events e ON e.org_id = p.org_id AND e.seq = p.indexed_seq "
            "WHERE p.org_id = ?", (org_id,)).first()
    else:
        row = conn.exec_driver_sql("SELECT indexed_seq FROM search_positions WHERE org_id = %s", (org_id,)).first()
    return 0 if row is None else int(row[0])


def _lock_position(conn: sa.Connection, storage: Storage, org_id: int) -> int:
    """`org_id`'s position, its row created if missing and locked (PostgreSQL) for this transaction, so
    indexers on several nodes and a purge take turns per organization. SQLite's writer lock does that."""
    position = _try_lock_position(conn, storage, org_id, wait=True)
    assert position is not None  # a waiting lock always returns the row
    return position


def _try_lock_position(conn: sa.Connection, storage: Storage, org_id: int, *, wait: bool) -> int | None:
    """As `_lock_position`; with `wait=False` None when another transaction holds the row (PostgreSQL):
    every serve worker runs an indexer, and one that finds an organization being indexed goes on to the
    next instead of queueing behind it, so the workers do not take turns doing the same work twice."""
    run = conn.exec_driver_sql
    if storage.dialect == "sqlite":
        run(f"INSERT OR IGNORE INTO {_positions(storage)} (org_id, indexed_seq) VALUES (?, 0)", (org_id,))
        return int(run(f"SELECT indexed_seq FROM {_positions(storage)} WHERE org_id = ?", (org_id,)).scalar_one())
    run("INSERT INTO search_positions (org_id, indexed_seq) VALUES (%s, 0) ON CONFLICT DO NOTHING", (org_id,))
    lock = "FOR UPDATE" if wait else "FOR UPDATE SKIP LOCKED"
    row = run(f"SELECT indexed_seq FROM search_positions WHERE org_id = %s {lock}", (org_id,)).first()
    return None if row is None else int(row[0])


def lagging_orgs(storage: Storage) -> list[int]:
    """Organizations with events not indexed yet (SQLite: or with index work a purge or an erasure left,
    or a position past the head, from a database restored beside a newer index)."""
    more = ""
    if storage.dialect == "sqlite":
        more = (" OR h.seq < p.indexed_seq OR h.first_seq - 1 > coalesce(p.floor, 0) OR EXISTS (SELECT 1 FROM "
                f"{search_file.SCHEMA}.search_pending s WHERE s.org_id = h.org_id)")
    with storage.read() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT h.org_id FROM chain_heads h LEFT JOIN {_positions(storage)} p ON p.org_id = h.org_id "
            f"WHERE h.seq > coalesce(p.indexed_seq, 0){more} ORDER BY h.org_id").all()
    return [int(r[0]) for r in rows]


def stale_orgs(storage: Storage) -> list[int]:
    """SQLite: organizations whose index does not belong to these events: the event at the position does
    not have the chain hash recorded with it (a database restored from a backup, or replaced, beside the
    search file of another state). The indexer rebuilds them (`index_batch`). PostgreSQL: none (the index
    is in the same database)."""
    if storage.dialect != "sqlite":
        return []
    with storage.read() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT p.org_id FROM {_positions(storage)} p LEFT JOIN events e ON e.org_id = p.org_id "
            "AND e.seq = p.indexed_seq WHERE p.indexed_seq > 0 AND e.seq IS NOT NULL "
            "AND e.hash IS NOT p.indexed_hash ORDER BY p.org_id").all()
    return [int(r[0]) for r in rows]


def drop_old_index(storage: Storage) -> None:
    """SQLite: drop the FTS5 table migration 0013 made in the events database, if there: the index lives in
    its own file since (storage/search_file.py) and is rebuilt there. (A database migrated since drops it
    in SQLiteBackend.after_migrate; this is for one that was at the newest revision already.)"""
    if storage.dialect != "sqlite":
        return
    with storage.read() as conn:
        old = conn.exec_driver_sql("SELECT 1 FROM main.sqlite_master WHERE name = 'search_fts'").first()
    if old is not None:
        with storage.write() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS main.search_fts")


def _tidy(conn: sa.Connection, org_id: int, position: int, first: int, head: int) -> tuple[int, bool]:
    """SQLite, in the indexer's transaction on the search file: start over if the index is not these
    events' (`stale_orgs`), drop the entries of purged events, rewrite those an erasure changed. Returns the
    position to go on from, and whether entries were rewritten (then merged: their old terms are gone)."""
    run = conn.exec_driver_sql
    positions = f"{search_file.SCHEMA}.search_positions"
    base = org_id * ORG_SHIFT
    recorded, floor = run(f"SELECT indexed_hash, floor FROM {positions} WHERE org_id = ?", (org_id,)).one()
    if position:
        row = run("SELECT hash FROM events WHERE org_id = ? AND seq = ?", (org_id, position)).first()
        if position > head or (row is not None and row[0] != recorded):
            run(f"DELETE FROM {_FTS} WHERE rowid > ? AND rowid < ?", (base, base + ORG_SHIFT))
            run(f"DELETE FROM {search_file.SCHEMA}.search_pending WHERE org_id = ?", (org_id,))
            run(f"UPDATE {positions} SET indexed_seq = 0, indexed_hash = NULL, floor = 0 WHERE org_id = ?", (org_id,))
            position, floor = 0, 0
    if first - 1 > floor:
        run(f"DELETE FROM {_FTS} WHERE rowid > ? AND rowid < ?", (base + int(floor), base + first))
        run(f"UPDATE {positions} SET floor = ? WHERE org_id = ?", (first - 1, org_id))
    pending = [int(r[0]) for r in run(f"SELECT seq FROM {search_file.SCHEMA}.search_pending WHERE org_id = ? "
                                      "ORDER BY seq", (org_id,))]
    done = [seq for seq in pending if first <= seq <= position]
    for start in range(0, len(done), 500):
        chunk = done[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        run(f"DELETE FROM {_FTS} WHERE rowid IN ({marks})", tuple(base + seq for seq in chunk))
        run(f"INSERT INTO {_FTS} (rowid, doc) SELECT org_id * {ORG_SHIFT} + seq, {_DOC_SQLITE} FROM events "
            f"WHERE org_id = ? AND seq IN ({marks})", (org_id, *chunk))
    if pending:
        run(f"DELETE FROM {search_file.SCHEMA}.search_pending WHERE org_id = ?", (org_id,))
    if done:
        # The old entries' terms out of the index (FTS5 3.40 keeps a deleted entry's terms in its segments
        # until they are merged; ~0.3 CPU s per 100,000 entries, docs/benchmarks.md); secure_delete zeroes
        # the pages they leave (search_file.attach).
        run(f"INSERT INTO {_FTS} ({_FTS.split('.')[1]}) VALUES ('optimize')")
    return position, bool(done)


def _checkpoint(storage: Storage) -> None:
    """SQLite: copy the search file's WAL into it and truncate it, so an erasure's old page images leave the
    WAL too (as storage/erasure.scrub_after does for the events database)."""
    with storage.search_engine().connect() as conn:
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        dbapi.execute(f"PRAGMA {search_file.SCHEMA}.wal_checkpoint(TRUNCATE)")


def settle(storage: Storage, org_id: int) -> None:
    """SQLite: bring `org_id`'s index up to what was just committed: a purge's events' entries out, an
    erasure's rewritten (`reindex` noted them). Call it after the purge's or erasure's commit. PostgreSQL:
    nothing to do, both changed the index in their own transaction."""
    if storage.dialect != "sqlite":
        return
    with storage.search_write() as conn:
        position = _lock_position(conn, storage, org_id)
        first, head = conn.exec_driver_sql("SELECT first_seq, seq FROM chain_heads WHERE org_id = ?",
                                           (org_id,)).one()
        _, rewritten = _tidy(conn, org_id, position, int(first), int(head))
    if rewritten:
        _checkpoint(storage)


def index_batch(storage: Storage, org_id: int, batch: int = INDEX_BATCH) -> int:
    """Index `org_id`'s next up to `batch` events after its position, and move the position past them in
    the same transaction (so a crash loses nothing and indexes nothing twice); how many were indexed."""
    rewritten = False
    with storage.search_write() as conn:
        run = conn.exec_driver_sql
        locked = _try_lock_position(conn, storage, org_id, wait=False)
        if locked is None:
            return 0  # another worker or node is indexing this organization now
        position = locked
        first, head = run(_q(storage, "SELECT first_seq, seq FROM chain_heads WHERE org_id = ?"), (org_id,)).one()
        if storage.dialect == "sqlite":
            position, rewritten = _tidy(conn, org_id, position, int(first), int(head))
        start = max(position, int(first) - 1)  # a purged prefix is never indexed
        end = min(int(head), start + batch)
        if end <= position:
            end = start = 0
        elif storage.dialect == "sqlite":
            # Straight from events to the index in SQL: no row crosses into Python. The position keeps the
            # chain hash of its event, which tells this index from another database's (`stale_orgs`).
            run(f"INSERT INTO {_FTS} (rowid, doc) SELECT org_id * {ORG_SHIFT} + seq, {_DOC_SQLITE} FROM events "
                "WHERE org_id = ? AND seq > ? AND seq <= ?", (org_id, start, end))
            run(f"UPDATE {_positions(storage)} SET indexed_seq = ?, indexed_hash = (SELECT hash FROM events "
                "WHERE org_id = ? AND seq = ?) WHERE org_id = ?", (end, org_id, end, org_id))
        else:
            run(f'INSERT INTO search_docs (org_id, seq, "timestamp", doc) SELECT org_id, seq, "timestamp", '
                f"{_doc_sql(storage)} FROM events WHERE org_id = %s AND seq > %s AND seq <= %s", (org_id, start, end))
            run("UPDATE search_positions SET indexed_seq = %s WHERE org_id = %s", (end, org_id))
    if rewritten:
        _checkpoint(storage)
    return end - start


def forget(conn: sa.Connection, storage: Storage, org_id: int, first: int, last: int) -> None:
    """Remove the index entries of `org_id`'s seqs `first`..`last`, inside the caller's transaction (a
    purge deleting those events). SQLite: nothing here; the purge's new first_seq says it, and `settle`
    after the commit (or the indexer's next pass) removes them from the search file."""
    if storage.dialect == "sqlite":
        return
    _lock_position(conn, storage, org_id)
    conn.exec_driver_sql("DELETE FROM search_docs WHERE org_id = %s AND seq >= %s AND seq <= %s",
                         (org_id, first, last))


def reindex(conn: sa.Connection, storage: Storage, org_id: int, seqs: list[int]) -> int:
    """Replace the index entries of `org_id`'s `seqs` by what their rows hold now, inside the caller's
    transaction (an erasure rewriting them, issue #12): the old text must not stay searchable or stored.
    Seqs the indexer has not reached yet are left to it. Returns how many entries are to be rewritten.

    SQLite: the search file is not in the caller's transaction, so the seqs are noted in `search_pending`
    (committed at once, before the caller's commit) and `settle`, after the caller's commit, rewrites and
    merges them (FTS5 before 3.42's secure-delete keeps a deleted entry's terms in its segments until they
    are merged); a crash before that leaves the note to the indexer's next pass."""
    if storage.dialect == "sqlite":
        with storage.search_write() as side:
            position = _lock_position(side, storage, org_id)
            side.exec_driver_sql(f"INSERT OR IGNORE INTO {search_file.SCHEMA}.search_pending (org_id, seq) "
                                 "SELECT ?, value FROM json_each(?)", (org_id, "[" + ",".join(map(str, seqs)) + "]"))
        return len([seq for seq in seqs if seq <= position])
    position = _lock_position(conn, storage, org_id)
    done = [seq for seq in seqs if seq <= position]
    run = conn.exec_driver_sql
    for start in range(0, len(done), 500):
        chunk = done[start : start + 500]
        marks = ", ".join("%s" for _ in chunk)
        run("UPDATE search_docs AS d SET doc = coalesce(e.log_entry, '') || chr(10) || e.url "
            f"FROM events AS e WHERE d.org_id = %s AND d.seq IN ({marks}) AND e.org_id = d.org_id AND e.seq = d.seq "
            'AND e."timestamp" = d."timestamp"', (org_id, *chunk))
    return len(done)


def merge_all(conn: sa.Connection, storage: Storage) -> None:
    """Nothing in the caller's transaction. SQLite: `settle` merges the FTS5 index after the erasure's
    commit, which drops every deleted entry's terms for good. PostgreSQL: the old row versions go with
    VACUUM, as the events' do."""


def index_entries(storage: Storage, org_id: int) -> list[int]:
    """The seqs `org_id` has index entries for, in order (for tests and checks)."""
    with storage.read() as conn:
        if storage.dialect == "sqlite":
            base = org_id * ORG_SHIFT
            rows = conn.exec_driver_sql(f"SELECT rowid - ? FROM {_FTS} WHERE rowid >= ? AND rowid < ? "
                                        "ORDER BY rowid", (base, base, base + ORG_SHIFT)).all()
        else:
            rows = conn.exec_driver_sql("SELECT seq FROM search_docs WHERE org_id = %s ORDER BY seq",
                                        (org_id,)).all()
    return [int(r[0]) for r in rows]


def match_expression(conn: sa.Connection, storage: Storage, org_id: int, text: str, through: int,
                     ) -> tuple[str, int | None]:
    """SQLite: the FTS5 query that selects the index's candidates for `text` (a superset of its matches),
    and how many candidates it can select at most when that is known to be under TRIGRAM_PROBE_CAP (the
    entries of its rarest trigram), else None. PostgreSQL's are read by `candidates`.

    A long text's phrase made FTS5 read the entry list of every trigram in it, common ones
    included ("datasources/31337": 48-71 ms over 1,000,000 events, for 3 matches); so each trigram's
    entries are counted up to TRIGRAM_PROBE_CAP (cheap: FTS5 stops there) and the candidates are the
    events holding the RAREST_TRIGRAMS rarest (0.4 ms)."""
    grams = sorted({text[i:i + 3] for i in range(len(text) - 2)})
    if len(grams) <= RAREST_TRIGRAMS:
        return fts_terms(text), None
    if len(grams) > MAX_TRIGRAM_PROBES:
        step = len(grams) / MAX_TRIGRAM_PROBES
        grams = [grams[int(i * step)] for i in range(MAX_TRIGRAM_PROBES)]
    counts = {g: count_candidates(conn, storage, org_id, fts_terms(g), through, cap=TRIGRAM_PROBE_CAP)
              for g in grams}
    rarest = sorted(grams, key=lambda g: counts[g])[:RAREST_TRIGRAMS]
    fewest = counts[rarest[0]]
    return " AND ".join(fts_terms(g) for g in rarest), fewest if fewest < TRIGRAM_PROBE_CAP else None


def count_candidates(conn: sa.Connection, storage: Storage, org_id: int, match: str, through: int, *,
                     cap: int = CANDIDATE_CAP) -> int:
    """SQLite: how many of `org_id`'s index entries up to seq `through` the FTS5 query `match` selects,
    counted up to `cap`."""
    base = org_id * ORG_SHIFT
    sql = (f"SELECT count(*) FROM (SELECT 1 FROM {_FTS} WHERE search_fts MATCH ? AND rowid > ? "
           "AND rowid <= ? LIMIT ?)")
    return int(conn.exec_driver_sql(sql, (match, base, base + through, cap)).scalar_one())


def candidates(conn: sa.Connection, org_id: int, text: str, rare: list[str], through: int, *,
               cap: int = CANDIDATE_CAP) -> tuple[str | None, str | None] | None:
    """PostgreSQL: the keys of `org_id`'s index candidates for `text` up to seq `through`, as two array
    literals (timestamps, seqs; None for none), or None when there are `cap` or more.

    One read of the trigram index serves both the choice (index or walk) and the page (listed_keys_sql):
    counting first and reading the page's candidates after read it twice (the bitmap of every candidate is
    built each time). The arrays stay text both ways, so thousands of candidates cost the worker no Python
    objects. Given the text's `rare` trigrams (storage/trigrams.py), the index is asked for those alone and
    the whole text is tested on each document it returns (`doc || ''`: a test the planner cannot take to
    the index, which would look up every trigram again); else for the whole text."""
    pattern = f"%{escape_like(text)}%"
    if rare:
        where = " AND ".join(["doc ILIKE %s"] * len(rare)) + " AND (doc || '') ILIKE %s"
        params: tuple[Any, ...] = (*(f"%{g}%" for g in rare), pattern)
    else:
        where, params = "doc ILIKE %s", (pattern,)
    count, stamps, seqs = conn.exec_driver_sql(
        'SELECT count(*), array_agg("timestamp")::text, array_agg(seq)::text FROM (SELECT "timestamp", seq '
        f"FROM search_docs WHERE org_id = %s AND seq <= %s AND {where} LIMIT %s) AS c",
        (org_id, through, *params, cap)).one()
    return None if int(count) >= cap else (stamps, seqs)


def listed_keys_sql(storage: Storage, org_id: int, text: str, found: tuple[str | None, str | None], *,
                    through: int, max_seq: int) -> tuple[str, tuple[Any, ...]]:
    """PostgreSQL: keys_sql with the index's candidates already read (`candidates`), passed back as arrays."""
    clause, clause_params = q_clause(storage, text)
    return ("SELECT k_ts, k_seq FROM unnest(?::timestamptz[], ?::bigint[]) AS k(k_ts, k_seq) UNION ALL "
            f'SELECT "timestamp", seq FROM events WHERE org_id = ? AND seq > ? AND seq <= ? AND {clause}',
            (*found, org_id, through, max_seq, *clause_params))


def keys_sql(storage: Storage, org_id: int, text: str, match: str, *, through: int, max_seq: int,
             ) -> tuple[str, tuple[Any, ...]]:
    """SQLite: a subquery (`?` placeholders) of the keys (k_seq) of the events that may match `text` up to
    `max_seq`: the index's candidates (FTS5 query `match`) up to seq `through`, then the events after it
    (the tail) that match. The caller tests the matching rule on each (LogQuery.keys). PostgreSQL reads its
    candidates first (`candidates`, `listed_keys_sql`).

    The tail is tested where it is read, in the range scan of its seqs: handed on untested, each of its
    events was looked up again by key for the caller's test, one at a time (PostgreSQL, before it read its
    candidates first: 2,000 tail events, ~4 of a page's ~14 ms over 1,000,000 events for an absent term)."""
    clause, clause_params = q_clause(storage, text)
    base = org_id * ORG_SHIFT
    return (f"SELECT rowid - ? AS k_seq FROM {_FTS} WHERE search_fts MATCH ? AND rowid > ? AND rowid <= ? "
            f"UNION ALL SELECT seq FROM events WHERE org_id = ? AND seq > ? AND seq <= ? AND {clause}",
            (base, match, base, base + through, org_id, through, max_seq, *clause_params))
