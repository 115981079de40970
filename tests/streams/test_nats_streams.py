"""Streams to NATS JetStream (issue #10), against the NATS server on 127.0.0.1:4222: one message per
event in seq order, `Nats-Msg-Id` = event_uuid so redeliveries are dropped by the server, through an
outage, a crash between ack and cursor, a poison event, pauses and replays."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from auditkeep.storage import Storage
from auditkeep.streams import forwarder as forwarder_module
from auditkeep.streams.forwarder import FAILING_AFTER, Forwarder
from auditkeep.streams.sinks import Batch, DeliveryError, Sink
from auditkeep.streams.sinks.nats import NatsSink
from tests.conftest import Tenant, make_tenant
from tests.streams.brokers import NATS_URL, Crash, CrashAfterAck, JetStream, Relay, jetstream
from tests.streams.test_webhook_streams import STREAMS, drain, ingest, show


@pytest.fixture
def js() -> Iterator[JetStream]:
    with jetstream() as stream:
        yield stream


@pytest.fixture(autouse=True)
def _delete_streams(app_client: TestClient, tenant: Tenant) -> Iterator[None]:
    """The test's streams go with it, so later tests' forwarders do not keep trying dead subjects."""
    yield
    for stream in app_client.get(STREAMS, headers=tenant.headers).json()["streams"]:
        app_client.delete(f"{STREAMS}/{stream['id']}", headers=tenant.headers)


def new_forwarder(storage: Storage, **settings: Any) -> Forwarder:
    fw = Forwarder(storage, storage.settings.model_copy(update=settings))
    fw.backoff_first = 0.01
    return fw


def make_stream(client: TestClient, tenant: Tenant, subject: str, url: str = NATS_URL,
                **extra: Any) -> dict[str, Any]:
    config = {"url": url, "subject": subject, "batch_size": extra.pop("batch_size", 10), "timeout_seconds": 2,
              **extra.pop("config", {})}
    r = client.post(STREAMS, json={"name": extra.pop("name", "bus"), "kind": "nats", "config": config, **extra},
                    headers=tenant.headers)
    assert r.status_code == 201, r.text
    stream: dict[str, Any] = r.json()
    return stream


def caught_up(client: TestClient, tenant: Tenant, stream_id: str) -> bool:
    return bool(show(client, tenant, stream_id)["lag_events"] == 0)


def stored(js: JetStream) -> list[dict[str, Any]]:
    """The events JetStream holds, each message's Nats-Msg-Id checked against its event_uuid."""
    messages = js.messages()
    for headers, event in messages:
        assert headers["Nats-Msg-Id"] == event["event_uuid"]
    return [event for _, event in messages]


def sinks(fw: Forwarder) -> list[NatsSink]:
    return [s.inner if isinstance(s, CrashAfterAck) else s for s in fw._sinks.values()]  # type: ignore[misc]


def test_config_is_validated_and_secrets_hidden(app_client: TestClient, tenant: Tenant, js: JetStream) -> None:
    stream = make_stream(app_client, tenant, js.subject, config={"user": "fw", "password": "pw-0123456789"})
    assert stream["config"] == {"url": NATS_URL, "subject": js.subject, "user": "fw",
                                "batch_size": 10, "timeout_seconds": 2.0}
    assert stream["secrets_set"] == ["password"]
    for bad in ({"url": "nats://fw:pw@127.0.0.1:4222"}, {"url": "http://127.0.0.1:4222"}, {"subject": "a.*"},
                {"subject": "a.>"}, {"subject": "a..b"}):
        config = {"url": NATS_URL, "subject": js.subject, **bad}
        r = app_client.post(STREAMS, json={"name": "x", "kind": "nats", "config": config}, headers=tenant.headers)
        assert r.status_code == 422, bad
        assert r.json()["detail"][0]["loc"][:2] == ["body", "config"]


def test_backfill_then_live_tail_one_message_per_event_in_seq_order(
        app_client: TestClient, tenant: Tenant, js: JetStream, forwarder: Forwarder) -> None:
    first = ingest(app_client, tenant, 25)
    stream = make_stream(app_client, tenant, js.subject, start_seq=1)
    drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))
    later = ingest(app_client, tenant, 7, start=25)
    drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))
    events = stored(js)
    assert [e["seq"] for e in events] == list(range(1, show(app_client, tenant, stream["id"])["delivered_seq"] + 1))
    uuids = [e["event_uuid"] for e in events]
    assert uuids[:25] == first and set(later) <= set(uuids)
    assert {"action", "client_ip", "seq", "prev_hash", "hash"} <= set(events[0])
    assert sum(s.duplicates for s in sinks(forwarder)) == 0


