"""`auditkeep logs` and `auditkeep ingest` against the real server process (issue #4), on both backends:
exports round-trip into a second organization, re-imports duplicate nothing, interrupted exports resume."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from auditkeep.cli import app
from auditkeep.storage import Storage
from tests.conftest import Tenant, make_tenant
from tests.e2e.server import BIN, Server

pytestmark = pytest.mark.e2e
URL = "/api/v1/audit_logs"

EVENTS: list[dict[str, Any]] = [
    {"client_ip": "10.0.0.1", "url": "https://app.test/a,b", "action": "rt.item", "log_entry": "",
     "user_agent": 'say "hi"\r\nand, bye', "payload": {"nested": {"a": [1, 2.5, None, True]}, "s": "é ✓"},
     "is_support_user": True, "object_id": 2**53 - 1, "user_id": -5, "user_email": "ann@a.test",
     "object_type": "key", "referer": "=cmd()", "request_type": "POST", "source": "api", "status": "success",
     "timestamp": "2024-05-01T12:00:00.123456Z"},
    {"client_ip": "2001:db8::1", "url": "https://app.test/b", "action": "rt.item", "log_entry": None,
     "is_support_user": False, "timestamp": "2024-05-01T12:00:01Z"},
    *[{"client_ip": f"10.0.1.{i}", "url": f"https://app.test/{i}", "action": "rt.item",
       "timestamp": f"2024-05-02T00:00:{i:02d}Z", "payload": {"i": i}} for i in range(25)],
]


@pytest.fixture(scope="module")
def server(database_url: str, storage: Storage) -> Iterator[Server]:
    """`auditkeep serve` on the session's database (migrated already)."""
    srv = Server(database_url).start()
    yield srv
    srv.stop()


def http_logs(server: Server, tenant: Tenant, **params: Any) -> list[dict[str, Any]]:
    r = httpx.get(server.url + URL, params={"action": "rt.item", **params}, headers=tenant.headers, timeout=30)
    assert r.status_code == 200, r.text
    return list(r.json()["logs"])


