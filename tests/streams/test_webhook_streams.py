"""Streams to a webhook (issue #10): managed by the API, delivered at least once and in seq order by the
forwarder, through outages, throttling, a poison event, pauses, replays and a second forwarder."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient

from auditkeep.auth.principals import Role, Scope
from auditkeep.storage import Storage
from auditkeep.streams.forwarder import FAILING_AFTER, Forwarder
from tests.conftest import Tenant
from tests.streams.receivers import Delivery, WebhookReceiver, verify_signature, webhook_receiver

LOGS = "/api/v1/audit_logs"
STREAMS = "/api/v1/streams"
SECRET = "s3cret-for-the-receiver-0123456789"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as r:
        yield r


def ingest(client: TestClient, tenant: Tenant, n: int, action: str = "report.view", start: int = 0) -> list[str]:
    events = [{"client_ip": "192.0.2.1", "url": f"https://app.test/{start + i}", "action": action,
               "log_entry": f"event {start + i}"} for i in range(n)]
    r = client.post(LOGS, json=events, headers=tenant.headers)
    assert r.status_code == 201, r.text
    uuids: list[str] = r.json()["event_uuids"]
    return uuids


def make_stream(client: TestClient, tenant: Tenant, receiver: WebhookReceiver, **extra: Any) -> dict[str, Any]:
    body = {"name": extra.pop("name", "siem"), "kind": "webhook",
            "config": {"url": receiver.url, "secret": SECRET, "batch_size": extra.pop("batch_size", 10)}, **extra}
    r = client.post(STREAMS, json=body, headers=tenant.headers)
    assert r.status_code == 201, r.text
    stream: dict[str, Any] = r.json()
    return stream


def drain(fw: Forwarder, done: Callable[[], bool], timeout: float = 20.0) -> None:
    """Run forwarder passes until `done()` (or fail after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the forwarder did not get there in time"
        if not fw.run_once():
            time.sleep(0.02)


def show(client: TestClient, tenant: Tenant, stream_id: str) -> dict[str, Any]:
    r = client.get(f"{STREAMS}/{stream_id}", headers=tenant.headers)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def seqs(receiver: WebhookReceiver) -> list[int]:
    return [e["seq"] for e in receiver.events()]


def test_create_hides_the_secret_and_is_audited(app_client: TestClient, tenant: Tenant,
                                                receiver: WebhookReceiver) -> None:
    """The 201 and every later view show no secret; stream.create is recorded without it."""
    stream = make_stream(app_client, tenant, receiver)
    assert stream["config"] == {"url": receiver.url, "batch_size": 10, "timeout_seconds": 10.0}
    assert stream["secrets_set"] == ["secret"]
    assert stream["state"] == "active" and stream["kind"] == "webhook" and stream["format"] == "datafold"
    listed = app_client.get(STREAMS, headers=tenant.headers).json()["streams"]
    assert [s["id"] for s in listed] == [stream["id"]]
    assert SECRET not in app_client.get(STREAMS, headers=tenant.headers).text
    logs = app_client.get(LOGS, params={"action": "stream.*"}, headers=tenant.headers)
    assert [log["action"] for log in logs.json()["logs"]] == ["stream.create"]
    assert SECRET not in logs.text
    assert logs.json()["logs"][0]["payload"]["stream_id"] == stream["id"]


def test_only_admins_manage_streams(app_client: TestClient, tenant: Tenant, receiver: WebhookReceiver) -> None:
    _, viewer = tenant.user(Role.VIEWONLY)
    _, reader = tenant.service_account(Scope.READ, Scope.WRITE)
    for key in (viewer, reader):
        r = app_client.get(STREAMS, headers={"Authorization": f"Key {key}"})
        assert r.status_code == 403
        assert r.json() == {"detail": r.json()["detail"]} and "admin" in r.json()["detail"]


def test_bad_config_is_a_422_naming_the_field(app_client: TestClient, tenant: Tenant) -> None:
    r = app_client.post(STREAMS, json={"name": "x", "kind": "webhook", "config": {"url": "not a url",
                                                                                  "secret": "short"}},
                        headers=tenant.headers)
    assert r.status_code == 422
    r = app_client.post(STREAMS, json={"name": "x", "kind": "carrier-pigeon", "config": {}}, headers=tenant.headers)
    assert r.status_code == 422 and "kind must be one of: webhook" in r.text
    r = app_client.post(STREAMS, json={"name": "x", "kind": "webhook", "filter": {"client_ip": "nope"},
                                       "config": {"url": "http://127.0.0.1:1/", "secret": SECRET}},
                        headers=tenant.headers)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:3] == ["body", "filter", "client_ip"]


