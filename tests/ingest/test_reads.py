"""ingest.reads: every read of the audit log is recorded before it is answered, one chain under concurrent
reads, and flushed to disk on a clean shutdown; on both backends."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from auditkeep.api.app import create_app
from auditkeep.ingest import reads
from auditkeep.ingest.reads import ReadRecorder, close_recorders, record_read
from auditkeep.ingest.selfaudit import Origin, self_audit_event
from auditkeep.ingest.verification import verify_org
from auditkeep.settings import Settings
from auditkeep.storage import Storage
from auditkeep.storage.deferred import DeferredCommits
from auditkeep.storage.events import iter_chain
from tests.conftest import Tenant

URL = "/api/v1/audit_logs"
ORIGIN = Origin(source="api", client_ip="192.0.2.7", url="https://ak.test/api/v1/audit_logs", request_type="GET")


def _reads(storage: Storage, tenant: Tenant) -> list[dict[str, Any]]:
    return [e for e in iter_chain(storage, tenant.org.id) if e["action"] == "audit_logs.read"]


def _record(storage: Storage, tenant: Tenant, n: int) -> str:
    record = record_read(storage, tenant.org.id, ORIGIN, actor=tenant.admin, log_entry=f"read {n}",
                         payload={"n": n})
    record.wait_durable()
    assert record.durable
    return record.uuid


def test_concurrent_reads_are_each_recorded_once_on_one_chain(storage: Storage, tenant: Tenant) -> None:
    """64 reads from 16 threads: 64 events, distinct and gap-free seqs, a chain that verifies."""
    with ThreadPoolExecutor(16) as pool:
        uuids = list(pool.map(lambda n: _record(storage, tenant, n), range(64)))
    stored = _reads(storage, tenant)
    assert sorted(e["event_uuid"] for e in stored) == sorted(uuids)
    assert sorted(e["payload"]["n"] for e in stored) == list(range(64))
    seqs = [e["seq"] for e in iter_chain(storage, tenant.org.id)]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert verify_org(storage, tenant.org.id).ok


def test_concurrent_api_reads_are_each_recorded(app_client: TestClient, tenant: Tenant, storage: Storage) -> None:
    """Concurrent GETs through the app: one audit_logs.read event per answered request."""
    def get(n: int) -> int:
        return app_client.get(URL, params={"limit": 5, "action": f"nothing.{n}"}, headers=tenant.headers).status_code

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(get, range(24))) == [200] * 24
    queried = sorted(e["payload"]["query"]["action"] for e in _reads(storage, tenant))
    assert queried == sorted(f"nothing.{n}" for n in range(24))


def test_a_read_sees_its_own_record(app_client: TestClient, tenant: Tenant) -> None:
    """The record is committed before the query runs, so the read's own event is in its answer."""
    logs = app_client.get(URL, params={"action": "audit_logs.read"}, headers=tenant.headers).json()["logs"]
    assert len(logs) == 1


