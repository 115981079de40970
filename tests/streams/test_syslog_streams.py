"""Streams to syslog (issue #10) against Debian's rsyslogd started by the test: RFC 5424 messages with the
seq and event_uuid in structured data, octet-counted over TCP or TLS, delivered at least once and in seq
order through a receiver restart, a forwarder killed mid-stream, an oversized event, pauses and replays."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from auditkeep.storage import Storage
from auditkeep.streams.forwarder import FAILING_AFTER, Forwarder
from auditkeep.streams.sinks.syslog import message, sd_escape
from tests.conftest import Tenant, make_tenant
from tests.streams.rsyslog import Rsyslog, make_pki, rsyslog
from tests.streams.test_webhook_streams import drain, ingest, show

LOGS = "/api/v1/audit_logs"
STREAMS = "/api/v1/streams"
LOG_AUDIT = 13  # the default facility
_HEADER = re.compile(r"<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) ")
_SD_ELEMENT = re.compile(r'\[([!-~]+?)((?: [^= \]"]+="(?:[^"\\\]]|\\["\\\]])*")*)\]')
_SD_PARAM = re.compile(r' ([^= \]"]+)="((?:[^"\\\]]|\\["\\\]])*)"')


def parse_5424(raw: str) -> dict[str, Any]:
    """A strict RFC 5424 reading of one message: header, structured data (unescaped) and MSG."""
    head = _HEADER.match(raw)
    assert head, raw[:200]
    pri, stamp, hostname, app_name, procid, msgid = head.groups()
    rest = raw[head.end():]
    sd: dict[str, dict[str, str]] = {}
    while rest.startswith("["):
        element = _SD_ELEMENT.match(rest)
        assert element, rest[:200]
        sd[element.group(1)] = {name: re.sub(r'\\(["\\\]])', r"\1", value)
                                for name, value in _SD_PARAM.findall(element.group(2))}
        rest = rest[element.end():]
    assert rest.startswith(" "), rest[:200]
    return {"pri": int(pri), "timestamp": stamp, "hostname": hostname, "app_name": app_name, "procid": procid,
            "msgid": msgid, "sd": sd, "msg": rest[1:]}


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Rsyslog]:
    with rsyslog(tmp_path / "rsyslog") as r:
        yield r


@pytest.fixture
def made(app_client: TestClient) -> Iterator[list[tuple[Tenant, str]]]:
    """Streams a test made, deleted afterwards so no later test's forwarder sends to their ports."""
    streams: list[tuple[Tenant, str]] = []
    yield streams
    for tenant, stream_id in streams:
        app_client.delete(f"{STREAMS}/{stream_id}", headers=tenant.headers)


def make_stream(client: TestClient, tenant: Tenant, receiver: Rsyslog, made: list[tuple[Tenant, str]],
                start_seq: int | None = 1, **config: Any) -> dict[str, Any]:
    body = {"name": f"syslog-{len(made)}", "kind": "syslog", "start_seq": start_seq,
            "config": {"host": "127.0.0.1", "port": receiver.port, "batch_size": 10, **config}}
    r = client.post(STREAMS, json=body, headers=tenant.headers)
    assert r.status_code == 201, r.text
    stream: dict[str, Any] = r.json()
    made.append((tenant, stream["id"]))
    return stream


def caught_up(client: TestClient, tenant: Tenant, stream_id: str) -> bool:
    return bool(show(client, tenant, stream_id)["lag_events"] == 0)


