"""Planning a page of a log read before anything is sent (issue #4): the snapshot bound, where the page
ends (the `Link` and `X-Last-Seq` headers go first), the page read whole when small, how `q` is served
(the search index, issue #13) and after_seq's seq windows. storage/queries.py turns each bounded query
into SQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from auditkeep.storage import search, trigrams
from auditkeep.storage.queries import LogQuery, Position, choose_driver, q_clause, select_sql, timestamp_text

if TYPE_CHECKING:
    from auditkeep.storage.base import Storage

# An after_seq request with a limit scans at most this many seqs per `limit` (at least SEQ_WINDOW_MIN),
# so a poller with a rare filter moves through the log in bounded steps: X-Last-Seq tells it how far.
SEQ_WINDOW_PER_ROW = 100
SEQ_WINDOW_MIN = 10_000
# A limited page is read while planning (one pass instead of two) when its JSON stays under this.
PREFETCH_BYTES = 4 * 1024 * 1024
# Only while the search index lags more than search.TAIL_LIMIT events behind (issue #13) is `q` tested
# along the walk with a budget: a limited page tests it on at most this many events of its walk (those
# matching the other filters); if the page is not full by then, it ends there and its Link continues the
# walk from that event. Testing an event costs ~0.6 us on SQLite and ~1.2 on PostgreSQL, so such a page
# costs a few ms however rare the term; unbounded, a rare term's page read ~1,000,000 events over a
# 10,000,000-event log (p99 0.7 s SQLite, 2.1 s PostgreSQL; docs/benchmarks.md).
Q_SCAN_BUDGET = 5_000


@dataclass(frozen=True)
class Page:
    """A planned response: the bounded query to stream, and what the headers say about the rest."""

    query: LogQuery
    next_after: Position | None = None  # walk: the next page starts after this
    last_seq: int | None = None  # poll: X-Last-Seq
    more: bool = False
    prefetched: list[str] | None = None  # the page's log JSON texts, when it was read while planning

class RequestConnection:
    """One pooled connection for a read request's key lookup and its page (issue #14): one checkout, not two.

    PostgreSQL: the lookup is the first statement of the page's own transaction, so it adds no BEGIN or
    COMMIT round trip of its own; READ COMMITTED takes a snapshot per statement, so the page still sees the
    read's record, committed in between on the recorder's connection. Nothing outlives the transaction, as
    PgBouncer's transaction pooling needs. SQLite: a transaction's snapshot is fixed by its first read, so
    the lookup has a transaction of its own, ended before the record commits (in-process: no round trips).
    Use it only where the page runs on this same database (no replica: `Storage.for_read() is storage`).
    """

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.conn = storage.engine.connect()

    @contextmanager
    def lookup(self) -> Iterator[sa.Connection]:
        if self.storage.dialect == "sqlite":
            with self.conn.begin():
                yield self.conn
            return
        if not self.conn.in_transaction():
            self.conn.begin()
        yield self.conn

    @contextmanager
    def page(self) -> Iterator[sa.Connection]:
        """The page's transaction (on PostgreSQL, the one the lookup began), committed at the end."""
        if not self.conn.in_transaction():
            self.conn.begin()
        yield self.conn
        self.conn.commit()

    def close(self) -> None:
        """Give the connection back (rolling back whatever is left open, as after an error)."""
        self.conn.close()


def seq_window(limit: int) -> int:
    """How many seqs one limited after_seq request scans at most."""
    return max(SEQ_WINDOW_MIN, SEQ_WINDOW_PER_ROW * limit)

def head_seq(conn: sa.Connection, storage: Storage, org_id: int) -> int:
    """The organization's newest seq (0 for an empty log)."""
    mark = "?" if storage.dialect == "sqlite" else "%s"
    row = conn.exec_driver_sql(f"SELECT seq FROM chain_heads WHERE org_id = {mark}", (org_id,)).first()
    return int(row[0]) if row is not None else 0


def event_seq(conn: sa.Connection, storage: Storage, org_id: int, event: tuple[str, str]) -> int | None:
    """The seq of the event (uuid, timestamp as API text), or None; the timestamp prunes PostgreSQL's
    partitions to one."""
    mark = "?" if storage.dialect == "sqlite" else "%s"
    sql = f'SELECT seq FROM events WHERE org_id = {mark} AND event_uuid = {mark} AND "timestamp" = {mark}'
    row = conn.exec_driver_sql(sql, (org_id, event[0], storage.backend.ts_param(event[1]))).first()
    return None if row is None else int(row[0])


