"""The `ocsf` format (issue #10): each mapping class by table, every mapping valid against the OCSF 1.3.0
schema (tests/streams/ocsf_schema.py, independent of the mapping), and a stream's records byte for byte
what `GET /api/v1/audit_logs?format=ocsf` serves for the same events, on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from auditkeep.streams.forwarder import Forwarder
from auditkeep.streams.ocsf import convert, to_ocsf
from tests.conftest import Tenant
from tests.streams.ocsf_schema import Invalid, validate
from tests.streams.receivers import WebhookReceiver, webhook_receiver
from tests.streams.test_webhook_streams import LOGS, STREAMS, drain, make_stream, show

BASE: dict[str, Any] = {
    "action": "report.view", "client_ip": "192.0.2.7", "event_uuid": "0190f5d2-8c3a-7000-8000-000000000001",
    "is_support_user": False, "log_entry": "Report 12 viewed", "object_id": 12, "object_type": "report",
    "payload": {"k": "v"}, "referer": "https://app.test/home", "request_type": "GET", "source": "web",
    "status": "success", "timestamp": "2024-05-01T12:00:00.123456Z", "url": "https://app.test/reports/12",
    "user_agent": "Mozilla/5.0", "user_email": "ann@example.com", "user_id": 7,
    "seq": 42, "prev_hash": "a" * 64, "hash": "b" * 64,
}
ANN = {"email_addr": "ann@example.com", "name": "ann@example.com", "uid": "7"}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as r:
        yield r


@pytest.mark.parametrize(("changes", "class_uid", "activity_id"), [
    ({"action": "report.create"}, 6003, 1),
    ({"action": "dashboard.add"}, 6003, 1),
    ({"action": "report.view"}, 6003, 2),
    ({"action": "audit_logs.read"}, 6003, 2),
    ({"action": "report.export"}, 6003, 2),
    ({"action": "datasource.update"}, 6003, 3),
    ({"action": "organization.retention_change"}, 6003, 3),
    ({"action": "api_key.revoke"}, 6003, 4),
    ({"action": "retention.purge"}, 6003, 4),
    ({"action": "integrity.signing_key_rotate"}, 6003, 99),
    ({"action": "user.login"}, 3002, 1),
    ({"action": "auth.sign_in"}, 3002, 1),
    ({"action": "signIn"}, 3002, 1),
    ({"action": "user.login_failed", "status": "failure"}, 3002, 1),
    ({"action": "user.logout"}, 3002, 2),
    ({"action": "session.sign-out"}, 3002, 2),
    ({"action": "user.create", "object_type": "user"}, 3001, 1),
    ({"action": "service_account.create", "object_type": "service_account"}, 3001, 1),
    ({"action": "user.password_set", "object_type": "user"}, 3001, 3),
    ({"action": "user.password_reset", "object_type": "user"}, 3001, 4),
    ({"action": "user.disable", "object_type": "user"}, 3001, 5),
    ({"action": "user.delete", "object_type": "user"}, 3001, 6),
    ({"action": "user.role_change", "object_type": "user", "payload": {"role": "admin"}}, 3005, 1),
    ({"action": "member.role_revoke", "object_type": "user", "payload": {"roles": ["billing"]}}, 3005, 2),
    ({"action": "user.role_change", "object_type": "user", "payload": {}}, 6003, 3),  # no privileges named
    ({"action": "group.member_add", "object_type": "group", "payload": {"user_id": 9}}, 3006, 3),
    ({"action": "team.remove_user", "object_type": "team", "payload": {"user_email": "bo@example.com"}}, 3006, 4),
    ({"action": "group.member_add", "object_type": "group", "payload": None}, 6003, 1),  # no member named
    ({"action": "user.create", "object_id": None, "user_id": None, "user_email": None}, 6003, 1),  # no account
])
def test_mapping_table(changes: dict[str, Any], class_uid: int, activity_id: int) -> None:
    """Each action pattern lands in its class and activity, and the object validates."""
    event = to_ocsf({**BASE, **changes}, "acme")
    validate(event)
    assert (event["class_uid"], event["activity_id"]) == (class_uid, activity_id)
    assert event["type_uid"] == class_uid * 100 + activity_id
    assert event["category_uid"] == class_uid // 1000


def test_api_activity_fields() -> None:
    event = to_ocsf(BASE, "acme")
    assert event == {
        "activity_id": 2, "activity_name": "Read", "category_name": "Application Activity", "category_uid": 6,
        "class_name": "API Activity", "class_uid": 6003, "type_name": "API Activity: Read", "type_uid": 600302,
        "severity": "Informational", "severity_id": 1, "status": "Success", "status_id": 1,
        "time": 1714564800123, "message": "Report 12 viewed",
        "actor": {"user": ANN}, "api": {"operation": "report.view"},
        "src_endpoint": {"ip": "192.0.2.7"},
        "http_request": {"http_method": "GET", "referrer": "https://app.test/home", "user_agent": "Mozilla/5.0",
                         "url": {"url_string": "https://app.test/reports/12"}},
        "resources": [{"type": "report", "uid": "12"}],
        "metadata": {"event_code": "report.view", "original_time": "2024-05-01T12:00:00.123456Z",
                     "product": {"name": "auditkeep", "vendor_name": "auditkeep", "version": "0.1.0"},
                     "sequence": 42, "tenant_uid": "acme", "uid": BASE["event_uuid"], "version": "1.3.0"},
        "unmapped": {"hash": "b" * 64, "is_support_user": False, "payload": {"k": "v"}, "prev_hash": "a" * 64,
                     "source": "web"},
    }


def test_iam_classes_name_who_was_acted_on() -> None:
    login = to_ocsf({**BASE, "action": "user.login", "object_type": "user", "object_id": 7,
                     "status": "denied"}, "acme")
    assert login["user"] == ANN and login["service"] == {"name": "acme"} and "actor" not in login
    assert (login["status"], login["status_id"], login["status_detail"], login["severity_id"]) == (
        "Failure", 2, "denied", 2)
    created = to_ocsf({**BASE, "action": "user.create", "object_type": "user", "object_id": 31}, "acme")
    assert created["user"] == {"uid": "31"} and created["actor"] == {"user": ANN}
    assert created["unmapped"]["object_type"] == "user" and "object_id" not in created["unmapped"]
    role = to_ocsf({**BASE, "action": "user.role_change", "object_type": "user", "object_id": 31,
                    "payload": {"role": "admin"}}, "acme")
    assert role["user"] == {"uid": "31"} and role["privileges"] == ["admin"]
    assert role["unmapped"]["user_email"] == "ann@example.com"  # the class has no actor: kept unmapped
    group = to_ocsf({**BASE, "action": "group.member_add", "object_type": "group", "object_id": 4,
                     "payload": {"user_id": 9}}, "acme")
    assert group["group"] == {"uid": "4"} and group["user"] == {"uid": "9"}


def test_status_and_missing_fields() -> None:
    other = to_ocsf({**BASE, "status": "partial", "user_id": None, "user_email": None, "object_id": None,
                     "client_ip": "[erased]"}, "acme")
    assert (other["status"], other["status_id"], other["severity_id"]) == ("partial", 99, 1)
    assert other["actor"] == {"app_name": "web"} and other["src_endpoint"] == {"name": "[erased]"}
    assert "resources" not in other and other["unmapped"]["object_type"] == "report"
    unknown = to_ocsf({**BASE, "status": None}, "acme")
    assert (unknown["status"], unknown["status_id"]) == ("Unknown", 0)
    validate(other)
    validate(unknown)


def test_bytes_are_stable_and_sorted() -> None:
    """The same log gives the same bytes, whatever the order of its fields."""
    forward = convert([orjson.dumps(BASE).decode()], "acme")[0]
    backward = convert([orjson.dumps(dict(reversed(BASE.items()))).decode()], "acme")[0]
    assert forward == backward
    assert forward.startswith('{"activity_id":2,"activity_name":"Read","actor":')


def test_the_validator_refuses_what_the_schema_does() -> None:
    """The checks the tests rely on do fail: unknown attribute, missing required, wrong type, bad enum."""
    good = to_ocsf(BASE, "acme")
    bad: list[dict[str, Any]] = [
        {**good, "class_uid": 6099},
        {**good, "category_uid": 3},
        {**good, "colour": "red"},
        {k: v for k, v in good.items() if k != "api"},
        {**good, "time": "2024-05-01"},
        {**good, "severity_id": 9, "severity": "Nine"},
        {**good, "activity_id": 5, "type_uid": 600305},
        {**good, "type_uid": 600301},
        {**good, "actor": {"user": {"uid": 7}}},
        {**good, "metadata": {**good["metadata"], "version": "1.2.0"}},
        {**good, "resources": {"uid": "12"}},
        {**good, "status": "Failure"},
    ]
    for event in bad:
        with pytest.raises(Invalid):
            validate(event)


_text = st.text(max_size=40)
_opt = st.none() | _text
_actions = st.sampled_from(["user.login", "user.logout", "user.create", "user.delete", "user.password_set",
                            "user.role_change", "group.member_add", "team.remove_user", "report.view",
                            "api_key.revoke", "x"]) | st.from_regex(r"[a-zA-Z_.:/-]{0,30}", fullmatch=True)
_json = st.recursive(st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _text,
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
                     max_leaves=8)


@settings(max_examples=400, deadline=None)
@given(action=_actions, client_ip=st.ip_addresses().map(str) | st.just("[erased]"), user_email=_opt,
       user_id=st.none() | st.integers(-(2**53), 2**53), object_type=_opt | st.sampled_from(["user", "group"]),
       object_id=st.none() | st.integers(-(2**53), 2**53), status=_opt | st.sampled_from(["success", "failure"]),
       payload=st.none() | st.dictionaries(st.sampled_from(["role", "roles", "user_id", "user_email", "x"]), _json)
       | _json, texts=st.tuples(_opt, _opt, _opt, _opt, _text), support=st.booleans(),
       moment=st.datetimes(min_value=datetime(1970, 1, 2)), seq=st.integers(1, 2**62))
def test_every_mapping_validates(action: str, client_ip: str, user_email: str | None, user_id: int | None,
                                 object_type: str | None, object_id: int | None, status: str | None,
                                 payload: Any, texts: tuple[Any, ...], support: bool, moment: datetime,
                                 seq: int) -> None:
    """Any log the API can hold maps to a valid OCSF 1.3.0 object with the classification fields it names."""
    referer, request_type, source, user_agent, url = texts
    log = {"action": action, "client_ip": client_ip, "event_uuid": "0190f5d2-8c3a-7000-8000-000000000001",
           "is_support_user": support, "log_entry": url, "object_id": object_id, "object_type": object_type,
           "payload": payload, "referer": referer, "request_type": request_type, "source": source,
           "status": status, "timestamp": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "url": url,
           "user_agent": user_agent, "user_email": user_email, "user_id": user_id, "seq": seq,
           "prev_hash": "0" * 64, "hash": "1" * 64}
    (text,) = convert([orjson.dumps(log).decode()], "acme")
    event = orjson.loads(text)
    validate(event)
    assert event["metadata"]["uid"] == log["event_uuid"] and event["metadata"]["sequence"] == seq
    assert event["time"] == (moment.replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    assert event["type_uid"] == event["class_uid"] * 100 + event["activity_id"]


def _bodies(receiver: WebhookReceiver, stream_id: str) -> bytes:
    """The records of every acknowledged delivery, exactly as sent, joined by commas."""
    head, tail = b'{"stream_id":' + orjson.dumps(stream_id) + b',"events":[', b"]}"
    parts = []
    for d in receiver.received:
        assert d.body.startswith(head) and d.body.endswith(tail)
        parts.append(d.body[len(head):-len(tail)])
    return b",".join(parts)


def test_stream_and_get_agree_byte_for_byte(app_client: TestClient, tenant: Tenant, receiver: WebhookReceiver,
                                            forwarder: Forwarder) -> None:
    """An ocsf webhook stream delivers valid OCSF objects, the same bytes the GET's format=ocsf lines are."""
    events = [{"client_ip": "192.0.2.1", "url": f"https://app.test/{i}", "action": action, "log_entry": f"e{i}",
               "user_email": "ann@example.com", "user_id": 7, "object_type": "user", "object_id": 30 + i,
               "status": "failure" if i % 3 == 0 else "success", "payload": {"role": "admin", "n": i}}
              for i, action in enumerate(["user.login", "user.create", "user.role_change", "report.view",
                                          "user.logout", "api_key.revoke", "group.member_add"] * 3)]
    assert app_client.post(LOGS, json=events, headers=tenant.headers).status_code == 201
    stream = make_stream(app_client, tenant, receiver, start_seq=1, format="ocsf", batch_size=4)
    assert stream["format"] == "ocsf"
    drain(forwarder, lambda: show(app_client, tenant, stream["id"])["lag_events"] == 0)
    delivered = [e for d in receiver.received for e in d.json["events"]]
    assert [e["metadata"]["sequence"] for e in delivered] == list(range(1, len(events) + 2))
    for event in delivered:
        validate(event)
        assert event["metadata"]["tenant_uid"] == tenant.org.name
    assert {e["class_uid"] for e in delivered} == {3001, 3002, 3005, 6003}
    r = app_client.get(LOGS, params={"format": "ocsf", "after_seq": 0, "limit": len(delivered)},
                       headers=tenant.headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    lines = r.content.splitlines()
    assert len(lines) == len(delivered) and r.headers["x-last-seq"] == str(len(delivered))
    assert _bodies(receiver, stream["id"]) == b",".join(lines)


def test_get_ocsf_pages_and_filters(app_client: TestClient, tenant: Tenant) -> None:
    """format=ocsf keeps the GET's filters, limit + Link paging and after_seq polling."""
    events = [{"client_ip": "192.0.2.1", "url": f"https://app.test/{i}", "log_entry": f"e{i}",
               "action": "user.login" if i % 2 else "report.view"} for i in range(9)]
    assert app_client.post(LOGS, json=events, headers=tenant.headers).status_code == 201
    first = app_client.get(LOGS, params={"format": "ocsf", "action": "user.login", "limit": 3},
                           headers=tenant.headers)
    assert first.status_code == 200 and 'rel="next"' in first.headers["link"]
    page = [orjson.loads(line) for line in first.content.splitlines()]
    assert [e["metadata"]["event_code"] for e in page] == ["user.login"] * 3
    nxt = first.headers["link"].split(">")[0].lstrip("<")
    second = app_client.get(nxt, headers=tenant.headers)
    rest = [orjson.loads(line) for line in second.content.splitlines()]
    assert len(rest) == 1 and "link" not in second.headers
    assert [e["metadata"]["sequence"] for e in page + rest] == [2, 4, 6, 8]
    polled = app_client.get(LOGS, params={"format": "ocsf", "after_seq": 7}, headers=tenant.headers)
    sequences = [orjson.loads(line)["metadata"]["sequence"] for line in polled.content.splitlines()]
    assert sequences[:2] == [8, 9] and polled.headers["x-last-seq"] == str(sequences[-1])
    for event in page + rest:
        validate(event)
    # Accept alone never yields OCSF: application/x-ndjson is the logs themselves.
    plain = app_client.get(LOGS, params={"limit": 1}, headers={**tenant.headers, "Accept": "application/x-ndjson"})
    assert "class_uid" not in orjson.loads(plain.content.splitlines()[0])


def test_an_ocsf_streams_test_event_is_ocsf(app_client: TestClient, tenant: Tenant,
                                            receiver: WebhookReceiver) -> None:
    stream = make_stream(app_client, tenant, receiver, format="ocsf")
    r = app_client.post(f"{STREAMS}/{stream['id']}/test", headers=tenant.headers)
    assert r.json() == {"delivered": True, "error": None}
    (event,) = receiver.events()
    validate(event)
    assert event["unmapped"] == {"test": True} and event["api"]["operation"] == "auditkeep.stream_test"
