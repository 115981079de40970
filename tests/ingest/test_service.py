"""ingest.service.record_events: the optimistic insert (no uuid lookup for new events) keeps idempotency,
409s and the chain exact, on both backends."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from auditkeep.errors import ConflictError
from auditkeep.ingest.service import record_events
from auditkeep.ingest.validation import NewEvent, parse_events
from auditkeep.ingest.verification import verify_org
from auditkeep.storage import Storage
from auditkeep.storage.events import get_head, iter_chain
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
