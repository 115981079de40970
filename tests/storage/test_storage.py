"""The store: append-only events, durable SQLite settings, per-organization sequencing (issue #2)."""

from __future__ import annotations

import multiprocessing
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from auditkeep.ingest.reads import close_recorders, record_read
from auditkeep.ingest.selfaudit import Origin, audit
from auditkeep.ingest.service import record_batch, record_events
from auditkeep.ingest.validation import parse_events
from auditkeep.settings import Settings
from auditkeep.storage import Storage, open_storage
from auditkeep.storage.events import EventWriter, iter_chain
from tests.conftest import Tenant, make_tenant


def add(storage: Storage, org_id: int, n: int, tag: str = "t") -> list[str]:
    body = b"[" + b",".join(
        b'{"client_ip": "10.0.0.1", "url": "https://x/%d", "action": "%s"}' % (i, tag.encode()) for i in range(n)
    ) + b"]"
    return record_events(storage, org_id, parse_events(body, datetime.now(UTC)))


def test_events_cannot_be_updated_or_deleted(storage: Storage, tenant: Tenant) -> None:
    add(storage, tenant.org.id, 2)
    for stmt in (
        f"UPDATE events SET action = 'forged' WHERE org_id = {tenant.org.id}",
        f"DELETE FROM events WHERE org_id = {tenant.org.id}",
    ):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), storage.write() as conn:
            conn.exec_driver_sql(stmt)
    assert len(list(iter_chain(storage, tenant.org.id))) == 2


def test_seq_is_per_organization_strictly_increasing_from_one(storage: Storage, tenant: Tenant) -> None:
    other = make_tenant(storage)
    add(storage, tenant.org.id, 3)
    add(storage, other.org.id, 2)
    add(storage, tenant.org.id, 2)
    assert [e["seq"] for e in iter_chain(storage, tenant.org.id)] == [1, 2, 3, 4, 5]
    assert [e["seq"] for e in iter_chain(storage, other.org.id)] == [1, 2]


def test_concurrent_writers_in_threads_make_one_gapless_chain(storage: Storage, tenant: Tenant) -> None:
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for _ in range(10):
                add(storage, tenant.org.id, 20)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    chain = list(iter_chain(storage, tenant.org.id))
    assert [e["seq"] for e in chain] == list(range(1, 1201))
    assert all(chain[i]["prev_hash"] == chain[i - 1]["hash"] for i in range(1, len(chain)))


def _process_writer(url: str, org_id: int, batches: int) -> None:
    storage = open_storage(url, migrate=False)
    for _ in range(batches):
        add(storage, org_id, 25)
    storage.dispose()


def test_concurrent_writer_processes_never_fail_with_database_locked(storage: Storage, tenant: Tenant) -> None:
    """Several server workers writing at once serialize instead of failing (SQLite's single writer)."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_process_writer, args=(storage.url, tenant.org.id, 8)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    chain = list(iter_chain(storage, tenant.org.id))
    assert [e["seq"] for e in chain] == list(range(1, 801))
    assert all(chain[i]["prev_hash"] == chain[i - 1]["hash"] for i in range(1, len(chain)))


def test_sqlite_runs_in_wal_mode_with_full_sync(sqlite_url: str) -> None:
    storage = open_storage(sqlite_url)
    with storage.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    storage.dispose()


@pytest.mark.postgres
def test_postgres_events_are_partitioned_by_time_and_commits_are_durable(postgres_url: str) -> None:
    storage = open_storage(postgres_url)
    with storage.engine.connect() as conn:
        strategy = conn.exec_driver_sql(
            "SELECT partstrat FROM pg_partitioned_table WHERE partrelid = 'events'::regclass"
        ).scalar()
        parts = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass"
        ).scalar()
        commit = conn.exec_driver_sql("SHOW synchronous_commit").scalar()
    assert strategy == "r"
    assert parts is not None and parts >= 5  # default + last month .. 3 months ahead
    assert commit == "on"
    storage.dispose()


def test_every_events_index_leads_with_org_id(storage: Storage) -> None:
    """So the table can be distributed by organization. Read from the database's own catalogue, since
    SQLAlchemy does not reflect SQLite's expression indexes (the lower-cased user_email one, 0007)."""
    if storage.dialect == "sqlite":
        sql = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events' AND sql IS NOT NULL"
    else:
        sql = "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'events'"
    with storage.engine.connect() as conn:
        indexes = conn.exec_driver_sql(sql).all()
    assert len(indexes) >= 5
    for name, definition in indexes:
        columns = definition[definition.index("(", definition.upper().index(" ON ")) + 1:]
        assert columns.replace('"', "").startswith("org_id,"), (name, definition)
    assert sa.inspect(storage.engine).get_pk_constraint("events")["constrained_columns"][0] == "org_id"