def _prefetch(conn: sa.Connection, storage: Storage, q: LogQuery, extra: str) -> list[Any] | None:
    """Up to limit + 1 rows of (log JSON, *extra) for `q`, or None once they pass PREFETCH_BYTES."""
    assert q.limit is not None
    columns = f"{storage.backend.log_json_sql(integrity=q.integrity)}, {extra}"
    sql, params = select_sql(storage, q, columns, limit=q.limit + 1)
    result = conn.execution_options(stream_results=True).exec_driver_sql(sql, params)
    rows: list[Any] = []
    size = 0
    try:
        while batch := result.fetchmany(500):
            rows.extend(batch)
            size += sum(len(r[0]) for r in batch)
            if size > PREFETCH_BYTES:
                return None
            if len(batch) < 500:
                break  # the cursor is exhausted: asking again would cost a FETCH round trip for nothing
    finally:
        result.close()
    return rows


def plan_page(storage: Storage, q: LogQuery, *, prefetch_json: bool = False,
              through_event: tuple[str, str] | None = None, shared: RequestConnection | None = None) -> Page:
    """Fix the snapshot, the driving index and the page's end before anything is streamed (headers first).

    A walk's snapshot is `q.max_seq` (from its cursor), else the seq of `through_event` (uuid, timestamp:
    the walk's own read record, issue #9), else the organization's head seq.

    With `prefetch_json` a limited page is read whole, as the JSON objects the response is made of, when
    it is small (PREFETCH_BYTES): one pass over the index instead of two, which halves the cost of the
    filters that scan. Otherwise, and for a larger page, its end is found by reading only (timestamp, seq)
    of the rows at offsets limit-1 and limit, and the page is then streamed without being held in memory.

    `shared`: the request's connection, which looked its key up (RequestConnection), in place of a new one.
    """
    with shared.page() if shared is not None else storage.read() as conn:
        q = choose_driver(conn, storage, q)
        if q.by_seq:
            return _plan_poll(conn, storage, q, head_seq(conn, storage, q.org_id), prefetch_json)
        if q.max_seq is not None:
            body = q
        else:
            # In place of the head lookup, not beside it: the same round trips (tests/api/test_read_round_trips)
            own = None if through_event is None else event_seq(conn, storage, q.org_id, through_event)
            body = replace(q, max_seq=own if own is not None else head_seq(conn, storage, q.org_id))
        if q.filters.q is not None:
            body = _search(conn, storage, body)
        if q.limit is None:
            return Page(body)
        if prefetch_json and (rows := _prefetch(conn, storage, body, '"timestamp", seq')) is not None:
            if len(rows) > q.limit:
                last = rows[q.limit - 1]
                return Page(body, next_after=Position(timestamp_text(last[1]), int(last[2])), more=True,
                            prefetched=[r[0] for r in rows[: q.limit]])
            return _short_page(body, [r[0] for r in rows])
        sql, params = select_sql(storage, body, '"timestamp", seq', limit=2, offset=q.limit - 1)
        rows = list(conn.exec_driver_sql(sql, params).all())
        if len(rows) == 2:
            return Page(body, next_after=Position(timestamp_text(rows[0][0]), int(rows[0][1])), more=True)
        return _short_page(body, None)


def _short_page(body: LogQuery, prefetched: list[str] | None) -> Page:
    """A page with fewer than `limit` matches: the walk's last, unless q's scan budget ended it first (then
    the next page starts after the last event it scanned)."""
    return Page(body, next_after=body.through, more=body.through is not None, prefetched=prefetched)


def _plan_poll(conn: sa.Connection, storage: Storage, q: LogQuery, head: int, prefetch_json: bool) -> Page:
    after = q.after_seq or 0
    end = head if q.limit is None else min(head, after + seq_window(q.limit))
    body = replace(q, max_seq=max(end, after))
    if q.limit is None:
        return Page(body, last_seq=max(end, after))
    if prefetch_json and (rows := _prefetch(conn, storage, body, "seq")) is not None:
        if len(rows) > q.limit:
            last = int(rows[q.limit - 1][1])
            return Page(replace(body, max_seq=last), last_seq=last, more=True,
                        prefetched=[r[0] for r in rows[: q.limit]])
        return Page(body, last_seq=max(end, after), more=end < head, prefetched=[r[0] for r in rows])
    sql, params = select_sql(storage, body, "seq", limit=2, offset=q.limit - 1)
    found = conn.exec_driver_sql(sql, params).all()
    if len(found) == 2:
        return Page(replace(body, max_seq=int(found[0][0])), last_seq=int(found[0][0]), more=True)
    return Page(body, last_seq=max(end, after), more=end < head)


