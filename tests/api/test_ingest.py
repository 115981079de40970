"""POST /api/v1/audit_logs: validation, all-or-nothing, idempotency, limits (issue #2)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from tests.conftest import Tenant

URL = "/api/v1/audit_logs"


def ev(**fields: Any) -> dict[str, Any]:
    return {"client_ip": "192.0.2.1", "url": "https://app.test/x", **fields}


def stored(client: TestClient, tenant: Tenant) -> list[dict[str, Any]]:
    logs = client.get(URL, headers=tenant.headers).json()["logs"]
    return [log for log in logs if log["action"] not in {"audit_logs.read"}]


def test_single_event_is_stored_with_all_fields(app_client: TestClient, tenant: Tenant) -> None:
    event = ev(
        action="datasource.update", event_uuid=str(uuid.uuid4()), is_support_user=True, log_entry="changed",
        object_id=42, object_type="datasource", payload={"a": [1, 2.5, "x"], "b": {"c": None}},
        referer="https://app.test/r", request_type="PATCH", source="api", status="success",
        timestamp="2024-02-03T04:05:06.123456Z", user_agent="ua/1", user_email="a@b.test", user_id=7,
    )
    r = app_client.post(URL, json=event, headers=tenant.headers)
    assert r.status_code == 201
    assert r.json() == {"event_uuids": [event["event_uuid"]], "accepted": 1, "already_present": 0}
    (log,) = stored(app_client, tenant)
    assert log == event


def test_response_counts_new_and_already_present_events(app_client: TestClient, tenant: Tenant) -> None:
    """The 201 says how many events the request stored and how many were recorded already (issue #9)."""
    known = [ev(action="known", event_uuid=str(uuid.uuid4())) for _ in range(2)]
    first = app_client.post(URL, json=known, headers=tenant.headers)
    assert first.status_code == 201
    assert first.json() == {"event_uuids": [e["event_uuid"] for e in known], "accepted": 2, "already_present": 0}
    fresh = ev(action="fresh", event_uuid=str(uuid.uuid4()))
    batch = [known[0], fresh, known[1], fresh, ev(action="no-uuid")]
    r = app_client.post(URL, json=batch, headers=tenant.headers)
    assert r.status_code == 201
    body = r.json()
    assert body["event_uuids"][:4] == [known[0]["event_uuid"], fresh["event_uuid"], known[1]["event_uuid"],
                                       fresh["event_uuid"]]
    # The repeat of `fresh` inside the batch counts as already present: it is stored once.
    assert (body["accepted"], body["already_present"]) == (2, 3)
    assert sorted(log["action"] for log in stored(app_client, tenant)) == ["fresh", "known", "known", "no-uuid"]


def test_array_returns_uuids_in_input_order_and_generates_missing_ones(app_client: TestClient, tenant: Tenant) -> None:
    given = str(uuid.uuid4())
    r = app_client.post(URL, json=[ev(action="1"), ev(action="2", event_uuid=given), ev(action="3")],
                        headers=tenant.headers)
    assert r.status_code == 201
    uuids = r.json()["event_uuids"]
    assert len(uuids) == 3 and uuids[1] == given
    assert all(uuid.UUID(u) for u in uuids)
    assert [log["event_uuid"] for log in stored(app_client, tenant)] == uuids


def test_timestamp_defaults_to_time_received(app_client: TestClient, tenant: Tenant) -> None:
    before = datetime.now(UTC)
    app_client.post(URL, json=ev(), headers=tenant.headers)
    (log,) = stored(app_client, tenant)
    ts = datetime.fromisoformat(log["timestamp"])
    assert before - timedelta(seconds=1) <= ts <= datetime.now(UTC)


def test_client_ip_is_normalized(app_client: TestClient, tenant: Tenant) -> None:
    app_client.post(URL, json=ev(client_ip="2001:DB8:0:0::1"), headers=tenant.headers)
    assert stored(app_client, tenant)[0]["client_ip"] == "2001:db8::1"


def errors_of(r: Any) -> list[dict[str, Any]]:
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert all({"loc", "msg", "type"} <= set(d) for d in detail)
    return list(detail)


BAD_EVENTS = [
    pytest.param({"url": "https://x"}, ["client_ip"], id="missing-client-ip"),
    pytest.param({"client_ip": "1.2.3.4"}, ["url"], id="missing-url"),
    pytest.param(ev(client_ip="999.1.1.1"), ["client_ip"], id="bad-ip"),
    pytest.param(ev(event_uuid="not-a-uuid"), ["event_uuid"], id="bad-uuid"),
    pytest.param(ev(object_id="12"), ["object_id"], id="string-for-int"),
    pytest.param(ev(object_id=2**53), ["object_id"], id="unsafe-int"),
    pytest.param(ev(is_support_user="yes"), ["is_support_user"], id="string-for-bool"),
    pytest.param(ev(payload=[1, 2]), ["payload"], id="payload-not-object"),
    pytest.param(ev(payload={"n": 2**60}), ["payload"], id="payload-unsafe-int"),
    pytest.param(ev(payload={"s": "a\x00b"}), ["payload"], id="payload-nul"),
    pytest.param(ev(payload={"s": "x" * (256 * 1024)}), ["payload"], id="payload-too-large"),
    pytest.param(ev(log_entry="bad\x00nul"), [], id="nul-in-text"),
    pytest.param(ev(url="https://x/" + "a" * 8192), ["url"], id="url-too-long"),
    pytest.param(ev(user_agent="u" * 2049), ["user_agent"], id="user-agent-too-long"),
    pytest.param(ev(log_entry="l" * 65_537), ["log_entry"], id="log-entry-too-long"),
    pytest.param(ev(timestamp="2024-02-30T00:00:00Z"), ["timestamp"], id="bad-date"),
    pytest.param(ev(timestamp="0001-01-01T00:00:00+05:00"), ["timestamp"], id="date-out-of-range"),
    pytest.param(ev(unknown_field=1), ["unknown_field"], id="unknown-field"),
    pytest.param(ev(action=5), ["action"], id="number-for-string"),
]


@pytest.mark.parametrize(("bad", "loc_tail"), BAD_EVENTS)
def test_bad_event_refuses_the_whole_batch_with_its_index(
    app_client: TestClient, tenant: Tenant, bad: dict[str, Any], loc_tail: list[str]
) -> None:
    r = app_client.post(URL, json=[ev(action="good"), bad, ev(action="good")], headers=tenant.headers)
    locs = [d["loc"] for d in errors_of(r)]
    assert any(loc[:2] == ["body", 1] and loc[2:3] == loc_tail[:1] for loc in locs) or (
        not loc_tail and any(loc[:2] == ["body", 1] for loc in locs)
    ), locs
    assert stored(app_client, tenant) == []


def test_timestamp_more_than_five_minutes_ahead_is_refused(app_client: TestClient, tenant: Tenant) -> None:
    soon = (datetime.now(UTC) + timedelta(minutes=4)).isoformat()
    later = (datetime.now(UTC) + timedelta(minutes=6)).isoformat()
    assert app_client.post(URL, json=ev(timestamp=soon), headers=tenant.headers).status_code == 201
    r = app_client.post(URL, json=[ev(), ev(timestamp=later)], headers=tenant.headers)
    assert ["body", 1, "timestamp"] in [d["loc"] for d in errors_of(r)]


def test_lone_surrogate_is_refused(app_client: TestClient, tenant: Tenant) -> None:
    body = b'[{"client_ip": "1.2.3.4", "url": "https://x", "log_entry": "\\ud800"}]'
    r = app_client.post(URL, content=body, headers={**tenant.headers, "Content-Type": "application/json"})
    assert errors_of(r)
    assert stored(app_client, tenant) == []


@pytest.mark.parametrize("body", [b"not json", b"", b"[", b"42", b'"str"', b"[]", b"{\"client_ip\": "])
def test_body_that_is_not_events_is_422(app_client: TestClient, tenant: Tenant, body: bytes) -> None:
    r = app_client.post(URL, content=body, headers={**tenant.headers, "Content-Type": "application/json"})
    assert errors_of(r)[0]["loc"][0] == "body"


def test_retry_with_same_uuid_and_content_is_stored_once(app_client: TestClient, tenant: Tenant) -> None:
    event = ev(event_uuid=str(uuid.uuid4()), action="retry")
    for _ in range(3):
        r = app_client.post(URL, json=[event], headers=tenant.headers)
        assert r.status_code == 201
        assert r.json()["event_uuids"] == [event["event_uuid"]]
    assert len(stored(app_client, tenant)) == 1


def test_retry_without_timestamp_matches_the_stored_default(app_client: TestClient, tenant: Tenant) -> None:
    """The server filled in the timestamp; a retry that omits it is still the same event."""
    event = ev(event_uuid=str(uuid.uuid4()))
    app_client.post(URL, json=event, headers=tenant.headers)
    assert app_client.post(URL, json=event, headers=tenant.headers).status_code == 201
    assert len(stored(app_client, tenant)) == 1


def test_duplicate_uuid_inside_one_batch_is_stored_once(app_client: TestClient, tenant: Tenant) -> None:
    event = ev(event_uuid=str(uuid.uuid4()))
    r = app_client.post(URL, json=[event, event], headers=tenant.headers)
    assert r.status_code == 201
    assert r.json()["event_uuids"] == [event["event_uuid"]] * 2
    assert len(stored(app_client, tenant)) == 1


def test_same_uuid_with_different_content_is_409_and_nothing_is_stored(
    app_client: TestClient, tenant: Tenant
) -> None:
    u = str(uuid.uuid4())
    app_client.post(URL, json=ev(event_uuid=u, action="first"), headers=tenant.headers)
    r = app_client.post(URL, json=[ev(action="new"), ev(event_uuid=u, action="second")], headers=tenant.headers)
    assert r.status_code == 409
    assert u in r.json()["detail"]
    assert [log["action"] for log in stored(app_client, tenant)] == ["first"]


def test_same_uuid_in_another_organization_is_independent(app_client: TestClient, tenant: Tenant) -> None:
    from tests.conftest import make_tenant

    other = make_tenant(tenant.storage)
    event = ev(event_uuid=str(uuid.uuid4()))
    assert app_client.post(URL, json=event, headers=tenant.headers).status_code == 201
    assert app_client.post(URL, json={**event, "action": "x"}, headers=other.headers).status_code == 201


def test_more_than_10000_events_is_413(app_client: TestClient, tenant: Tenant) -> None:
    r = app_client.post(URL, json=[ev()] * 10_001, headers=tenant.headers)
    assert r.status_code == 413
    assert stored(app_client, tenant) == []


def test_body_over_16_mb_is_413(app_client: TestClient, tenant: Tenant) -> None:
    big = orjson.dumps([ev(log_entry="x" * 60_000)] * 300)  # ~18 MB
    assert len(big) > 16 * 1024 * 1024
    r = app_client.post(URL, content=big, headers={**tenant.headers, "Content-Type": "application/json"})
    assert r.status_code == 413
    assert stored(app_client, tenant) == []


def test_exactly_10000_events_are_accepted(app_client: TestClient, tenant: Tenant) -> None:
    r = app_client.post(URL, json=[ev()] * 10_000, headers=tenant.headers)
    assert r.status_code == 201
    assert len(r.json()["event_uuids"]) == 10_000