def test_migrate_is_idempotent(storage: Storage) -> None:
    storage.migrate()
    storage.migrate()


def test_a_tampered_sqlite_boolean_is_not_read_back_as_true(sqlite_url: str) -> None:
    """is_support_user = 2 is no boolean the service wrote: it must fail verification, not pass as True."""
    from auditkeep.integrity.verify import verify_chain

    storage = open_storage(sqlite_url)
    tenant = make_tenant(storage)
    add(storage, tenant.org.id, 3)
    with storage.engine.connect() as conn, conn.begin():
        conn.exec_driver_sql("DROP TRIGGER events_no_update")
        conn.exec_driver_sql(f"UPDATE events SET is_support_user = 2 WHERE org_id = {tenant.org.id} AND seq = 2")
        conn.exec_driver_sql(
            "CREATE TRIGGER events_no_update BEFORE UPDATE ON events "
            "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END"
        )
    report = verify_chain(iter_chain(storage, tenant.org.id))
    assert report.broken is not None and report.broken.seq == 2
    storage.dispose()


def test_postgres_looks_client_uuids_up_by_index_even_before_statistics_catch_up(
    postgres_url: str, settings: Settings
) -> None:
    """Ingest's idempotency lookup probes the (org_id, event_uuid) index once per uuid, and no other index,
    whatever the statistics say. The IN-list form let stale partition statistics pick a scan of the
    organization's whole partition, and the first LATERAL form an index leading with org_id alone, filtering
    event_uuid: each a scan of the organization's rows per uuid (storage/events.py, EventWriter._find_sql)."""
    storage = open_storage(postgres_url, settings=settings.model_copy(update={"database_url": postgres_url}))
    try:
        # Statistics that know other organizations and not this one: a new tenant before autovacuum runs.
        others = [make_tenant(storage) for _ in range(3)]
        for other in others:
            add(storage, other.org.id, 200, tag="seen")
        with storage.write() as conn:
            conn.exec_driver_sql("ANALYZE events")
        tenant = make_tenant(storage)
        for start in range(0, 3000, 1000):
            add(storage, tenant.org.id, 1000, tag=f"s{start}")
        with storage.write() as conn:
            writer = EventWriter(storage, conn, tenant.org.id)
            sql, params = writer._find_sql([str(uuid.uuid4()) for _ in range(500)])
            # Planned as find() plans it (EventWriter._unprepared: its settings, inside a savepoint).
            plan = "\n".join(row[0] for row in writer._unprepared(f"EXPLAIN {sql}", params))
            # The savepoint's rollback put the planner's settings back for the rest of the transaction.
            assert conn.exec_driver_sql("SHOW enable_sort").scalar() == "on"
        scans = [line.strip() for line in plan.splitlines() if " Scan " in line and "Function Scan" not in line]
        assert scans, plan
        assert all(line.startswith("->  Index Scan using events_") and "_org_id_event_uuid_idx on " in line
                   for line in scans), plan
        bounds = [line.strip() for line in plan.splitlines() if "Index Cond:" in line]
        assert len(bounds) == len(scans), plan
        assert all("ROW(org_id, (event_uuid)::text) >= ROW(" in line and "ROW(org_id, (event_uuid)::text) <= ROW("
                   in line and "wanted.uuid" in line for line in bounds), plan
        assert "Sort  " not in plan and "Filter:" not in plan, plan
        # The range check before it (EventWriter.may_hold) reads the same index, and only it, once a partition.
        with storage.write() as conn:
            writer = EventWriter(storage, conn, tenant.org.id)
            sql, params = writer._range_sql([str(uuid.uuid4()) for _ in range(500)])
            plan = "\n".join(row[0] for row in writer._unprepared(f"EXPLAIN {sql}", params))
        scans = [line.strip() for line in plan.splitlines() if " Scan " in line and "Function Scan" not in line]
        assert scans, plan
        assert all(line.startswith(("->  Index Scan using events_", "->  Index Only Scan using events_"))
                   and "_org_id_event_uuid_idx on " in line for line in scans), plan
        assert "Sort  " not in plan and "Filter:" not in plan, plan
        # And it finds what is there: a stored uuid with its event, a new one not at all.
        stored = add(storage, tenant.org.id, 1, tag="again")[0]
        with storage.write() as conn:
            found = EventWriter(storage, conn, tenant.org.id).find([stored, str(uuid.uuid4())])
        assert list(found) == [stored] and found[stored]["action"] == "again"
    finally:
        storage.dispose()


