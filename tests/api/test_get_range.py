"""GET /api/v1/audit_logs: the range, the body, the output shape (issue #2, spec)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from auditkeep.schemas.audit_logs import LOG_FIELDS
from tests.conftest import Tenant, make_tenant

URL = "/api/v1/audit_logs"
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def seed(client: TestClient, tenant: Tenant, stamps: list[str]) -> list[str]:
    events = [
        {"client_ip": "10.0.0.1", "url": f"https://app.test/{i}", "action": "seeded", "timestamp": ts}
        for i, ts in enumerate(stamps)
    ]
    r = client.post(URL, json=events, headers=tenant.headers)
    assert r.status_code == 201, r.text
    return list(r.json()["event_uuids"])


def seeded(client: TestClient, tenant: Tenant, **kwargs: Any) -> list[dict[str, Any]]:
    kwargs["headers"] = {**tenant.headers, **kwargs.get("headers", {})}
    r = client.request("GET", URL, **kwargs)
    assert r.status_code == 200, r.text
    return [log for log in r.json()["logs"] if log["action"] == "seeded"]


STAMPS = ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z", "2024-01-04T00:00:00Z"]


def test_no_body_returns_everything_in_timestamp_then_seq_order(app_client: TestClient, tenant: Tenant) -> None:
    # Out of order on purpose, with a tie broken by seq (ingest order).
    uuids = seed(app_client, tenant, ["2024-01-03T00:00:00Z", "2024-01-01T00:00:00Z", "2024-01-03T00:00:00Z"])
    logs = seeded(app_client, tenant)
    assert [log["event_uuid"] for log in logs] == [uuids[1], uuids[0], uuids[2]]


def test_range_is_half_open(app_client: TestClient, tenant: Tenant) -> None:
    uuids = seed(app_client, tenant, STAMPS)
    body = {"start_date": "2024-01-02T00:00:00Z", "end_date": "2024-01-04T00:00:00Z"}
    logs = seeded(app_client, tenant, json=body)
    assert [log["event_uuid"] for log in logs] == uuids[1:3]


def test_naive_datetime_means_utc_and_offsets_are_honoured(app_client: TestClient, tenant: Tenant) -> None:
    uuids = seed(app_client, tenant, STAMPS)
    logs = seeded(app_client, tenant, json={"start_date": "2024-01-02T00:00:00"})
    assert [log["event_uuid"] for log in logs] == uuids[1:]
    # 2024-01-02T01:00:00+01:00 is 2024-01-02T00:00:00Z
    logs = seeded(app_client, tenant, json={"start_date": "2024-01-02T01:00:00+01:00", "end_date": None})
    assert [log["event_uuid"] for log in logs] == uuids[1:]


def test_body_is_read_as_json_whatever_the_content_type(app_client: TestClient, tenant: Tenant) -> None:
    """curl --data sends application/x-www-form-urlencoded; the body is still JSON."""
    uuids = seed(app_client, tenant, STAMPS)
    logs = seeded(
        app_client, tenant, content=b'{"start_date": "2024-01-03T00:00:00Z"}',
        headers={**tenant.headers, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert [log["event_uuid"] for log in logs] == uuids[2:]


@pytest.mark.parametrize("body", [b"null", b"{}", b'{"start_date": null, "end_date": null}', b"  "])
def test_empty_or_null_body_means_unbounded(app_client: TestClient, tenant: Tenant, body: bytes) -> None:
    seed(app_client, tenant, STAMPS)
    assert len(seeded(app_client, tenant, content=body)) == 4


def test_query_parameters_are_an_alternative_to_the_body(app_client: TestClient, tenant: Tenant) -> None:
    uuids = seed(app_client, tenant, STAMPS)
    logs = seeded(app_client, tenant, params={"start_date": "2024-01-02T00:00:00Z", "end_date": "2024-01-03T00:00:00Z"})
    assert [log["event_uuid"] for log in logs] == uuids[1:2]


def assert_fastapi_422(r: Any, loc: list[Any]) -> None:
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, list) and detail
    assert all({"loc", "msg", "type"} <= set(d) for d in detail)
    assert loc in [d["loc"] for d in detail]


def test_body_and_query_range_together_is_422(app_client: TestClient, tenant: Tenant) -> None:
    r = app_client.request("GET", URL, headers=tenant.headers, params={"start_date": "2024-01-01T00:00:00Z"},
                           json={"end_date": "2024-01-02T00:00:00Z"})
    assert_fastapi_422(r, ["query", "start_date"])


def test_end_before_start_is_422(app_client: TestClient, tenant: Tenant) -> None:
    r = app_client.request("GET", URL, headers=tenant.headers,
                           json={"start_date": "2024-01-02T00:00:00Z", "end_date": "2024-01-01T00:00:00Z"})
    assert_fastapi_422(r, ["body", "end_date"])
    r = app_client.get(URL, headers=tenant.headers,
                       params={"start_date": "2024-01-02T00:00:00Z", "end_date": "2024-01-01T00:00:00Z"})
    assert_fastapi_422(r, ["query", "end_date"])


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (b'{"start_date": "yesterday"}', ["body", "start_date"]),
        (b'{"end_date": 12}', ["body", "end_date"]),
        (b'{"start_date": "2024-13-01T00:00:00Z"}', ["body", "start_date"]),
        (b'{"start_date": "0001-01-01T00:00:00+01:00"}', ["body", "start_date"]),
        (b'["start_date"]', ["body"]),
    ],
)
def test_bad_range_values_are_422(app_client: TestClient, tenant: Tenant, body: bytes, loc: list[Any]) -> None:
    r = app_client.request("GET", URL, headers=tenant.headers, content=body)
    assert_fastapi_422(r, loc)


def test_invalid_json_body_is_422_with_fastapi_shape(app_client: TestClient, tenant: Tenant) -> None:
    r = app_client.request("GET", URL, headers=tenant.headers, content=b'{"start_date": ')
    assert r.status_code == 422
    assert r.json()["detail"][0]["type"] == "json_invalid"
    assert r.json()["detail"][0]["loc"][0] == "body"


def test_each_log_has_exactly_the_17_fields_with_nulls_and_timestamp_format(
    app_client: TestClient, tenant: Tenant
) -> None:
    seed(app_client, tenant, ["2024-05-06T07:08:09.5+02:00"])
    (log,) = seeded(app_client, tenant)
    assert tuple(sorted(log)) == LOG_FIELDS
    assert log["timestamp"] == "2024-05-06T05:08:09.500000Z"
    assert TS.match(log["timestamp"])
    assert log["user_email"] is None and log["payload"] is None and log["is_support_user"] is None


def test_an_organization_never_sees_another_organizations_events(app_client: TestClient, tenant: Tenant) -> None:
    other = make_tenant(tenant.storage)
    mine = set(seed(app_client, tenant, STAMPS))
    theirs = set(seed(app_client, other, STAMPS))
    seen_by_other = {log["event_uuid"] for log in app_client.get(URL, headers=other.headers).json()["logs"]}
    assert theirs <= seen_by_other
    assert not mine & seen_by_other


def test_every_read_is_self_audited(app_client: TestClient, tenant: Tenant) -> None:
    app_client.request("GET", URL, headers={**tenant.headers, "User-Agent": "pytest-agent", "Referer": "https://r.test/"},
                       json={"start_date": "2024-01-01T00:00:00Z"})
    logs = app_client.get(URL, headers=tenant.headers).json()["logs"]
    reads = [log for log in logs if log["action"] == "audit_logs.read"]
    assert len(reads) >= 1
    first = reads[0]
    assert first["source"] == "api"
    assert first["status"] == "success"
    assert first["request_type"] == "GET"
    assert first["user_email"] == tenant.admin.name
    assert first["user_id"] == tenant.admin.id
    assert first["user_agent"] == "pytest-agent"
    assert first["referer"] == "https://r.test/"
    assert first["url"].endswith("/api/v1/audit_logs")
    assert first["is_support_user"] is False
    assert first["payload"]["start_date"] == "2024-01-01T00:00:00.000000Z"
    assert first["payload"]["key_prefix"] == tenant.admin_key[:11]


def test_support_users_reads_are_marked(app_client: TestClient, tenant: Tenant) -> None:
    from auditkeep.auth.principals import Role

    _, key = tenant.user(Role.ADMIN, support=True)
    app_client.get(URL, headers={"Authorization": f"Key {key}"})
    logs = app_client.get(URL, headers=tenant.headers).json()["logs"]
    reads = [log for log in logs if log["action"] == "audit_logs.read"]
    assert reads[0]["is_support_user"] is True


def test_response_is_streamed(app_client: TestClient, tenant: Tenant) -> None:
    """The GET answer is sent in chunks without a Content-Length (memory does not grow with N)."""
    seed(app_client, tenant, STAMPS)
    r = app_client.get(URL, headers=tenant.headers)
    assert "content-length" not in r.headers
    assert r.headers["content-type"].startswith("application/json")
