"""Streams to Splunk's HTTP Event Collector (issue #10): HEC event objects batched in one body, the token
kept secret, indexer acknowledgement awaited on the stream's channel, and delivery at least once and in
seq order through outages, lost batches, a bad token, a poison event and a forwarder killed mid-batch."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from auditkeep.storage import Storage
from auditkeep.streams.forwarder import FAILING_AFTER, Forwarder
from tests.conftest import Tenant, make_tenant
from tests.streams.hec_receiver import HecReceiver, hec_receiver, split_objects
from tests.streams.test_webhook_streams import drain, ingest, show

LOGS = "/api/v1/audit_logs"
STREAMS = "/api/v1/streams"
TOKEN = "6d1f2c1e-93b4-4f0e-9a57-hec-test-token"


@pytest.fixture
def hec() -> Iterator[HecReceiver]:
    with hec_receiver(TOKEN) as r:
        yield r


@pytest.fixture
def made(app_client: TestClient) -> Iterator[list[tuple[Tenant, str]]]:
    """Streams a test made, deleted afterwards so no later test's forwarder delivers them to a receiver
    that happens to get the same port."""
    streams: list[tuple[Tenant, str]] = []
    yield streams
    for tenant, stream_id in streams:
        app_client.delete(f"{STREAMS}/{stream_id}", headers=tenant.headers)


def make_stream(client: TestClient, tenant: Tenant, hec: HecReceiver, made: list[tuple[Tenant, str]],
                start_seq: int | None = 1, **config: Any) -> dict[str, Any]:
    body = {"name": "splunk", "kind": "splunk_hec", "start_seq": start_seq,
            "config": {"url": hec.url, "token": TOKEN, "batch_size": 10, **config}}
    r = client.post(STREAMS, json=body, headers=tenant.headers)
    assert r.status_code == 201, r.text
    stream: dict[str, Any] = r.json()
    made.append((tenant, stream["id"]))
    return stream


def seqs(hec: HecReceiver) -> list[int]:
    return [e["seq"] for e in hec.events()]


def caught_up(client: TestClient, tenant: Tenant, stream_id: str) -> bool:
    return bool(show(client, tenant, stream_id)["lag_events"] == 0)


def epoch(timestamp: str) -> Decimal:
    moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return Decimal(int(moment.replace(microsecond=0).timestamp())) + Decimal(moment.microsecond) / 10**6


def test_create_hides_the_token_and_shows_the_defaults(app_client: TestClient, tenant: Tenant, hec: HecReceiver,
                                                       made: list[tuple[Tenant, str]]) -> None:
    stream = make_stream(app_client, tenant, hec, made)
    assert stream["kind"] == "splunk_hec" and stream["secrets_set"] == ["token"]
    assert stream["config"] == {"url": f"{hec.url}/", "index": None, "sourcetype": "auditkeep:audit_log",
                                "source": None, "host": None, "use_ack": False, "batch_size": 10,
                                "timeout_seconds": 10.0, "ack_timeout_seconds": 20.0}
    assert TOKEN not in app_client.get(STREAMS, headers=tenant.headers).text
    logs = app_client.get(LOGS, params={"action": "stream.*"}, headers=tenant.headers)
    assert [log["action"] for log in logs.json()["logs"]] == ["stream.create"] and TOKEN not in logs.text
    for bad in ({"url": hec.url}, {"url": hec.url, "token": "two words"}, {"url": hec.url, "token": TOKEN, "x": 1}):
        r = app_client.post(STREAMS, json={"name": "bad", "kind": "splunk_hec", "config": bad}, headers=tenant.headers)
        assert r.status_code == 422, bad


def test_backfill_then_live_tail_as_hec_event_objects(app_client: TestClient, tenant: Tenant, hec: HecReceiver,
                                                      forwarder: Forwarder, made: list[tuple[Tenant, str]]) -> None:
    """Each batch is one POST of concatenated HEC objects; `time` is the event's timestamp to the microsecond."""
    first = ingest(app_client, tenant, 25)
    stream = make_stream(app_client, tenant, hec, made, index="audit", host="auditkeep-test")
    drain(forwarder, lambda: len(hec.events()) >= 26)  # 25 events + the stream.create record
    later = ingest(app_client, tenant, 7, start=25)
    drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))
    assert seqs(hec) == list(range(1, 34))
    assert [e["event_uuid"] for e in hec.events()] == [*first, hec.events()[25]["event_uuid"], *later]
    posts = hec.event_posts()
    assert [len(split_objects(p.body)) for p in posts] == [10, 10, 6, 7]
    assert {p.status for p in posts} == {200}
    assert {p.headers["authorization"] for p in posts} == {f"Splunk {TOKEN}"}
    assert not any("x-splunk-request-channel" in p.headers for p in posts)
    for obj in hec.indexed:
        assert list(obj) == ["time", "host", "source", "sourcetype", "index", "event"]
        assert (obj["host"], obj["source"], obj["sourcetype"], obj["index"]) == (
            "auditkeep-test", f"auditkeep:{tenant.org.name}", "auditkeep:audit_log", "audit")
        assert obj["time"] == epoch(obj["event"]["timestamp"])
    assert set(hec.events()[0]) >= {"action", "client_ip", "event_uuid", "seq", "prev_hash", "hash", "timestamp"}
    view = show(app_client, tenant, stream["id"])
    assert view["delivered_seq"] == 33 and view["failures"] == 0 and view["last_error"] is None