def test_two_stores_self_audit_and_deferred_read_records_on_one_sqlite_file_make_one_chain(
    settings: Settings, tmp_path: Path
) -> None:
    """Two Storage objects on one SQLite file (a CLI's and an app's), each ingesting from threads, with
    self-audit events and read records committed through the deferred (synchronous=NORMAL) engine at the
    same time, append to one organization's chain without a duplicate or skipped seq: every writer reads
    the head under BEGIN IMMEDIATE, whichever engine it came through."""
    url = f"sqlite:///{tmp_path / 'two.db'}"
    mine = settings.model_copy(update={"database_url": url})
    cli_store, app_store = open_storage(url, settings=mine), open_storage(url, settings=mine, migrate=False)
    tenant = make_tenant(cli_store)
    origin = Origin(source="system", client_ip="127.0.0.1", url="test:concurrency")
    errors: list[BaseException] = []

    def run(work: Callable[[], object]) -> None:
        try:
            for _ in range(15):
                work()
        except BaseException as exc:
            errors.append(exc)

    def read() -> None:
        record_read(app_store, tenant.org.id, origin, actor=tenant.admin, log_entry="read", payload={}).wait_durable()

    works: list[Callable[[], object]] = [
        lambda: add(cli_store, tenant.org.id, 20),
        lambda: add(app_store, tenant.org.id, 20),
        lambda: audit(cli_store, tenant.org.id, "test.cli", origin, log_entry="cli"),
        lambda: audit(app_store, tenant.org.id, "test.app", origin, log_entry="app"),
        read,
        read,
    ]
    threads = [threading.Thread(target=run, args=(w,)) for w in works]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        close_recorders(app_store)
        assert errors == []
        chain = list(iter_chain(cli_store, tenant.org.id))
        reads = [e for e in chain if e["action"] == "audit_logs.read"]
        assert len(reads) == 30
        checkpoints = [e for e in chain if e["action"] == "integrity.checkpoint"]
        assert len(chain) - len(checkpoints) == 2 * 15 * 20 + 2 * 15 + 30
        assert [e["seq"] for e in chain] == list(range(1, len(chain) + 1))
        assert all(chain[i]["prev_hash"] == chain[i - 1]["hash"] for i in range(1, len(chain)))
    finally:
        close_recorders(app_store)
        app_store.dispose()
        cli_store.dispose()


def _uuid(n: int) -> str:
    return f"01900000-0000-7000-8000-{n:012d}"


def _add_uuids(storage: Storage, org_id: int, numbers: list[int]) -> int:
    body = b"[" + b",".join(
        b'{"event_uuid": "%s", "client_ip": "10.0.0.1", "url": "https://x/%d", "action": "u"}'
        % (_uuid(n).encode(), n) for n in numbers
    ) + b"]"
    return record_batch(storage, org_id, parse_events(body, datetime.now(UTC))).accepted


def test_postgres_range_check_says_whether_a_stored_uuid_lies_between_the_least_and_greatest_asked(
    postgres_url: str, settings: Settings
) -> None:
    """EventWriter.may_hold (which lets find() skip the per-uuid probe) is False only when none of the
    organization's stored uuids lies between the least and the greatest uuid asked, other organizations'
    uuids aside; find() and ingest still see a stored uuid among new ones."""
    storage = open_storage(postgres_url, settings=settings.model_copy(update={"database_url": postgres_url}))
    try:
        tenant, other = make_tenant(storage), make_tenant(storage)
        assert _add_uuids(storage, tenant.org.id, [10, 20, 30]) == 3
        assert _add_uuids(storage, other.org.id, [50]) == 1
        with storage.write() as conn:
            writer = EventWriter(storage, conn, tenant.org.id)
            assert writer.may_hold([_uuid(40), _uuid(31)]) is False  # all newer than what is stored
            assert writer.may_hold([_uuid(11), _uuid(19)]) is False  # between stored ones, none inside
            assert writer.may_hold([_uuid(45), _uuid(55)]) is False  # only another organization's inside
            assert writer.may_hold([_uuid(21), _uuid(11)]) is True  # 20 lies between
            assert writer.may_hold([_uuid(30)]) is True
            assert list(writer.find([_uuid(11), _uuid(20), _uuid(21)])) == [_uuid(20)]
            assert writer.find([_uuid(31), _uuid(40)]) == {}
        # A retry carrying a stored uuid among new ones stores only the new ones; a fresh range stores all.
        assert _add_uuids(storage, tenant.org.id, [19, 20, 21]) == 2
        assert _add_uuids(storage, tenant.org.id, [60, 61]) == 2
        assert [e["event_uuid"] for e in iter_chain(storage, tenant.org.id)] == [
            _uuid(n) for n in (10, 20, 30, 19, 21, 60, 61)]
    finally:
        storage.dispose()