def test_backfill_then_live_tail_in_seq_order_signed(app_client: TestClient, tenant: Tenant,
                                                     receiver: WebhookReceiver, forwarder: Forwarder) -> None:
    """start_seq=1 delivers everything retained, then new events as they come, each batch signed."""
    first = ingest(app_client, tenant, 25)
    stream = make_stream(app_client, tenant, receiver, start_seq=1)
    drain(forwarder, lambda: len(receiver.events()) >= 26)  # 25 events + the stream.create record
    later = ingest(app_client, tenant, 7, start=25)
    drain(forwarder, lambda: show(app_client, tenant, stream["id"])["lag_events"] == 0)
    events = receiver.events()
    assert seqs(receiver) == list(range(1, len(events) + 1))
    delivered = [e["event_uuid"] for e in events]
    assert delivered[:25] == first and set(later) <= set(delivered)
    assert set(events[0]) >= {"action", "client_ip", "event_uuid", "seq", "prev_hash", "hash", "timestamp"}
    for d in receiver.received:
        assert verify_signature(SECRET, d)
        assert d.json["stream_id"] == stream["id"]
        assert len(d.json["events"]) <= 10
    assert len({d.headers["auditkeep-delivery"] for d in receiver.received}) == len(receiver.received)
    view = show(app_client, tenant, stream["id"])
    assert view["delivered_seq"] == seqs(receiver)[-1] and view["lag_seconds"] == 0.0
    assert view["last_delivery_at"] is not None and view["failures"] == 0


def test_default_start_is_the_next_event(app_client: TestClient, tenant: Tenant, receiver: WebhookReceiver,
                                         forwarder: Forwarder) -> None:
    ingest(app_client, tenant, 5)
    stream = make_stream(app_client, tenant, receiver)
    new = ingest(app_client, tenant, 3, start=5)
    drain(forwarder, lambda: show(app_client, tenant, stream["id"])["lag_events"] == 0)
    events = receiver.events()
    # The stream's own stream.create record came after it was made, so it is delivered too.
    assert [e["action"] for e in events] == ["stream.create", "report.view", "report.view", "report.view"]
    assert [e["event_uuid"] for e in events[1:]] == new
    assert [e["seq"] for e in events] == [6, 7, 8, 9]


def test_outage_and_throttling_lose_nothing(app_client: TestClient, tenant: Tenant, receiver: WebhookReceiver,
                                            forwarder: Forwarder) -> None:
    """500s and 429s with Retry-After are retried; the stream turns failing, then catches up in order."""
    script = [(500, {}), (500, {}), (503, {}), (429, {"Retry-After": "0"})]

    def answer(d: Delivery) -> tuple[int, dict[str, str]]:
        return script.pop(0) if script else (200, {})

    receiver.answer = answer
    ingest(app_client, tenant, 30)
    stream = make_stream(app_client, tenant, receiver, start_seq=1)
    drain(forwarder, lambda: show(app_client, tenant, stream["id"])["failures"] >= FAILING_AFTER)
    failing = show(app_client, tenant, stream["id"])
    assert failing["state"] == "failing" and "answered 50" in failing["last_error"]
    drain(forwarder, lambda: show(app_client, tenant, stream["id"])["lag_events"] == 0)
    assert seqs(receiver) == list(range(1, 32))  # 30 events + stream.create, each once, in order
    assert len(receiver.attempts) == len(receiver.received) + 4
    view = show(app_client, tenant, stream["id"])
    assert view["state"] == "active" and view["failures"] == 0 and view["last_error"] is None