def received(receiver: Rsyslog, n: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    """The first `n` messages rsyslog wrote (waiting for them), each read as RFC 5424, and no more."""
    deadline = time.monotonic() + timeout
    while len(lines := receiver.received()) < n:
        assert time.monotonic() < deadline, f"rsyslog wrote {len(lines)} of {n}: {receiver.diagnostics()}"
        time.sleep(0.05)
    time.sleep(0.2)
    lines = receiver.received()
    assert len(lines) == n, [line["raw"][:120] for line in lines[n:]]
    return [{**parse_5424(line["raw"]), "rsyslog": line} for line in lines]


def settled(receiver: Rsyslog) -> int:
    """How many messages rsyslog wrote once it stopped writing (after a sender died)."""
    count = -1
    while count != len(receiver.received()):
        count = len(receiver.received())
        time.sleep(0.5)
    return count


def seqs(messages: list[dict[str, Any]]) -> list[int]:
    return [int(m["sd"]["auditkeep@32473"]["seq"]) for m in messages]


def test_config_is_validated_and_shown_whole(app_client: TestClient, tenant: Tenant, receiver: Rsyslog,
                                             made: list[tuple[Tenant, str]]) -> None:
    stream = make_stream(app_client, tenant, receiver, made)
    assert stream["kind"] == "syslog" and stream["secrets_set"] == []
    assert stream["config"] == {"host": "127.0.0.1", "port": receiver.port, "tls": False, "ca": None,
                                "facility": 13, "hostname": None, "app_name": "auditkeep",
                                "max_message_bytes": 8192, "batch_size": 10, "timeout_seconds": 10.0}
    cases = [({"port": 0}, ["body", "config", "port"]), ({"host": "a host"}, ["body", "config", "host"]),
             ({"facility": 24}, ["body", "config", "facility"]),
             ({"app_name": "two words"}, ["body", "config", "app_name"]),
             ({"max_message_bytes": 100}, ["body", "config", "max_message_bytes"]),
             ({"url": "tcp://x"}, ["body", "config", "url"]),
             ({"ca": "-----BEGIN CERTIFICATE-----"}, ["body", "config"])]
    for bad, loc in cases:
        config = {"host": "127.0.0.1", "port": receiver.port, **bad}
        r = app_client.post(STREAMS, json={"name": "x", "kind": "syslog", "config": config}, headers=tenant.headers)
        assert r.status_code == 422 and [e["loc"] for e in r.json()["detail"]] == [loc], r.text
    assert "ca is for tls: set tls to true" in r.text


def test_backfill_then_live_tail_as_rfc5424(app_client: TestClient, tenant: Tenant, receiver: Rsyslog,
                                            forwarder: Forwarder, made: list[tuple[Tenant, str]]) -> None:
    """Each event is one RFC 5424 message that rsyslog parses: PRI from facility and status, the event's
    timestamp, its action as MSGID, seq/event_uuid/org in structured data, the record as MSG."""
    first = ingest(app_client, tenant, 24)
    denied = app_client.post(LOGS, json={"client_ip": "192.0.2.9", "url": "https://app.test/x",
                                         "action": "user.login", "status": "denied"}, headers=tenant.headers)
    assert denied.status_code == 201
    stream = make_stream(app_client, tenant, receiver, made, hostname="auditkeep-test")
    drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))
    later = ingest(app_client, tenant, 7, start=24)
    drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))
    messages = received(receiver, 33)  # 25 events, stream.create, 7 more
    assert seqs(messages) == list(range(1, 34))
    logs = app_client.get(LOGS, params={"include": "integrity"}, headers=tenant.headers).json()["logs"]
    by_seq = {log["seq"]: log for log in logs}
    for m in messages:
        record = orjson.loads(m["msg"])
        log = by_seq[record["seq"]]
        assert record == log
        assert m["sd"] == {"auditkeep@32473": {"seq": str(log["seq"]), "event_uuid": log["event_uuid"],
                                               "org": tenant.org.name}}
        failed = log["status"] == "denied"
        assert m["pri"] == LOG_AUDIT * 8 + (4 if failed else 6)
        assert (m["timestamp"], m["hostname"], m["app_name"], m["procid"], m["msgid"]) == (
            log["timestamp"], "auditkeep-test", "auditkeep", str(os.getpid()), log["action"])
        # rsyslog's own RFC 5424 parser read the same fields.
        parsed = m["rsyslog"]
        assert parsed["protocol_version"] == "1" and int(parsed["pri"]) == m["pri"]
        assert (parsed["timestamp"], parsed["hostname"], parsed["msgid"]) == (log["timestamp"], "auditkeep-test",
                                                                           log["action"])
        assert parsed["structured_data"] == (f'[auditkeep@32473 seq="{log["seq"]}" event_uuid="{log["event_uuid"]}" '
                                             f'org="{tenant.org.name}"]')
    uuids = [orjson.loads(m["msg"])["event_uuid"] for m in messages]
    assert uuids[:24] == first and uuids[-7:] == later
    assert [m["pri"] for m in messages].count(LOG_AUDIT * 8 + 4) == 1
    view = show(app_client, tenant, stream["id"])
    assert view["delivered_seq"] == 33 and view["failures"] == 0 and view["last_error"] is None


def test_receiver_down_for_a_while_then_back_loses_nothing(app_client: TestClient, tenant: Tenant,
                                                           receiver: Rsyslog, forwarder: Forwarder,
                                                           made: list[tuple[Tenant, str]]) -> None:
    """rsyslog stops: the dead connection is noticed before the next batch is written, the stream turns
    failing; restarted on the same port, every event arrives once, in order."""
    ingest(app_client, tenant, 12)
    stream = make_stream(app_client, tenant, receiver, made)
    drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))
    received(receiver, 13)
    receiver.stop()
    ingest(app_client, tenant, 20, start=12)
    drain(forwarder, lambda: show(app_client, tenant, stream["id"])["failures"] >= FAILING_AFTER)
    failing = show(app_client, tenant, stream["id"])
    assert failing["state"] == "failing" and failing["delivered_seq"] == 13
    assert f"tcp://127.0.0.1:{receiver.port}: cannot connect: ConnectionRefusedError" in failing["last_error"]
    receiver.start()
    drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))
    assert seqs(received(receiver, 33)) == list(range(1, 34))
    view = show(app_client, tenant, stream["id"])
    assert view["state"] == "active" and view["failures"] == 0 and view["last_error"] is None


