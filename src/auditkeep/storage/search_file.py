"""SQLite: the search index in a database file of its own (issue #13), beside the events database.

Why a file of its own: SQLite has one writer per database file, so an FTS5 index inside the events
database made every indexer batch take the lock (and the fsync) ingest needs; ingest ran at 0.60x with an
indexer that kept up (docs/benchmarks.md, "Search"). In its own file, with its own WAL, the indexer holds
only that file's lock, and ingest shares nothing with it but the CPU.

- The file is `<database>-search` (beside SQLite's own `-wal` and `-shm`), created at startup. It holds
  `search_fts` (FTS5, trigram tokenizer, no positions, rowid = org_id * 2^40 + seq), `search_positions` (per
  organization: the seq up to which it is complete, that event's chain hash, and `floor`, the seq below
  which a purge removed events) and `search_pending` (seqs an erasure rewrote whose entries are still to
  be rewritten).
- Every connection of the events database ATTACHes it read-only as `search`, so a page of `q` reads the
  index and the events in one statement. A read-only attachment takes no lock of that file when the
  connection begins a write (BEGIN IMMEDIATE), which a read-write one would (measured: ingest then waited
  for the indexer's batch again).
- What writes it (the indexer, a purge's and an erasure's follow-up) uses `writer_engine`: the events
  database opened read-only, the search file ATTACHed read-write, so a transaction there takes the
  search file's writer lock and never the events database's; and it takes that lock before it reads the
  events, so what it reads of them is current (`writer_engine` says why).

It is derived data: everything in it is rebuilt from the events. A file that is missing or unreadable
(not a database, corrupt) is replaced by an empty one, and one that does not belong to these events (a
database restored from a backup beside a newer index) is detected by the chain hash each position
records (storage/search.py); the indexer then rebuilds from the events, and until it has caught up `q`
falls back to its bounded scan. So a backup (`auditkeep backup`) leaves it out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import QueuePool

log = logging.getLogger("auditkeep.search")

SCHEMA = "search"  # the name the search file is ATTACHed under
# Which rows hold each trigram, not where in them: a page's candidates are the rows holding all of a few of
# `q`'s trigrams (storage/search.match_expression) and the final test is the matching rule on the row
# itself, so positions bought nothing. Without them (against detail = 'full'; 200,000 events' docs, one
# process): indexing 18.4 against 28.9 CPU us an event, the file 46% smaller, the `optimize` merge an
# erasure ends with 0.76 against 1.48 s (docs/benchmarks.md, "Search"). A file made with positions is
# replaced at startup and rebuilt (`ensure`).
DETAIL = "none"
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26
_TABLES = (
    f"CREATE VIRTUAL TABLE IF NOT EXISTS search_fts USING fts5(doc, tokenize = 'trigram', detail = '{DETAIL}')",
    "CREATE TABLE IF NOT EXISTS search_positions (org_id INTEGER PRIMARY KEY, indexed_seq INTEGER NOT NULL, "
    "indexed_hash TEXT, floor INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS search_pending (org_id INTEGER NOT NULL, seq INTEGER NOT NULL, "
    "PRIMARY KEY (org_id, seq)) WITHOUT ROWID",
)


def path_of(database: str) -> str:
    """The search file of the SQLite database file `database`."""
    return database + "-search"


def _remove(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + suffix)


def ensure(path: str) -> None:
    """Create the search file with its tables if it is missing; replace it by an empty one if it is not a
    readable SQLite database (derived data: the indexer rebuilds it from the events)."""
    for attempt in range(2):
        try:
            with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
                conn.execute("PRAGMA busy_timeout = 5000")
                conn.execute("PRAGMA journal_mode = WAL")
                made = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'search_fts'").fetchone()
                if made is not None and f"detail = '{DETAIL}'" not in made[0]:
                    raise _OldLayout(made[0])
                for sql in _TABLES:
                    conn.execute(sql)
                conn.execute("SELECT count(*) FROM search_positions").fetchone()
            return
        except _OldLayout as old:
            if attempt:
                raise RuntimeError(f"{path} still has the old layout after it was replaced") from old
            log.warning("search index %s has an older layout (%s): replaced by an empty one, to be rebuilt",
                        path, old)
            _remove(path)
        except sqlite3.DatabaseError as exc:
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            if code not in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or attempt:
                raise
            log.warning("search index %s is unreadable (%s): replaced by an empty one, to be rebuilt", path, exc)
            _remove(path)


class _OldLayout(Exception):
    """The search file was made by an earlier release with another FTS5 layout."""


def is_corrupt(exc: BaseException) -> bool:
    """Whether `exc` says the search file (or a database) is damaged, rather than busy or missing."""
    orig = getattr(exc, "orig", exc)
    code = getattr(orig, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


def replace(path: str) -> None:
    """Throw the damaged search file away and start an empty one (connections holding the old one notice
    its new inode at their next checkout: `follow_replacement`)."""
    log.warning("search index %s is damaged: replaced by an empty one, to be rebuilt from the events", path)
    _remove(path)
    ensure(path)


def attach(dbapi_conn: sqlite3.Connection, path: str, *, read_only: bool) -> None:
    """ATTACH the search file to a connection as `search`; read-only unless this connection writes it."""
    uri = "file:" + Path(path).absolute().as_posix() + ("?mode=ro" if read_only else "")
    dbapi_conn.execute(f"ATTACH DATABASE ? AS {SCHEMA}", (uri,))
    # A SQLite built without URI filenames would attach a new empty file named after the URI instead.
    if not dbapi_conn.execute(f"SELECT count(*) FROM {SCHEMA}.sqlite_master").fetchone()[0]:
        raise RuntimeError(f"{path} attached without its tables: this SQLite does not take URI filenames")
    if not read_only:
        # Derived data, so NORMAL: a power loss may roll back the last batches (the entries and their
        # position together), never tear them apart. secure_delete: an erasure's old entries leave no
        # readable pages behind (issue #12).
        dbapi_conn.execute(f"PRAGMA {SCHEMA}.synchronous = NORMAL")
        dbapi_conn.execute(f"PRAGMA {SCHEMA}.secure_delete = ON")


def follow_replacement(engine: sa.Engine, path: str) -> None:
    """Make the pool replace a connection whose attached search file is no longer the one at `path` (it was
    replaced after damage, or deleted): a stat at checkout, ~1 us."""

    @event.listens_for(engine, "connect")
    def _remember(_dbapi_conn: sqlite3.Connection, record: Any) -> None:
        record.info["search_ino"] = _inode(path)

    @event.listens_for(engine, "checkout")
    def _check(_dbapi_conn: sqlite3.Connection, record: Any, _proxy: Any) -> None:
        if record.info.get("search_ino") != _inode(path):
            ensure(path)
            raise DisconnectionError("the search index file was replaced")  # the pool reconnects


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def writer_engine(database: str, busy_timeout_ms: int) -> sa.Engine:
    """An engine whose transactions write the search file only: the events database opened read-only, the
    search file ATTACHed read-write; every transaction takes the search file's writer lock first."""
    path = path_of(database)
    events_uri = "file:" + Path(database).absolute().as_posix() + "?mode=ro"

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(events_uri, uri=True, check_same_thread=False, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        attach(conn, path, read_only=False)
        return conn

    engine = sa.create_engine("sqlite://", creator=connect, poolclass=QueuePool, pool_size=2, max_overflow=2)
    follow_replacement(engine, path)

    @event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        # Not BEGIN IMMEDIATE: that opens the events database's snapshot at once, then waits for the search
        # file's lock holding it, so a transaction that waited (another worker's indexer had the lock) read
        # the events as they were before the wait, older than the position the other one had just written.
        # The indexer took that position past the head for a database restored beside a newer index and
        # rebuilt the organization's whole index (issue #11: 1 to 4 times in 10 s of 100-event ingest with
        # `serve --workers 2`). A write that changes nothing takes the search file's lock alone, waiting as
        # BEGIN IMMEDIATE would; the events' snapshot starts at the first read of them, once it is held.
        conn.exec_driver_sql("BEGIN")
        try:
            conn.exec_driver_sql(f"DELETE FROM {SCHEMA}.search_pending WHERE 0")
        except BaseException:
            conn.exec_driver_sql("ROLLBACK")  # not locked (busy, read-only): leave no transaction open
            raise

    return engine