def test_a_poison_event_parks_the_stream_naming_it(app_client: TestClient, tenant: Tenant,
                                                   receiver: WebhookReceiver, forwarder: Forwarder) -> None:
    uuids = ingest(app_client, tenant, 12)
    poison = uuids[6]  # seq 7
    receiver.answer = lambda d: (400, {}) if poison in d.body.decode() else (200, {})
    stream = make_stream(app_client, tenant, receiver, start_seq=1)
    drain(forwarder, lambda: show(app_client, tenant, stream["id"])["state"] == "paused")
    view = show(app_client, tenant, stream["id"])
    assert view["delivered_seq"] == 6
    assert f"refused seq 7 (event_uuid {poison})" in view["last_error"] and "replay from 8" in view["last_error"]
    assert seqs(receiver) == [1, 2, 3, 4, 5, 6]
    # The operator skips it: replay from 8 and resume.
    r = app_client.patch(f"{STREAMS}/{stream['id']}", json={"replay_from_seq": 8, "state": "active"},
                         headers=tenant.headers)
    assert r.status_code == 200 and r.json()["state"] == "active" and r.json()["delivered_seq"] == 7
    drain(forwarder, lambda: show(app_client, tenant, stream["id"])["lag_events"] == 0)
    assert seqs(receiver)[:11] == [1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12]


def test_pause_resume_and_replay(app_client: TestClient, tenant: Tenant, receiver: WebhookReceiver,
                                 forwarder: Forwarder) -> None:
    ingest(app_client, tenant, 5)
    stream = make_stream(app_client, tenant, receiver, start_seq=1)
    url = f"{STREAMS}/{stream['id']}"
    assert app_client.patch(url, json={"state": "paused"}, headers=tenant.headers).json()["state"] == "paused"
    forwarder.run_once()
    assert receiver.attempts == []
    assert app_client.patch(url, json={"state": "active"}, headers=tenant.headers).status_code == 200
    drain(forwarder, lambda: show(app_client, tenant, stream["id"])["lag_events"] == 0)
    delivered = seqs(receiver)
    r = app_client.patch(url, json={"replay_from_seq": 2}, headers=tenant.headers)
    assert r.status_code == 200 and r.json()["delivered_seq"] == 1
    drain(forwarder, lambda: show(app_client, tenant, stream["id"])["lag_events"] == 0)
    assert seqs(receiver)[len(delivered):][: len(delivered) - 1] == delivered[1:]
    too_far = app_client.patch(url, json={"replay_from_seq": 10**6}, headers=tenant.headers)
    assert too_far.status_code == 422
    changes = app_client.get(LOGS, params={"action": "stream.update"}, headers=tenant.headers).json()["logs"]
    assert [c["payload"]["changed"] for c in changes] == [["state"], ["state"], ["replay_from_seq"]]


def test_filter_delivers_only_matches_and_moves_past_the_rest(app_client: TestClient, tenant: Tenant,
                                                              receiver: WebhookReceiver,
                                                              forwarder: Forwarder) -> None:
    ingest(app_client, tenant, 4, action="report.view")
    keys = ingest(app_client, tenant, 3, action="api_key.create", start=4)
    ingest(app_client, tenant, 4, action="report.view", start=7)
    stream = make_stream(app_client, tenant, receiver, start_seq=1, filter={"action": "api_key.*"})
    drain(forwarder, lambda: show(app_client, tenant, stream["id"])["lag_events"] == 0)
    assert [e["event_uuid"] for e in receiver.events()] == keys


def test_a_stream_sees_only_its_organization(app_client: TestClient, tenant: Tenant, storage: Storage,
                                             receiver: WebhookReceiver, forwarder: Forwarder) -> None:
    from tests.conftest import make_tenant

    other = make_tenant(storage)
    theirs = set(ingest(app_client, other, 10))
    ingest(app_client, tenant, 3)
    stream = make_stream(app_client, tenant, receiver, start_seq=1)
    drain(forwarder, lambda: show(app_client, tenant, stream["id"])["lag_events"] == 0)
    assert not theirs & {e["event_uuid"] for e in receiver.events()}
    assert app_client.get(f"{STREAMS}/{stream['id']}", headers=other.headers).status_code == 404
    assert app_client.delete(f"{STREAMS}/{stream['id']}", headers=other.headers).status_code == 404


