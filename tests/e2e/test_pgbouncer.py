"""End to end through PgBouncer in transaction mode (issue #14, "Pooling"): Debian's pgbouncer, started
here on a free port in front of a fresh database on the shared PostgreSQL, with fewer server connections
than `auditkeep serve`'s workers hold, so consecutive transactions of one client land on different server
connections. Nothing set in a session, no server-side prepared statement, no session advisory lock may
survive that; ingest, cursor walks, exports, keys, streams' leases, read records, checkpoints and
`auditkeep verify` must all still be right.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg
import pytest
import sqlalchemy as sa

from auditkeep.auth.principals import Scope
from auditkeep.settings import Settings
from auditkeep.storage import identity
from auditkeep.storage.base import Storage
from tests.conftest import make_tenant
from tests.e2e.server import Server, cli, free_port
from tests.streams.receivers import WebhookReceiver, webhook_receiver

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
SERVER_CONNECTIONS = 3  # fewer than the clients: transactions of one client move between server connections


class PgBouncer:
    """pgbouncer in a temporary directory, pool_mode=transaction, in front of one database."""

    def __init__(self, upstream: str) -> None:
        u = sa.make_url(upstream)
        self.dbname = str(u.database)
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="ak-pgbouncer-"))
        # pgbouncer refuses to run as root; as the postgres user it must be able to read its files.
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        ini = self.root / "pgbouncer.ini"
        ini.write_text(f"""[databases]
{self.dbname} = host={u.host} port={u.port} dbname={self.dbname} user={u.username}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = {SERVER_CONNECTIONS}
max_client_conn = 500
server_reset_query =
logfile = {self.root}/pgbouncer.log
pidfile = {self.root}/pgbouncer.pid
""")
        ini.chmod(0o644)
        self.url = str(u.set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False))
        self.dsn = f"host=127.0.0.1 port={self.port} dbname={self.dbname} user={u.username}"  # for libpq
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PgBouncer:
        as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.proc = subprocess.Popen([*as_owner, PGBOUNCER, str(self.root / "pgbouncer.ini")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        engine = sa.create_engine(sa.make_url(self.url).set(drivername="postgresql+psycopg"),
                                  poolclass=sa.NullPool)
        try:
            while True:
                try:
                    with engine.connect() as conn:
                        conn.exec_driver_sql("SELECT 1")
                    return self
                except sa.exc.OperationalError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"pgbouncer did not start: {self.log()}") from None
                    time.sleep(0.1)
        finally:
            engine.dispose()

    def log(self) -> str:
        path = self.root / "pgbouncer.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def bouncer(postgres_url: str) -> Iterator[PgBouncer]:
    b = PgBouncer(postgres_url).start()
    yield b
    b.stop()


@pytest.fixture(autouse=True)
def _pooled_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys in the test's tmp dir; every server and command of the test told it runs through PgBouncer."""
    monkeypatch.setenv("AUDITKEEP_SIGNING_KEY_PATH", str(tmp_path / "signing-key.pem"))
    monkeypatch.setenv("AUDITKEEP_SECRETS_KEY_PATH", str(tmp_path / "secrets-key"))
    monkeypatch.setenv("AUDITKEEP_DATABASE_POOLER", "pgbouncer")


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as r:
        yield r