def test_broker_down_for_a_while_then_back_loses_nothing(app_client: TestClient, tenant: Tenant, js: JetStream,
                                                         forwarder: Forwarder) -> None:
    relay = Relay(4222)
    try:
        ingest(app_client, tenant, 15)
        stream = make_stream(app_client, tenant, js.subject, url=f"nats://127.0.0.1:{relay.port}", start_seq=1)
        forwarder.run_once()  # a first turn goes through
        relay.down()
        ingest(app_client, tenant, 20, start=15)
        drain(forwarder, lambda: show(app_client, tenant, stream["id"])["failures"] >= FAILING_AFTER)
        failing = show(app_client, tenant, stream["id"])
        assert failing["state"] == "failing" and "cannot connect" in failing["last_error"]
        relay.up()
        drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))
    finally:
        relay.down()
    events = stored(js)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert len(events) == show(app_client, tenant, stream["id"])["delivered_seq"]
    view = show(app_client, tenant, stream["id"])
    assert view["state"] == "active" and view["failures"] == 0 and view["last_error"] is None


def test_no_jetstream_stream_is_retried_until_the_operator_creates_it(
        app_client: TestClient, tenant: Tenant, forwarder: Forwarder) -> None:
    with jetstream(create=False) as js:
        ingest(app_client, tenant, 5)
        stream = make_stream(app_client, tenant, js.subject, start_seq=1)
        drain(forwarder, lambda: show(app_client, tenant, stream["id"])["failures"] >= 1)
        assert f"no JetStream stream captures subject '{js.subject}'" in show(
            app_client, tenant, stream["id"])["last_error"]
        js.create()
        drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))
        assert [e["seq"] for e in stored(js)] == [1, 2, 3, 4, 5, 6]


def test_crash_between_ack_and_cursor_is_deduplicated_by_jetstream(
        app_client: TestClient, tenant: Tenant, storage: Storage, js: JetStream,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch acked before the crash is published again after it; JetStream stores each event once,
    and the sink counts the repeats."""
    ingest(app_client, tenant, 30)
    stream = make_stream(app_client, tenant, js.subject, start_seq=1)
    real_open = forwarder_module.open_sink
    crashing: list[CrashAfterAck] = []

    def open_crashing(*args: Any) -> Sink:
        crashing.append(CrashAfterAck(real_open(*args)))
        return crashing[-1]

    monkeypatch.setattr(forwarder_module, "open_sink", open_crashing)
    doomed = new_forwarder(storage, stream_lease_seconds=1.0)
    with pytest.raises(Crash):
        doomed.run_once()
    for sink in doomed._sinks.values():  # the process is gone: its lease is left to expire
        sink.close()
    monkeypatch.setattr(forwarder_module, "open_sink", real_open)
    (crashed,) = [c.crashed_batch for c in crashing if c.crashed_batch is not None]
    assert crashed is not None and crashed.seqs == list(range(1, 11))
    assert show(app_client, tenant, stream["id"])["delivered_seq"] == 0
    time.sleep(1.1)
    second = new_forwarder(storage)
    try:
        drain(second, lambda: caught_up(app_client, tenant, stream["id"]))
        assert sum(s.duplicates for s in sinks(second)) == 10
    finally:
        second.stop()
    assert [e["seq"] for e in stored(js)] == list(range(1, 32))  # 30 events + stream.create, each once


def test_a_batch_refused_from_its_middle_is_retried_whole_and_nothing_is_skipped(
        app_client: TestClient, tenant: Tenant, forwarder: Forwarder) -> None:
    """JetStream stores a pipelined batch's first 4 messages and refuses the 6 after them (the stream is
    full): the cursor stays put, and once there is room the whole batch goes again; the 4 already stored
    are dropped by Nats-Msg-Id, so each event is stored once, in seq order, none skipped."""
    with jetstream(max_msgs=4) as js:
        uuids = ingest(app_client, tenant, 14)
        stream = make_stream(app_client, tenant, js.subject, start_seq=1)
        drain(forwarder, lambda: show(app_client, tenant, stream["id"])["failures"] >= 2)
        view = show(app_client, tenant, stream["id"])
        assert view["delivered_seq"] == 0 and view["state"] == "active"
        assert f"JetStream refused event_uuid {uuids[4]}: maximum messages exceeded" in view["last_error"]
        assert [e["seq"] for e in stored(js)] == [1, 2, 3, 4]
        js.update(max_msgs=-1)
        drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))
        events = stored(js)
        assert [e["seq"] for e in events] == list(range(1, 16))  # 14 events + stream.create, each once
        assert [e["event_uuid"] for e in events[:14]] == uuids
        # The retry that went through resent seqs 1-4 with the rest; JetStream had them and said so.
        assert sum(s.duplicates for s in sinks(forwarder)) == 4
        assert show(app_client, tenant, stream["id"])["last_error"] is None


def test_a_poison_event_parks_the_stream_naming_it(app_client: TestClient, tenant: Tenant,
                                                   forwarder: Forwarder) -> None:
    """An event larger than the JetStream stream's max_msg_size is refused for good: the stream parks on it."""
    with jetstream(max_msg_size=4096) as js:
        ingest(app_client, tenant, 6)
        r = app_client.post("/api/v1/audit_logs", json={"client_ip": "192.0.2.1", "url": "https://app.test/big",
                                                        "action": "report.view", "log_entry": "x" * 5000},
                            headers=tenant.headers)
        poison = r.json()["event_uuids"][0]
        ingest(app_client, tenant, 3, start=7)
        stream = make_stream(app_client, tenant, js.subject, start_seq=1)
        drain(forwarder, lambda: show(app_client, tenant, stream["id"])["state"] == "paused")
        view = show(app_client, tenant, stream["id"])
        assert view["delivered_seq"] == 6
        assert f"refused seq 7 (event_uuid {poison})" in view["last_error"]
        assert "message size exceeds maximum allowed" in view["last_error"] and "replay from 8" in view["last_error"]
        # JetStream takes or refuses each message of a batch on its own: the events of the refused batch
        # (1-10) after the refused one are already stored; delivered again after the replay, they are
        # dropped. The search then sends that batch's events one at a time, so nothing past it is sent.
        assert [e["seq"] for e in stored(js)] == [1, 2, 3, 4, 5, 6, 8, 9, 10]
        r = app_client.patch(f"{STREAMS}/{stream['id']}", json={"replay_from_seq": 8, "state": "active"},
                             headers=tenant.headers)
        assert r.status_code == 200
        drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))
        events = stored(js)
        assert [e["seq"] for e in events] == [1, 2, 3, 4, 5, 6, *range(8, len(events) + 2)]
        assert poison not in {e["event_uuid"] for e in events}


