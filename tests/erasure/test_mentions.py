"""Erasure reaches the person's values in other events, the search index and the read sessions (issue #12)."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from fastapi.testclient import TestClient

from auditkeep.erasure import erase_person
from auditkeep.errors import ConflictError
from auditkeep.holds import create
from auditkeep.ingest.read_rules import cursor_key
from auditkeep.ingest.verification import verify_org
from auditkeep.integrity.canonical import canonical_json
from auditkeep.schemas.holds import HoldCreate
from auditkeep.storage import Storage, search
from auditkeep.storage.events import iter_chain
from auditkeep.storage.tables import alert_firings
from tests.conftest import Tenant
from tests.erasure.test_erasure import ERASED, ORIGIN, database_text, ingest, person, secrets_of


def _by_action(storage: Storage, org_id: int) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in iter_chain(storage, org_id):
        out.setdefault(e["action"], []).append(e)
    return out


def test_erasure_also_erases_reads_urls_and_payloads_that_mention_the_person(
    storage: Storage, tenant: Tenant, app_client: TestClient
) -> None:
    """A read filtered by the person's email (its payload and url), a url carrying the email percent-encoded,
    a payload naming their user_id: erased with the person's events and counted; a longer address that
    merely contains theirs is not; the search index and polling sessions no longer hold the values."""
    ann, bob = person("ann"), person("bob")
    email, uid = ann["user_email"], ann["user_id"]
    ingest(storage, tenant.org.id, [ann, ann])
    mentions = [
        {**bob, "url": f"https://app.example/users?user_email={quote(email, safe='')}"},
        {**bob, "payload": {"target": {"user_id": uid}}, "log_entry": "profile viewed"},
        {**bob, "log_entry": f"Invited {email.upper()}."},  # any ASCII case, a sentence's full stop
    ]
    unrelated = {**bob, "log_entry": f"Invited jo{email} and {email}.au", "payload": {"user_id": uid * 10}}
    ingest(storage, tenant.org.id, [*mentions, unrelated])
    walk = app_client.get("/api/v1/audit_logs", headers=tenant.headers, params={"user_email": email})
    assert walk.status_code == 200 and len(walk.json()["logs"]) == 2
    poll = app_client.get("/api/v1/audit_logs", headers=tenant.headers, params={"user_email": email, "after_seq": 0})
    assert poll.status_code == 200
    reads = _by_action(storage, tenant.org.id)["audit_logs.read"]
    assert len(reads) == 2 and all(email in (r["url"] or "") or email in str(r["payload"]) for r in reads)
    with storage.read() as conn:  # the session's key is keyed: not the plain SHA-256 of the query with the email
        digests = [r[0] for r in conn.exec_driver_sql(
            f"SELECT query_digest FROM read_sessions WHERE org_id = {tenant.org.id}")]
        key_id = conn.exec_driver_sql(f"SELECT id FROM api_keys WHERE org_id = {tenant.org.id}").scalar_one()
    query = {k: v for k, v in reads[1]["payload"].items() if k not in ("mode", "after_seq", "key_prefix")}
    text = canonical_json({"org": tenant.org.id, "reader": f"key:{key_id}", "query": query})
    assert digests == [hmac.new(cursor_key(storage, tenant.org.id), text, hashlib.sha256).hexdigest()]
    assert digests[0] != hashlib.sha256(text).hexdigest()
    while search.index_batch(storage, tenant.org.id):
        pass
    firing = {"rule": {"id": "r1", "name": "per person"}, "count": 3, "group": {"user_email": email.upper()},
              "others": [{"user_id": uid}, {"user_id": uid * 10}]}
    with storage.write() as conn:
        conn.execute(alert_firings.insert().values(
            id=str(uuid.uuid4()), org_id=tenant.org.id, rule_id="r1", event_uuid=str(uuid.uuid4()),
            body=orjson.dumps(firing).decode(), recorded=True, pending="[]", attempts=1,
            created_at=datetime.now(UTC), done_at=datetime.now(UTC)))

    done = app_client.post("/api/v1/erasures", json={"user_email": email, "reason": "GDPR 17"}, headers=tenant.headers)
    assert done.status_code == 201, done.text
    assert done.json()["events"] == 2 and done.json()["mentions"] == 3 + 2  # the three above and the two reads

    by_action = _by_action(storage, tenant.org.id)
    for e in by_action["doc.update"][:5] + by_action["audit_logs.read"][:2]:
        assert {k: e[k] for k in ERASED} == ERASED, e["seq"]
    kept = by_action["doc.update"][5]
    assert kept["log_entry"] == unrelated["log_entry"] and kept["payload"] == {"user_id": uid * 10}
    record = by_action["erasure.performed"][0]
    assert record["payload"]["mentions"] == 5 and email not in str(record)
    assert record["payload"]["alert_firings"] == 1
    with storage.read() as conn:
        body = orjson.loads(conn.exec_driver_sql(
            f"SELECT body FROM alert_firings WHERE org_id = {tenant.org.id}").scalar_one())
    assert body == {**firing, "group": {"user_email": "[erased]"},
                    "others": [{"user_id": "[erased]"}, {"user_id": uid * 10}]}
    with storage.read() as conn:
        assert conn.exec_driver_sql(
            f"SELECT count(*) FROM read_sessions WHERE org_id = {tenant.org.id}").scalar_one() == 0
    assert verify_org(storage, tenant.org.id).ok

    stored = database_text(storage)  # with the search index: SQLite's FTS5 content, PostgreSQL's search_docs
    for value in [*secrets_of(ann)[1:], quote(email, safe=""), email.upper()]:
        assert value.encode() not in stored, value
    # The address survives only inside the unrelated event's longer addresses, which are still there.
    longer = stored.count(f"jo{email}".encode()) + stored.count(f"{email}.au".encode())
    assert longer >= 2 and stored.count(email.encode()) == longer


def test_a_hold_on_an_event_mentioning_the_person_refuses_the_erasure(storage: Storage, tenant: Tenant) -> None:
    """Mentions are erased under the same rules as the person's events: a hold on one refuses, naming it."""
    cy, dee = person("cy"), person("dee")
    ingest(storage, tenant.org.id, [cy, {**dee, "object_id": 99, "log_entry": f"mail from {cy['user_email']}"}])
    hold = create(storage, tenant.org.id, HoldCreate(reason="case 9", object_type="doc", object_id=1),
                  origin=ORIGIN, actor=None)
    with pytest.raises(ConflictError, match=hold.id):
        erase_person(storage, tenant.org.id, user_id=cy["user_id"], reason="r", origin=ORIGIN)
    assert cy["user_email"] in {e["user_email"] for e in iter_chain(storage, tenant.org.id)}