def test_one_forwarder_at_a_time_holds_a_stream(app_client: TestClient, tenant: Tenant, storage: Storage,
                                                receiver: WebhookReceiver, forwarder: Forwarder) -> None:
    """A second forwarder delivers nothing while the first holds the lease, and takes over when it ends."""
    ingest(app_client, tenant, 40)
    stream = make_stream(app_client, tenant, receiver, start_seq=1)
    second = Forwarder(storage, storage.settings.model_copy(update={"stream_lease_seconds": 1.0}))
    try:
        forwarder.run_once()  # takes the lease (30 s) and delivers a first turn
        before = len(receiver.attempts)
        assert second.run_once() == 0 and len(receiver.attempts) == before
        forwarder.stop()  # gives the lease back
        ingest(app_client, tenant, 5, start=40)
        drain(second, lambda: show(app_client, tenant, stream["id"])["lag_events"] == 0)
    finally:
        second.stop()
    assert seqs(receiver) == list(range(1, len(receiver.events()) + 1))


def test_test_event_is_marked_and_moves_no_cursor(app_client: TestClient, tenant: Tenant,
                                                  receiver: WebhookReceiver) -> None:
    stream = make_stream(app_client, tenant, receiver)
    r = app_client.post(f"{STREAMS}/{stream['id']}/test", headers=tenant.headers)
    assert r.status_code == 200 and r.json() == {"delivered": True, "error": None}
    (event,) = receiver.events()
    assert event["test"] is True and event["action"] == "auditkeep.stream_test" and "seq" not in event
    assert verify_signature(SECRET, receiver.received[0])
    assert show(app_client, tenant, stream["id"])["delivered_seq"] == stream["delivered_seq"]
    receiver.answer = lambda d: (401, {})
    r = app_client.post(f"{STREAMS}/{stream['id']}/test", headers=tenant.headers)
    assert r.json()["delivered"] is False and "answered 401" in r.json()["error"]


def test_delete_is_audited_and_stops_delivery(app_client: TestClient, tenant: Tenant, receiver: WebhookReceiver,
                                              forwarder: Forwarder) -> None:
    stream = make_stream(app_client, tenant, receiver)
    assert app_client.delete(f"{STREAMS}/{stream['id']}", headers=tenant.headers).status_code == 204
    ingest(app_client, tenant, 3)
    forwarder.run_once()
    assert receiver.attempts == []
    assert app_client.get(f"{STREAMS}/{stream['id']}", headers=tenant.headers).status_code == 404
    logs = app_client.get(LOGS, params={"action": "stream.delete"}, headers=tenant.headers).json()["logs"]
    assert len(logs) == 1 and logs[0]["payload"]["stream_id"] == stream["id"]


def test_bad_config_on_update_is_a_422_under_config(app_client: TestClient, tenant: Tenant,
                                                    receiver: WebhookReceiver) -> None:
    """A PATCH whose merged settings do not fit the kind is refused, naming the setting; nothing changes."""
    stream = make_stream(app_client, tenant, receiver)
    r = app_client.patch(f"{STREAMS}/{stream['id']}", json={"config": {"batch_size": 0, "secret": "short"}},
                         headers=tenant.headers)
    assert r.status_code == 422
    assert sorted(tuple(e["loc"]) for e in r.json()["detail"]) == [("body", "config", "batch_size"),
                                                                  ("body", "config", "secret")]
    assert show(app_client, tenant, stream["id"])["config"]["batch_size"] == 10
    r = app_client.post(STREAMS, json={"name": "y", "kind": "webhook", "config": {"url": "nope", "secret": SECRET}},
                        headers=tenant.headers)
    assert r.status_code == 422 and [e["loc"] for e in r.json()["detail"]] == [["body", "config", "url"]]


