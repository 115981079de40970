"""SQLite's search index in a file of its own (issue #13, storage/search_file.py): its writes never take the
events database's writer lock, and it is derived data: lost, damaged, or belonging to another state of the
events, it is rebuilt from the events; an erasure's rewrite interrupted by a crash is finished by the indexer.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from auditkeep.api.app import create_app
from auditkeep.erasure import erase_person
from auditkeep.ingest.service import record_events
from auditkeep.ingest.validation import parse_events
from auditkeep.search.indexer import Indexer
from auditkeep.settings import Settings
from auditkeep.storage import Storage, open_storage, search, search_file
from tests.conftest import Tenant, make_tenant
from tests.erasure.test_erasure import ORIGIN, ingest, person

URL = "/api/v1/audit_logs"


def _open(path: Path, settings: Settings, **update: object) -> Storage:
    url = f"sqlite:///{path}"
    return open_storage(url, settings=settings.model_copy(update={"database_url": url, **update}))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "side.db"


def _record(storage: Storage, tenant: Tenant, entries: list[str]) -> None:
    now = datetime.now(UTC)
    body = [{"action": "side.t", "client_ip": "10.0.0.1", "log_entry": e, "url": "https://x.test/"} for e in entries]
    record_events(storage, tenant.org.id, parse_events(orjson.dumps(body), now), received_at=now)


def _found(storage: Storage, settings: Settings, tenant: Tenant, q: str) -> list[str]:
    """The log_entry of every event `q` finds, walking the pages through the app."""
    app = create_app(settings.model_copy(update={"database_url": storage.url}), storage=storage)
    found: list[str] = []
    with TestClient(app) as client:
        r = client.get(URL, params={"q": q, "action": "side.t", "limit": 7}, headers=tenant.headers)
        while True:
            assert r.status_code == 200, r.text
            found += [log["log_entry"] for log in r.json()["logs"]]
            if "next" not in r.links:
                return found
            r = client.get(r.links["next"]["url"], headers=tenant.headers)


@pytest.fixture
def indexed(db: Path, settings: Settings) -> Iterator[tuple[Storage, Tenant]]:
    """A database of its own with 30 events, all indexed."""
    storage = _open(db, settings)
    tenant = make_tenant(storage)
    _record(storage, tenant, [f"needle {i} {'odd' if i % 2 else 'even'}" for i in range(30)])
    Indexer(storage, storage.settings).catch_up()
    yield storage, tenant
    storage.dispose()


def test_the_search_file_is_beside_the_database_and_attached_read_only(db: Path, settings: Settings) -> None:
    """The index lives in `<database>-search`, not in the events database; reads see it as `search`, and a
    connection of the events database cannot write it."""
    storage = _open(db, settings)
    try:
        assert db.with_name(db.name + "-search").exists()
        with storage.read() as conn:
            main = "SELECT count(*) FROM main.sqlite_master WHERE name = 'search_fts'"
            assert conn.exec_driver_sql(main).scalar() == 0
            assert conn.exec_driver_sql("SELECT count(*) FROM search.search_positions").scalar() == 0
        with pytest.raises(OperationalError, match="readonly"), storage.write() as conn:
            conn.exec_driver_sql("INSERT INTO search.search_positions (org_id, indexed_seq) VALUES (1, 1)")
    finally:
        storage.dispose()


def test_ingest_commits_while_the_indexer_holds_the_search_files_writer_lock(db: Path, settings: Settings) -> None:
    """With the indexer's write transaction open (BEGIN IMMEDIATE on the search file), ingest still takes the
    events database's writer lock and commits: they share no lock (with a 200 ms busy timeout, a shared lock
    would fail ingest with "database is locked")."""
    storage = _open(db, settings, sqlite_busy_timeout_ms=200)
    try:
        tenant = make_tenant(storage)
        _record(storage, tenant, ["before"])
        with storage.search_write() as conn:
            conn.exec_driver_sql("INSERT OR IGNORE INTO search.search_positions (org_id, indexed_seq) VALUES (?, 0)",
                                 (tenant.org.id,))
            _record(storage, tenant, ["during"])
        with storage.read() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM events WHERE org_id = ? AND log_entry = 'during'",
                                        (tenant.org.id,)).scalar() == 1
    finally:
        storage.dispose()


def test_an_indexer_that_waited_for_the_search_files_lock_reads_the_events_as_they_are_then(
    indexed: tuple[Storage, Tenant], db: Path
) -> None:
    """A batch that waits for the search file's writer lock (another worker's indexer holds it) indexes
    the events committed meanwhile: its snapshot of the events starts once it holds the lock. One taken
    before the wait (BEGIN IMMEDIATE) saw a head older than the position the other worker had just written,
    and the indexer took that for an index of another state of the events and rebuilt it (issue #11)."""
    storage, tenant = indexed
    holder = sqlite3.connect(f"{db}-search", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another worker's indexer, mid-batch
    try:
        done: list[int] = []
        waiting = threading.Thread(target=lambda: done.append(search.index_batch(storage, tenant.org.id)))
        waiting.start()
        time.sleep(0.3)  # the batch has begun and waits for the lock
        _record(storage, tenant, [f"meanwhile {i}" for i in range(10)])
    finally:
        holder.execute("COMMIT")
        holder.close()
    waiting.join(10)
    assert done == [10]
    assert search.index_entries(storage, tenant.org.id) == list(range(1, 41))


def test_a_lost_search_file_is_rebuilt_from_the_events(
    indexed: tuple[Storage, Tenant], db: Path, settings: Settings
) -> None:
    """Deleted while the server is down: a new empty file at startup, `q` still exact meanwhile (it scans),
    and the indexer rebuilds every entry."""
    storage, tenant = indexed
    storage.dispose()
    for suffix in ("-search", "-search-wal", "-search-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    again = _open(db, settings)
    try:
        assert search.index_entries(again, tenant.org.id) == []
        expected = [f"needle {i} odd" for i in range(1, 30, 2)]
        assert _found(again, settings, tenant, "ODD") == expected
        Indexer(again, again.settings).catch_up()
        with again.read() as conn:
            head = conn.exec_driver_sql("SELECT seq FROM chain_heads WHERE org_id = ?", (tenant.org.id,)).scalar()
        assert search.index_entries(again, tenant.org.id) == list(range(1, head + 1))
        assert _found(again, settings, tenant, "ODD") == expected
    finally:
        again.dispose()


def test_a_damaged_search_file_is_replaced_and_rebuilt(
    indexed: tuple[Storage, Tenant], db: Path, settings: Settings
) -> None:
    """A search file that is not a database any more is replaced by an empty one at startup and rebuilt."""
    storage, tenant = indexed
    storage.dispose()
    side = db.with_name(db.name + "-search")
    for suffix in ("-wal", "-shm"):
        side.with_name(side.name + suffix).unlink(missing_ok=True)
    side.write_bytes(b"this is not a database" * 1000)
    again = _open(db, settings)
    try:
        assert search.index_entries(again, tenant.org.id) == []
        Indexer(again, again.settings).catch_up()
        assert search.index_entries(again, tenant.org.id)[:30] == list(range(1, 31))
        expected = ["needle 2 even"] + [f"needle {i} {'odd' if i % 2 else 'even'}" for i in range(20, 30)]
        assert _found(again, settings, tenant, "needle 2") == expected
    finally:
        again.dispose()


def test_a_search_file_with_positions_from_an_earlier_release_is_replaced_and_rebuilt(
    indexed: tuple[Storage, Tenant], db: Path, settings: Settings
) -> None:
    """A search file whose FTS5 table keeps positions (detail = 'full', as releases before search_file.DETAIL
    made it) is replaced at startup by one without, and the indexer rebuilds it; `q` is exact throughout."""
    storage, tenant = indexed
    storage.dispose()
    side = db.with_name(db.name + "-search")
    with sqlite3.connect(side) as conn:
        conn.execute("DROP TABLE search_fts")
        conn.execute("CREATE VIRTUAL TABLE search_fts USING fts5(doc, tokenize = 'trigram', detail = 'full')")
        conn.execute("INSERT INTO search_fts (rowid, doc) VALUES (1, 'stale entry')")
    conn.close()
    again = _open(db, settings)
    try:
        with sqlite3.connect(side) as conn:
            made = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'search_fts'").fetchone()[0]
        conn.close()
        assert f"detail = '{search_file.DETAIL}'" in made and search_file.DETAIL == "none"
        assert search.index_entries(again, tenant.org.id) == []
        expected = [f"needle {i} odd" for i in range(1, 30, 2)]
        assert _found(again, settings, tenant, "ODD") == expected  # scanned meanwhile
        Indexer(again, again.settings).catch_up()
        with again.read() as conn2:
            head = conn2.exec_driver_sql("SELECT seq FROM chain_heads WHERE org_id = ?", (tenant.org.id,)).scalar()
        assert search.index_entries(again, tenant.org.id) == list(range(1, head + 1))
        assert _found(again, settings, tenant, "ODD") == expected
        assert _found(again, settings, tenant, "e 2") == ["needle 2 even"] + [
            f"needle {i} {'odd' if i % 2 else 'even'}" for i in range(20, 30)]
    finally:
        again.dispose()


def test_an_index_of_another_state_of_the_events_is_rebuilt(
    db: Path, settings: Settings, tmp_path: Path
) -> None:
    """A database restored from an older copy beside the newer search file: the index's positions name events
    the restored database has with other content (or does not have), so the indexer starts those
    organizations over and `q` finds exactly the restored events' matches."""
    storage = _open(db, settings)
    tenant = make_tenant(storage)
    _record(storage, tenant, [f"first {i}" for i in range(10)])
    storage.dispose()
    older = tmp_path / "older"
    older.mkdir()
    shutil.copy(db, older / db.name)  # a closed database: no -wal left beside it
    storage = _open(db, settings)
    _record(storage, tenant, [f"later {i}" for i in range(10)])
    Indexer(storage, storage.settings).catch_up()
    storage.dispose()
    shutil.copy(db.with_name(db.name + "-search"), older / (db.name + "-search"))
    restored = _open(older / db.name, settings)
    try:
        _record(restored, tenant, [f"other {i}" for i in range(40)])  # the seqs the newer index covered, other text
        assert search.stale_orgs(restored) == [tenant.org.id]
        with restored.read() as conn:  # not trusted by `q` meanwhile: it scans
            assert search.indexed_seq(conn, restored, tenant.org.id) == 0
        assert _found(restored, settings, tenant, "other 3") == ["other 3"] + [f"other {i}" for i in range(30, 40)]
        Indexer(restored, restored.settings).catch_up()
        assert search.stale_orgs(restored) == []
        with restored.read() as conn:
            head = conn.exec_driver_sql("SELECT seq FROM chain_heads WHERE org_id = ?", (tenant.org.id,)).scalar()
            terms = search.fts_terms("later")
            assert search.count_candidates(conn, restored, tenant.org.id, terms, head) == 0
        assert search.index_entries(restored, tenant.org.id) == list(range(1, head + 1))
        assert _found(restored, settings, tenant, "other 3") == ["other 3"] + [f"other {i}" for i in range(30, 40)]
    finally:
        restored.dispose()


def test_an_erasures_rewrite_cut_short_is_finished_by_the_indexer(
    indexed: tuple[Storage, Tenant], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An erasure notes its seqs in the search file before it commits (`reindex`); if the process ends before
    `settle` rewrites their entries, the indexer's next pass does, and the erased text selects nothing."""
    storage, tenant = indexed
    org = tenant.org.id
    ann = person("ann")
    ingest(storage, org, [ann, ann])
    Indexer(storage, storage.settings).catch_up()
    with storage.read() as conn:
        head = int(conn.exec_driver_sql("SELECT seq FROM chain_heads WHERE org_id = ?", (org,)).scalar_one())
        assert search.count_candidates(conn, storage, org, search.fts_terms(ann["log_entry"]), head) == 2
    monkeypatch.setattr(search, "settle", lambda storage, org_id: None)  # the process ends before settle
    erase_person(storage, org, user_email=ann["user_email"], reason="r", origin=ORIGIN)
    with storage.read() as conn:
        assert search.count_candidates(conn, storage, org, search.fts_terms(ann["log_entry"]), head) == 2
    assert org in search.lagging_orgs(storage)
    monkeypatch.undo()
    Indexer(storage, storage.settings).catch_up()
    with storage.read() as conn:
        assert search.count_candidates(conn, storage, org, search.fts_terms(ann["log_entry"]), head) == 0
        assert search.count_candidates(conn, storage, org, search.fts_terms(ann["url"]), head) == 0
        assert conn.exec_driver_sql("SELECT count(*) FROM search.search_pending").scalar() == 0
