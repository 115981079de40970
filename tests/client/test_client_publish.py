"""publish: uuids before the first attempt, batching, retries that never duplicate."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import UTC, datetime
from types import MappingProxyType

import httpx
import pytest
from sdk_fakes import SOURCE, Backend, FakeAuditServer, Flaky, NoWait, make_event

from auditkeep.client import ConflictError, PayloadTooLargeError, TransportError


def stored_uuids(backend: Backend) -> Counter[str]:
    """How many times each event_uuid is stored, read back through the SDK."""
    with backend.client() as client:
        return Counter(log["event_uuid"] for log in client.iter_audit_logs(page_size=500, source=SOURCE))


def test_a_transiently_failing_service_stores_each_event_exactly_once(backend: Backend) -> None:
    """Connection refused, then 503, then an answer lost after the service stored the batch: no duplicates."""
    events = [make_event(n) for n in range(5)]
    flaky = Flaky(backend.make_transport(), "connect", 503, "lost")
    with backend.client(transport=flaky) as client:
        uuids = client.publish(events)
    assert len(flaky.seen) == 4
    sent = [[e["event_uuid"] for e in json.loads(r.content)] for r in flaky.seen]
    assert all(attempt == sent[0] for attempt in sent)  # every attempt carried the same uuids
    assert uuids == sent[0]
    assert stored_uuids(backend) == Counter(uuids)


def test_uuids_are_assigned_before_the_first_attempt_and_written_into_the_events(backend: Backend) -> None:
    events = [make_event(1), make_event(2, event_uuid="0b7c6a8e-1d2f-4c3b-9a8e-7f6d5c4b3a21")]
    flaky = Flaky(backend.make_transport(), "connect")
    with backend.client(transport=flaky) as client:
        uuids = client.publish(events)
    first_attempt = [e["event_uuid"] for e in json.loads(flaky.seen[0].content)]
    assert first_attempt == [events[0]["event_uuid"], "0b7c6a8e-1d2f-4c3b-9a8e-7f6d5c4b3a21"]
    assert uuids == first_attempt
    assert uuid.UUID(events[0]["event_uuid"]).version == 7  # time-ordered (auditkeep/ids.py)


def test_publishing_the_same_list_again_after_a_failure_duplicates_nothing(backend: Backend) -> None:
    events = [make_event(n) for n in range(6)]
    # The second batch's answer is lost, and retries are exhausted.
    flaky = Flaky(backend.make_transport(), "ok", "lost", "lost")
    with backend.client(transport=flaky, batch_size=3, retry=NoWait(max_retries=1)) as client, \
            pytest.raises(TransportError):
        client.publish(events)
    with backend.client() as client:
        uuids = client.publish(events)
    assert stored_uuids(backend) == Counter(uuids)
    assert len(uuids) == 6


def test_a_single_event_may_be_published_without_a_list(backend: Backend, fake: FakeAuditServer) -> None:
    with backend.client() as client:
        [event_uuid] = client.publish(make_event(1))
    assert fake.events[0]["event_uuid"] == event_uuid


def test_immutable_events_are_copied_not_mutated(backend: Backend) -> None:
    event = MappingProxyType(make_event(1))
    with backend.client() as client:
        [event_uuid] = client.publish([event])
    assert "event_uuid" not in event
    assert uuid.UUID(event_uuid)


def test_datetimes_and_uuids_in_events_are_encoded(backend: Backend, fake: FakeAuditServer) -> None:
    given = uuid.uuid4()
    event = make_event(1, timestamp=datetime(2024, 5, 1, 12, 0, tzinfo=UTC), event_uuid=given)
    with backend.client() as client:
        assert client.publish([event]) == [str(given)]
    assert fake.events[0]["timestamp"] == "2024-05-01T12:00:00.000000Z"


def test_batches_respect_the_batch_size(fake: FakeAuditServer, backend: Backend) -> None:
    with backend.client(batch_size=4) as client:
        uuids = client.publish([make_event(n) for n in range(10)])
    assert [len(json.loads(r.content)) for r in fake.requests] == [4, 4, 2]
    assert len(set(uuids)) == 10


def test_batches_respect_the_16_mb_limit(fake: FakeAuditServer, backend: Backend) -> None:
    big = "x" * (3 * 1024 * 1024)
    with backend.client() as client:
        client.publish([make_event(n, log_entry=big) for n in range(12)])
    sizes = [len(r.content) for r in fake.requests]
    assert all(size <= 16 * 1024 * 1024 for size in sizes)
    assert [len(json.loads(r.content)) for r in fake.requests] == [5, 5, 2]


def test_an_event_too_large_for_any_request_is_refused_before_sending(fake: FakeAuditServer,
                                                                      backend: Backend) -> None:
    with backend.client() as client, pytest.raises(PayloadTooLargeError, match="event 1 is"):
        client.publish([make_event(0), make_event(1, log_entry="x" * (17 * 1024 * 1024))])
    assert fake.requests == []


def test_batch_size_is_bounded_by_the_service_limit(backend: Backend) -> None:
    with backend.client() as client, pytest.raises(ValueError, match="between 1 and 10000"):
        client.publish([make_event(1)], batch_size=10_001)


def test_reusing_a_uuid_for_other_content_is_a_conflict(backend: Backend) -> None:
    with backend.client() as client:
        [event_uuid] = client.publish(make_event(1))
        with pytest.raises(ConflictError):
            client.publish(make_event(2, event_uuid=event_uuid))


def test_the_same_event_published_twice_is_accepted_and_stored_once(backend: Backend) -> None:
    event = make_event(1)
    with backend.client() as client:
        first = client.publish(event)
        second = client.publish(event)
    assert first == second
    assert stored_uuids(backend) == Counter(first)


@pytest.mark.anyio
async def test_async_publish_retries_without_duplicates(backend: Backend) -> None:
    events = [make_event(n) for n in range(5)]
    flaky = Flaky(backend.make_async_transport(), "connect", 503, (429, {"Retry-After": "1"}), "lost")
    async with backend.async_client(transport=flaky, batch_size=2) as client:
        uuids = await client.publish(events)
        assert client.retry.waits[2] == 1.0  # type: ignore[attr-defined]
    assert len(flaky.seen) == 5 + 2  # the first batch took 5 attempts, then two clean batches
    assert stored_uuids(backend) == Counter(uuids)
    assert len(uuids) == 5


@pytest.mark.anyio
async def test_async_publish_raises_typed_errors(backend: Backend) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("down", request=request)

    async with backend.async_client(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(TransportError):
            await client.publish(make_event(1))


def test_publish_returns_the_services_counts_of_new_and_already_present_events(
    backend: Backend, backend_kind: str
) -> None:
    """Across batches, `accepted` and `already_present` add up the 201 answers; a service that does not
    count (the fake, like Datafold) leaves both None."""
    events = [make_event(n) for n in range(4)]
    with backend.client() as client:
        first = client.publish(events, batch_size=3)
        again = client.publish([*events, make_event(9)], batch_size=3)
    assert first == [e["event_uuid"] for e in events] and len(again) == 5
    if backend_kind == "fake":
        assert (first.accepted, first.already_present, again.accepted, again.already_present) == (None,) * 4
    else:
        assert (first.accepted, first.already_present) == (4, 0)
        assert (again.accepted, again.already_present) == (1, 4)


@pytest.mark.anyio
async def test_async_publish_returns_the_counts(backend: Backend, backend_kind: str) -> None:
    events = [make_event(n) for n in range(3)]
    async with backend.async_client() as client:
        await client.publish(events[:1])
        done = await client.publish(events, batch_size=2)
    expected = (None, None) if backend_kind == "fake" else (2, 1)
    assert (done.accepted, done.already_present) == expected
