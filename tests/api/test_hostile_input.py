"""Hostile input never gets a 500 (issue #11): numbers JSON output cannot hold, every 422 in its declared
shape, CSV cells a spreadsheet cannot run, and any JSON value in any field of an ingested event."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import event as event_kind
from hypothesis import strategies as st

from auditkeep.client import read_export
from auditkeep.schemas.audit_logs import LOG_FIELDS
from tests.conftest import Tenant

URL = "/api/v1/audit_logs"
READ_ACTIONS = {"audit_logs.read"}


def ev(**fields: Any) -> dict[str, Any]:
    return {"client_ip": "192.0.2.1", "url": "https://app.test/x", **fields}


def stored(client: TestClient, tenant: Tenant) -> list[dict[str, Any]]:
    logs = client.get(URL, headers=tenant.headers).json()["logs"]
    return [log for log in logs if log["action"] not in READ_ACTIONS]


# --- numbers that JSON output cannot hold ---------------------------------------------------------------

NON_FINITE = [("1e400", "Infinity"), ("-1e400", "-Infinity"), ("1e9999999999", "Infinity"), ("NaN", "NaN"),
              ("Infinity", "Infinity"), ("-Infinity", "-Infinity")]


@pytest.mark.parametrize("field", ["object_id", "user_id"])
@pytest.mark.parametrize(("literal", "echoed"), NON_FINITE)
def test_a_non_finite_id_is_a_422_naming_the_item_and_nothing_is_written(
    app_client: TestClient, tenant: Tenant, field: str, literal: str, echoed: str
) -> None:
    body = f'[{json.dumps(ev(action="fine"))}, {{"client_ip": "192.0.2.1", "url": "/u", "{field}": {literal}}}]'
    r = app_client.post(URL, content=body, headers={**tenant.headers, "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json() == {"detail": [{"type": "int_type", "loc": ["body", 1, field],
                                    "msg": "Input should be a valid integer", "input": echoed}]}
    assert stored(app_client, tenant) == []


BIG = "57720453452762573701120"  # beyond 64 bits: orjson refuses to write it as a number


@pytest.mark.parametrize(("value", "echoed"), [
    (f"[{BIG}]", f'["{BIG}"]'),
    (BIG, BIG),
    (f'{{"a": [{BIG}, NaN, -1e400]}}', f'{{"a":["{BIG}","NaN","-Infinity"]}}'),
    ("1e400", "Infinity"),
])
def test_a_failing_field_holding_an_unwritable_number_is_echoed_as_text(
    app_client: TestClient, tenant: Tenant, value: str, echoed: str
) -> None:
    """Integers beyond 64 bits are echoed as their digits, NaN and infinities by name, inside JSON text
    for a list or object (as for any structured input): every 422 body is plain JSON."""
    body = '{"client_ip": "192.0.2.1", "url": "/u", "user_agent": ' + value + "}"
    r = app_client.post(URL, content=body, headers={**tenant.headers, "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json() == {"detail": [{"type": "string_type", "loc": ["body", "user_agent"],
                                    "msg": "Input should be a valid string", "input": echoed}]}
    assert stored(app_client, tenant) == []


def test_a_get_body_holding_a_huge_integer_is_a_422(app_client: TestClient, tenant: Tenant) -> None:
    r = app_client.request("GET", URL, content=f'{{"start_date": [{BIG}]}}', headers=tenant.headers)
    assert r.status_code == 422, r.text
    assert r.json() == {"detail": [{"type": "datetime_type", "loc": ["body", "start_date"],
                                    "msg": "Input should be a valid datetime", "input": [BIG]}]}


# --- every 422 of the proof endpoints has its declared shape ----------------------------------------------

def _declared_422(client: TestClient, path: str) -> dict[str, Any]:
    schema = client.get("/openapi.json").json()
    ref = schema["paths"][path]["get"]["responses"]["422"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/HTTPValidationError"
    return dict(schema["components"]["schemas"]["ValidationError"])


def _assert_validation_error(body: Any, declared: dict[str, Any]) -> None:
    """`body` is an HTTPValidationError: a list `detail` of objects with the declared required fields."""
    assert list(body) == ["detail"] and isinstance(body["detail"], list) and body["detail"]
    for item in body["detail"]:
        assert set(declared["required"]) <= set(item)
        assert isinstance(item["msg"], str) and isinstance(item["type"], str)
        assert all(isinstance(part, str | int) for part in item["loc"])


def test_proof_422s_are_validation_errors_naming_the_parameter(app_client: TestClient, tenant: Tenant) -> None:
    h = tenant.headers
    r = app_client.post(URL, json=[ev(action=f"p{i}") for i in range(3)], headers=h)
    (first_uuid, *_rest) = r.json()["event_uuids"]
    inclusion, consistency = "/api/v1/integrity/proofs/inclusion", "/api/v1/integrity/proofs/consistency"
    declared = _declared_422(app_client, inclusion)
    assert _declared_422(app_client, consistency) == declared
    cases: list[tuple[str, dict[str, Any], list[Any], Any]] = [
        (consistency, {"first": 3, "second": 2}, ["query", "first"], 3),
        (consistency, {"first": 1, "second": 10_000}, ["query", "second"], 10_000),
        (consistency, {"first": 9_000, "second": 10_000}, ["query", "first"], 9_000),
        (consistency, {"first": -1, "second": 2}, ["query", "first"], "-1"),
        (inclusion, {"event_uuid": first_uuid}, ["query", "tree_size"], None),  # no checkpoint yet
        (inclusion, {"event_uuid": first_uuid, "tree_size": 10_000}, ["query", "tree_size"], 10_000),
    ]
    for path, params, loc, given_value in cases:
        r = app_client.get(path, params=params, headers=h)
        assert r.status_code == 422, (params, r.text)
        _assert_validation_error(r.json(), declared)
        (item,) = r.json()["detail"]
        assert (item["loc"], item["input"]) == (loc, given_value), params
    r = app_client.get(consistency, params={"first": 3, "second": 2}, headers=h)
    assert r.json()["detail"] == [{"type": "value_error", "loc": ["query", "first"],
                                   "msg": "need 0 <= first <= second, got first=3, second=2", "input": 3}]


# --- CSV cells a spreadsheet cannot run -------------------------------------------------------------------

HOSTILE_CELLS = [
    {"log_entry": '=HYPERLINK("http://evil.example","click")'},
    {"log_entry": "'quoted already"},
    {"log_entry": "-1"},
    {"url": "@SUM(1+1)*cmd|' /C calc'!A0"},
    {"log_entry": "+1", "user_agent": "\tTAB", "referer": "\rCR", "object_type": "''"},
    {"log_entry": "'x", "user_agent": "'", "source": "a=b", "status": "plain"},
]


def hostile_csv(client: TestClient, tenant: Tenant, **params: str) -> tuple[list[str], bytes]:
    body = [ev(timestamp=f"2024-05-01T10:00:0{n}Z", **cells) for n, cells in enumerate(HOSTILE_CELLS)]
    r = client.post(URL, json=body, headers=tenant.headers)
    assert r.status_code == 201, r.text
    csv = client.get(URL, params={"format": "csv", "end_date": "2024-05-02T00:00:00Z", **params},
                     headers=tenant.headers)
    assert csv.status_code == 200
    return list(r.json()["event_uuids"]), csv.content


def test_csv_text_cells_a_spreadsheet_would_run_begin_with_an_apostrophe(
    app_client: TestClient, tenant: Tenant
) -> None:
    _, data = hostile_csv(app_client, tenant)
    lines = data.decode().split("\r\n")
    assert lines[0] == ",".join(LOG_FIELDS)
    assert '"\'=HYPERLINK(""http://evil.example"",""click"")"' in lines[1]
    assert '"\'\'quoted already"' in lines[2]
    assert ',"\'-1",' in lines[3] and ',"-1",' not in lines[3]
    assert '"\'@SUM(1+1)*cmd|\' /C calc\'!A0"' in lines[4]
    for cell in ('"\'\'\'"', '"\'+1"', '"\'\tTAB"', '"\'\rCR"'):
        assert cell in data.decode()
    # Only a text's first character counts, and numbers, uuids, addresses and JSON are never prefixed.
    assert '"a=b"' in lines[6] and '"plain"' in lines[6] and '"\'"\'"' not in lines[6]
    assert ',"192.0.2.1",' in lines[6]


def test_the_sdk_reader_gives_back_every_original_text(app_client: TestClient, tenant: Tenant) -> None:
    uuids, data = hostile_csv(app_client, tenant, include="integrity")
    read = list(read_export(io.BytesIO(data), "csv"))
    assert [e["event_uuid"] for e in read] == uuids
    json_logs = app_client.get(URL, params={"end_date": "2024-05-02T00:00:00Z"}, headers=tenant.headers).json()
    assert read == json_logs["logs"]
    for event, sent in zip(read, HOSTILE_CELLS, strict=True):
        assert {name: event[name] for name in sent} == sent


# --- any JSON value in any field --------------------------------------------------------------------------

FIELDS = [f for f in LOG_FIELDS if f != "event_uuid"]
JSON_SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**80), max_value=2**80)
                | st.floats() | st.text(max_size=12))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)
PLAUSIBLE = {
    "action": st.text(max_size=20), "client_ip": st.sampled_from(["10.0.0.1", "2001:DB8::1", "::ffff:1.2.3.4"]),
    "is_support_user": st.booleans(), "log_entry": st.text(max_size=20),
    "object_id": st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
    "payload": st.dictionaries(st.text(max_size=5), JSON_VALUES, max_size=3),
    "timestamp": st.sampled_from(["2024-01-01T00:00:00Z", "2024-01-01T01:02:03.5+02:00", "1999-12-31T23:59:59"]),
    "url": st.text(max_size=20), "user_id": st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
}


def _same(a: Any, b: Any) -> bool:
    """JSON equality: numbers as the IEEE doubles JCS (RFC 8785) writes them, so 1.0 reads back as 1 and
    4.472943434462318e16 as 44729434344623180, the same double; but true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return float(a) == float(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _expected(field: str, sent: Any) -> Any:
    """What an accepted value reads back as: an address and a timestamp in their normal form."""
    if field == "client_ip":
        import ipaddress

        return str(ipaddress.ip_address(sent))
    if field == "timestamp":
        ts = datetime.fromisoformat(sent.replace("Z", "+00:00"))
        ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
        return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return sent


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """A plausible event (some fields), then up to two fields given any JSON value at all."""
    event: dict[str, Any] = {"client_ip": "192.0.2.1", "url": "/u"}
    for name in draw(st.lists(st.sampled_from(sorted(PLAUSIBLE)), max_size=4, unique=True)):
        event[name] = draw(PLAUSIBLE[name])
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=2, unique=True)):
        event[name] = draw(JSON_VALUES)
    if draw(st.booleans()):
        del event[draw(st.sampled_from(["client_ip", "url"]))]
    return event


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(event=events())
def test_any_json_value_in_any_field_is_never_a_5xx_and_reads_back_identical(
    app_client: TestClient, tenant: Tenant, event: dict[str, Any]
) -> None:
    event_uuid = str(uuid.uuid4())
    # allow_nan: NaN and ±Infinity literals are what a hostile client sends too.
    body = json.dumps({**event, "event_uuid": event_uuid}, allow_nan=True)
    r = app_client.post(URL, content=body, headers={**tenant.headers, "Content-Type": "application/json"})
    assert 200 <= r.status_code < 500, r.text
    event_kind(f"status {r.status_code}")
    if r.status_code != 201:
        assert r.status_code == 422 and isinstance(r.json()["detail"], list)
        return
    assert r.json()["event_uuids"] == [event_uuid]
    (log,) = [log for log in _new_logs(app_client, tenant) if log["event_uuid"] == event_uuid]
    for name, sent in event.items():
        if name == "timestamp" and sent is None:
            continue  # the time received, as when it is absent
        assert _same(log[name], _expected(name, sent)), (name, sent, log[name])
    for name in set(FIELDS) - set(event) - {"timestamp"}:
        assert log[name] is None, name


_SEEN: dict[str, int] = {}  # organization name (unique across backends) -> the last seq read


def _new_logs(client: TestClient, tenant: Tenant) -> list[dict[str, Any]]:
    """The organization's logs after those read before (`after_seq` polling), whatever their timestamps."""
    r = client.get(URL, params={"after_seq": _SEEN.get(tenant.org.name, 0)}, headers=tenant.headers)
    assert r.status_code == 200, r.text
    _SEEN[tenant.org.name] = int(r.headers["X-Last-Seq"])
    return list(r.json()["logs"])
