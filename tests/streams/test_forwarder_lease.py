"""The forwarder's lease (issue #10): renewed when half of it has run out, not before every batch, since
each renewal is a write transaction (an fsync on SQLite; docs/benchmarks.md, "Streams")."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from auditkeep.storage import Storage
from auditkeep.storage import streams as stream_rows
from auditkeep.storage.tables import streams
from auditkeep.streams.forwarder import Forwarder
from tests.conftest import Tenant
from tests.streams.receivers import WebhookReceiver, webhook_receiver
from tests.streams.test_webhook_streams import ingest, make_stream, seqs, show


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as r:
        yield r


def test_one_lease_write_for_a_turn_of_several_batches(app_client: TestClient, tenant: Tenant, storage: Storage,
                                                       receiver: WebhookReceiver, forwarder: Forwarder,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A backlog of four batches goes out in one turn that takes the lease once, every event in order."""
    takes: list[str] = []
    real_acquire = stream_rows.acquire

    def counted(conn: sa.Connection, stream_id: str, owner: str, now: datetime, ttl: float) -> bool:
        takes.append(stream_id)
        return real_acquire(conn, stream_id, owner, now, ttl)

    monkeypatch.setattr(stream_rows, "acquire", counted)
    ingest(app_client, tenant, 39)
    stream = make_stream(app_client, tenant, receiver, start_seq=1)  # 39 events + stream.create, batches of 10
    assert forwarder.run_once() == 4
    assert takes == [stream["id"]]
    assert seqs(receiver) == list(range(1, 41))
    assert len(receiver.received) == 4
    assert show(app_client, tenant, stream["id"])["delivered_seq"] == 40


def test_a_lease_taken_over_mid_turn_ends_the_turn(app_client: TestClient, tenant: Tenant, storage: Storage,
                                                   receiver: WebhookReceiver, forwarder: Forwarder) -> None:
    """When another forwarder owns the lease by the next batch, this one sends nothing more."""
    ingest(app_client, tenant, 29)
    stream = make_stream(app_client, tenant, receiver, start_seq=1)
    deliver = forwarder._one_batch

    def then_lose_the_lease(row: stream_rows.StreamRow) -> int | None:
        outcome = deliver(row)
        with storage.write() as conn:
            conn.execute(sa.update(streams).where(streams.c.id == row.id).values(lease_owner="another-forwarder"))
        return outcome

    forwarder._one_batch = then_lose_the_lease  # type: ignore[method-assign]
    assert forwarder.run_once() == 1
    assert seqs(receiver) == list(range(1, 11))
    assert show(app_client, tenant, stream["id"])["delivered_seq"] == 10
