"""How a log read becomes SQL: filters, walk order, cursors, snapshot bounds and seq windows (issue #4).
Where a page ends, and what it is bounded by, is decided in pages.py.

Two ways to read an organization's log:

- a *walk* in (timestamp, seq) order, ascending or descending. With a `limit` it is paged: each page ends
  at a `Position` the next page starts after, and every page carries the snapshot bound `max_seq` (the
  organization's head seq when the walk began), so events ingested during the walk, even back-dated
  ones that sort before the current position, never appear, and every event that matched at the start is
  visited exactly once.
  A page filtered by `q` is read from the search index's candidates (`LogQuery.keys`, storage/search.py),
  or, for a common term, by walking and testing each event; only while the index lags far behind (a
  tail longer than search.TAIL_LIMIT) does it test at most pages.Q_SCAN_BUDGET events of the walk and may
  end short (`through`).
- an *after_seq* poll in seq (ingest) order: `seq > after_seq`, bounded above by a window end, so a
  poller's position only moves forward and an event arriving late with an old timestamp still has a
  higher seq than anything already handed out.

Index use (migration 0002): each equality filter has an index `(org_id, column, timestamp, seq)`, which
yields its matches already in walk order, so `limit=100` reads about 100 index entries. PostgreSQL's
planner picks among them from its statistics. SQLite's planner has no per-value statistics, so
`choose_driver` probes each candidate index with a capped count and lets the most selective one drive;
the other terms are written `+column`, which SQLite documents as "do not use an index for this term".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from auditkeep.storage.addresses import Network, network_bounds
from auditkeep.storage.types import format_timestamp

if TYPE_CHECKING:
    from auditkeep.storage.base import Storage

# A candidate driving index is counted up to this many matches. Fewer than this and a range (an action
# prefix, a CIDR block) can drive even though its matches must be sorted: sorting < 2,000 rows costs
# about a millisecond.
PROBE_CAP = 2000
# A range (an action prefix, a CIDR block) matching more than PROBE_CAP events is expanded into one
# ordered index scan per distinct value in it (merged by the database), if it holds at most this many.
MAX_BRANCHES = 32


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page of a walk ended: the last event's timestamp (API text) and seq."""

    timestamp: str
    seq: int


@dataclass(frozen=True, slots=True)
class LogFilters:
    """Filters combined with AND; None means "any". `action_prefix` matches actions starting with it."""

    action: str | None = None
    action_prefix: str | None = None
    user_email: str | None = None  # ASCII-case-insensitive (migration 0007)
    user_id: int | None = None
    object_type: str | None = None
    object_id: int | None = None
    source: str | None = None
    status: str | None = None
    request_type: str | None = None
    is_support_user: bool | None = None
    client_ip: Network | None = None
    q: str | None = None  # substring of log_entry or url, A-Z case-insensitive (storage/search.py)

    def given(self) -> dict[str, Any]:
        """The filters that are set."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class LogQuery:
    """Which of an organization's events to read, and how. Bounds are API timestamp text."""

    org_id: int
    start: str | None = None  # inclusive
    end: str | None = None  # exclusive
    integrity: bool = False
    descending: bool = False
    extra_where: tuple[str, ...] = field(default=())
    extra_params: tuple[Any, ...] = field(default=())
    filters: LogFilters = field(default_factory=LogFilters)
    after: Position | None = None  # walk: strictly after this position (in walk order)
    max_seq: int | None = None  # snapshot bound: only seq <= max_seq
    after_seq: int | None = None  # poll: seq order, only seq > after_seq
    limit: int | None = None
    through: Position | None = None  # walk: up to and including this position (q's scan budget)
    # A subquery (SQL, params) of the keys of the only events that may match: k_seq, and k_ts on
    # PostgreSQL (the search index's candidates for `q`, storage/search.py); the filters still apply.
    keys: tuple[str, tuple[Any, ...]] | None = None
    # Decided by choose_driver (SQLite): the filter whose index drives, "" for none, None = undecided.
    driver: str | None = None
    branches: tuple[Any, ...] = ()  # values of the driving range's column, one ordered scan each

    @property
    def by_seq(self) -> bool:
        return self.after_seq is not None