def auditkeep(tenant: Tenant, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The real `auditkeep` command with the tenant's key in the environment (no database)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUDITKEEP_", "DATAFOLD_"))}
    env["AUDITKEEP_API_KEY"] = tenant.admin_key
    done = subprocess.run([BIN / "auditkeep", *args], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    if check:
        assert done.returncode == 0, done.stderr
    return done


@pytest.fixture
def source(server: Server, storage: Storage) -> Tenant:
    tenant = make_tenant(storage)
    r = httpx.post(server.url + URL, json=EVENTS, headers=tenant.headers, timeout=30)
    assert r.status_code == 201, r.text
    return tenant


@pytest.mark.parametrize("fmt", ["ndjson", "csv", "json"])
def test_export_round_trips_into_another_organization(server: Server, storage: Storage, source: Tenant,
                                                      tmp_path: Path, fmt: str) -> None:
    """Every field of every event comes back the same (event_uuid and timestamp included); only the
    server-assigned seq and hashes differ. A second import stores nothing twice."""
    out = tmp_path / f"export.{fmt}"
    auditkeep(source, "logs", "--url", server.url, "--action", "rt.*", "--format", fmt, "-o", str(out),
              "--page-size", "4", "--no-progress")
    expected = http_logs(server, source)
    assert len(expected) == len(EVENTS)
    target = make_tenant(storage)
    done = auditkeep(target, "ingest", str(out), "--url", server.url, "--batch-size", "10", "--no-progress")
    assert done.stderr == f"{len(EVENTS)} new, 0 already present ({len(EVENTS)} events from {out})\n"
    assert http_logs(server, target) == expected
    again = auditkeep(target, "ingest", str(out), "--url", server.url, "--no-progress")  # idempotent
    assert again.stderr == f"0 new, {len(EVENTS)} already present ({len(EVENTS)} events from {out})\n"
    assert http_logs(server, target) == expected


def test_logs_writes_the_format_to_stdout_with_filters(server: Server, source: Tenant) -> None:
    done = auditkeep(source, "logs", "--url", server.url, "--action", "rt.item", "--client-ip", "10.0.1.0/24",
                     "--format", "ndjson", "--order", "desc", "--page-size", "7")
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [log["payload"]["i"] for log in lines] == list(range(24, -1, -1))
    done = auditkeep(source, "logs", "--url", server.url, "--action", "rt.item", "--support-user",
                     "--format", "json")
    assert [log["url"] for log in json.loads(done.stdout)["logs"]] == ["https://app.test/a,b"]


def test_ingest_of_a_file_without_uuids_is_idempotent(server: Server, storage: Storage, tmp_path: Path) -> None:
    target = make_tenant(storage)
    path = tmp_path / "hand-made.ndjson"
    path.write_text("\n".join(json.dumps({"client_ip": "10.9.9.9", "url": f"/x/{i}", "action": "rt.item",
                                          "timestamp": "2024-01-01T00:00:00Z"}) for i in range(3)) + "\n")
    auditkeep(target, "ingest", str(path), "--url", server.url, "--no-progress")
    auditkeep(target, "ingest", str(path), "--url", server.url, "--no-progress")
    assert sorted(log["url"] for log in http_logs(server, target)) == ["/x/0", "/x/1", "/x/2"]


def test_repeated_lines_without_uuids_are_distinct_events_and_a_rerun_adds_none(
    server: Server, storage: Storage, tmp_path: Path
) -> None:
    """Three identical lines are three events (occurrences 1-3 of one content); the same file again adds 0."""
    target = make_tenant(storage)
    path = tmp_path / "repeated.ndjson"
    line = json.dumps({"client_ip": "10.9.9.9", "url": "/same", "action": "rt.item",
                       "timestamp": "2024-01-01T00:00:00Z"})
    path.write_text(f"{line}\n{line}\n{line}\n")
    first = auditkeep(target, "ingest", str(path), "--url", server.url, "--no-progress")
    assert first.stderr == f"3 new, 0 already present (3 events from {path})\n"
    logs = http_logs(server, target)
    assert [log["url"] for log in logs] == ["/same"] * 3 and len({log["event_uuid"] for log in logs}) == 3
    again = auditkeep(target, "ingest", str(path), "--url", server.url, "--no-progress")
    assert again.stderr == f"0 new, 3 already present (3 events from {path})\n"
    assert len(http_logs(server, target)) == 3
    path.write_text(f"{line}\n{line}\n{line}\n{line}\n")  # one more copy: only it is new
    more = auditkeep(target, "ingest", str(path), "--url", server.url, "--no-progress")
    assert more.stderr == f"1 new, 3 already present (4 events from {path})\n"


@pytest.mark.parametrize("broken", ["refused", "not json"])
def test_a_bad_line_in_a_large_file_is_named_with_what_is_already_stored(
    server: Server, storage: Storage, tmp_path: Path, broken: str
) -> None:
    """Line 5,001 of 10,000 is bad: the first batch (lines 1-5,000) is stored, the rest is not, and the one
    error line says both."""
    target = make_tenant(storage)
    path = tmp_path / "large.ndjson"
    lines = [json.dumps({"client_ip": "10.0.0.1", "url": f"/n/{i}", "action": "rt.item"}) for i in range(1, 10_001)]
    lines[5000] = ('{"client_ip": "not an address", "url": "/bad", "action": "rt.item"}' if broken == "refused"
                   else '{"client_ip": "10.0.0.1", "url": ')
    path.write_text("\n".join(lines) + "\n")
    done = auditkeep(target, "ingest", str(path), "--url", server.url, "--no-progress", check=False)
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1, done.stderr
    if broken == "refused":
        assert done.stderr.startswith("error: line 5001: refused (client_ip: ")
        assert done.stderr.endswith("; 5,000 events before line 5001 already stored, none from there on "
                                    "(run again once fixed: nothing is stored twice)\n")
    else:
        assert done.stderr.startswith("error: line 5001: not JSON (")
        assert done.stderr.endswith("; 5,000 events before it already stored\n")
    r = httpx.get(server.url + URL, params={"action": "rt.item", "limit": 10_000, "format": "ndjson"},
                  headers=target.headers, timeout=60)
    assert [json.loads(x)["url"] for x in r.text.splitlines()] == [f"/n/{i}" for i in range(1, 5001)]


def test_a_bad_json_record_is_named_by_its_index(server: Server, storage: Storage, tmp_path: Path) -> None:
    target = make_tenant(storage)
    path = tmp_path / "records.json"
    logs = [{"client_ip": "10.0.0.1", "url": f"/j/{i}", "action": "rt.item"} for i in range(6)]
    logs[4]["client_ip"] = "nope"
    path.write_text(json.dumps({"logs": logs}, indent=2))
    done = auditkeep(target, "ingest", str(path), "--url", server.url, "--batch-size", "3", "--no-progress",
                     check=False)
    assert done.returncode == 1
    assert done.stderr.startswith("error: log 4: refused (client_ip: ")
    assert done.stderr.endswith("; 3 events before log 3 already stored, none from there on "
                                "(run again once fixed: nothing is stored twice)\n")
    assert [log["url"] for log in http_logs(server, target)] == ["/j/0", "/j/1", "/j/2"]


def test_errors_are_one_line(server: Server, source: Tenant, tmp_path: Path) -> None:
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"client_ip": "10.0.0.1", "url": "/a"}\nnot json\n')
    done = auditkeep(source, "ingest", str(bad), "--url", server.url, "--no-progress", check=False)
    assert done.returncode == 1 and done.stderr.startswith("error: line 2") and len(done.stderr.splitlines()) == 1
    done = auditkeep(source, "logs", "--url", server.url, "--client-ip", "nope", check=False)
    assert done.returncode == 1 and "client_ip" in done.stderr
    forged = Tenant(source.storage, source.org, source.admin, "ak_" + "x" * 43)
    done = auditkeep(forged, "logs", "--url", server.url, check=False)
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1


def test_interrupted_export_resumes_without_duplicates(server: Server, source: Tenant, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The first run dies after two pages; the same command again finishes the file, each event once."""
    from auditkeep.client._client import Client

    out = tmp_path / "resumed.ndjson"
    args = ["logs", "--url", server.url, "--action", "rt.item", "--format", "ndjson", "-o", str(out),
            "--page-size", "5", "--no-progress"]
    monkeypatch.setenv("AUDITKEEP_API_KEY", source.admin_key)
    original = Client._export_page
    calls = 0

    def dying(self: Client, *a: Any, **kw: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt
        return original(self, *a, **kw)

    monkeypatch.setattr(Client, "_export_page", dying)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 130  # Ctrl-C
    assert len(out.read_text().splitlines()) == 10
    monkeypatch.setattr(Client, "_export_page", original)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert "(resumed)" in result.stderr
    uuids = [json.loads(line)["event_uuid"] for line in out.read_text().splitlines()]
    assert uuids == [log["event_uuid"] for log in http_logs(server, source)]