def test_a_read_whose_record_fails_is_not_answered(
    storage: Storage, settings: Settings, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No record, no answer: the commit's error fails the request."""
    def refuse(*_args: Any, **_kwargs: Any) -> list[str]:
        raise RuntimeError("disk full")

    close_recorders(storage)
    monkeypatch.setattr(reads, "record_events", refuse)
    app = create_app(settings.model_copy(update={"database_url": storage.url}), storage=storage)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get(URL, headers=tenant.headers)
    assert r.status_code == 500
    assert "logs" not in r.text
    monkeypatch.undo()
    assert _reads(storage, tenant) == []


@pytest.mark.sqlite_only  # PostgreSQL's read records commit synchronously: no flush to wait for
def test_shutdown_records_queued_reads_and_flushes_them(
    storage: Storage, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite: close() waits for the flush of the reads already recorded before it returns."""
    calls: list[str] = []
    release = threading.Event()
    original_flush = DeferredCommits.flush

    def flush(self: DeferredCommits) -> None:
        release.wait(5)
        calls.append("flush")
        original_flush(self)

    monkeypatch.setattr(DeferredCommits, "flush", flush)
    recorder = ReadRecorder(storage)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(lambda n=n: _record_with(recorder, tenant, n)) for n in range(8)]
        for f in futures:
            f.result(10)
        closing = threading.Thread(target=recorder.close)
        closing.start()
        closing.join(0.2)
        assert closing.is_alive()  # waits for the flush of the reads already answered
        release.set()
        closing.join(10)
    assert not closing.is_alive()
    assert calls and recorder._flushed == recorder._committed > 0
    assert len(_reads(storage, tenant)) == 8


def _record_with(recorder: ReadRecorder, tenant: Tenant, n: int) -> str:
    event = self_audit_event("audit_logs.read", ORIGIN, actor=tenant.admin, object_type="audit_log",
                             log_entry=f"read {n}", payload={"n": n})
    return recorder.record(tenant.org.id, event).uuid


def test_app_shutdown_flushes_recorded_reads(
    storage: Storage, settings: Settings, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Leaving the app's lifespan flushes the reads it answered and stops the recorder."""
    closed: list[tuple[int, int]] = []
    original_close = ReadRecorder.close

    def close(self: ReadRecorder) -> None:
        original_close(self)
        closed.append((self._committed, self._flushed))

    close_recorders(storage)  # an earlier test's recorder: not this app's
    monkeypatch.setattr(ReadRecorder, "close", close)
    app = create_app(settings.model_copy(update={"database_url": storage.url}), storage=storage)
    with TestClient(app) as client:
        assert client.get(URL, headers=tenant.headers).status_code == 200
    assert closed == [(1, 1)]
    assert storage not in reads._recorders


@pytest.mark.sqlite_only  # synchronous is a SQLite setting; PostgreSQL's read records commit synchronously
def test_sqlite_read_commits_skip_fsync_while_others_keep_it(storage: Storage) -> None:
    """Only the read recorder's connections run synchronous=NORMAL; ingest keeps FULL (2)."""
    store = DeferredCommits(storage)
    try:
        assert store.deferred
        with store.storage.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1
        with storage.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2
        store.flush()
    finally:
        store.dispose()


@pytest.mark.sqlite_only  # PostgreSQL's read records commit synchronously: no flush to wait for
def test_the_answer_waits_for_its_record_on_disk(
    storage: Storage, settings: Settings, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite: while the flush of a read's record is held up, the read is not answered."""
    release = threading.Event()
    original_flush = DeferredCommits.flush

    def slow_flush(self: DeferredCommits) -> None:
        release.wait(10)
        original_flush(self)

    close_recorders(storage)
    monkeypatch.setattr(DeferredCommits, "flush", slow_flush)
    app = create_app(settings.model_copy(update={"database_url": storage.url}), storage=storage)
    with TestClient(app) as client, ThreadPoolExecutor(1) as pool:
        answer = pool.submit(client.get, URL, params={"limit": 5}, headers=tenant.headers)
        with pytest.raises(TimeoutError):
            answer.result(0.3)
        # The record commits before the flush; on a busy machine that may take longer than 0.3 s.
        deadline = time.monotonic() + 10
        while not _reads(storage, tenant) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_reads(storage, tenant)) == 1  # committed (and visible) before the flush
        assert not answer.done()  # and still not answered: the flush is held
        release.set()
        assert answer.result(10).status_code == 200


@pytest.mark.sqlite_only  # PostgreSQL's read records commit synchronously: no flush to wait for
def test_a_read_whose_record_cannot_be_flushed_is_not_answered(
    storage: Storage, settings: Settings, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite: a failed fsync of the record fails the read (no retry: it would prove nothing); later reads,
    flushed anew, are answered."""

    failures = [OSError(5, "Input/output error")]
    original_flush = DeferredCommits.flush

    def failing_once(self: DeferredCommits) -> None:
        if failures:
            raise failures.pop()
        original_flush(self)

    close_recorders(storage)
    monkeypatch.setattr(DeferredCommits, "flush", failing_once)
    app = create_app(settings.model_copy(update={"database_url": storage.url}), storage=storage)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get(URL, params={"limit": 5}, headers=tenant.headers)
        assert r.status_code == 500
        assert "logs" not in r.text
        # The next read's record has a flush of its own: answered.
        assert client.get(URL, params={"limit": 5}, headers=tenant.headers).status_code == 200


def test_reads_arriving_during_a_commit_are_committed_together(
    storage: Storage, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit: while one read commits, the reads that queue up are committed next in one transaction."""
    recorder = ReadRecorder(storage)
    entered, release = threading.Event(), threading.Event()
    sizes: list[int] = []
    real_record_events = reads.record_events

    def held_first(store: Storage, org_id: int, events: list[Any]) -> list[str]:
        sizes.append(len(events))
        if len(sizes) == 1:
            entered.set()
            release.wait(10)
        return real_record_events(store, org_id, events)

    monkeypatch.setattr(reads, "record_events", held_first)
    try:
        with ThreadPoolExecutor(6) as pool:
            first = pool.submit(_record_with, recorder, tenant, 0)
            assert entered.wait(10)
            rest = [pool.submit(_record_with, recorder, tenant, n) for n in range(1, 6)]
            deadline = time.monotonic() + 10
            while len(recorder._queue) < 5 and time.monotonic() < deadline:
                time.sleep(0.01)
            release.set()
            uuids = [first.result(10), *(f.result(10) for f in rest)]
    finally:
        recorder.close()
    assert sizes == [1, 5]
    assert sorted(e["event_uuid"] for e in _reads(storage, tenant)) == sorted(uuids)