@dataclass(frozen=True, slots=True)
class _Term:
    name: str
    column: str
    template: str  # "{c}" stands for the column
    params: tuple[Any, ...]
    kind: str  # "eq" (ordered matches via its index), "range", or "scan" (never indexed)
    priority: int = 0


def _prefix_upper(prefix: str) -> str | None:
    """The least string above every string starting with `prefix` (code point order), or None."""
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if code == 0xD800:  # surrogates cannot be stored; skip past them
            code = 0xE000
        if code <= 0x10FFFF:
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(text: str) -> str:
    """`text` with A-Z lower-cased and nothing else: what SQLite's lower() and PostgreSQL's under the "C"
    collation do, so a filter's value compares as the indexed column does."""
    return text.translate(_ASCII_LOWER)


def escape_like(text: str) -> str:
    r"""`text` as a LIKE pattern matching itself (escape character `\`)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# Filters with an (org_id, column, timestamp, seq) index, most selective first (a tie-break for SQLite).
_INDEXED = ("object_id", "user_id", "user_email", "action", "object_type")
# Filters without one: a walk of the timestamp index checks them row by row (migration 0002 says why).
_UNINDEXED = ("request_type", "source", "status", "is_support_user")


def q_clause(storage: Storage, text: str) -> tuple[str, tuple[Any, ...]]:
    """The matching rule of `q` (storage/search.py) as SQL on log_entry and url, with `?` placeholders:
    a substring, A-Z case-insensitive, on both backends."""
    if storage.dialect == "sqlite":
        # SQLite's LIKE folds A-Z only.
        pattern = f"%{escape_like(text)}%"
        return "(log_entry LIKE ? ESCAPE '\\' OR url LIKE ? ESCAPE '\\')", (pattern, pattern)
    # lower() under the "C" collation folds A-Z only. strpos(), not LIKE: the planner estimated LIKE
    # '%failure%' at 0.01% of rows (it is 3%) and scanned every partition to sort them (0.9-1.2 s over
    # 1,000,000 events) where walking the timestamp index finds a page in ~30 ms; strpos() gets a
    # default estimate, and walks.
    needle = ascii_lower(text)
    return '(strpos(lower(log_entry COLLATE "C"), ?) > 0 OR strpos(lower(url COLLATE "C"), ?) > 0)', (needle, needle)


def _terms(storage: Storage, f: LogFilters) -> list[_Term]:
    sqlite = storage.dialect == "sqlite"
    # Prefix ranges compare code points; on PostgreSQL that needs the "C" collation (the index has it).
    action_col = "action" if sqlite else 'action COLLATE "C"'
    terms = _column_terms(f, action_col, sqlite)
    terms.extend(_range_terms(f, action_col))
    if f.q is not None:
        template, params = q_clause(storage, f.q)
        terms.append(_Term("q", "", template, params, "scan"))
    return terms


def _column_terms(f: LogFilters, action_col: str, sqlite: bool) -> list[_Term]:
    terms: list[_Term] = []
    for priority, name in enumerate(_INDEXED):
        value = getattr(f, name)
        if value is None:
            continue
        if name == "user_email":
            # Case-insensitive, ASCII only on both backends, as its index (migration 0007) is built.
            template = "lower({c}) = ?" if sqlite else 'lower({c} COLLATE "C") = ?'
            terms.append(_Term(name, name, template, (ascii_lower(value),), "eq", priority))
            continue
        column = action_col if name == "action" else name
        terms.append(_Term(name, column, "{c} = ?", (value,), "eq", priority))
    for name in _UNINDEXED:
        value = getattr(f, name)
        if value is None:
            continue
        # The two partial indexes match only these literal conditions (SQLite compares the terms).
        if name == "is_support_user" and value is True:
            terms.append(_Term(name, name, "{c} = 1" if sqlite else "{c}", (), "eq", len(_INDEXED)))
        elif name == "status" and value == "failure":
            terms.append(_Term(name, name, "{c} = 'failure'", (), "eq", len(_INDEXED) + 1))
        else:
            terms.append(_Term(name, name, "{c} = ?", (value,), "scan"))
    return terms


def _range_terms(f: LogFilters, action_col: str) -> list[_Term]:
    terms: list[_Term] = []
    if f.action_prefix is not None:
        upper = _prefix_upper(f.action_prefix)
        if upper is None:
            terms.append(_Term("action_prefix", action_col, "{c} >= ?", (f.action_prefix,), "range"))
        else:
            terms.append(_Term("action_prefix", action_col, "{c} >= ? AND {c} < ?", (f.action_prefix, upper),
                               "range"))
    if f.client_ip is not None:
        low, high = network_bounds(f.client_ip)
        if low == high:
            terms.append(_Term("client_ip", "client_ip_key", "{c} = ?", (low,), "eq", -1))
        else:
            terms.append(_Term("client_ip", "client_ip_key", "{c} >= ? AND {c} <= ?", (low, high), "range"))
    return terms


def _render(storage: Storage, term: _Term, indexed: bool) -> str:
    column = term.column
    if not indexed and storage.dialect == "sqlite" and term.kind != "scan":
        column = "+" + column  # SQLite: keep this term from choosing the index
    return term.template.replace("{c}", column)


def _q(storage: Storage, sql: str) -> str:
    return sql if storage.dialect == "sqlite" else sql.replace("?", "%s")


def _where(storage: Storage, q: LogQuery, driver_sql: tuple[str, tuple[Any, ...]] | None = None,
           ) -> tuple[str, list[Any]]:
    """WHERE clause and parameters. `driver_sql` replaces the driving term (one action branch)."""
    sqlite = storage.dialect == "sqlite"
    plus = "+" if sqlite else ""
    ts = storage.backend.ts_param
    clauses = ["org_id = ?"]
    params: list[Any] = [q.org_id]
    # In seq order the (org_id, seq) key drives; a time bound must not pull in the timestamp index.
    ts_col = f'{plus}"timestamp"' if q.by_seq else '"timestamp"'
    if q.start is not None:
        clauses.append(f"{ts_col} >= ?")
        params.append(ts(q.start))
    if q.end is not None:
        clauses.append(f"{ts_col} < ?")
        params.append(ts(q.end))
    if q.after_seq is not None:
        clauses.append("seq > ?")
        params.append(q.after_seq)
    if q.max_seq is not None:
        clauses.append("seq <= ?" if q.by_seq else f"{plus}seq <= ?")
        params.append(q.max_seq)
    if q.after is not None and not q.by_seq:
        # Equivalent to (timestamp, seq) > (t, s), written so the timestamp bound is an index range.
        cmp = "<" if q.descending else ">"
        clauses.append(f'"timestamp" {cmp}= ? AND ("timestamp" {cmp} ? OR seq {cmp} ?)')
        at = ts(q.after.timestamp)
        params.extend((at, at, q.after.seq))
    if q.through is not None and not q.by_seq:
        # (timestamp, seq) <= (t, s) in walk order, likewise.
        cmp = ">" if q.descending else "<"
        clauses.append(f'"timestamp" {cmp}= ? AND ("timestamp" {cmp} ? OR seq {cmp}= ?)')
        at = ts(q.through.timestamp)
        params.extend((at, at, q.through.seq))
    for term in _terms(storage, q.filters):
        if driver_sql is not None and term.name == q.driver:
            clauses.append(driver_sql[0])
            params.extend(driver_sql[1])
            continue
        indexed = not q.by_seq and (not sqlite or q.driver is None or term.name == q.driver)
        clauses.append(_render(storage, term, indexed))
        params.extend(term.params)
    clauses.extend(q.extra_where)
    params.extend(q.extra_params)
    return " AND ".join(clauses), params


def _order(q: LogQuery) -> str:
    if q.by_seq:
        return "seq"
    direction = "DESC" if q.descending else "ASC"
    return f'"timestamp" {direction}, seq {direction}'


def select_sql(storage: Storage, q: LogQuery, columns: str, *, limit: int | None = None, offset: int = 0,
               ) -> tuple[str, tuple[Any, ...]]:
    """`SELECT columns` of the events `q` matches, in its order; `limit` overrides `q.limit`."""
    limit = q.limit if limit is None else limit
    tail = ""
    tail_params: list[Any] = []
    if limit is not None:
        tail = " LIMIT ? OFFSET ?"
        tail_params = [limit, offset]
    order = _order(q)
    if q.keys is not None:
        where, params = _where(storage, q)
        if storage.dialect == "sqlite":
            # CROSS JOIN: SQLite keeps the keys outside, so each candidate is one primary-key probe.
            sql = (f"SELECT {columns} FROM ({q.keys[0]}) AS k CROSS JOIN events WHERE events.org_id = ? "
                   f"AND events.seq = k.k_seq AND {where} ORDER BY {order}{tail}")
            return _q(storage, sql), (*q.keys[1], q.org_id, *params, *tail_params)
        # PostgreSQL: a LATERAL probe per candidate (its timestamp prunes to one partition; LIMIT 1 keeps
        # the planner from flattening it into a join), sorted by the keys' own columns. With a plain join
        # the planner, costing each probe as one per partition, hash-joined a scan of every partition or
        # (for a cursor's fast start) merged with a walk of the timestamp index: 1.7-2.6 s instead of
        # ~20-60 ms over 1,000,000 events.
        direction = "DESC" if q.descending else "ASC"
        # The keys are sorted before the probes, so the probes run in page order and stop with the page
        # (LIMIT): sorted after, every candidate was probed first (~4,000 for an id prefix over 1,000,000
        # events: 36 ms, against ~4 once sorted first).
        sorted_keys = f"SELECT * FROM ({q.keys[0]}) AS k0 ORDER BY k_ts {direction}, k_seq {direction}"
        sql = (f"SELECT {columns} FROM ({sorted_keys}) AS k CROSS JOIN LATERAL (SELECT * FROM events "
               f'WHERE events.org_id = ? AND events.seq = k.k_seq AND events."timestamp" = k.k_ts AND {where} '
               f"LIMIT 1) AS events ORDER BY k.k_ts {direction}, k.k_seq {direction}{tail}")
        return _q(storage, sql), (*q.keys[1], q.org_id, *params, *tail_params)
    if not q.branches:
        where, params = _where(storage, q)
        if limit is not None and storage.dialect == "postgresql" and not _keys_first(storage, q):
            # The page's rows first, then its columns: `columns` is often the log's JSON, built per row by a
            # subplan that PostgreSQL evaluated for every match *below* the sort when it sorted instead of
            # walking the timestamp index (a partition without statistics yet: a new month, a fresh
            # database), so a limit=100 page of a 5,000-event log built 5,000 JSON objects, 110 ms, and
            # the cost grew with the log (issue #11: under ingest, reads fell to 7 a second). A subquery
            # with a LIMIT is never flattened, so the JSON is built for the page's rows alone (~2 ms).
            sql = (f"SELECT {columns} FROM (SELECT * FROM events WHERE {where} ORDER BY {order}{tail}) AS events "
                   f"ORDER BY {order}")
            return _q(storage, sql), (*params, *tail_params)
        if limit is None or not _keys_first(storage, q):
            sql = f"SELECT {columns} FROM events WHERE {where} ORDER BY {order}{tail}"
            return _q(storage, sql), (*params, *tail_params)
        # The page's keys from the driving index alone, then its rows (see _keys_first).
        keys = (f'SELECT "timestamp" AS k_ts, seq AS k_seq FROM events WHERE {where} ORDER BY {order}{tail}')
        return _q(storage, _rows_by_keys(q, keys, columns)), (*params, *tail_params, q.org_id)
    # One ordered index scan per value, each stopping after what the page can use and reading only
    # (timestamp, seq), which the index holds; the page's rows are then fetched by their key.
    column = _branch_column(storage, q.driver or "")
    parts: list[str] = []
    params = []
    for i, value in enumerate(q.branches):
        where, branch_params = _where(storage, q, (f"{column} = ?", (value,)))
        inner_limit = "" if limit is None else f" LIMIT {int(limit) + int(offset)}"
        parts.append(f'SELECT * FROM (SELECT "timestamp", seq FROM events WHERE {where} ORDER BY {order}'
                     f"{inner_limit}) AS b{i}")
        params.extend(branch_params)
    keys = (f'SELECT "timestamp" AS k_ts, seq AS k_seq FROM ({" UNION ALL ".join(parts)}) AS u '
            f"ORDER BY {order}{tail}")
    return _q(storage, _rows_by_keys(q, keys, columns)), (*params, *tail_params, q.org_id)


def _rows_by_keys(q: LogQuery, keys: str, columns: str) -> str:
    """`SELECT columns` of the events whose (timestamp, seq) `keys` yields, in walk order; the last
    parameter is the org_id."""
    direction = "DESC" if q.descending else "ASC"
    # CROSS JOIN: SQLite keeps the written order, the keys outside, so each row is one primary-key probe
    # (the timestamp lets PostgreSQL prune to the one partition holding it).
    return (f"SELECT {columns} FROM ({keys}) AS k CROSS JOIN events WHERE events.org_id = ? "
            f'AND events.seq = k.k_seq AND events."timestamp" = k.k_ts '
            f"ORDER BY k.k_ts {direction}, k.k_seq {direction}")


def _keys_first(storage: Storage, q: LogQuery) -> bool:
    """Whether a page is read as keys first, then rows: on PostgreSQL, for a range filter (an action
    prefix, a CIDR block). Its index holds (timestamp, seq), so reading only the keys lets the planner
    take every match from that index alone and sort them (an index-only scan), or, for a broad range,
    walk the timestamp index as before; asked for whole rows, it could only walk, reading the row of
    every event it passes: a /16 holding 35,000 of 10,000,000 events, 42 ms -> 4-8 ms to execute
    (docs/benchmarks.md)."""
    if storage.dialect != "postgresql" or q.by_seq:
        return False
    return any(t.kind == "range" for t in _terms(storage, q.filters))


def _probe(conn: sa.Connection, storage: Storage, org_id: int, term: _Term) -> int:
    sql = (f"SELECT count(*) FROM (SELECT 1 FROM events WHERE org_id = ? AND {_render(storage, term, True)} "
           f"LIMIT {PROBE_CAP}) AS p")
    return int(conn.exec_driver_sql(_q(storage, sql), (org_id, *term.params)).scalar_one())


def _branch_column(storage: Storage, driver: str) -> str:
    if driver == "client_ip":
        return "client_ip_key"
    return "action" if storage.dialect == "sqlite" else 'action COLLATE "C"'


def _distinct_values(conn: sa.Connection, storage: Storage, org_id: int, term: _Term, limit: int,
                     ) -> list[Any] | None:
    """The distinct values of a range term's column (one index seek each), or None past `limit`."""
    column = _branch_column(storage, term.name)
    low, *rest = term.params
    upper = "" if not rest else (" AND {c} <= ?" if term.name == "client_ip" else " AND {c} < ?")
    found: list[Any] = []
    low_op = ">="
    while len(found) <= limit:
        # ORDER BY ... LIMIT 1 rather than min(): PostgreSQL has no min(bytea).
        sql = (f"SELECT {{c}} FROM events WHERE org_id = ? AND {{c}} {low_op} ?{upper} ORDER BY {{c}} LIMIT 1"
               .replace("{c}", column))
        value = conn.exec_driver_sql(_q(storage, sql), (org_id, low, *rest)).scalar()
        if value is None:
            return found
        found.append(value)
        low, low_op = value, ">"
    return None


