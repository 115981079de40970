"""Read replicas (issue #14) against a real streaming pair: a primary this module starts with initdb on a free
port, and a hot standby made from it by `pg_basebackup -R` running as a second postmaster. Reads served by the
replica never see less than they are owed; a paused or stopped replica is skipped and comes back by itself;
an export read from the replica verifies with `auditkeep verify-export`."""

from __future__ import annotations

import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from auditkeep.api.app import create_app
from auditkeep.auth.passwords import hash_password
from auditkeep.settings import Settings
from auditkeep.storage import Storage, identity, open_storage
from auditkeep.storage.replicas import RETRY_AFTER_S, ReplicaSet
from tests.conftest import Tenant, make_tenant
from tests.e2e.pg_cluster import Cluster
from tests.e2e.server import cli
from tests.web.conftest import PASSWORD, Browser, random_ip

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

MAX_LAG_S = 1.0


class Pair:
    def __init__(self, primary: Cluster, standby: Cluster, storage: Storage, client: TestClient) -> None:
        self.primary, self.standby, self.storage, self.client = primary, standby, storage, client

    @property
    def replicas(self) -> ReplicaSet:
        assert self.storage.replicas is not None
        return self.storage.replicas

    def on_standby(self, sql: str) -> None:
        engine = sa.create_engine(self.standby.url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(sql)
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """One primary and one standby for the module (a basebackup of an empty cluster takes about a second)."""
    keys = tmp_path_factory.mktemp("replica-keys")
    # pg_stat_statements on both: which server ran a statement is then something a test can look up
    # (each statement is counted as it ends), rather than taken from the router's own counts.
    observed = {"shared_preload_libraries": "pg_stat_statements", "pg_stat_statements.track": "all"}
    primary = Cluster(observed).init()
    standby = Cluster(observed)
    try:
        primary.start()
        engine = sa.create_engine(primary.url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE EXTENSION pg_stat_statements")
        engine.dispose()
        standby.standby_of(primary).start()
        settings = Settings(database_url=primary.url, read_database_url=standby.url, replica_max_lag=MAX_LAG_S,
                            signing_key_path=keys / "signing-key.pem", secrets_key_path=keys / "secrets-key",
                            log_level="WARNING", rate_limit="100000/second", auth_failure_limit="100000/minute")
        storage = open_storage(primary.url, settings=settings)
        try:
            # Replay can fall more than the default 50 ms behind on a loaded 2-core machine (65 ms at load 16,
            # docs/benchmarks.md), and the primary would then serve a read these tests expect of the replica.
            # Still below MAX_LAG_S, so a paused replica is still waited for and passed over first.
            assert storage.replicas is not None
            storage.replicas.catch_up_wait_s = 0.5
            with TestClient(create_app(settings, storage=storage)) as client:
                yield Pair(primary, standby, storage, client)
        finally:
            storage.dispose()
    finally:
        standby.destroy()
        primary.destroy()


def _events(n: int) -> list[dict[str, object]]:
    return [{"event_uuid": str(uuid.uuid4()), "action": "doc.viewed", "url": "https://app.test/d",
             "client_ip": "10.0.0.1", "log_entry": f"replica test {i}"} for i in range(n)]


def _write(pair: Pair, tenant: Tenant, n: int) -> list[str]:
    r = pair.client.post("/api/v1/audit_logs", headers=tenant.headers, json=_events(n))
    assert r.status_code == 201, r.text
    uuids: list[str] = r.json()["event_uuids"]
    return uuids


def _read_uuids(pair: Pair, tenant: Tenant) -> list[str]:
    r = pair.client.get("/api/v1/audit_logs", headers=tenant.headers, params={
        "start_date": "2000-01-01T00:00:00Z", "action": "doc.viewed"})
    assert r.status_code == 200, r.text
    return [log["event_uuid"] for log in r.json()["logs"]]


def test_reads_served_by_the_replica_see_every_write_acknowledged_before_them(pair: Pair) -> None:
    """Write, then read at once, 20 times: each read holds everything written, and the replica served them."""
    tenant = make_tenant(pair.storage)
    before = pair.replicas.counts["replica:0"]
    written: set[str] = set()
    for _ in range(20):
        written.update(_write(pair, tenant, 5))
        assert set(_read_uuids(pair, tenant)) == written
    assert pair.replicas.counts["replica:0"] - before == 20

    # after_seq polling: the new events past the watermark the poller was given, and no fewer.
    r = pair.client.get("/api/v1/audit_logs", headers=tenant.headers,
                        params={"start_date": "2000-01-01T00:00:00Z", "after_seq": "0"})
    last = int(r.headers["X-Last-Seq"])
    new = set(_write(pair, tenant, 3))
    r = pair.client.get("/api/v1/audit_logs", headers=tenant.headers,
                        params={"start_date": "2000-01-01T00:00:00Z", "after_seq": str(last)})
    assert new <= {log["event_uuid"] for log in r.json()["logs"]}

    # A new walk reads through its own read record, which it committed on the primary just before.
    r = pair.client.get("/api/v1/audit_logs", headers=tenant.headers,
                        params={"start_date": "2000-01-01T00:00:00Z", "order": "desc", "limit": "1"})
    assert r.json()["logs"][0]["action"] == "audit_logs.read"

    # Stats count the same rows.
    r = pair.client.get("/api/v1/audit_logs/stats", headers=tenant.headers,
                        params={"start_date": "2000-01-01T00:00:00Z", "action": "doc.viewed", "interval": "day"})
    assert r.status_code == 200, r.text
    assert sum(b["count"] for b in r.json()["buckets"]) == len(written) + len(new)
    assert pair.replicas.counts["replica:0"] - before == 24


def test_paused_replica_is_skipped_past_max_lag_and_used_again_after_resume(pair: Pair) -> None:
    """Replay paused: reads still see every write (the primary serves them); once the replica's last replayed
    commit is older than AUDITKEEP_REPLICA_MAX_LAG it is skipped without waiting; resumed, it serves again."""
    tenant = make_tenant(pair.storage)
    written = set(_write(pair, tenant, 5))
    pair.on_standby("SELECT pg_wal_replay_pause()")
    try:
        written.update(_write(pair, tenant, 5))
        primary_before = pair.replicas.counts["primary"]
        assert set(_read_uuids(pair, tenant)) == written
        assert pair.replicas.counts["primary"] == primary_before + 1
        time.sleep(MAX_LAG_S + 0.2)
        lagging = pair.replicas.counts["lagging:0"]
        written.update(_write(pair, tenant, 5))
        assert set(_read_uuids(pair, tenant)) == written
        assert pair.replicas.counts["lagging:0"] == lagging + 1
        skipped = pair.replicas.counts["skipped:0"]
        assert set(_read_uuids(pair, tenant)) == written
        assert pair.replicas.counts["skipped:0"] == skipped + 1  # not even asked, within RETRY_AFTER_S
    finally:
        pair.on_standby("SELECT pg_wal_replay_resume()")
    time.sleep(RETRY_AFTER_S + 0.1)
    served = pair.replicas.counts["replica:0"]
    written.update(_write(pair, tenant, 5))
    assert set(_read_uuids(pair, tenant)) == written
    assert pair.replicas.counts["replica:0"] == served + 1


def test_stopped_replica_is_skipped_and_comes_back_when_it_does(pair: Pair) -> None:
    """A replica that cannot be reached fails over to the primary (no error to the reader); restarted, it
    serves again once RETRY_AFTER_S has passed."""
    tenant = make_tenant(pair.storage)
    written = set(_write(pair, tenant, 5))
    assert set(_read_uuids(pair, tenant)) == written  # a pooled connection to the replica now exists
    pair.standby.stop()
    try:
        failed = pair.replicas.counts["failed:0"]
        written.update(_write(pair, tenant, 5))
        assert set(_read_uuids(pair, tenant)) == written
        assert pair.replicas.counts["failed:0"] == failed + 1
    finally:
        pair.standby.start()
    time.sleep(RETRY_AFTER_S + 0.1)
    served = pair.replicas.counts["replica:0"]
    written.update(_write(pair, tenant, 5))
    assert set(_read_uuids(pair, tenant)) == written
    assert pair.replicas.counts["replica:0"] == served + 1


def test_export_read_from_the_replica_verifies(pair: Pair, tmp_path: Path) -> None:
    """An include=integrity NDJSON export served by the replica passes `auditkeep verify-export`."""
    tenant = make_tenant(pair.storage)
    _write(pair, tenant, 200)
    served = pair.replicas.counts["replica:0"]
    r = pair.client.get("/api/v1/audit_logs", headers=tenant.headers, params={
        "include": "integrity", "format": "ndjson", "start_date": "2000-01-01T00:00:00Z"})
    assert r.status_code == 200, r.text
    assert pair.replicas.counts["replica:0"] == served + 1
    lines = r.content.splitlines()
    assert len(lines) == 1 + 201  # the statement, 200 events and the export's own read record
    assert orjson.loads(lines[-1])["action"] == "audit_logs.read"
    (tmp_path / "export.ndjson").write_bytes(r.content)
    key = pair.client.get("/api/v1/integrity/public_key", headers=tenant.headers)
    (tmp_path / "key.json").write_bytes(key.content)
    out = cli(pair.primary.url, "verify-export", str(tmp_path / "export.ndjson"),
              "--public-key", str(tmp_path / "key.json"))
    assert "OK" in out


def _streamed_rows(cluster: Cluster) -> int:
    """Rows that server has sent through auditkeep's streaming cursors (storage/events.py's `auditkeep_stream`,
    which every log page, export and bundle is read with), as its pg_stat_statements counts them."""
    engine = sa.create_engine(cluster.url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql(
                "SELECT coalesce(sum(rows), 0) FROM pg_stat_statements "
                """WHERE query LIKE 'FETCH FORWARD %% FROM "auditkeep_stream"'""").scalar_one())
    finally:
        engine.dispose()


def test_evidence_bundle_is_read_on_the_replica_and_verifies(pair: Pair, tmp_path: Path) -> None:
    """GET /api/v1/evidence right after a write: the standby streams every event of the bundle (its
    pg_stat_statements counts the rows) and the primary none, the bundle holds every event written, and
    `auditkeep verify-bundle` accepts it."""
    tenant = make_tenant(pair.storage)
    written = set(_write(pair, tenant, 150))
    on_standby, on_primary = _streamed_rows(pair.standby), _streamed_rows(pair.primary)
    r = pair.client.get("/api/v1/evidence", headers=tenant.headers, params={"start_date": "2000-01-01T00:00:00Z"})
    assert r.status_code == 200, r.text
    assert _streamed_rows(pair.standby) - on_standby == 150
    assert _streamed_rows(pair.primary) - on_primary == 0
    (tmp_path / "bundle.zip").write_bytes(r.content)
    with zipfile.ZipFile(tmp_path / "bundle.zip") as zf:
        lines = zf.read("events.ndjson").splitlines()
    assert {orjson.loads(line)["event_uuid"] for line in lines[1:]} == written
    cli(pair.primary.url, "verify-bundle", str(tmp_path / "bundle.zip"))  # exit 0: every check holds


def test_console_event_page_is_read_on_the_replica(pair: Pair) -> None:
    """The console's page of one event, opened right after the event was written, is read on the standby
    (one row streamed there, none on the primary) and shows the event."""
    tenant = make_tenant(pair.storage)
    with pair.storage.write() as conn:
        identity.set_password_hash(conn, tenant.admin.id, hash_password(PASSWORD))
    browser = Browser(TestClient(pair.client.app, client=(random_ip(), 50000)), "")
    assert browser.sign_in(f"admin@{tenant.org.name}.test").status_code == 303
    (event_uuid,) = _write(pair, tenant, 1)
    on_standby, on_primary = _streamed_rows(pair.standby), _streamed_rows(pair.primary)
    page = browser.get(f"/audit-logs/{event_uuid}")
    assert page.status_code == 200, page.text
    assert event_uuid in page.text and "replica test 0" in page.text
    assert _streamed_rows(pair.standby) - on_standby == 1
    assert _streamed_rows(pair.primary) - on_primary == 0
    browser.client.close()


def _calls(cluster: Cluster, pattern: str) -> int:
    """How many statements whose text matches the SQL LIKE `pattern` that server has run (pg_stat_statements)."""
    engine = sa.create_engine(cluster.url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
                                            "WHERE query LIKE %s", (pattern,)).scalar_one())
    finally:
        engine.dispose()


def test_inclusion_proof_is_read_on_the_replica(pair: Pair) -> None:
    """An inclusion proof asked right after a checkpoint is made: the event's seq and hash are looked up on
    the standby (its pg_stat_statements), not on the primary, and the proof is of that checkpoint's tree."""
    tenant = make_tenant(pair.storage)
    uuids = _write(pair, tenant, 10)
    checkpoint = pair.client.post("/api/v1/integrity/checkpoints", headers=tenant.headers)
    assert checkpoint.status_code == 201, checkpoint.text
    lookup = "%FROM events%event_uuid%"
    on_standby, on_primary = _calls(pair.standby, lookup), _calls(pair.primary, lookup)
    r = pair.client.get("/api/v1/integrity/proofs/inclusion", headers=tenant.headers,
                        params={"event_uuid": uuids[3]})
    assert r.status_code == 200, r.text
    proof = r.json()
    assert proof["seq"] == 4 and proof["tree_size"] == checkpoint.json()["tree_size"]
    assert proof["checkpoint"]["root_hash"] == proof["root_hash"] == checkpoint.json()["root_hash"]
    assert _calls(pair.standby, lookup) > on_standby
    assert _calls(pair.primary, lookup) == on_primary


def test_a_primary_restarted_after_a_crash_is_not_taken_for_a_replica() -> None:
    """A primary that replayed its WAL at startup (crash recovery) keeps answering pg_last_wal_replay_lsn()
    with where that recovery stopped. Named as a replica (say, a standby promoted after a crash), it is seen
    as not a standby, not as one that is behind: reads go to the primary at once, without a catch-up wait."""
    cluster = Cluster().init()
    try:
        cluster.start()
        url = cluster.url.replace("postgresql://", "postgresql+psycopg://")
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        engine.dispose()
        cluster.stop("immediate")  # a crash: the next start replays the WAL
        cluster.start()
        storage = Storage(url, Settings(read_database_url=url))
        try:
            with storage.lookup() as conn:
                in_recovery, replayed = conn.exec_driver_sql(
                    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()").one()
            assert in_recovery is False and replayed is not None  # the case: a primary with a replay position
            assert storage.for_read() is storage
            assert storage.replicas is not None and storage.replicas.counts == {"not_standby:0": 1, "primary": 1}
        finally:
            storage.dispose()
    finally:
        cluster.destroy()
