"""Self-watch against the real `auditkeep serve` (issue #13, both backends): a row edited behind the
server's back is found by the scheduled full verify within AUDITKEEP_VERIFY_INTERVAL, and shows four ways:
an `integrity.verify_failed` event, `auditkeep_integrity_ok{org} 0` on /metrics, the console's red banner,
and the built-in `integrity_failed` alert rule firing (`alert.fired`). Restoring the row clears it. A server
SIGKILLed part way through a pass goes on from the position it had written, and still finds an edit."""

from __future__ import annotations

import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy.exc import OperationalError

from auditkeep.auth.passwords import hash_password
from auditkeep.auth.principals import Role
from auditkeep.settings import Settings
from auditkeep.storage import Storage, identity, open_storage
from auditkeep.storage.events import iter_chain
from tests.conftest import make_tenant, own_database
from tests.e2e.server import Server
from tests.integrity_db._tamper import seed, stored_row, tampering, update_columns

pytestmark = pytest.mark.e2e

INTERVAL = 4.0  # AUDITKEEP_VERIFY_INTERVAL for the server under test
PASSWORD = "self-watch password"


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, str]:
    return {"AUDITKEEP_SIGNING_KEY_PATH": str(tmp_path / "signing-key.pem"),
            "AUDITKEEP_SECRETS_KEY_PATH": str(tmp_path / "secrets-key")}


@pytest.fixture
def local_storage(database_url: str, keys: dict[str, str], tmp_path: Path) -> Iterator[Storage]:
    """The server's database, of this test's own, opened by the test itself: to make the organization and to
    tamper. Not the session's shared one: the watcher walks every organization of its database, and a full
    verify of each of the hundreds there every INTERVAL would be what the test timed."""
    with own_database(database_url, tmp_path) as url:
        storage = open_storage(url, settings=Settings(
            database_url=url, signing_key_path=Path(keys["AUDITKEEP_SIGNING_KEY_PATH"]),
            secrets_key_path=Path(keys["AUDITKEEP_SECRETS_KEY_PATH"])))
        yield storage
        storage.dispose()


def _until(what: str, check: Callable[[], Any], deadline: float) -> float:
    """Poll `check` until it is truthy; the time it took. Fails naming `what` past `deadline` (monotonic)."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() < deadline, f"not seen in time: {what}"
        time.sleep(0.1)
    return time.monotonic() - start


def _edit(storage: Storage, org_id: int, seq: int, log_entry: str) -> None:
    """Set one event's log_entry behind the server's back. On SQLite the attacker's transaction starts
    by reading the triggers' DDL, so a write the server commits meanwhile makes SQLite refuse its
    upgrade to a writer (SQLITE_BUSY at once, no busy wait): it tries again, as an attacker would."""
    for _ in range(100):
        try:
            with tampering(storage) as conn:
                update_columns(conn, storage, org_id, seq, {"log_entry": log_entry})
            return
        except OperationalError as exc:
            if "locked" not in str(exc):
                raise
            time.sleep(0.05)
    raise AssertionError("the database stayed locked for 100 tries")


def _console(server: Server, email: str) -> httpx.Client:
    """A signed-in console session (the sign-in form, as a browser posts it)."""
    client = httpx.Client(base_url=server.url, timeout=10)
    token = re.search(r'name="signin_token" value="([^"]+)"', client.get("/").text)
    assert token is not None
    r = client.post("/signin", data={"email": email, "password": PASSWORD, "signin_token": token.group(1),
                                     "organization": ""})
    assert r.status_code == 303, r.text
    return client


def test_a_row_edited_behind_the_servers_back_shows_four_ways_within_the_interval(
    local_storage: Storage, keys: dict[str, str]
) -> None:
    """Event, metric, banner and alert within the verify interval; after the row is restored, all clear."""
    storage = local_storage
    with storage.write() as conn:
        org = identity.create_org(conn, f"watch-{secrets.token_hex(4)}")
        admin = identity.create_user(conn, org, f"admin@{org.name}.test", Role.ADMIN)
        identity.set_password_hash(conn, admin.id, hash_password(PASSWORD))
        key, _ = identity.create_key(conn, admin)
    headers = {"Authorization": f"Key {key}"}
    server = Server(storage.url, env={
        **keys, "AUDITKEEP_VERIFY_INTERVAL": str(INTERVAL), "AUDITKEEP_SELF_WATCH_POLL_SECONDS": "0.2",
        "AUDITKEEP_ALERT_POLL_SECONDS": "0.2"}).start()
    api = httpx.Client(base_url=server.url, headers=headers, timeout=10)
    console: httpx.Client | None = None
    try:
        rule = api.post("/api/v1/alert_rules/templates/integrity_failed")
        assert rule.status_code == 201, rule.text
        batch = [{"event_uuid": str(uuid.uuid4()), "client_ip": "10.0.0.1", "url": f"https://app.test/{i}",
                  "action": "document.update", "log_entry": f"edit {i}"} for i in range(20)]
        assert api.post("/api/v1/audit_logs", json=batch).status_code == 201
        metric = f'auditkeep_integrity_ok{{org="{org.name}"}}'

        def gauge() -> str | None:
            line = [x for x in api.get("/metrics").text.splitlines() if x.startswith(metric + " ")]
            return line[0].split()[1] if line else None

        def watched_to() -> int:
            with storage.read() as conn:
                found = conn.exec_driver_sql(
                    "SELECT verified_seq FROM integrity_watch WHERE id = " + str(org.id)).first()
            return 0 if found is None else int(found[0])

        # The watcher has verified the edited event already, so only the scheduled full verify can find it.
        _until("the watcher past the batch", lambda: watched_to() >= 21, time.monotonic() + 30)  # rule + 20
        assert gauge() == "1.0"
        console = _console(server, admin.user_email or "")
        assert 'id="integrity-banner"' not in console.get("/audit-logs").text

        with storage.read() as conn:
            original = stored_row(conn, storage, org.id, 10)["log_entry"]
        _edit(storage, org.id, 10, "edit 8 (changed)")
        edited = time.monotonic()
        deadline = edited + INTERVAL + 6  # the interval, a watcher pass and an alert evaluation, on a busy machine

        def logs(action: str) -> list[dict[str, Any]]:
            r = api.get("/api/v1/audit_logs", params={"action": action, "start_date": "2000-01-01T00:00:00Z"})
            return list(r.json()["logs"])

        seen: dict[str, float] = {}
        checks: dict[str, Callable[[], Any]] = {
            "event": lambda: logs("integrity.verify_failed"),
            "metric": lambda: gauge() == "0.0",
            "banner": lambda: 'id="integrity-banner"' in console.get("/audit-logs").text,
            "alert": lambda: logs("alert.fired"),
        }
        for name, check in checks.items():
            _until(name, check, deadline)
            seen[name] = round(time.monotonic() - edited, 2)
        print(f"\nself-watch ({storage.dialect}, interval {INTERVAL} s): seen this long after the edit (s): {seen}")
        failed = logs("integrity.verify_failed")
        assert len(failed) == 1
        assert failed[0]["status"] == "failure"
        assert failed[0]["payload"] == {"seq": 10, "kind": "hash_mismatch", "check": "full",
                                        "reason": "hash does not match the event's content"}
        assert "does not verify at seq 10 (hash_mismatch)" in console.get("/api-keys").text
        fired = logs("alert.fired")
        assert fired[0]["payload"]["rule"]["name"] == "Integrity verification failed"
        assert fired[0]["payload"]["first_seq"] == fired[0]["payload"]["last_seq"]

        # A second full verify finds the same failure: nothing more is recorded.
        time.sleep(INTERVAL + 1)
        assert len(logs("integrity.verify_failed")) == 1

        _edit(storage, org.id, 10, original)
        restored = time.monotonic() + INTERVAL + 6
        _until("integrity.verify_recovered", lambda: logs("integrity.verify_recovered"), restored)
        _until("auditkeep_integrity_ok 1", lambda: gauge() == "1.0", restored)
        assert 'id="integrity-banner"' not in console.get("/audit-logs").text
    finally:
        api.close()
        if console is not None:
            console.close()
        server.stop()
        print(f"server log (tail):\n{server.log.decode(errors='replace')[-6000:]}")  # shown when the test fails


def _watch_row(storage: Storage, org_id: int) -> tuple[int, list[dict[str, Any]]]:
    """(verified_seq, failures) of the organization's watch row; (0, []) before the watcher made it."""
    with storage.read() as conn:
        found = conn.exec_driver_sql(f"SELECT verified_seq, failures FROM integrity_watch WHERE id = {org_id}").first()
    return (0, []) if found is None else (int(found[0]), list(orjson.loads(found[1])))


