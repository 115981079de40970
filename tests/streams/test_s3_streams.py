"""Streams to S3 (issue #10), against moto's S3 server on a free port: one gzip NDJSON object per batch
with a manifest proving it (SHA-256, a signed checkpoint covering it), through an outage, a crash between
ack and cursor, pauses and replays; the objects together verify as an export."""

from __future__ import annotations

import gzip
import hashlib
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import orjson
import pytest
from fastapi.testclient import TestClient
from moto.server import ThreadedMotoServer

from auditkeep.integrity.checkpoints import Checkpoint, load_public_key, verify_checkpoint
from auditkeep.integrity.export import verify_export
from auditkeep.storage import Storage
from auditkeep.streams import forwarder as forwarder_module
from auditkeep.streams.forwarder import FAILING_AFTER, Forwarder
from auditkeep.streams.sinks import Sink
from tests.conftest import Tenant, make_tenant
from tests.streams.brokers import Crash, CrashAfterAck, Relay, free_port
from tests.streams.test_webhook_streams import STREAMS, drain, ingest, show

KEYS = {"access_key_id": "AKIDAUDITKEEPTEST", "secret_access_key": "s3cret-access-key-for-moto"}


@pytest.fixture(scope="module")
def moto_port() -> Iterator[int]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield port
    server.stop()


@pytest.fixture
def bucket(moto_port: int) -> str:
    name = f"auditkeep-{int(time.time() * 1e6)}"
    s3(moto_port).create_bucket(Bucket=name)
    return name


def s3(port: int) -> Any:
    return boto3.session.Session().client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                                          aws_access_key_id=KEYS["access_key_id"],
                                          aws_secret_access_key=KEYS["secret_access_key"])


@pytest.fixture(autouse=True)
def _delete_streams(app_client: TestClient, tenant: Tenant) -> Iterator[None]:
    """The test's streams go with it, so later tests' forwarders do not keep trying dead endpoints."""
    yield
    for stream in app_client.get(STREAMS, headers=tenant.headers).json()["streams"]:
        app_client.delete(f"{STREAMS}/{stream['id']}", headers=tenant.headers)


def new_forwarder(storage: Storage, **settings: Any) -> Forwarder:
    fw = Forwarder(storage, storage.settings.model_copy(update=settings))
    fw.backoff_first = 0.01
    return fw


def make_stream(client: TestClient, tenant: Tenant, port: int, bucket: str, **extra: Any) -> dict[str, Any]:
    config = {"endpoint_url": f"http://127.0.0.1:{port}", "bucket": bucket, "prefix": "/audit/",
              "region": "us-east-1", "batch_size": extra.pop("batch_size", 10), "timeout_seconds": 2, **KEYS}
    r = client.post(STREAMS, json={"name": "archive", "kind": "s3", "config": config, **extra}, headers=tenant.headers)
    assert r.status_code == 201, r.text
    stream: dict[str, Any] = r.json()
    return stream


def caught_up(client: TestClient, tenant: Tenant, stream_id: str) -> bool:
    return bool(show(client, tenant, stream_id)["lag_events"] == 0)


def archive(port: int, bucket: str) -> list[tuple[str, dict[str, Any], list[dict[str, Any]]]]:
    """(key, manifest, events) of every object, by first seq; each object's SHA-256, size, count and seq
    range checked against its manifest, and no manifest without its object or object without manifest."""
    client = s3(port)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    objects = sorted(k for k in keys if k.endswith(".ndjson.gz"))
    assert sorted(k for k in keys if k.endswith(".manifest.json")) == sorted(
        k.removesuffix(".ndjson.gz") + ".manifest.json" for k in objects)
    found = []
    for key in objects:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        manifest = orjson.loads(client.get_object(Bucket=bucket, Key=key.removesuffix(".ndjson.gz")
                                                  + ".manifest.json")["Body"].read())
        events = [orjson.loads(line) for line in gzip.decompress(body).splitlines()]
        assert manifest["object"] == key and manifest["sha256"] == hashlib.sha256(body).hexdigest()
        assert manifest["bytes"] == len(body) and manifest["count"] == len(events)
        assert [manifest["first_seq"], manifest["last_seq"]] == [events[0]["seq"], events[-1]["seq"]]
        assert key.endswith(f"/{manifest['first_seq']}-{manifest['last_seq']}.ndjson.gz")
        found.append((key, manifest, events))
    return sorted(found, key=lambda f: f[1]["first_seq"])


def test_backfill_and_live_tail_make_proven_objects(app_client: TestClient, tenant: Tenant, port_bucket: Any,
                                                    forwarder: Forwarder) -> None:
    """Every object's SHA-256 matches its manifest, whose checkpoint covers it and verifies with the server's
    public key; concatenated, the objects verify as a complete export against the last checkpoint."""
    port, bucket = port_bucket
    ingest(app_client, tenant, 25)
    stream = make_stream(app_client, tenant, port, bucket, start_seq=1)
    assert stream["config"]["prefix"] == "audit" and stream["secrets_set"] == ["access_key_id", "secret_access_key"]
    assert KEYS["secret_access_key"] not in app_client.get(STREAMS, headers=tenant.headers).text
    drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))
    ingest(app_client, tenant, 7, start=25)
    drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))

    key = load_public_key(app_client.get("/api/v1/integrity/public_key", headers=tenant.headers).content)
    objects = archive(port, bucket)
    today = datetime.now(UTC)
    for name, manifest, _ in objects:
        assert name.startswith(f"audit/{tenant.org.name}/{today:%Y}/{today:%m}/{today:%d}/")
        checkpoint = Checkpoint.model_validate(manifest["checkpoint"])
        assert verify_checkpoint(checkpoint, key) and checkpoint.org == tenant.org.name
        assert checkpoint.tree_size >= manifest["last_seq"]
    events = [e for _, _, found in objects for e in found]
    delivered = show(app_client, tenant, stream["id"])["delivered_seq"]
    assert [e["seq"] for e in events] == list(range(1, delivered + 1))
    last = Checkpoint.model_validate(objects[-1][1]["checkpoint"])
    assert last.tree_size == delivered
    report = verify_export(events, public_key=key, checkpoint=last, complete=True)
    assert report.exit_code == 0 and report.root_checked, report.reason