def test_a_batch_in_flight_when_paused_still_counts(app_client: TestClient, tenant: Tenant,
                                                    receiver: WebhookReceiver, forwarder: Forwarder) -> None:
    """Pausing does not invalidate the batch being delivered: its acknowledgement moves the cursor, and
    resuming sends nothing twice (a replay or a new config would: they start a new generation)."""
    ingest(app_client, tenant, 5)
    stream = make_stream(app_client, tenant, receiver, start_seq=1)
    url = f"{STREAMS}/{stream['id']}"
    paused: list[int] = []

    def answer(d: Delivery) -> tuple[int, dict[str, str]]:
        if not paused:  # the operator pauses while this batch is at the receiver
            paused.append(app_client.patch(url, json={"state": "paused"}, headers=tenant.headers).status_code)
        return 200, {}

    receiver.answer = answer
    forwarder.run_once()
    view = show(app_client, tenant, stream["id"])
    assert paused == [200] and view["state"] == "paused" and view["delivered_seq"] == 6
    assert app_client.patch(url, json={"state": "active"}, headers=tenant.headers).status_code == 200
    drain(forwarder, lambda: show(app_client, tenant, stream["id"])["lag_events"] == 0)
    assert seqs(receiver) == list(range(1, len(receiver.events()) + 1))  # no seq twice


def test_a_replay_while_a_batch_is_in_flight_drops_the_batch_read_ahead(
        app_client: TestClient, tenant: Tenant, receiver: WebhookReceiver, forwarder: Forwarder) -> None:
    """The forwarder reads the next batch while one is in flight; a replay meanwhile (a new generation)
    makes it read again from the replay's seq instead of sending what it read ahead."""
    ingest(app_client, tenant, 5)
    stream = make_stream(app_client, tenant, receiver, start_seq=1, batch_size=2)
    url = f"{STREAMS}/{stream['id']}"
    replayed: list[int] = []

    def answer(d: Delivery) -> tuple[int, dict[str, str]]:
        if not replayed:  # the operator replays from 1 while the first batch is at the receiver
            replayed.append(app_client.patch(url, json={"replay_from_seq": 1}, headers=tenant.headers).status_code)
        return 200, {}

    receiver.answer = answer
    drain(forwarder, lambda: show(app_client, tenant, stream["id"])["lag_events"] == 0)
    head = show(app_client, tenant, stream["id"])["delivered_seq"]
    assert replayed == [200]
    assert seqs(receiver) == [1, 2, *range(1, head + 1)]


def test_a_filter_changed_between_batches_is_not_bypassed_by_the_read_ahead(
        app_client: TestClient, tenant: Tenant, receiver: WebhookReceiver, forwarder: Forwarder) -> None:
    """A batch read ahead under the old filter is dropped when the filter changes after the batch before
    it was acknowledged: what follows is read again, with the new filter."""
    ingest(app_client, tenant, 6)
    stream = make_stream(app_client, tenant, receiver, start_seq=1, batch_size=2)
    deliver = forwarder._one_batch
    changed: list[int] = []

    def then_change_the_filter(row: Any) -> int | None:
        outcome = deliver(row)  # acknowledged and recorded; the next batch (seqs 3-4) already read ahead
        if not changed:
            changed.append(app_client.patch(f"{STREAMS}/{stream['id']}", json={"filter": {"action": "stream.*"}},
                                            headers=tenant.headers).status_code)
        return outcome

    forwarder._one_batch = then_change_the_filter  # type: ignore[method-assign]
    drain(forwarder, lambda: show(app_client, tenant, stream["id"])["lag_events"] == 0)
    events = receiver.events()
    assert changed == [200]
    assert [e["seq"] for e in events[:2]] == [1, 2]
    # seq 7 and the change's own record; not report.view 3-6, which the read ahead held
    assert [e["action"] for e in events[2:]] == ["stream.create", "stream.update"]


def test_finding_a_poison_event_sends_each_event_once(app_client: TestClient, tenant: Tenant,
                                                      receiver: WebhookReceiver, forwarder: Forwarder) -> None:
    """After a refused batch the stream sends the batch's events one at a time up to the refused one,
    not a sliding window of whole batches: every acknowledged event reaches the receiver once."""
    uuids = ingest(app_client, tenant, 12)
    poison = uuids[6]  # seq 7, in the first batch of 10
    receiver.answer = lambda d: (400, {}) if poison in d.body.decode() else (200, {})
    stream = make_stream(app_client, tenant, receiver, start_seq=1)
    drain(forwarder, lambda: show(app_client, tenant, stream["id"])["state"] == "paused")
    assert [len(d.json["events"]) for d in receiver.attempts] == [10, 1, 1, 1, 1, 1, 1, 1]
    assert seqs(receiver) == [1, 2, 3, 4, 5, 6]