def choose_driver(conn: sa.Connection, storage: Storage, q: LogQuery) -> LogQuery:
    """`q` with its driving index decided (SQLite).

    PostgreSQL's planner decides for itself. Expanding a broad range into branches there was tried: it
    runs in 5-7 ms instead of ~45, but planning the UNION over every partition, and one distinct-value
    probe per value, cost 50-80 ms in all (docs/benchmarks.md).
    """
    if storage.dialect != "sqlite" or q.driver is not None:
        return q
    if q.by_seq:
        return replace(q, driver="")
    candidates = [t for t in _terms(storage, q.filters) if t.kind != "scan"]
    if not candidates:
        return replace(q, driver="")
    if len(candidates) == 1 and candidates[0].kind == "eq":
        return replace(q, driver=candidates[0].name)
    counts = {t.name: _probe(conn, storage, q.org_id, t) for t in candidates}
    eqs = sorted((t for t in candidates if t.kind == "eq"), key=lambda t: (counts[t.name], t.priority))
    ranges = sorted((t for t in candidates if t.kind == "range"), key=lambda t: counts[t.name])
    best_range = ranges[0] if ranges else None
    if best_range is not None and counts[best_range.name] < PROBE_CAP and (
        not eqs or counts[best_range.name] < counts[eqs[0].name]
    ):
        return replace(q, driver=best_range.name)
    if eqs:
        return replace(q, driver=eqs[0].name)
    for term in ranges:
        values = _distinct_values(conn, storage, q.org_id, term, MAX_BRANCHES)
        if values:
            return replace(q, driver=term.name, branches=tuple(values))
    return replace(q, driver="")