def test_a_serve_killed_mid_pass_resumes_from_its_durable_position_and_still_finds_an_edit(
    own_storage: Storage,
) -> None:
    """SIGKILL while the self-watch is part way through a backlog leaves its position P durable; edits made
    while the server is down, one at or before P and one after it, then show that the restarted watcher goes
    on from P: it reports the edit after P (incremental check), not the one before it, which only the
    scheduled full verify walks back to (an hour away here)."""
    storage = own_storage  # the watcher walks every organization: none but this test's own
    org_id = make_tenant(storage).org.id
    env = {"AUDITKEEP_SIGNING_KEY_PATH": str(storage.settings.signing_key_path),
           "AUDITKEEP_SECRETS_KEY_PATH": str(storage.settings.secrets_key_path),
           "AUDITKEEP_VERIFY_INTERVAL": "3600", "AUDITKEEP_SELF_WATCH_POLL_SECONDS": "0.1",
           "AUDITKEEP_SELF_WATCH_LEASE_SECONDS": "2"}
    server = Server(storage.url, env=env).start()
    try:
        events = 100_000  # 20 steps of selfwatch.BATCH, seconds of hashing: a pass long enough to stop in
        seed(storage, org_id, events)
        _until("the watcher part way", lambda: _watch_row(storage, org_id)[0] >= 10_000, time.monotonic() + 60)
    finally:
        server.kill()
    position, failures = _watch_row(storage, org_id)
    assert failures == []
    assert 10_000 <= position < events - 10, f"position {position}: the pass ended before the kill, nothing tested"
    behind, ahead = position // 2, position + (events - position) // 2
    for seq in (behind, ahead):
        _edit(storage, org_id, seq, f"edited at seq {seq} while the server was down")

    restarted = Server(storage.url, env=env).start()
    try:
        _until("a failure on the watch row", lambda: _watch_row(storage, org_id)[1], time.monotonic() + 90)
    finally:
        restarted.stop()
    verified, failures = _watch_row(storage, org_id)
    assert [(f["seq"], f["kind"], f["check"]) for f in failures] == [(ahead, "hash_mismatch", "incremental")]
    assert verified == ahead - 1  # what was verified stays verified: the position stops before the break
    recorded = [e["payload"] for e in iter_chain(storage, org_id) if e["action"] == "integrity.verify_failed"]
    assert [(p["seq"], p["kind"], p["check"]) for p in recorded] == [(ahead, "hash_mismatch", "incremental")]
