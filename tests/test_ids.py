"""Event ids made by auditkeep are UUIDv7: time-ordered, so the uuid index takes them near its end."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from auditkeep.ids import new_event_uuid
from auditkeep.ingest.validation import parse_events


def test_new_ids_are_version_7_text_in_canonical_form() -> None:
    text = new_event_uuid()
    assert uuid.UUID(text).version == 7
    assert text == str(uuid.UUID(text))  # lowercase, hyphenated


def test_ids_made_one_after_another_sort_in_the_order_they_were_made() -> None:
    ids = [new_event_uuid() for _ in range(10_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_the_server_gives_an_event_without_an_id_a_version_7_one_and_keeps_a_given_one() -> None:
    given = "0b7c6a8e-1d2f-4c3b-9a8e-7f6d5c4b3a21"
    body = b'[{"client_ip": "10.0.0.1", "url": "/a"}, {"client_ip": "10.0.0.1", "url": "/b", "event_uuid": "%s"}]'
    made, kept = parse_events(body % given.encode(), datetime.now(UTC))
    assert uuid.UUID(made.log["event_uuid"]).version == 7
    assert kept.log["event_uuid"] == given


def test_self_audit_events_get_version_7_ids_too() -> None:
    from auditkeep.ingest.selfaudit import Origin, self_audit_event

    event = self_audit_event("api_key.create", Origin.cli(["auditkeep", "keys", "create"]), log_entry="made a key")
    assert uuid.UUID(event.log["event_uuid"]).version == 7
