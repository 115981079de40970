"""GET /api/v1/audit_logs as JSON, NDJSON and CSV; Accept and format= (issue #4); compression is tested in
test_log_encoding.py."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from auditkeep.client import read_export
from auditkeep.schemas.audit_logs import LOG_FIELDS
from tests.conftest import Tenant

URL = "/api/v1/audit_logs"

TRICKY: list[dict[str, Any]] = [
    {"client_ip": "10.0.0.1", "url": "https://app.test/a,b", "action": "fmt.test", "log_entry": "",
     "user_agent": 'say "hi"\r\nand, bye', "payload": {"nested": {"a": [1, 2.5, None, True]}, "s": "é ✓ \u2028"},
     "is_support_user": True, "object_id": 2**53 - 1, "user_id": -5, "timestamp": "2024-05-01T12:00:00.123456Z"},
    {"client_ip": "2001:db8::1", "url": "https://app.test/b", "action": "fmt.test", "log_entry": None,
     "is_support_user": False, "referer": "=cmd()", "timestamp": "2024-05-01T12:00:01Z"},
    {"client_ip": "10.0.0.2", "url": "https://app.test/c", "action": "fmt.test", "timestamp": "2024-05-01T12:00:02Z"},
]


@pytest.fixture
def seeded(app_client: TestClient, tenant: Tenant) -> list[str]:
    r = app_client.post(URL, json=TRICKY, headers=tenant.headers)
    assert r.status_code == 201, r.text
    return list(r.json()["event_uuids"])


def fetch(client: TestClient, tenant: Tenant, headers: dict[str, str] | None = None, **params: Any) -> Any:
    r = client.get(URL, params={"action": "fmt.test", **params}, headers={**tenant.headers, **(headers or {})})
    assert r.status_code == 200, r.text
    return r


def test_ndjson_lines_are_the_json_logs(app_client: TestClient, tenant: Tenant, seeded: list[str]) -> None:
    """NDJSON is the same objects, byte for byte, one a line."""
    as_json = fetch(app_client, tenant, format="json")
    as_ndjson = fetch(app_client, tenant, format="ndjson")
    assert as_ndjson.headers["content-type"] == "application/x-ndjson"
    lines = as_ndjson.content.split(b"\n")
    assert lines[-1] == b"" and len(lines) == 4
    assert as_json.content == b'{"logs":[' + b",".join(lines[:-1]) + b"]}"
    assert [json.loads(line)["event_uuid"] for line in lines[:-1]] == seeded


def test_csv_has_the_header_and_typed_cells(app_client: TestClient, tenant: Tenant, seeded: list[str]) -> None:
    r = fetch(app_client, tenant, format="csv")
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(r.text, newline="")))
    assert rows[0] == list(LOG_FIELDS)
    first = dict(zip(LOG_FIELDS, rows[1], strict=True))
    assert first["is_support_user"] == "true" and first["object_id"] == str(2**53 - 1) and first["user_id"] == "-5"
    assert json.loads(first["payload"]) == TRICKY[0]["payload"]
    assert first["user_agent"] == 'say "hi"\r\nand, bye'
    assert first["timestamp"] == "2024-05-01T12:00:00.123456Z"
    second = dict(zip(LOG_FIELDS, rows[2], strict=True))
    assert second["is_support_user"] == "false" and second["payload"] == ""
    assert second["referer"] == "'=cmd()"
    assert r.text.startswith(",".join(LOG_FIELDS) + "\r\n")


def test_csv_tells_null_from_empty_string(app_client: TestClient, tenant: Tenant, seeded: list[str],
                                          tmp_path: Path) -> None:
    """null is an empty cell, "" is a quoted empty cell; the export reader gives back the JSON logs."""
    text = fetch(app_client, tenant, format="csv").text
    assert ',"",' in text  # TRICKY[0]["log_entry"] == ""
    path = tmp_path / "x.csv"
    path.write_bytes(text.encode())
    expected = fetch(app_client, tenant, format="json").json()["logs"]
    assert list(read_export(path)) == expected


@pytest.mark.parametrize(
    ("accept", "fmt"),
    [
        ("application/x-ndjson", "ndjson"),
        ("text/csv", "csv"),
        ("application/json", "json"),
        ("text/html", "json"),  # unknown: the seed's JSON
        ("*/*", "json"),
        ("text/csv;q=0.5, application/x-ndjson", "ndjson"),
        ("text/csv;q=0.9, application/x-ndjson;q=0.1", "csv"),
        ("text/csv;q=0", "json"),
    ],
)
def test_accept_picks_the_format(app_client: TestClient, tenant: Tenant, seeded: list[str], accept: str,
                                 fmt: str) -> None:
    r = fetch(app_client, tenant, headers={"Accept": accept})
    assert r.headers["content-type"].split(";")[0] == {"json": "application/json", "ndjson": "application/x-ndjson",
                                                       "csv": "text/csv"}[fmt]


def test_format_parameter_wins_over_accept(app_client: TestClient, tenant: Tenant, seeded: list[str]) -> None:
    r = fetch(app_client, tenant, headers={"Accept": "text/csv"}, format="ndjson")
    assert r.headers["content-type"] == "application/x-ndjson"


def test_gzip_q0_is_refused(app_client: TestClient, tenant: Tenant, seeded: list[str]) -> None:
    r = fetch(app_client, tenant, headers={"Accept-Encoding": "gzip;q=0, identity"})
    assert "content-encoding" not in r.headers


def test_default_response_is_the_seeds(app_client: TestClient, tenant: Tenant, seeded: list[str]) -> None:
    """No extension parameters: `{"logs": [...]}`, 17 fields, ascending, no paging headers."""
    r = app_client.get(URL, headers={**tenant.headers, "Accept-Encoding": "identity"})
    assert r.headers["content-type"] == "application/json"
    assert "link" not in r.headers and "x-last-seq" not in r.headers
    logs = r.json()["logs"]
    assert all(list(log) == list(LOG_FIELDS) for log in logs)
    assert [log["event_uuid"] for log in logs if log["action"] == "fmt.test"] == seeded


def test_empty_results_in_every_format(app_client: TestClient, tenant: Tenant) -> None:
    assert fetch(app_client, tenant, format="json").content == b'{"logs":[]}'
    assert fetch(app_client, tenant, format="ndjson").content == b""
    assert fetch(app_client, tenant, format="csv").text == ",".join(LOG_FIELDS) + "\r\n"


def test_csv_with_integrity_columns(app_client: TestClient, tenant: Tenant, seeded: list[str]) -> None:
    rows = list(csv.reader(io.StringIO(fetch(app_client, tenant, format="csv", include="integrity").text)))
    assert rows[0] == [*LOG_FIELDS, "seq", "prev_hash", "hash", "personal_salt", "personal_commitment"]
    assert [int(row[17]) for row in rows[1:]] == [1, 2, 3]
    assert all(len(row[19]) == 64 for row in rows[1:])