def test_tls_verifies_the_receiver_against_the_streams_ca(app_client: TestClient, tenant: Tenant, tmp_path: Path,
                                                          forwarder: Forwarder,
                                                          made: list[tuple[Tenant, str]]) -> None:
    """Over TLS the receiver's certificate must chain to `ca` (PEM text or a file): the right CA delivers,
    another CA fails the stream with a clear last_error and sends nothing."""
    with rsyslog(tmp_path / "tls", tls=True) as receiver:
        assert receiver.pki is not None
        ingest(app_client, tenant, 12)
        good = make_stream(app_client, tenant, receiver, made, tls=True, ca=receiver.pki.ca_pem)
        stranger = make_pki(tmp_path / "other", name="some other CA")
        bad = make_stream(app_client, tenant, receiver, made, tls=True, ca=stranger.ca_pem)
        drain(forwarder, lambda: caught_up(app_client, tenant, good["id"])
              and show(app_client, tenant, bad["id"])["failures"] >= FAILING_AFTER)
        assert seqs(received(receiver, 14)) == list(range(1, 15))  # 12 events and the two stream.create
        view = show(app_client, tenant, bad["id"])
        assert view["state"] == "failing" and view["delivered_seq"] == 0
        assert view["last_error"] == (f"tls://127.0.0.1:{receiver.port}: TLS: the receiver's certificate is not "
                                      "trusted (unable to get local issuer certificate): check the stream's ca "
                                      "and host")
        by_file = make_stream(app_client, tenant, receiver, made, start_seq=None, tls=True,
                              ca=str(receiver.pki.ca_path))
        r = app_client.post(f"{STREAMS}/{by_file['id']}/test", headers=tenant.headers)
        assert r.json() == {"delivered": True, "error": None}
        (test,) = received(receiver, 15)[14:]
        assert test["sd"]["auditkeep@32473"]["test"] == "true" and "seq" not in test["sd"]["auditkeep@32473"]
        assert orjson.loads(test["msg"])["action"] == "auditkeep.stream_test"


def test_forwarder_killed_mid_stream_loses_nothing(app_client: TestClient, tenant: Tenant, storage: Storage,
                                                   database_url: str, receiver: Rsyslog, forwarder: Forwarder,
                                                   made: list[tuple[Tenant, str]]) -> None:
    """`auditkeep forward` is SIGKILLed while it streams a backlog; the next forwarder resumes from the
    cursor: every event arrives, in order, and the only duplicates are those written after the cursor's
    last move."""
    total = 3000
    ingest(app_client, tenant, total)
    stream = make_stream(app_client, tenant, receiver, made, batch_size=50)
    settings = storage.settings
    env = {**os.environ, "AUDITKEEP_DATABASE_URL": database_url,
           "AUDITKEEP_SECRETS_KEY_PATH": str(settings.secrets_key_path),
           "AUDITKEEP_SIGNING_KEY_PATH": str(settings.signing_key_path),
           "AUDITKEEP_STREAM_LEASE_SECONDS": "1", "AUDITKEEP_STREAM_POLL_SECONDS": "0.05"}
    proc = subprocess.Popen([Path(sys.executable).parent / "auditkeep", "forward"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(receiver.received()) < 500:
            assert time.monotonic() < deadline and proc.poll() is None, "the forwarder never got going"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    cursor = show(app_client, tenant, stream["id"])["delivered_seq"]
    before = seqs(received(receiver, settled(receiver)))
    assert before == list(range(1, len(before) + 1)) and cursor <= len(before) < total + 1
    drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]), timeout=120)
    after = seqs(received(receiver, len(before) + total + 1 - cursor))
    assert after == [*before, *range(cursor + 1, total + 2)]
    assert len(after) - len(set(after)) == len(before) - cursor  # the duplicates, counted