@pytest.fixture
def port_bucket(moto_port: int, bucket: str) -> tuple[int, str]:
    return moto_port, bucket


def test_store_down_for_a_while_then_back_loses_nothing(app_client: TestClient, tenant: Tenant,
                                                        port_bucket: Any, forwarder: Forwarder) -> None:
    port, bucket = port_bucket
    relay = Relay(port)
    try:
        ingest(app_client, tenant, 15)
        stream = make_stream(app_client, tenant, relay.port, bucket, start_seq=1)
        forwarder.run_once()
        relay.down()
        ingest(app_client, tenant, 20, start=15)
        drain(forwarder, lambda: show(app_client, tenant, stream["id"])["failures"] >= FAILING_AFTER)
        failing = show(app_client, tenant, stream["id"])
        assert failing["state"] == "failing" and f"s3://{bucket}/audit/" in failing["last_error"]
        relay.up()
        drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))
    finally:
        relay.down()
    events = [e for _, _, found in archive(port, bucket) for e in found]
    assert [e["seq"] for e in events] == list(range(1, show(app_client, tenant, stream["id"])["delivered_seq"] + 1))
    view = show(app_client, tenant, stream["id"])
    assert view["state"] == "active" and view["failures"] == 0 and view["last_error"] is None


def test_crash_between_ack_and_cursor_rewrites_the_same_object(
        app_client: TestClient, tenant: Tenant, storage: Storage, port_bucket: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch written before the crash is written again after it, under the same key with the same
    bytes: nothing missing, and no duplicate in the bucket."""
    port, bucket = port_bucket
    ingest(app_client, tenant, 30)
    stream = make_stream(app_client, tenant, port, bucket, start_seq=1)
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
    assert crashed.seqs == list(range(1, 11))
    (before,) = archive(port, bucket)
    time.sleep(1.1)
    second = new_forwarder(storage)
    try:
        drain(second, lambda: caught_up(app_client, tenant, stream["id"]))
    finally:
        second.stop()
    objects = archive(port, bucket)
    assert objects[0][0] == before[0] and objects[0][1]["sha256"] == before[1]["sha256"]
    assert [e["seq"] for _, _, found in objects for e in found] == list(range(1, 32))


def test_pause_resume_and_replay(app_client: TestClient, tenant: Tenant, port_bucket: Any,
                                 forwarder: Forwarder) -> None:
    port, bucket = port_bucket
    ingest(app_client, tenant, 5)
    stream = make_stream(app_client, tenant, port, bucket, start_seq=1)
    url = f"{STREAMS}/{stream['id']}"
    assert app_client.patch(url, json={"state": "paused"}, headers=tenant.headers).json()["state"] == "paused"
    forwarder.run_once()
    assert archive(port, bucket) == []
    assert app_client.patch(url, json={"state": "active"}, headers=tenant.headers).status_code == 200
    drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))
    (first,) = archive(port, bucket)
    assert first[1]["first_seq"] == 1
    r = app_client.patch(url, json={"replay_from_seq": 2}, headers=tenant.headers)
    assert r.status_code == 200 and r.json()["delivered_seq"] == 1
    drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))
    objects = archive(port, bucket)
    assert objects[0] == first and len(objects) == 2
    replayed = objects[1][1]
    assert replayed["first_seq"] == 2
    assert replayed["last_seq"] == show(app_client, tenant, stream["id"])["delivered_seq"]


def test_a_stream_sees_only_its_organization(app_client: TestClient, tenant: Tenant, storage: Storage,
                                             port_bucket: Any, forwarder: Forwarder) -> None:
    port, bucket = port_bucket
    other = make_tenant(storage)
    theirs = set(ingest(app_client, other, 10))
    ingest(app_client, tenant, 3)
    stream = make_stream(app_client, tenant, port, bucket, start_seq=1)
    drain(forwarder, lambda: caught_up(app_client, tenant, stream["id"]))
    objects = archive(port, bucket)
    assert all(name.startswith(f"audit/{tenant.org.name}/") for name, _, _ in objects)
    events = [e for _, _, found in objects for e in found]
    assert [e["seq"] for e in events] == [1, 2, 3, 4] and not theirs & {e["event_uuid"] for e in events}
    assert app_client.get(f"{STREAMS}/{stream['id']}", headers=other.headers).status_code == 404


def test_without_boto3_the_stream_names_the_extra(app_client: TestClient, tenant: Tenant, port_bucket: Any,
                                                  forwarder: Forwarder, monkeypatch: pytest.MonkeyPatch) -> None:
    port, bucket = port_bucket
    monkeypatch.setitem(sys.modules, "boto3", None)  # what `import boto3` meets when it is not installed
    stream = make_stream(app_client, tenant, port, bucket, start_seq=1)
    drain(forwarder, lambda: show(app_client, tenant, stream["id"])["failures"] >= 1)
    assert "pip install 'auditkeep[s3]'" in show(app_client, tenant, stream["id"])["last_error"]
    r = app_client.post(f"{STREAMS}/{stream['id']}/test", headers=tenant.headers)
    assert r.json() == {"delivered": False, "error": "the s3 stream kind needs boto3: pip install 'auditkeep[s3]'"}