def _search(conn: sa.Connection, storage: Storage, body: LogQuery) -> LogQuery:
    """How a walk filtered by `q` is read (issue #13), always giving full pages: by walking and testing
    each event when the term is common (`_dense`, or CANDIDATE_CAP index candidates or more), else from
    the search index's candidates plus the unindexed tail. Only while the index lags more than TAIL_LIMIT
    events behind does a limited page fall back to Q_SCAN_BUDGET (and may end short)."""
    assert body.max_seq is not None and body.filters.q is not None
    text = body.filters.q
    through = min(search.indexed_seq(conn, storage, body.org_id), body.max_seq)
    if body.max_seq - through > search.TAIL_LIMIT:
        if body.limit is None:
            return body
        end = _scan_end(conn, storage, body, Q_SCAN_BUDGET)
        return body if end is None else replace(body, through=end)
    if storage.dialect == "sqlite":
        # A text whose rarest trigram has fewer than TRIGRAM_PROBE_CAP entries has at most that many
        # candidates: neither common enough to walk nor over CANDIDATE_CAP, so neither is asked.
        match, fewest = search.match_expression(conn, storage, body.org_id, text, through)
        if fewest is None:
            if body.limit is not None and _dense(conn, storage, body, text):
                return body
            if search.count_candidates(conn, storage, body.org_id, match, through) >= search.CANDIDATE_CAP:
                return body
        keys = search.keys_sql(storage, body.org_id, text, match, through=through, max_seq=body.max_seq)
        # No filter's index may drive; the candidates are looked up by primary key.
        return replace(body, keys=keys, driver="", branches=())
    sampled = trigrams.sample_for(storage)
    rare = [] if sampled is None else sampled.rarest(text, search.RAREST_TRIGRAMS)
    sparse = sampled is not None and bool(rare) and sampled.share(rare[0]) <= trigrams.SPARSE_SHARE
    if body.limit is not None and not sparse and _dense(conn, storage, body, text):
        return body
    found = search.candidates(conn, body.org_id, text, rare, through)
    if found is None:
        return body
    keys = search.listed_keys_sql(storage, body.org_id, text, found, through=through, max_seq=body.max_seq)
    return replace(body, keys=keys, branches=())


def _dense(conn: sa.Connection, storage: Storage, body: LogQuery, text: str) -> bool:
    """Whether walking the log and testing each event (matching the other filters) is the way to serve `text`:
    it is found DENSE_MATCHES_PER_ROW * limit times among the walk's first DENSE_PROBE_PER_ROW * limit events,
    and a full page (limit + 1 matches, as the page reads) lies within its first DENSE_WALK_PER_ROW * limit,
    so the page's own walk is bounded (a term found often at one end of the log and rarely after would
    otherwise be walked to the other end)."""
    assert body.limit is not None
    probe = max(1, round(search.DENSE_MATCHES_PER_ROW * body.limit))
    return (_matches_within(conn, storage, body, text, events=search.DENSE_PROBE_PER_ROW * body.limit,
                            needed=probe) >= probe
            and _matches_within(conn, storage, body, text, events=search.DENSE_WALK_PER_ROW * body.limit,
                                needed=body.limit + 1) > body.limit)


def _matches_within(conn: sa.Connection, storage: Storage, body: LogQuery, text: str, *, events: int,
                    needed: int) -> int:
    """How many of the walk's first `events` events (matching the other filters) contain `text`, counted up
    to `needed` (the database stops there)."""
    walk = replace(body, filters=replace(body.filters, q=None))
    inner, params = select_sql(storage, walk, "log_entry, url", limit=events)
    clause, clause_params = q_clause(storage, text)
    if storage.dialect != "sqlite":
        clause = clause.replace("?", "%s")
    sql = f"SELECT count(*) FROM (SELECT * FROM ({inner}) AS w WHERE {clause} LIMIT ?) AS m"
    if storage.dialect != "sqlite":
        sql = sql.replace("LIMIT ?", "LIMIT %s")
    return int(conn.exec_driver_sql(sql, (*params, *clause_params, max(1, needed))).scalar_one())


def _scan_end(conn: sa.Connection, storage: Storage, q: LogQuery, budget: int) -> Position | None:
    """Where a page of `q` stops testing `q.filters.q`: the `budget`-th event of its walk that matches its
    other filters (read from their index, without the rows), or None if the walk ends before it."""
    walk = replace(q, filters=replace(q.filters, q=None))
    sql, params = select_sql(storage, walk, '"timestamp", seq', limit=1, offset=budget - 1)
    row = conn.exec_driver_sql(sql, params).first()
    return None if row is None else Position(timestamp_text(row[0]), int(row[1]))
