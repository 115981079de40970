"""Faults against the real `auditkeep serve` (issue #11): workers SIGKILLed under ingest, a PostgreSQL
outage, SQLite out of space and read-only, graceful shutdown, slow clients.

Every fault is bounded in time and stays on loopback. The PostgreSQL outage uses a cluster this module
starts itself (initdb and pg_ctl on a free port in a temporary directory), never the shared server. The
figures the tests print (`-s`) are the ones docs/architecture.md ("Failure behaviour") and
docs/benchmarks.md quote.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.e2e.pg_cluster import Cluster
from tests.e2e.server import Server, cli

pytestmark = pytest.mark.e2e

ACTION = "fault.ingest"


@pytest.fixture(autouse=True)
def _keys_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The signing and secrets keys of the servers and commands a test starts live in its tmp dir."""
    monkeypatch.setenv("AUDITKEEP_SIGNING_KEY_PATH", str(tmp_path / "signing-key.pem"))
    monkeypatch.setenv("AUDITKEEP_SECRETS_KEY_PATH", str(tmp_path / "secrets-key"))


def _org(database_url: str) -> tuple[str, dict[str, str]]:
    """A fresh organization with an admin key: its name and the request headers."""
    org = f"fault-{secrets.token_hex(4)}"
    cli(database_url, "orgs", "create", org)
    cli(database_url, "users", "create", "--org", org, "--email", "ops@fault.test", "--role", "admin")
    key = cli(database_url, "keys", "create", "--org", org, "--user", "ops@fault.test").strip()
    return org, {"Authorization": f"Key {key}"}


def _batch(size: int, *, entry: str = "") -> list[dict[str, object]]:
    return [{"event_uuid": str(uuid.uuid4()), "client_ip": "10.0.0.1", "url": "https://app.test/x",
             "action": ACTION, "log_entry": entry or None} for _ in range(size)]


@dataclass
class Outcome:
    """One ingest request: when it was sent and answered, its status (0: no answer), what it carried."""

    sent: float
    done: float
    status: int
    uuids: list[str]
    retry_after: str | None = None
    detail: object = None


@dataclass
class Ingest:
    """Threads posting small batches until stopped, keeping every outcome."""

    url: str
    headers: dict[str, str]
    threads: int = 3
    batch: int = 5
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Ingest:
        self._workers = [threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)]
        for t in self._workers:
            t.start()
        return self

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=30) as client:
            while not self._stop.is_set():
                body = _batch(self.batch)
                sent = time.monotonic()
                try:
                    r = client.post("/api/v1/audit_logs", json=body)
                except httpx.TransportError:
                    self.outcomes.append(Outcome(sent, time.monotonic(), 0, [e["event_uuid"] for e in body]))
                    time.sleep(0.05)
                    continue
                detail = r.json().get("detail") if r.status_code != 201 else None
                self.outcomes.append(Outcome(sent, time.monotonic(), r.status_code,
                                             [str(e["event_uuid"]) for e in body],
                                             r.headers.get("Retry-After"), detail))
                if r.status_code != 201:
                    time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(40)

    def acked(self) -> list[str]:
        return [u for o in self.outcomes if o.status == 201 for u in o.uuids]

    def wait_acked(self, n: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked()) < n:
            assert time.monotonic() < deadline, f"only {len(self.acked())} events acknowledged in {timeout} s"
            time.sleep(0.05)


