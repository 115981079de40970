"""Date-time query parameters of every endpoint: RFC 3339 only, in range, 422 otherwise (issue #9)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Tenant

READ = "/api/v1/audit_logs"
CHECKPOINTS = "/api/v1/integrity/checkpoints"
STATS = "/api/v1/audit_logs/stats"
EVIDENCE = "/api/v1/evidence"


def _date_time_params(client: TestClient) -> list[tuple[str, str]]:
    """(path, name) of every GET query parameter the API describes as a date-time."""
    found = []
    for path, item in client.app.openapi()["paths"].items():  # type: ignore[attr-defined]
        for param in item.get("get", {}).get("parameters", []):
            schemas = [param["schema"], *param["schema"].get("anyOf", [])]
            if param["in"] == "query" and any(s.get("format") == "date-time" for s in schemas):
                found.append((path, param["name"]))
    return sorted(found)


def _the_error(r: Any, path: str, name: str) -> dict[str, Any]:
    assert r.status_code == 422, (path, name, r.status_code, r.text)
    detail = r.json()["detail"]
    assert len(detail) == 1
    assert detail[0]["loc"] == ["query", name]
    assert detail[0]["type"] == "datetime_parsing"
    return dict(detail[0])


def test_the_date_time_parameters_are_the_known_ones(app_client: TestClient) -> None:
    """The tests below cover every date-time parameter there is; a new one shows up here first."""
    assert _date_time_params(app_client) == [
        (READ, "end_date"), (READ, "start_date"), (STATS, "end_date"), (STATS, "start_date"),
        (EVIDENCE, "end_date"), (EVIDENCE, "start_date"), (CHECKPOINTS, "end_date"), (CHECKPOINTS, "start_date"),
    ]


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:30:00-01:00"])
def test_every_date_parameter_refuses_a_value_out_of_range_in_utc(
    app_client: TestClient, tenant: Tenant, value: str
) -> None:
    """Year 1 at +01:00 is before datetime's range in UTC (it was a 500 on /checkpoints)."""
    for path, name in _date_time_params(app_client):
        r = app_client.get(path, params={name: value}, headers=tenant.headers)
        error = _the_error(r, path, name)
        assert error["msg"] == "date-time is out of range once converted to UTC"
        assert error["input"] == value


def test_every_date_parameter_refuses_a_date_alone(app_client: TestClient, tenant: Tenant) -> None:
    """`2026-01-01` is a date, not the spec's date-time: refused in the query as in the body."""
    for path, name in _date_time_params(app_client):
        r = app_client.get(path, params={name: "2026-01-01"}, headers=tenant.headers)
        error = _the_error(r, path, name)
        assert error["msg"] == ("Input should be a valid datetime, invalid datetime separator, expected `T`, `t`, "
                                "`_` or space")
        assert error["input"] == "2026-01-01"
    body = app_client.request("GET", READ, headers=tenant.headers, content=b'{"start_date": "2026-01-01"}')
    assert body.status_code == 422
    assert body.json()["detail"][0]["loc"] == ["body", "start_date"]


@pytest.mark.parametrize("raw", ["2026-01-01T00:00:00+01:00", "2026-01-01T00:00:00.5+0100", "2026-01-01T00:00+01"])
def test_an_unencoded_plus_is_refused_with_a_hint(app_client: TestClient, tenant: Tenant, raw: str) -> None:
    """A bare `+` in a query string is a space once decoded; the message says how to send it."""
    for path, name in _date_time_params(app_client):
        r = app_client.get(f"{path}?{name}={raw}", headers=tenant.headers)
        error = _the_error(r, path, name)
        assert error["msg"].endswith(" (encode + as %2B in a URL: a bare + arrives as a space)")
        assert error["input"] == raw.replace("+", " ")


def test_an_encoded_plus_is_read_as_an_offset(app_client: TestClient, tenant: Tenant) -> None:
    """The same values sent with %2B work, and the offset is honoured."""
    posted = app_client.post(READ, headers=tenant.headers, json=[
        {"client_ip": "10.0.0.1", "url": "https://app.test/1", "action": "dated", "timestamp": "2025-12-31T23:30:00Z"},
        {"client_ip": "10.0.0.1", "url": "https://app.test/2", "action": "dated", "timestamp": "2026-01-01T00:30:00Z"},
    ])
    assert posted.status_code == 201
    query = "action=dated&start_date=2026-01-01T00:00:00%2B01:00&end_date=2026-01-01T01:00:00%2B01:00"
    r = app_client.get(f"{READ}?{query}", headers=tenant.headers)
    assert r.status_code == 200
    assert [log["event_uuid"] for log in r.json()["logs"]] == posted.json()["event_uuids"][:1]
    c = app_client.get(f"{CHECKPOINTS}?start_date=2026-01-01T00:00:00%2B01:00", headers=tenant.headers)
    assert c.status_code == 200
    assert c.json() == {"checkpoints": []}


def test_the_extremes_of_the_range_are_accepted(app_client: TestClient, tenant: Tenant) -> None:
    """Year 1 and year 9999 in UTC are in range, so they are answered, not refused (stats included, whose
    rollup rounds a range's start up to the next whole hour and day, which the last hour and day lack)."""
    for path, name in _date_time_params(app_client):
        for value in ("0001-01-01T00:00:00Z", "9999-12-31T05:30:00Z", "9999-12-31T23:59:59.999999Z"):
            r = app_client.get(path, params={name: value}, headers=tenant.headers)
            assert r.status_code == 200, (path, name, value, r.text)