def test_a_stream_this_node_cannot_unseal_fails_alone(app_client: TestClient, tenant: Tenant, storage: Storage,
                                                      receiver: WebhookReceiver, forwarder: Forwarder) -> None:
    """Secrets sealed under another secrets key (a node with the wrong AUDITKEEP_SECRETS_KEY_PATH): that
    stream turns failing and says why, the other streams are delivered, the API still lists it (and a
    test send is a 503 naming the cause, never a 500)."""
    import os

    from auditkeep.storage.tables import streams as stream_rows
    from auditkeep.streams import secrets

    ingest(app_client, tenant, 3)
    good = make_stream(app_client, tenant, receiver, start_seq=1)
    bad = make_stream(app_client, tenant, receiver, name="sealed-elsewhere", start_seq=1)
    other_key = os.urandom(32)
    with storage.write() as conn:
        conn.execute(stream_rows.update().where(stream_rows.c.id == bad["id"])
                     .values(sealed_secrets=secrets.seal(other_key, bad["id"], {"secret": SECRET})))
    drain(forwarder, lambda: show(app_client, tenant, good["id"])["lag_events"] == 0)
    view = show(app_client, tenant, bad["id"])
    assert view["failures"] >= 1 and view["delivered_seq"] == 0
    assert view["last_error"].startswith("the stream's secrets do not open with this secrets key")
    assert view["secrets_set"] == []
    listed = app_client.get(STREAMS, headers=tenant.headers)
    assert listed.status_code == 200 and len(listed.json()["streams"]) == 2
    r = app_client.post(f"{STREAMS}/{bad['id']}/test", headers=tenant.headers)
    assert r.status_code == 503 and "secrets" in r.json()["detail"]
    assert {d.json["stream_id"] for d in receiver.received} == {good["id"]}


def test_test_event_is_a_self_audit_event_without_secrets(app_client: TestClient, tenant: Tenant,
                                                          receiver: WebhookReceiver) -> None:
    """Each test send is recorded as `stream.test` (who, which stream, what the destination said), and
    neither the stream's secret nor one the destination echoes in its refusal reaches the log."""
    stream = make_stream(app_client, tenant, receiver)
    assert app_client.post(f"{STREAMS}/{stream['id']}/test", headers=tenant.headers).json()["delivered"] is True
    receiver.answer = lambda d: (401, {})
    assert app_client.post(f"{STREAMS}/{stream['id']}/test", headers=tenant.headers).json()["delivered"] is False

    token = "hec-token-0123456789abcdef"
    with echoing_receiver() as url:  # refuses, quoting the Authorization header it was sent
        body = {"name": "hec", "kind": "splunk_hec", "config": {"url": url, "token": token}}
        hec = app_client.post(STREAMS, json=body, headers=tenant.headers).json()
        refused = app_client.post(f"{STREAMS}/{hec['id']}/test", headers=tenant.headers).json()
    assert refused["delivered"] is False and token in refused["error"]  # the caller sees what was said

    logs = app_client.get(LOGS, params={"action": "stream.test"}, headers=tenant.headers)
    tests = logs.json()["logs"]
    assert [(t["status"], t["object_type"], t["payload"]["stream_id"], t["payload"]["delivered"]) for t in tests] == [
        ("success", "stream", stream["id"], True), ("failure", "stream", stream["id"], False),
        ("failure", "stream", hec["id"], False)]
    assert tests[0]["payload"]["error"] is None and "answered 401" in tests[1]["payload"]["error"]
    assert all(t["user_email"] == tenant.admin.name for t in tests)
    assert "Splunk [secret]" in tests[2]["payload"]["error"] and "[secret]" in tests[2]["log_entry"]
    assert SECRET not in logs.text and token not in logs.text


@contextmanager
def echoing_receiver() -> Iterator[str]:
    """An HTTP endpoint on loopback that answers 403 with the Authorization header it got in its body."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            body = f"bad credentials: {self.headers['Authorization']}".encode()
            self.send_response(403)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
