"""ingest.service.record_events: the optimistic insert (no uuid lookup for new events) keeps idempotency,
409s and the chain exact, on both backends."""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from auditkeep.errors import ConflictError
from auditkeep.ingest.service import SALT_BYTES, _chain, _prepare, record_batch, record_events
from auditkeep.ingest.validation import NewEvent, parse_events
from auditkeep.ingest.verification import verify_org
from auditkeep.storage import Storage, tables
from auditkeep.storage.events import get_head, iter_chain
from auditkeep.storage.types import format_timestamp
from tests.conftest import Tenant


def _events(*events: dict[str, Any]) -> list[NewEvent]:
    body = [{"client_ip": "192.0.2.1", "url": "https://app.test/x", **e} for e in events]
    return parse_events(orjson.dumps(body), datetime.now(UTC))


def _stored(storage: Storage, tenant: Tenant) -> list[dict[str, Any]]:
    return [e for e in iter_chain(storage, tenant.org.id) if e["action"] is not None
            and e["action"].startswith("t.")]


def test_batch_of_new_events_with_client_uuids_is_stored_in_order(storage: Storage, tenant: Tenant) -> None:
    uuids = [str(uuid.uuid4()) for _ in range(5)]
    assert record_events(storage, tenant.org.id, _events(*({"event_uuid": u, "action": "t.new"} for u in uuids))) \
        == uuids
    assert [e["event_uuid"] for e in _stored(storage, tenant)] == uuids


def test_retry_mixing_stored_and_new_uuids_stores_only_the_new_ones_contiguously(
    storage: Storage, tenant: Tenant
) -> None:
    """The optimistic insert is refused by the unique index, rolled back, and the batch is deduplicated."""
    old = [str(uuid.uuid4()) for _ in range(3)]
    new = [str(uuid.uuid4()) for _ in range(3)]
    record_events(storage, tenant.org.id, _events(*({"event_uuid": u, "action": "t.x"} for u in old)))
    head = get_head(storage, tenant.org.id)
    mixed = [new[0], old[0], new[1], old[2], new[2]]
    assert record_events(storage, tenant.org.id, _events(*({"event_uuid": u, "action": "t.x"} for u in mixed))) \
        == mixed
    stored = _stored(storage, tenant)
    assert [e["event_uuid"] for e in stored] == [*old, new[0], new[1], new[2]]
    assert [e["seq"] for e in stored[3:]] == [head.seq + 1, head.seq + 2, head.seq + 3]
    assert get_head(storage, tenant.org.id).seq == head.seq + 3
    assert verify_org(storage, tenant.org.id).ok


def test_whole_batch_retried_stores_nothing_and_leaves_the_head(storage: Storage, tenant: Tenant) -> None:
    uuids = [str(uuid.uuid4()) for _ in range(4)]
    events = [{"event_uuid": u, "action": "t.retry", "timestamp": "2024-05-01T00:00:00Z"} for u in uuids]
    record_events(storage, tenant.org.id, _events(*events))
    head = get_head(storage, tenant.org.id)
    assert record_events(storage, tenant.org.id, _events(*events)) == uuids
    assert get_head(storage, tenant.org.id) == head
    assert len(_stored(storage, tenant)) == 4


def test_conflicting_retry_is_409_after_the_optimistic_insert_and_stores_nothing(
    storage: Storage, tenant: Tenant
) -> None:
    u = str(uuid.uuid4())
    record_events(storage, tenant.org.id, _events({"event_uuid": u, "action": "t.first"}))
    head = get_head(storage, tenant.org.id)
    with pytest.raises(ConflictError, match="index 1"):
        record_events(storage, tenant.org.id,
                      _events({"event_uuid": str(uuid.uuid4()), "action": "t.new"}, {"event_uuid": u, "action": "t.2"}))
    assert get_head(storage, tenant.org.id) == head
    assert [e["action"] for e in _stored(storage, tenant)] == ["t.first"]


def test_chain_over_server_and_client_uuids_verifies(storage: Storage, tenant: Tenant) -> None:
    """Canonical bytes are cut around seq before the lock; the stored chain is still the reference one."""
    record_events(storage, tenant.org.id, _events(
        {"action": "t.a", "payload": {"é": 1.5, "n": [1, {"k": None}]}},
        {"action": "t.b", "event_uuid": str(uuid.uuid4()), "payload": {"x": "y"}, "object_id": 2**53 - 1},
        {"action": "t.c", "log_entry": "multi\nline \"quoted\" ✓"},
    ))
    assert verify_org(storage, tenant.org.id).ok


def test_retry_compares_payloads_by_value(storage: Storage, tenant: Tenant) -> None:
    """The same payload in another key order is the same event; another value is a 409."""
    u = str(uuid.uuid4())
    record_events(storage, tenant.org.id, _events({"event_uuid": u, "action": "t.p", "payload": {"b": 1.5, "é": [1]}}))
    same = _events({"event_uuid": u, "action": "t.p", "payload": {"é": [1], "b": 1.5}})
    assert record_events(storage, tenant.org.id, same) == [u]
    with pytest.raises(ConflictError):
        record_events(storage, tenant.org.id, _events({"event_uuid": u, "action": "t.p", "payload": {"b": 2}}))
    assert len(_stored(storage, tenant)) == 1


def test_a_writer_that_waited_for_the_head_lock_stamps_no_earlier_than_the_head(
    storage: Storage, tenant: Tenant
) -> None:
    """The head moves while a second writer waits for its lock (on PostgreSQL its lock statement's snapshot
    then lacks the new head event, and the writer reads it again): its event still gets received_at no
    earlier than the head's, though its own clock says earlier."""
    org_id = tenant.org.id
    later, earlier = datetime(2030, 1, 2, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC)
    ts_param = storage.backend.ts_param
    done: list[object] = []
    with storage.event_writer(org_id) as writer:
        waiter = threading.Thread(target=lambda: done.append(
            record_batch(storage, org_id, _events({"action": "t.waited"}), received_at=earlier)))
        waiter.start()
        if storage.dialect == "postgresql":
            xid = writer.conn.exec_driver_sql("SELECT pg_current_xact_id()::text::bigint").scalar_one()
            while not writer.conn.exec_driver_sql(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid' "
                "AND transactionid::text::bigint = %s", (xid,)).scalar_one():
                time.sleep(0.01)
        else:
            time.sleep(0.3)  # SQLite: the waiter retries BEGIN IMMEDIATE until this commits
        rows, head = _chain(org_id, writer.head, [_prepare(e, ts_param(format_timestamp(later)), ts_param,
                                                           os.urandom(SALT_BYTES))
                                                  for e in _events({"action": "t.head"})])
        writer.insert(rows)
        writer.set_head(head)
    waiter.join(30)
    assert len(done) == 1
    with storage.read() as conn:
        stamps = conn.execute(sa.select(tables.events.c.seq, tables.events.c.received_at)
                              .where(tables.events.c.org_id == org_id).order_by(tables.events.c.seq)).all()
    assert [tuple(row) for row in stamps] == [(1, later), (2, later)]