def test_use_ack_waits_for_indexing_on_the_streams_channel(app_client: TestClient, tenant: Tenant,
                                                           forwarder: Forwarder,
                                                           made: list[tuple[Tenant, str]]) -> None:
    with hec_receiver(TOKEN, ack_enabled=True, ack_delay=0.3) as hec:
        ingest(app_client, tenant, 14)
        stream = make_stream(app_client, tenant, hec, made, use_ack=True)
        drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))
        assert seqs(hec) == list(range(1, 16))
        posts = hec.event_posts()
        assert len(posts) == 2
        assert {p.headers["x-splunk-request-channel"] for p in posts} == {stream["id"]}
        polls = [r for r in hec.requests if r.path == "/services/collector/ack"]
        # Acks arrive 0.3 s after each batch: the sink polled until they did, then moved on.
        assert len(polls) > len(posts) and {r.status for r in polls} == {200}
        assert {r.headers["x-splunk-request-channel"] for r in polls} == {stream["id"]}
        assert orjson.loads(polls[0].body) == {"acks": [0]}
        assert {tuple(orjson.loads(p.body)["acks"]) for p in polls} == {(0,), (1,)}


def test_a_batch_taken_but_never_indexed_is_sent_again(app_client: TestClient, tenant: Tenant,
                                                       forwarder: Forwarder, made: list[tuple[Tenant, str]]) -> None:
    """HEC's 200 alone does not move the cursor: a batch whose ack never comes is sent again, so every
    event is indexed, each exactly once here since the first copy was lost."""
    with hec_receiver(TOKEN, ack_enabled=True, lose=1) as hec:
        ingest(app_client, tenant, 12)
        stream = make_stream(app_client, tenant, hec, made, use_ack=True, ack_timeout_seconds=0.5)
        drain(forwarder, lambda: show(app_client, tenant, stream["id"])["failures"] == 1)
        view = show(app_client, tenant, stream["id"])
        assert view["delivered_seq"] == 0 and view["state"] == "active"
        assert f"ackId 0 on channel {stream['id']} not acknowledged within 0.5 s" in view["last_error"]
        drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))
        assert seqs(hec) == list(range(1, 14))
        posts = hec.event_posts()
        assert [[o["event"]["seq"] for o in split_objects(p.body)] for p in posts[:2]] == [list(range(1, 11))] * 2


def test_use_ack_against_a_token_without_acknowledgement_fails_clearly(
        app_client: TestClient, tenant: Tenant, hec: HecReceiver, forwarder: Forwarder,
        made: list[tuple[Tenant, str]]) -> None:
    ingest(app_client, tenant, 3)
    stream = make_stream(app_client, tenant, hec, made, use_ack=True)
    drain(forwarder, lambda: show(app_client, tenant, stream["id"])["failures"] >= FAILING_AFTER)
    view = show(app_client, tenant, stream["id"])
    assert view["state"] == "failing" and view["delivered_seq"] == 0
    assert "gave no ackId: use_ack needs indexer acknowledgement enabled on the HEC token" in view["last_error"]