def test_an_event_too_long_for_the_receiver_parks_the_stream(app_client: TestClient, tenant: Tenant,
                                                             receiver: Rsyslog, forwarder: Forwarder,
                                                             made: list[tuple[Tenant, str]]) -> None:
    """A message over max_message_bytes would be truncated by the receiver: the stream parks at it,
    naming it, rather than send part of it."""
    uuids = ingest(app_client, tenant, 6)
    big = app_client.post(LOGS, json={"client_ip": "192.0.2.1", "url": "https://app.test/big",
                                      "action": "report.export", "log_entry": "x" * 9000}, headers=tenant.headers)
    uuids += big.json()["event_uuids"] + ingest(app_client, tenant, 5, start=7)
    stream = make_stream(app_client, tenant, receiver, made)
    drain(forwarder, lambda: show(app_client, tenant, stream["id"])["state"] == "paused")
    view = show(app_client, tenant, stream["id"])
    assert view["delivered_seq"] == 6
    assert f"refused seq 7 (event_uuid {uuids[6]})" in view["last_error"]
    assert "over max_message_bytes (8192)" in view["last_error"] and "replay from 8" in view["last_error"]
    assert seqs(received(receiver, 6)) == [1, 2, 3, 4, 5, 6]
    r = app_client.patch(f"{STREAMS}/{stream['id']}", json={"replay_from_seq": 8, "state": "active"},
                         headers=tenant.headers)
    assert r.status_code == 200 and r.json()["delivered_seq"] == 7
    drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))
    assert seqs(received(receiver, 13)) == [1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14]


def test_pause_resume_and_replay(app_client: TestClient, tenant: Tenant, receiver: Rsyslog, forwarder: Forwarder,
                                 made: list[tuple[Tenant, str]]) -> None:
    ingest(app_client, tenant, 5)
    stream = make_stream(app_client, tenant, receiver, made)
    url = f"{STREAMS}/{stream['id']}"
    assert app_client.patch(url, json={"state": "paused"}, headers=tenant.headers).json()["state"] == "paused"
    forwarder.run_once()
    time.sleep(0.3)
    assert receiver.received() == []
    assert app_client.patch(url, json={"state": "active"}, headers=tenant.headers).status_code == 200
    drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))
    assert seqs(received(receiver, 8)) == list(range(1, 9))  # 5 events, stream.create, two stream.update
    r = app_client.patch(url, json={"replay_from_seq": 3}, headers=tenant.headers)
    assert r.status_code == 200 and r.json()["delivered_seq"] == 2
    drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))
    assert seqs(received(receiver, 15)) == [*range(1, 9), *range(3, 10)]  # the replay's stream.update is 9


def test_a_stream_sees_only_its_organization(app_client: TestClient, tenant: Tenant, storage: Storage,
                                             receiver: Rsyslog, forwarder: Forwarder,
                                             made: list[tuple[Tenant, str]]) -> None:
    other = make_tenant(storage)
    theirs = set(ingest(app_client, other, 10))
    ingest(app_client, tenant, 3)
    stream = make_stream(app_client, tenant, receiver, made)
    drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))
    messages = received(receiver, 4)
    assert seqs(messages) == [1, 2, 3, 4]
    assert not theirs & {m["sd"]["auditkeep@32473"]["event_uuid"] for m in messages}
    assert {m["sd"]["auditkeep@32473"]["org"] for m in messages} == {tenant.org.name}
    assert {m["hostname"] for m in messages} == {socket.gethostname()}
    assert app_client.get(f"{STREAMS}/{stream['id']}", headers=other.headers).status_code == 404


def test_message_escapes_structured_data_and_reads_ocsf_records() -> None:
    """SD values escape `"`, `\\` and `]` (RFC 5424 §6.3.3); an OCSF record gives its original_time, its
    event_code as MSGID and a Warning for status_id 2; a MSGID over 32 characters becomes NILVALUE."""
    assert sd_escape('a"b\\c]d') == 'a\\"b\\\\c\\]d'
    ocsf = {"status_id": 2, "time": 1704067200123,
            "metadata": {"original_time": "2024-01-01T00:00:00.123456Z", "event_code": "user.login"}}
    raw = message(orjson.dumps(ocsf).decode(), ocsf, facility=4, hostname="h", app_name="a", procid="1", seq=5,
                  event_uuid="u", org='ac"me]')
    assert raw == (b'<36>1 2024-01-01T00:00:00.123456Z h a 1 user.login '
                   b'[auditkeep@32473 seq="5" event_uuid="u" org="ac\\"me\\]"] ' + orjson.dumps(ocsf))
    assert parse_5424(raw.decode())["sd"]["auditkeep@32473"]["org"] == 'ac"me]'
    long = {"action": "a" * 33, "status": "success"}
    assert message("{}", long, facility=13, hostname="h", app_name="a", procid="1", seq=1, event_uuid="u",
                   org="o").startswith(b"<110>1 - h a 1 - [")