def test_resending_an_erased_events_uuid_is_already_present_and_stores_nothing(
    storage: Storage, tenant: Tenant, app_client: TestClient
) -> None:
    """A client retrying an erased event (same uuid, same other fields) gets already_present, and the values
    it re-sends are not stored; the same uuid with other non-personal content is still a 409."""
    eve = person("eve")
    event = {**eve, "event_uuid": str(uuid.uuid4()), "action": "doc.update", "object_type": "doc", "object_id": 7,
             "timestamp": "2026-01-02T03:04:05.000006Z"}
    first = app_client.post("/api/v1/audit_logs", json=event, headers=tenant.headers)
    assert first.status_code == 201 and first.json()["accepted"] == 1
    erase_person(storage, tenant.org.id, user_email=eve["user_email"], reason="r", origin=ORIGIN)

    again = app_client.post("/api/v1/audit_logs", json=[event], headers=tenant.headers)
    assert again.status_code == 201, again.text
    assert again.json() == {"event_uuids": [event["event_uuid"]], "accepted": 0, "already_present": 1}
    other = app_client.post("/api/v1/audit_logs", json=[{**event, "action": "doc.delete"}], headers=tenant.headers)
    assert other.status_code == 409 and event["event_uuid"] in other.json()["detail"]
    stored = [e for e in iter_chain(storage, tenant.org.id) if e["event_uuid"] == event["event_uuid"]]
    assert len(stored) == 1 and {k: stored[0][k] for k in ERASED} == ERASED
    database = database_text(storage)
    for value in secrets_of(eve):
        assert value.encode() not in database, value
    assert verify_org(storage, tenant.org.id).ok