def _stored(url: str, headers: dict[str, str], action: str = ACTION) -> Counter[str]:
    """How many times each event_uuid with `action` is stored, read through the API."""
    r = httpx.get(f"{url}/api/v1/audit_logs", params={"action": action, "format": "ndjson"},
                  headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    return Counter(json.loads(line)["event_uuid"] for line in r.text.splitlines())


def _assert_nothing_lost(ingest: Ingest, stored: Counter[str]) -> None:
    """Every acknowledged event is stored exactly once, and every batch is stored whole or not at all."""
    acked = ingest.acked()
    assert acked, "nothing was acknowledged"
    assert [u for u in acked if stored[u] != 1] == []
    assert [u for u, n in stored.items() if n != 1] == []
    half = [o.uuids for o in ingest.outcomes if 0 < sum(stored[u] for u in o.uuids) < len(o.uuids)]
    assert half == []


def _verify(database_url: str, org: str) -> None:
    out = cli(database_url, "verify", "--org", org)  # asserts exit 0
    assert out.startswith("OK"), out


# --- SIGKILL --------------------------------------------------------------------------------------------


def test_sigkill_of_two_workers_under_ingest_loses_no_acknowledged_event(database_url: str) -> None:
    """SIGKILL of `serve --workers 2` mid-ingest: after a restart every 201'd event is stored exactly once,
    no batch half-written, and the chain verifies."""
    org, h = _org(database_url)
    server = Server(database_url, workers=2).start()
    ingest = Ingest(server.url, h, threads=4).start()
    try:
        ingest.wait_acked(200)
        server.kill()
    finally:
        ingest.stop()
        server.kill()
    assert {o.status for o in ingest.outcomes} <= {201, 0}
    restarted = Server(database_url).start()
    try:
        _assert_nothing_lost(ingest, _stored(restarted.url, h))
    finally:
        restarted.stop()
    _verify(database_url, org)


# --- PostgreSQL outage -----------------------------------------------------------------------------------

@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = Cluster().init()
    try:
        c.start()
        yield c
    finally:
        c.destroy()


OUTAGE_S = 10.0


@pytest.mark.postgres
def test_postgres_outage_answers_503_then_recovers_without_restart(cluster: Cluster) -> None:
    """PostgreSQL stopped for 10 s under ingest: 503 + Retry-After + a one-line detail, each answer bounded,
    /readyz 503 and /healthz 200 meanwhile; once it is back the same process answers 201 again, and no
    acknowledged event is lost or half-written."""
    org, h = _org(cluster.url)
    # 503s come back fast, so the ingest loop below outruns the per-key limit on a quiet machine; its
    # intended 429s are not this test's subject (tests/api/test_rate_limits.py is).
    server = Server(cluster.url, env={"AUDITKEEP_RATE_LIMIT": "100000/second"}).start()
    ingest = Ingest(server.url, h).start()
    probes: list[tuple[str, int, float]] = []
    try:
        ingest.wait_acked(50)
        cluster.stop("fast")
        down = time.monotonic()
        while time.monotonic() - down < OUTAGE_S:
            for path in ("/healthz", "/readyz"):
                t = time.monotonic()
                status = httpx.get(server.url + path, timeout=15).status_code
                probes.append((path, status, time.monotonic() - t))
            time.sleep(0.5)
        # A request may be answered between the server accepting connections and pg_ctl noticing it, so
        # the outage ends when the restart begins, and the recovery is timed from when pg_ctl returns.
        restarting = time.monotonic()
        cluster.start()
        back = time.monotonic()
        deadline = back + 15
        while not any(o.status == 201 and o.done > back for o in ingest.outcomes):
            assert time.monotonic() < deadline, "no 201 within 15 s of the database's return"
            time.sleep(0.02)
        first_2xx = min(o.done for o in ingest.outcomes if o.status == 201 and o.done > back) - back
        time.sleep(1)
    finally:
        ingest.stop()
    try:
        during = [o for o in ingest.outcomes if o.sent > down + 0.5 and o.done < restarting]
        assert during, "no request was answered during the outage"
        assert {o.status for o in during} == {503}
        assert {o.retry_after for o in during} == {"1"}
        assert {o.detail for o in during} == {"the database is unavailable; retry later"}
        assert {o.status for o in ingest.outcomes} == {201, 503}
        slowest = max(o.done - o.sent for o in ingest.outcomes)
        assert slowest < 10, f"a request took {slowest:.1f} s"
        assert {(p, s) for p, s, _ in probes} == {("/healthz", 200), ("/readyz", 503)}
        assert max(d for _, _, d in probes) < 10
        print(f"\npostgres outage {OUTAGE_S:.0f} s: {len(during)} answers during it, all 503, slowest request "
              f"{slowest:.2f} s; first 201 {first_2xx:.2f} s after the database was back; "
              f"{len(ingest.acked())} events acknowledged")
        _assert_nothing_lost(ingest, _stored(server.url, h))
    finally:
        server.stop()
    _verify(cluster.url, org)


# --- SQLite out of space -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _tmpfs(size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted on a fresh directory (needs root, as in CI), unmounted afterwards."""
    root = Path(tempfile.mkdtemp(prefix="auditkeep-tmpfs-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(root)], check=True, timeout=30)
    try:
        yield root
    finally:
        subprocess.run(["umount", "--lazy", str(root)], check=True, timeout=30)
        root.rmdir()


def _fill(path: Path) -> int:
    """Write `path` until its file system has no byte left; the bytes written."""
    written = 0
    with path.open("wb", buffering=0) as f:
        for chunk in (1 << 20, 1 << 12, 1):
            with contextlib.suppress(OSError):  # ENOSPC: go on with smaller writes, then stop
                while True:
                    written += f.write(b"\0" * chunk)
    return written


def _post(client: httpx.Client, events: list[dict[str, object]]) -> httpx.Response:
    return client.post("/api/v1/audit_logs", json=events)


def test_sqlite_disk_full_answers_507_then_recovers_when_space_returns() -> None:
    """SQLite on a full disk (a 48 MiB tmpfs filled up): every write is 507 with Retry-After, never a 500,
    nothing half-written; once space returns the same process stores again, and the chain verifies."""
    with _tmpfs("48m") as disk:
        url = f"sqlite:///{disk / 'auditkeep.db'}"
        org, h = _org(url)
        server = Server(url).start()
        refused: list[str] = []
        try:
            with httpx.Client(base_url=server.url, headers=h, timeout=30) as client:
                before = _batch(50)
                assert _post(client, before).status_code == 201
                _fill(disk / "ballast")
                for _ in range(3):
                    events = _batch(200, entry="x" * 2000)  # ~100 pages: more than any page left free
                    r = _post(client, events)
                    assert (r.status_code, r.json()) == (507, {"detail": "the database's disk is full; "
                                                                         "retry once space is freed"})
                    assert r.headers["Retry-After"] == "5"
                    refused += [str(e["event_uuid"]) for e in events]
                (disk / "ballast").unlink()
                after = _batch(200, entry="x" * 2000)
                assert _post(client, after).status_code == 201
            stored = _stored(server.url, h)
        finally:
            server.stop()
        assert stored == Counter(str(e["event_uuid"]) for e in before + after)
        assert not set(refused) & set(stored)
        _verify(url, org)
        with contextlib.closing(sqlite3.connect(disk / "auditkeep.db")) as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


# --- SQLite read-only -----------------------------------------------------------------------------------

# Root ignores file modes (CAP_DAC_OVERRIDE), and the tests run as root in CI. Another uid cannot even start
# the server there (the interpreter lives under /root, mode 0700), so it keeps uid 0 but runs with no
# capabilities at all, under which the kernel applies file modes to it as to any unprivileged user.
NO_CAPABILITIES = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"]
READ_ONLY_DETAIL = "the database file is read-only; retry once it is writable"


def test_sqlite_read_only_file_answers_503_then_recovers_when_writable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The database file made read-only (chmod 0444) under ingest: writes answer 503 + Retry-After + a
    one-line detail, reads that write nothing (the next page of a recorded walk) still answer, /healthz and
    /readyz 200; once it is writable again the same process stores again, nothing acknowledged is lost or
    half-written, and the chain verifies."""
    root = Path(tempfile.mkdtemp(prefix="auditkeep-ro-"))
    db = root / "auditkeep.db"
    url = f"sqlite:///{db}"
    monkeypatch.setenv("AUDITKEEP_SIGNING_KEY_PATH", str(root / "signing-key.pem"))
    monkeypatch.setenv("AUDITKEEP_SECRETS_KEY_PATH", str(root / "secrets-key"))
    try:
        org, h = _org(url)
        # A limit the retries after each 503 cannot reach: a 429 here would be the harness, not the fault.
        server = Server(url, env={"AUDITKEEP_RATE_LIMIT": "10000/second"},
                        wrapper=NO_CAPABILITIES if os.geteuid() == 0 else ()).start()
        ingest = Ingest(server.url, h).start()
        try:
            with httpx.Client(base_url=server.url, headers=h, timeout=30) as client:
                ingest.wait_acked(50)
                first = client.get("/api/v1/audit_logs", params={"limit": 5, "action": ACTION})
                assert first.status_code == 200
                db.chmod(0o444)
                read_only = time.monotonic()
                time.sleep(1.5)
                fresh = client.get("/api/v1/audit_logs", params={"limit": 5})  # its record cannot be written
                next_page = client.get(first.links["next"]["url"])  # recorded by the first page: writes none
                probes = {path: client.get(path).status_code for path in ("/healthz", "/readyz")}
                db.chmod(0o644)
                writable = time.monotonic()
                deadline = writable + 15
                while not any(o.status == 201 and o.sent > writable for o in ingest.outcomes):
                    assert time.monotonic() < deadline, "no 201 within 15 s of the file being writable again"
                    time.sleep(0.02)
                first_2xx = min(o.done for o in ingest.outcomes if o.status == 201 and o.sent > writable) - writable
                time.sleep(0.5)
        finally:
            ingest.stop()
        try:
            during = [o for o in ingest.outcomes if o.sent > read_only and o.done < writable]
            assert during, "no request was answered while the file was read-only"
            assert {(o.status, o.retry_after, o.detail) for o in during} == {(503, "1", READ_ONLY_DETAIL)}
            assert {o.status for o in ingest.outcomes} == {201, 503}
            assert (fresh.status_code, fresh.json(), fresh.headers["Retry-After"]) == (
                503, {"detail": READ_ONLY_DETAIL}, "1")
            assert next_page.status_code == 200
            assert [e["event_uuid"] for e in next_page.json()["logs"]] != []
            assert probes == {"/healthz": 200, "/readyz": 200}
            assert server.proc is not None and server.proc.poll() is None  # the same process, never restarted
            print(f"\nsqlite read-only: {len(during)} writes answered 503 meanwhile; first 201 "
                  f"{first_2xx:.2f} s after the file was writable again; {len(ingest.acked())} events acknowledged")
            _assert_nothing_lost(ingest, _stored(server.url, h))
        finally:
            server.stop()
        _verify(url, org)
        with contextlib.closing(sqlite3.connect(db)) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- Shutdown ------------------------------------------------------------------------------------------------

EXPORT_EVENTS = 10_000
ENTRY = "e" * 2000  # 10,000 logs of ~2.3 KB: a 23 MB export, more than loopback's socket buffers hold


def _load(client: httpx.Client, n: int) -> list[str]:
    uuids: list[str] = []
    for _ in range(n // 2500):
        events = _batch(2500, entry=ENTRY)
        r = _post(client, events)
        assert r.status_code == 201, r.text
        uuids += [str(e["event_uuid"]) for e in events]
    return uuids


def _raw_post_head(port: int, key: str, length: int) -> bytes:
    return (f"POST /api/v1/audit_logs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()


def _read_status(sock: socket.socket) -> int:
    """The status of the HTTP response arriving on `sock` (read until the server closes it)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return int(data.split(b" ", 2)[1])


GRACE_S = 8


def test_sigterm_finishes_requests_in_flight_and_exits_within_the_grace(database_url: str) -> None:
    """SIGTERM: an ingest POST in flight gets its 201 and its events are kept; an export read on completes;
    one whose reader stopped ends without HTTP's last chunk (httpx: RemoteProtocolError) when the grace
    runs out; the process exits within AUDITKEEP_SHUTDOWN_GRACE, and both exports' audit_logs.read records
    are in the log after a restart."""
    _, h = _org(database_url)
    server = Server(database_url, env={"AUDITKEEP_SHUTDOWN_GRACE": str(GRACE_S)}).start()
    assert server.proc is not None
    params = {"format": "ndjson", "action": ACTION}
    plain = {**h, "Accept-Encoding": "identity"}  # gzip'd, the whole export would fit in the socket buffers
    try:
        with httpx.Client(base_url=server.url, headers=plain, timeout=60) as client, \
                httpx.Client(base_url=server.url, headers=plain, timeout=60) as stalled_client:
            loaded = _load(client, EXPORT_EVENTS)
            with client.stream("GET", "/api/v1/audit_logs", params=params) as full, \
                    stalled_client.stream("GET", "/api/v1/audit_logs", params=params) as stalled:
                full_chunks = full.iter_raw()
                received = next(full_chunks)
                stalled_chunks = stalled.iter_raw()
                next(stalled_chunks)
                posted = _batch(3)
                body = json.dumps(posted).encode()
                with socket.create_connection(("127.0.0.1", server.port), timeout=30) as post:
                    post.sendall(_raw_post_head(server.port, h["Authorization"], len(body)) + body[:10])
                    time.sleep(0.5)  # the request's head is read: it is in flight
                    os.killpg(server.proc.pid, signal.SIGTERM)
                    term = time.monotonic()
                    post.sendall(body[10:])
                    assert _read_status(post) == 201
                received += b"".join(full_chunks)
                server.proc.wait(GRACE_S + 10)
                exited = time.monotonic() - term
                with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
                    for _ in stalled_chunks:
                        pass
    finally:
        server.kill()
    print(f"\nSIGTERM: exited {exited:.2f} s after it (grace {GRACE_S} s), exit code {server.proc.returncode}")
    # uvicorn ends a graceful shutdown by raising the signal it caught again, so the exit reads as SIGTERM's.
    assert server.proc.returncode == -signal.SIGTERM
    assert exited < GRACE_S + 3  # the grace, then the lifespan's flush and the interpreter's exit
    exported = [json.loads(line)["event_uuid"] for line in received.decode().splitlines()]
    assert received.endswith(b"\n")
    assert exported == loaded
    restarted = Server(database_url).start()
    try:
        assert _stored(restarted.url, h) == Counter(loaded + [str(e["event_uuid"]) for e in posted])
        reads = _stored(restarted.url, h, action="audit_logs.read")
    finally:
        restarted.stop()
    # The two exports', then the one that listed the events after the restart, and this one.
    assert len(reads) == 4


# --- Slow clients ------------------------------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def test_slow_clients_do_not_stall_others_and_memory_stays_flat(database_url: str) -> None:
    """A body trickled 1 byte a second and a reader that stopped reading a 23 MB export: other clients'
    requests are answered meanwhile, and the server's memory stays flat while it waits."""
    _, h = _org(database_url)
    server = Server(database_url).start()
    assert server.proc is not None
    plain = {**h, "Accept-Encoding": "identity"}
    try:
        with httpx.Client(base_url=server.url, headers=plain, timeout=60) as client, \
                httpx.Client(base_url=server.url, headers=plain, timeout=60) as stalled_client:
            _load(client, EXPORT_EVENTS)
            body = json.dumps(_batch(1)).encode()
            with socket.create_connection(("127.0.0.1", server.port), timeout=30) as trickle, \
                    stalled_client.stream("GET", "/api/v1/audit_logs",
                                          params={"format": "ndjson", "action": ACTION}) as stalled:
                next(stalled.iter_raw())
                trickle.sendall(_raw_post_head(server.port, h["Authorization"], len(body)))
                time.sleep(1)
                rss_before = _rss_kib(server.proc.pid)
                slowest = 0.0
                for i in range(8):
                    trickle.sendall(body[i:i + 1])
                    t = time.monotonic()
                    assert _post(client, _batch(5)).status_code == 201
                    assert client.get("/api/v1/audit_logs", params={"limit": 10}).status_code == 200
                    slowest = max(slowest, time.monotonic() - t)
                    time.sleep(max(0.0, 1 - (time.monotonic() - t)))
                rss_after = _rss_kib(server.proc.pid)
    finally:
        server.stop()
    print(f"\nslow clients: others' slowest POST+GET {slowest:.2f} s; server RSS {rss_before / 1024:.0f} -> "
          f"{rss_after / 1024:.0f} MiB over 8 s of waiting")
    assert slowest < 5
    assert rss_after - rss_before < 10 * 1024  # the export is 23 MB: buffering it would show