def timestamp_text(value: Any) -> str:
    """A timestamp as the database returns it (text on SQLite, datetime on PostgreSQL) as API text."""
    return format_timestamp(value) if isinstance(value, datetime) else str(value)


_NUMBERS = frozenset({"object_id", "user_id", "seq"})
# The text fields a client writes freely; the others are a uuid, an address, hex or JSON ({...}), which
# never begin with a character a spreadsheet acts on.
_FREE_TEXT = frozenset({"action", "log_entry", "object_type", "referer", "request_type", "source", "status",
                        "url", "user_agent", "user_email"})


def _csv_text_opening(storage: Storage, column: str) -> str:
    """SQL for the opening of a quoted CSV text cell: `"'` when the text begins with =, +, -, @, TAB, CR
    or ', else `"`. A spreadsheet runs a cell beginning with one of the first six as a formula (CWE-1236);
    the `'` makes it text. A text that begins with `'` gets one too, so readers strip exactly one leading
    `'` from such a cell and always get the text back (client/_files.py, docs/integrity.md)."""
    tab, cr = ("char(9)", "char(13)") if storage.dialect == "sqlite" else ("chr(9)", "chr(13)")
    quote_apostrophe = "'\"'''"  # the SQL literal '"''' : a double quote, then an apostrophe
    return (f"CASE WHEN substr({column}, 1, 1) IN ('=', '+', '-', '@', '''', {tab}, {cr}) "
            f"THEN {quote_apostrophe} ELSE '\"' END")


