"""Events: the append path (under an organization's head lock) and streamed reads.

Hot paths use driver-level SQL (`exec_driver_sql`) with positional parameters: at 5,000-event batches
SQLAlchemy's per-parameter processing would cost more than the insert itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import orjson
import sqlalchemy as sa

from auditkeep.errors import NotFoundError
from auditkeep.integrity.canonical import is_canonical
from auditkeep.schemas.audit_logs import LOG_FIELDS
from auditkeep.storage.queries import LogQuery, choose_driver, csv_line_sql, select_sql
from auditkeep.storage.types import format_timestamp

if TYPE_CHECKING:
    import psycopg

    from auditkeep.storage.base import Storage

_UUID_CHUNK = 500
# How ingest's uuid probe is planned on PostgreSQL (EventWriter._find_sql): sorting is what any plan but
# the (org_id, event_uuid) index would need, so the planner never chooses one.
_PROBE_SETTINGS = "SET LOCAL enable_sort = off; SET LOCAL enable_incremental_sort = off"
# Rows per chunk handed to the HTTP layer while streaming: large enough to amortize the thread hop,
# small enough that memory stays flat.
STREAM_CHUNK = 2000

_ROW_COLUMNS = ", ".join(f'"{f}"' if f == "timestamp" else f for f in LOG_FIELDS)


@dataclass(frozen=True, slots=True)
class ChainHead:
    seq: int
    hash: str
    merkle_frontier: str


def _q(storage: Storage, sql: str) -> str:
    """Write SQL with '?' placeholders once; psycopg wants '%s'."""
    return sql if storage.dialect == "sqlite" else sql.replace("?", "%s")


def row_to_log(row: Sequence[Any], *, payload_fragment: bool = False) -> dict[str, Any]:
    """A stored row (columns in LOG_FIELDS order, payload as JSON text) as the API returns it.

    With `payload_fragment` a payload stored in canonical form stays its text, as an `orjson.Fragment`,
    which hashes and serializes as is (integrity/canonical.py); any other stored text is parsed.
    """
    log = dict(zip(LOG_FIELDS, row, strict=True))
    ts = log["timestamp"]
    if isinstance(ts, datetime):
        log["timestamp"] = format_timestamp(ts)
    if log["payload"] is not None:
        text = log["payload"]
        # Verbatim only when the stored text is canonical; otherwise its value is hashed, as a client
        # recomputing from the API's answer would (integrity/canonical.py, is_canonical).
        log["payload"] = orjson.Fragment(text) if payload_fragment and is_canonical(text) else orjson.loads(text)
    # SQLite keeps booleans as 0/1; map exactly those, so a tampered 2 stays 2 and fails verification
    # instead of being read back as True.
    flag = log["is_support_user"]
    if flag is not None and type(flag) is int:
        log["is_support_user"] = {0: False, 1: True}.get(flag, flag)
    return log


def _select_rows_sql(storage: Storage) -> str:
    cols = _ROW_COLUMNS if storage.dialect == "sqlite" else _ROW_COLUMNS.replace("payload", "payload::text")
    return f"SELECT {cols}, seq, prev_hash, hash, personal_salt, personal_commitment FROM events"


class EventWriter:
    """Appends to one organization's log inside a write transaction that holds its head lock."""

    def __init__(self, storage: Storage, conn: sa.Connection, org_id: int) -> None:
        self.storage = storage
        self.conn = conn
        self.org_id = org_id
        row = conn.exec_driver_sql(storage.backend.lock_head_sql(), (org_id,)).first()
        if row is None:
            raise NotFoundError(f"unknown organization id {org_id}")
        self.head = ChainHead(row[0], row[1], row[2])
        received = row[3]
        if received is None and self.head.seq and storage.dialect == "postgresql":
            # The head moved while this waited for its lock (see PostgresBackend.lock_head_sql): a new
            # statement's snapshot holds its event, unless a purge deleted it.
            received = conn.exec_driver_sql(
                "SELECT received_at FROM events WHERE org_id = %s AND seq = %s", (org_id, self.head.seq)
            ).scalar()
        # The head event's received_at as the backend binds timestamps (text on SQLite), or None: ingest
        # never stamps a later event earlier, so retention by received_at deletes a prefix of the chain.
        self.head_received_at: object | None = received

    def find(self, event_uuids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Stored events of this organization with these uuids, as API logs."""
        found: dict[str, dict[str, Any]] = {}
        # SQLite binds each uuid as a parameter (its limit on them); PostgreSQL takes one array.
        size = _UUID_CHUNK if self.storage.dialect != "postgresql" else 10_000
        for i in range(0, len(event_uuids), size):
            chunk = list(event_uuids[i : i + size])
            if self.storage.dialect == "postgresql" and not self.may_hold(chunk):
                continue
            for row in self._unprepared(*self._find_sql(chunk)):
                log = row_to_log(row[: len(LOG_FIELDS)])
                found[log["event_uuid"]] = log
        return found

    def _find_sql(self, chunk: list[str]) -> tuple[str, tuple[Any, ...]]:
        base = _select_rows_sql(self.storage)
        if self.storage.dialect != "postgresql":
            marks = ", ".join("?" * len(chunk))
            return f"{base} WHERE org_id = ? AND event_uuid IN ({marks})", (self.org_id, *chunk)
        # One probe of the (org_id, event_uuid) index per uuid, and only of that index, whatever the
        # statistics say. `event_uuid IN (...)` scanned the organization's whole partition (164 ms for 500
        # new uuids at 400,000 events); `LATERAL (... WHERE org_id = ? AND event_uuid = ...)` still let the
        # planner take any index that leads with org_id, filtering event_uuid, when stale statistics put a
        # new organization at ~1 row: ingest then fell from 33,700 to 180 events/s within 20,000 events
        # (bench/uuid_probe_bench.py). So the probe asks for the uuid index's own order, (org_id,
        # event_uuid), bounded to the one key, with sorting switched off for it (_PROBE_SETTINGS): no other
        # index yields that order, so every other plan would need a Sort, which the planner then never picks.
        lateral = ("FROM unnest(%s::text[]) AS wanted(uuid) CROSS JOIN LATERAL (SELECT * FROM events "
                   "WHERE (org_id, event_uuid) >= (%s, wanted.uuid) AND (org_id, event_uuid) <= (%s, wanted.uuid) "
                   "ORDER BY org_id, event_uuid LIMIT 1) AS events")
        return base.replace("FROM events", lateral), (chunk, self.org_id, self.org_id)

    def may_hold(self, chunk: list[str]) -> bool:
        """PostgreSQL: whether this organization has any stored uuid between the least and the greatest of
        `chunk` (in the column's own order, so whatever the collation). If not, none of them is stored, and
        the per-uuid probe (_find_sql) is skipped: one descent of each partition's uuid index instead of one
        per uuid and partition. In-process, one writer at load ~17, the probe took ~200 ms of a 5,000-event
        batch beside ~760 ms for its COPY; with two workers into one organization it was the backends' most
        frequent state, 598 samples to COPY's 54 (docs/benchmarks.md, "Several nodes"). It holds for a batch of
        time-ordered ids (UUIDv7, as the SDK makes them) newer than what the organization has; a retry, or
        random ids, overlap stored ones, and the probe runs as before."""
        return bool(self._unprepared(*self._range_sql(chunk)))

    def _range_sql(self, chunk: list[str]) -> tuple[str, tuple[Any, ...]]:
        # Bounded and ordered by the uuid index's own key, planned under _PROBE_SETTINGS like the probe, so
        # stale statistics cannot turn it into a scan of the organization's rows (see _find_sql).
        return ("SELECT 1 FROM (SELECT min(u) AS lo, max(u) AS hi FROM unnest(%s::text[]) AS w(u)) AS b "
                "CROSS JOIN LATERAL (SELECT 1 FROM events WHERE (org_id, event_uuid) >= (%s, b.lo) "
                "AND (org_id, event_uuid) <= (%s, b.hi) ORDER BY org_id, event_uuid LIMIT 1) AS hit",
                (chunk, self.org_id, self.org_id))

    def _unprepared(self, sql: str, params: tuple[Any, ...]) -> Sequence[Sequence[Any]]:
        """Rows of a query planned for its own parameters. psycopg prepares a statement run 5 times, and
        PostgreSQL's generic plan for the uuid lookup over the partitions once filtered every event of the
        organization instead of probing the uuid index (270 ms a query at 15,000 events); see _find_sql.
        On PostgreSQL the query is planned under _PROBE_SETTINGS, inside a savepoint whose rollback puts
        the settings back for the rest of the transaction."""
        if self.storage.dialect != "postgresql":
            return self.conn.exec_driver_sql(sql, params).all()
        dbapi = cast("psycopg.Connection[tuple[Any, ...]]", self.conn.connection.dbapi_connection)
        with dbapi.cursor() as cursor:
            cursor.execute(f"SAVEPOINT uuid_probe; {_PROBE_SETTINGS}", prepare=False)
            cursor.execute(sql, params, prepare=False)
            rows = cursor.fetchall()
            cursor.execute("ROLLBACK TO SAVEPOINT uuid_probe; RELEASE SAVEPOINT uuid_probe", prepare=False)
            return rows

    def insert(self, rows: list[tuple[Any, ...]]) -> None:
        """Insert rows in the column order of the backend's insert_events_sql; the last, `client_ip_key`,
        is `storage.addresses.ip_key(client_ip)`, derived by the caller before it took the head lock."""
        if not rows:
            return
        sql = self.storage.backend.insert_events_sql()
        if self.storage.dialect != "postgresql":
            self.conn.exec_driver_sql(sql, rows)
            return
        dbapi = cast("psycopg.Connection[tuple[Any, ...]]", self.conn.connection.dbapi_connection)
        if len(rows) == 1:
            # One event (a read's record, most often): an INSERT is one round trip, COPY two (issue #4).
            with dbapi.cursor() as cursor:
                cursor.execute(sql, rows[0], prepare=False)
            return
        # COPY, the same columns: raw inserts of the service's rows at 100,000 events, 20,100 rows/s with
        # executemany, 38,100 with COPY (docs/benchmarks.md).
        columns = sql[sql.index("(") + 1 : sql.index(")")]
        with dbapi.cursor() as cursor, cursor.copy(f"COPY events ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    @property
    def refuses_stored_uuids(self) -> bool:
        """Whether the database itself refuses a uuid the organization already has: on SQLite
        ix_events_org_uuid is unique; on PostgreSQL it cannot be (a unique key of a partitioned table must
        hold the partition key, timestamp), so there ingest looks uuids up (migration 0001)."""
        return self.storage.dialect == "sqlite"

    def insert_new(self, rows: list[tuple[Any, ...]]) -> bool:
        """`insert` rows whose uuids were not looked up, inside a savepoint: False, with nothing inserted,
        when the database refuses one (a uuid already stored; only where `refuses_stored_uuids`)."""
        try:
            with self.conn.begin_nested():
                self.insert(rows)
        except sa.exc.IntegrityError:
            return False
        return True

    def set_head(self, head: ChainHead) -> None:
        self.conn.exec_driver_sql(
            _q(self.storage, "UPDATE chain_heads SET seq = ?, hash = ?, merkle_frontier = ? WHERE org_id = ?"),
            (head.seq, head.hash, head.merkle_frontier, self.org_id),
        )
        self.head = head


def _driver_rows(conn: sa.Connection, sql: str, params: Sequence[Any], chunk: int) -> Iterator[Sequence[Any]]:
    """Rows of `sql` in chunks, straight from the driver's cursor, inside `conn`'s transaction.

    SQLAlchemy's Row objects cost about 1 µs a row, a fifth of a JSON export's time on SQLite
    (docs/benchmarks.md). On PostgreSQL the cursor is a named (server-side) one, so memory stays flat.
    """
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    cursor = dbapi.cursor(name="auditkeep_stream") if conn.dialect.name == "postgresql" else dbapi.cursor()
    try:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(chunk):
            yield rows
    finally:
        cursor.close()


def iter_log_json(storage: Storage, q: LogQuery, chunk: int = STREAM_CHUNK) -> Iterator[list[str]]:
    """Matching logs as JSON object texts, built by the database, in chunks; one consistent snapshot."""
    with storage.engine.connect() as conn, conn.begin():
        q = choose_driver(conn, storage, q)
        sql, params = select_sql(storage, q, storage.backend.log_json_sql(integrity=q.integrity))
        for rows in _driver_rows(conn, sql, params, chunk):
            yield [r[0] for r in rows]


def iter_log_csv(storage: Storage, q: LogQuery, chunk: int = STREAM_CHUNK) -> Iterator[list[str]]:
    """Matching logs as CSV records (no line ends) of LOG_FIELDS (plus seq, prev_hash, hash, personal_salt
    and personal_commitment with `q.integrity`), built by the database like the JSON (queries.csv_line_sql),
    in chunks."""
    integrity = ("seq", "prev_hash", "hash", "personal_salt", "personal_commitment")
    columns = (*LOG_FIELDS, *integrity) if q.integrity else LOG_FIELDS
    with storage.engine.connect() as conn, conn.begin():
        q = choose_driver(conn, storage, q)
        sql, params = select_sql(storage, q, csv_line_sql(storage, columns))
        for rows in _driver_rows(conn, sql, params, chunk):
            yield [r[0] for r in rows]


def iter_chain(
    storage: Storage,
    org_id: int,
    after_seq: int = 0,
    chunk: int = 5000,
    *,
    upto_seq: int | None = None,
    payload_fragment: bool = False,
) -> Iterator[dict[str, Any]]:
    """Stored events of `org_id` with after_seq < seq (<= upto_seq), in seq order, as API logs plus seq,
    prev_hash, hash, personal_salt and personal_commitment (canonical form version 2, docs/integrity.md).
    `payload_fragment`: payloads as their stored canonical text (see `row_to_log`)."""
    bound = "" if upto_seq is None else " AND seq <= ?"
    sql = _q(storage, f"{_select_rows_sql(storage)} WHERE org_id = ? AND seq > ?{bound} ORDER BY seq")
    params = (org_id, after_seq) if upto_seq is None else (org_id, after_seq, upto_seq)
    n = len(LOG_FIELDS)
    with storage.engine.connect() as raw:
        conn = raw.execution_options(stream_results=True, max_row_buffer=chunk)
        with conn.begin():
            result = conn.exec_driver_sql(sql, params)
            try:
                while rows := result.fetchmany(chunk):
                    for row in rows:
                        log = row_to_log(row[:n], payload_fragment=payload_fragment)
                        log["seq"], log["prev_hash"], log["hash"] = row[n], row[n + 1], row[n + 2]
                        log["personal_salt"], log["personal_commitment"] = row[n + 3], row[n + 4]
                        yield log
            finally:
                # A caller that stops early (a verifier at the first break) closes the generator: close
                # the server-side cursor before its transaction ends, not at garbage collection.
                result.close()


def get_head(storage: Storage, org_id: int) -> ChainHead:
    with storage.read() as conn:
        row = conn.exec_driver_sql(
            _q(storage, "SELECT seq, hash, merkle_frontier FROM chain_heads WHERE org_id = ?"), (org_id,)
        ).first()
    if row is None:
        raise NotFoundError(f"unknown organization id {org_id}")
    return ChainHead(row[0], row[1], row[2])