def test_pause_resume_and_replay_inside_the_duplicate_window(app_client: TestClient, tenant: Tenant,
                                                             js: JetStream, forwarder: Forwarder) -> None:
    ingest(app_client, tenant, 5)
    stream = make_stream(app_client, tenant, js.subject, start_seq=1)
    url = f"{STREAMS}/{stream['id']}"
    assert app_client.patch(url, json={"state": "paused"}, headers=tenant.headers).json()["state"] == "paused"
    forwarder.run_once()
    assert stored(js) == []
    assert app_client.patch(url, json={"state": "active"}, headers=tenant.headers).status_code == 200
    drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))
    before = [e["seq"] for e in stored(js)]
    assert before == list(range(1, len(before) + 1))
    r = app_client.patch(url, json={"replay_from_seq": 2}, headers=tenant.headers)
    assert r.status_code == 200 and r.json()["delivered_seq"] == 1
    drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))
    after = [e["seq"] for e in stored(js)]
    # Replayed events JetStream already holds are dropped as duplicates; only the stream.update records
    # the pause, resume and replay wrote are new.
    assert after[: len(before)] == before and after == list(range(1, len(after) + 1))
    assert sum(s.duplicates for s in sinks(forwarder)) == len(before) - 1


def test_a_stream_sees_only_its_organization(app_client: TestClient, tenant: Tenant, storage: Storage,
                                             js: JetStream, forwarder: Forwarder) -> None:
    other = make_tenant(storage)
    theirs = set(ingest(app_client, other, 10))
    ingest(app_client, tenant, 3)
    stream = make_stream(app_client, tenant, js.subject, start_seq=1)
    drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))
    events = stored(js)
    assert [e["seq"] for e in events] == [1, 2, 3, 4] and not theirs & {e["event_uuid"] for e in events}
    assert app_client.get(f"{STREAMS}/{stream['id']}", headers=other.headers).status_code == 404


def test_test_event_is_published_outside_the_cursor(app_client: TestClient, tenant: Tenant, js: JetStream) -> None:
    stream = make_stream(app_client, tenant, js.subject)
    r = app_client.post(f"{STREAMS}/{stream['id']}/test", headers=tenant.headers)
    assert r.status_code == 200 and r.json() == {"delivered": True, "error": None}
    (event,) = stored(js)
    assert event["test"] is True and event["action"] == "auditkeep.stream_test"
    assert show(app_client, tenant, stream["id"])["delivered_seq"] == stream["delivered_seq"]


def test_an_event_over_the_servers_max_payload_with_its_headers_is_refused_for_good() -> None:
    """The server would cut the connection on such a message, so the sink refuses it before sending."""
    sink = NatsSink("s" * 16, {"url": NATS_URL, "subject": "auditkeep.test.frames"})
    try:
        batch = Batch("s", 1, "org", ['{"seq":1}', "x" * 400], [1, 2], ["u-1", "u-2"])
        frames = sink._frames(batch, "_INBOX.t", max_payload=450)
        assert frames == (b"HPUB auditkeep.test.frames _INBOX.t.0 30 39\r\nNATS/1.0\r\nNats-Msg-Id: u-1\r\n\r\n"
                          b'{"seq":1}\r\n'
                          b"HPUB auditkeep.test.frames _INBOX.t.1 30 430\r\nNATS/1.0\r\nNats-Msg-Id: u-2\r\n\r\n"
                          + b"x" * 400 + b"\r\n")
        with pytest.raises(DeliveryError) as refused:
            sink._frames(batch, "_INBOX.t", max_payload=420)  # 400 bytes of body fit, 430 with headers do not
        assert refused.value.permanent and "event_uuid u-2: 430 bytes" in str(refused.value)
    finally:
        sink.close()