def csv_line_sql(storage: Storage, columns: Sequence[str]) -> str:
    """A SQL expression making one CSV record (RFC 4180, no line end) of `columns`: text cells always
    quoted (so an empty string is `""` and NULL an empty cell), numbers bare, booleans true/false,
    timestamps as API text, payload as its JSON text; a client's text that a spreadsheet would run as a
    formula gets a leading `'` (`_csv_text_opening`)."""
    cells = []
    for c in columns:
        if c in _NUMBERS:
            cells.append(f"coalesce(CAST({c} AS TEXT), '')")
        elif c == "is_support_user":
            truth = "is_support_user = 1" if storage.dialect == "sqlite" else "is_support_user"
            cells.append(f"CASE WHEN {truth} THEN 'true' WHEN NOT {truth} THEN 'false' ELSE '' END")
        elif c == "timestamp":
            cells.append('"timestamp"' if storage.dialect == "sqlite" else
                         """to_char("timestamp" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')""")
        elif c in _FREE_TEXT:
            opening = _csv_text_opening(storage, c)
            cells.append(f"""coalesce({opening} || replace({c}, '"', '""') || '"', '')""")
        else:
            text = "payload::text" if c == "payload" and storage.dialect != "sqlite" else c
            cells.append(f"""coalesce('"' || replace({text}, '"', '""') || '"', '')""")
    return " || ',' || ".join(cells)