def _wait(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _walk(url: str, headers: dict[str, str], params: dict[str, str]) -> list[dict[str, object]]:
    """Every log of a `limit` + `cursor` walk, following the `Link: rel="next"` header to its end."""
    logs: list[dict[str, object]] = []
    query = dict(params)
    for _ in range(1000):
        r = httpx.get(f"{url}/api/v1/audit_logs", params=query, headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        logs.extend(r.json()["logs"])
        match = re.search(r'<([^>]+)>;\s*rel="next"', r.headers.get("link", ""))
        if match is None:
            return logs
        query = {**params, "cursor": parse_qs(urlsplit(match.group(1)).query)["cursor"][0]}
    raise AssertionError("the walk did not end")


def test_storage_through_pgbouncer_plans_cursors_for_all_rows_in_every_transaction(bouncer: PgBouncer) -> None:
    """cursor_tuple_fraction is 1 inside each read transaction though no session SET survives the pooler,
    and a statement run far past psycopg's prepare threshold never fails on a server connection that
    did not prepare it."""
    settings = Settings(database_pooler="pgbouncer")
    storage = Storage(bouncer.url, settings)
    try:
        storage.migrate()
        # Another client of the same pool, holding a server connection every other round: PgBouncer hands
        # out the server connection freed last, so the storage's transactions alternate between two server
        # connections, and on one of them this client leaves a session setting behind, as any client of a
        # shared pooler may.
        with psycopg.connect(bouncer.dsn) as other:
            for i in range(30):
                if i % 2:
                    other.execute("SET cursor_tuple_fraction = 0.1")  # its transaction holds a server
                with storage.read() as conn:
                    assert conn.exec_driver_sql("SHOW cursor_tuple_fraction").scalar() == "1"
                    found = conn.exec_driver_sql("SELECT count(*) FROM chain_heads WHERE org_id < %s", (0,))
                    assert found.scalar() == 0
                if i % 2:
                    other.commit()
        with storage.lookup() as conn:  # autocommit: a statement alone, no SET LOCAL before it
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    finally:
        storage.dispose()


def test_serve_with_three_workers_through_pgbouncer(bouncer: PgBouncer, receiver: WebhookReceiver) -> None:
    """Ingest from four clients at once, cursor walks, an export, keys made and revoked, a stream delivered
    under its lease, read records, checkpoints and `auditkeep verify`, all through transaction pooling."""
    url = bouncer.url
    # The tenant and its keys are made in this process (through the pooler too): a CLI process costs
    # seconds of imports on a loaded machine, and `auditkeep verify` below runs the CLI through it anyway.
    storage = Storage(url, Settings(database_pooler="pgbouncer"))
    storage.migrate()
    tenant = make_tenant(storage)
    h = tenant.headers
    env = {"AUDITKEEP_CHECKPOINT_EVERY_EVENTS": "500", "AUDITKEEP_STREAM_LEASE_SECONDS": "2",
           "AUDITKEEP_STREAM_POLL_SECONDS": "0.05", "AUDITKEEP_DATABASE_POOLER": "pgbouncer"}
    server = Server(url, workers=3, env=env).start()
    try:
        r = httpx.post(f"{server.url}/api/v1/streams", headers=h, json={
            "name": "siem", "kind": "webhook", "start_seq": 1,
            "config": {"url": receiver.url, "secret": "pgb-webhook-secret-0123456789abcdef", "batch_size": 100}})
        assert r.status_code == 201, r.text
        stream_id = r.json()["id"]

        acked: list[str] = []
        errors: list[str] = []

        def ingest(client_no: int) -> None:
            with httpx.Client(base_url=server.url, headers=h, timeout=30) as client:
                for b in range(10):
                    batch = [{"client_ip": "198.51.100.7", "url": f"https://app.test/{client_no}/{b}/{i}",
                              "action": "doc.view" if i % 2 else "doc.edit", "user_email": f"u{client_no}@pgb.test"}
                             for i in range(50)]
                    r = client.post("/api/v1/audit_logs", json=batch)
                    if r.status_code != 201:
                        errors.append(r.text)
                        return
                    acked.extend(r.json()["event_uuids"])

        threads = [threading.Thread(target=ingest, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == []
        assert len(acked) == 2000

        walked = _walk(server.url, h, {"limit": "100", "action": "doc.view"})
        views = [log["event_uuid"] for log in walked]
        assert len(views) == 1000 and len(set(views)) == 1000
        everything = _walk(server.url, h, {"limit": "100"})
        assert {log["event_uuid"] for log in everything} >= set(acked)

        export = httpx.get(f"{server.url}/api/v1/audit_logs", params={"format": "ndjson"}, headers=h, timeout=60)
        assert export.status_code == 200, export.text
        exported = [json.loads(line) for line in export.text.splitlines()]
        assert {e["event_uuid"] for e in exported} >= set(acked)
        # Each of the reads above was recorded as an event of the log itself.
        reads = _walk(server.url, h, {"limit": "100", "action": "audit_logs.read"})
        assert len(reads) >= 3

        # Keys: one made now works on every worker at once; revoked, it is refused everywhere.
        _, second = tenant.service_account(Scope.READ)
        h2 = {"Authorization": f"Key {second}"}
        assert {httpx.get(f"{server.url}/api/v1/audit_logs", params={"limit": "1"}, headers=h2).status_code
                for _ in range(6)} == {200}
        with storage.write() as conn:
            identity.revoke_key(conn, tenant.org, second)
        assert {httpx.get(f"{server.url}/api/v1/audit_logs", params={"limit": "1"}, headers=h2).status_code
                for _ in range(6)} == {401}

        # The stream, delivered by whichever worker holds its lease, catches up with every event once.
        def caught_up() -> bool:
            return bool(httpx.get(f"{server.url}/api/v1/streams/{stream_id}", headers=h).json()["lag_events"] == 0)

        _wait(caught_up, 60, "the stream to catch up")
        seqs = [e["seq"] for e in receiver.events()]
        assert len(seqs) == len(set(seqs))
        assert set(seqs) >= set(range(1, 2001))

        r = httpx.get(f"{server.url}/api/v1/integrity/checkpoints", params={"min_tree_size": 1}, headers=h)
        assert r.status_code == 200, r.text
        assert len(r.json()["checkpoints"]) >= 3  # one per 500 events
        r = httpx.get(f"{server.url}/api/v1/integrity/verify", headers=h, timeout=60)
        assert r.status_code == 200, r.text
    finally:
        server.stop()
        storage.dispose()
    assert b"prepared statement" not in bytes(server.log)
    out = cli(url, "verify", "--org", tenant.org.name)
    assert out.startswith("OK"), out