def test_collector_down_then_busy_then_back_loses_nothing(app_client: TestClient, tenant: Tenant,
                                                          forwarder: Forwarder,
                                                          made: list[tuple[Tenant, str]]) -> None:
    """Connection refused and 503 "Server is busy" are retried; the stream turns failing, then catches up
    with every event once, in order."""
    with hec_receiver(TOKEN, ack_enabled=True) as hec:
        hec.down()
        ingest(app_client, tenant, 30)
        stream = make_stream(app_client, tenant, hec, made, use_ack=True)
        drain(forwarder, lambda: show(app_client, tenant, stream["id"])["failures"] >= FAILING_AFTER)
        failing = show(app_client, tenant, stream["id"])
        assert failing["state"] == "failing" and "ConnectError" in failing["last_error"]
        assert failing["delivered_seq"] == 0
        hec.busy = 2
        hec.up()
        drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))
        assert seqs(hec) == list(range(1, 32))
        assert [p.status for p in hec.event_posts()] == [503, 503, 200, 200, 200, 200]
        view = show(app_client, tenant, stream["id"])
        assert view["state"] == "active" and view["failures"] == 0 and view["last_error"] is None


def test_a_bad_token_fails_without_parking_and_a_new_token_resumes(
        app_client: TestClient, tenant: Tenant, hec: HecReceiver, forwarder: Forwarder,
        made: list[tuple[Tenant, str]]) -> None:
    """403 "Invalid token" is a configuration error, not an event's: the stream stays active (failing),
    blames no event, and delivers everything once the token is fixed."""
    ingest(app_client, tenant, 5)
    stream = make_stream(app_client, tenant, hec, made, token="not-the-token")
    drain(forwarder, lambda: show(app_client, tenant, stream["id"])["failures"] >= FAILING_AFTER + 1)
    view = show(app_client, tenant, stream["id"])
    assert view["state"] == "failing" and view["delivered_seq"] == 0
    assert "answered 403 code 4: Invalid token (the HEC token is wrong or disabled" in view["last_error"]
    assert "refused seq" not in view["last_error"] and hec.indexed == []
    r = app_client.patch(f"{STREAMS}/{stream['id']}", json={"config": {"token": TOKEN}}, headers=tenant.headers)
    assert r.status_code == 200 and r.json()["state"] == "active" and TOKEN not in r.text
    drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))
    assert seqs(hec) == list(range(1, 8))  # 5 events, stream.create, stream.update
    change = app_client.get(LOGS, params={"action": "stream.update"}, headers=tenant.headers)
    assert change.json()["logs"][0]["payload"]["secrets_changed"] == ["token"] and TOKEN not in change.text


def test_a_poison_event_parks_the_stream_naming_it(app_client: TestClient, tenant: Tenant, hec: HecReceiver,
                                                   forwarder: Forwarder, made: list[tuple[Tenant, str]]) -> None:
    uuids = ingest(app_client, tenant, 12)
    poison = uuids[6]  # seq 7
    hec.refuse = lambda obj: bool(obj["event"]["event_uuid"] == poison)
    stream = make_stream(app_client, tenant, hec, made)
    drain(forwarder, lambda: show(app_client, tenant, stream["id"])["state"] == "paused")
    view = show(app_client, tenant, stream["id"])
    assert view["delivered_seq"] == 6
    assert f"refused seq 7 (event_uuid {poison})" in view["last_error"]
    assert "answered 400 code 6: Invalid data format (event 0 of the request)" in view["last_error"]
    assert "replay from 8" in view["last_error"]
    assert seqs(hec) == [1, 2, 3, 4, 5, 6]
    r = app_client.patch(f"{STREAMS}/{stream['id']}", json={"replay_from_seq": 8, "state": "active"},
                         headers=tenant.headers)
    assert r.status_code == 200 and r.json()["delivered_seq"] == 7
    drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))
    assert seqs(hec)[:12] == [1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13]


def test_pause_resume_and_replay(app_client: TestClient, tenant: Tenant, hec: HecReceiver, forwarder: Forwarder,
                                 made: list[tuple[Tenant, str]]) -> None:
    ingest(app_client, tenant, 5)
    stream = make_stream(app_client, tenant, hec, made)
    url = f"{STREAMS}/{stream['id']}"
    assert app_client.patch(url, json={"state": "paused"}, headers=tenant.headers).json()["state"] == "paused"
    forwarder.run_once()
    assert hec.event_posts() == []
    assert app_client.patch(url, json={"state": "active"}, headers=tenant.headers).status_code == 200
    drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))
    assert seqs(hec) == list(range(1, 9))  # 5 events, stream.create, two stream.update
    r = app_client.patch(url, json={"replay_from_seq": 3}, headers=tenant.headers)
    assert r.status_code == 200 and r.json()["delivered_seq"] == 2
    drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))
    assert seqs(hec) == [*range(1, 9), *range(3, 10)]  # the replay's own stream.update is seq 9


