"""End to end: the real server process over loopback with a real HTTP client (issue #2)."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.server import Server, cli

pytestmark = pytest.mark.e2e


@pytest.fixture
def org_key(database_url: str) -> str:
    org = f"e2e-{secrets.token_hex(4)}"
    cli(database_url, "orgs", "create", org)
    cli(database_url, "users", "create", "--org", org, "--email", "ops@e2e.test", "--role", "admin")
    return cli(database_url, "keys", "create", "--org", org, "--user", "ops@e2e.test").strip()


@pytest.fixture
def server(database_url: str) -> Iterator[Server]:
    s = Server(database_url, workers=2).start()
    yield s
    s.stop()


def test_curl_style_get_with_form_encoded_json_body(server: Server, org_key: str) -> None:
    """`curl -X GET --data '{...}'` sends the JSON body as application/x-www-form-urlencoded."""
    h = {"Authorization": f"Key {org_key}"}
    r = httpx.post(f"{server.url}/api/v1/audit_logs", headers=h, json=[
        {"client_ip": "10.1.1.1", "url": "https://a/1", "action": "old", "timestamp": "2020-01-01T00:00:00Z"},
        {"client_ip": "10.1.1.1", "url": "https://a/2", "action": "new", "timestamp": "2024-01-01T00:00:00Z"},
    ])
    assert r.status_code == 201
    r = httpx.request(
        "GET", f"{server.url}/api/v1/audit_logs",
        headers={"Authorization": org_key, "Content-Type": "application/x-www-form-urlencoded",
                 "User-Agent": "curl/8.0"},
        content=b'{"start_date": "2023-01-01T00:00:00Z", "end_date": "2025-01-01T00:00:00Z"}',
    )
    assert r.status_code == 200
    assert [log["action"] for log in r.json()["logs"]] == ["new"]
    assert r.headers.get("transfer-encoding") == "chunked"


def test_ingested_events_survive_a_killed_server(database_url: str, org_key: str) -> None:
    """A 201 means durable: SIGKILL right after the answer loses nothing."""
    h = {"Authorization": f"Key {org_key}"}
    first = Server(database_url).start()
    try:
        r = httpx.post(f"{first.url}/api/v1/audit_logs", headers=h,
                       json=[{"client_ip": "10.0.0.9", "url": f"https://k/{i}", "action": "durable"}
                             for i in range(50)])
        assert r.status_code == 201
        uuids = r.json()["event_uuids"]
    finally:
        first.kill()
    second = Server(database_url).start()
    try:
        logs = httpx.get(f"{second.url}/api/v1/audit_logs", headers=h).json()["logs"]
    finally:
        second.stop()
    assert [log["event_uuid"] for log in logs if log["action"] == "durable"] == uuids


def test_two_workers_and_many_clients_ingest_without_errors(server: Server, org_key: str) -> None:
    h = {"Authorization": f"Key {org_key}"}
    statuses: list[int] = []

    def client(n: int) -> None:
        with httpx.Client(base_url=server.url, headers=h, timeout=60) as c:
            for b in range(10):
                r = c.post("/api/v1/audit_logs",
                           json=[{"client_ip": "10.0.0.2", "url": f"https://c/{n}/{b}/{i}", "action": "load"}
                                 for i in range(100)])
                statuses.append(r.status_code)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [201] * 60
    logs = httpx.get(f"{server.url}/api/v1/audit_logs", headers=h, timeout=60).json()["logs"]
    assert len([log for log in logs if log["action"] == "load"]) == 6000


def test_health_and_readiness(server: Server) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/readyz").json() == {"status": "ok"}