def test_a_stream_sees_only_its_organization(app_client: TestClient, tenant: Tenant, storage: Storage,
                                             hec: HecReceiver, forwarder: Forwarder,
                                             made: list[tuple[Tenant, str]]) -> None:
    other = make_tenant(storage)
    theirs = set(ingest(app_client, other, 10))
    ingest(app_client, tenant, 3)
    stream = make_stream(app_client, tenant, hec, made)
    drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))
    assert seqs(hec) == [1, 2, 3, 4] and not theirs & {e["event_uuid"] for e in hec.events()}
    assert {o["source"] for o in hec.indexed} == {f"auditkeep:{tenant.org.name}"}
    assert {o["host"] for o in hec.indexed} == {socket.gethostname()} and "index" not in hec.indexed[0]
    assert app_client.get(f"{STREAMS}/{stream['id']}", headers=other.headers).status_code == 404


def test_test_record_goes_to_the_collector_and_moves_no_cursor(app_client: TestClient, tenant: Tenant,
                                                               made: list[tuple[Tenant, str]]) -> None:
    with hec_receiver(TOKEN, ack_enabled=True) as hec:
        stream = make_stream(app_client, tenant, hec, made, start_seq=None, use_ack=True)
        r = app_client.post(f"{STREAMS}/{stream['id']}/test", headers=tenant.headers)
        assert r.status_code == 200 and r.json() == {"delivered": True, "error": None}
        (event,) = hec.events()
        assert event["test"] is True and event["action"] == "auditkeep.stream_test" and "seq" not in event
        assert show(app_client, tenant, stream["id"])["delivered_seq"] == stream["delivered_seq"]


def test_forwarder_killed_mid_batch_loses_nothing(app_client: TestClient, tenant: Tenant, storage: Storage,
                                                  database_url: str, forwarder: Forwarder,
                                                  made: list[tuple[Tenant, str]]) -> None:
    """`auditkeep forward` is SIGKILLed while it waits for a batch's ack; the next forwarder sends that
    batch again from the cursor: every event arrives in order, the batch in flight twice."""
    with hec_receiver(TOKEN, ack_enabled=True, ack_delay=3600.0) as hec:
        ingest(app_client, tenant, 25)
        stream = make_stream(app_client, tenant, hec, made, use_ack=True, ack_timeout_seconds=600)
        settings = storage.settings
        env = {**os.environ, "AUDITKEEP_DATABASE_URL": database_url,
               "AUDITKEEP_SECRETS_KEY_PATH": str(settings.secrets_key_path),
               "AUDITKEEP_SIGNING_KEY_PATH": str(settings.signing_key_path),
               "AUDITKEEP_STREAM_LEASE_SECONDS": "1", "AUDITKEEP_STREAM_POLL_SECONDS": "0.05"}
        proc = subprocess.Popen([Path(sys.executable).parent / "auditkeep", "forward"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            while not any(r.path == "/services/collector/ack" and r.headers.get("x-splunk-request-channel")
                          == stream["id"] for r in hec.requests):
                assert time.monotonic() < deadline and proc.poll() is None, "the forwarder never sent the batch"
                time.sleep(0.05)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        assert show(app_client, tenant, stream["id"])["delivered_seq"] == 0
        hec.index_pending()  # the collector indexed the batch; the forwarder died before it heard so
        hec.ack_delay = 0.0
        drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))
        assert seqs(hec) == [*range(1, 11), *range(1, 27)]
        assert show(app_client, tenant, stream["id"])["delivered_seq"] == 26


def test_time_is_exact_for_each_format() -> None:
    """`time` is written from the timestamp's digits: microseconds kept, before 1970 too, OCSF records
    by their original_time (else their milliseconds), and left out when a record has no time."""
    from auditkeep.streams.sinks.splunk_hec import epoch as hec_time

    assert hec_time({"timestamp": "2024-01-01T00:00:00.123456Z"}) == b"1704067200.123456"
    assert hec_time({"timestamp": "1969-12-31T23:59:55.123456Z"}) == b"-4.876544"
    assert hec_time({"time": 1704067200123, "metadata": {"original_time": "2024-01-01T00:00:00.123789Z"}}) == (
        b"1704067200.123789")
    assert hec_time({"time": 1704067200123}) == b"1704067200.123"
    assert hec_time({"action": "x"}) is None
