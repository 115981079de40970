"""ingest.read_rules: a cursor walk writes one audit_logs.read record, a key's polling session with one
filter set writes one per AUDITKEEP_READ_SESSION_SECONDS, and no hand-made cursor skips the trace
(issue #9); through the real app, on both backends."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from auditkeep.api.app import create_app
from auditkeep.api.query_params import Cursor
from auditkeep.auth.principals import Role
from auditkeep.ingest import read_rules
from auditkeep.integrity.keyring import (
    read_retired_cursor_secrets,
    retired_cursor_secrets_path,
    retired_keys_path,
    rotate_signing_key,
)
from auditkeep.settings import Settings
from auditkeep.storage import Storage, open_storage
from auditkeep.storage.events import iter_chain
from auditkeep.storage.queries import Position
from tests.conftest import Tenant

URL = "/api/v1/audit_logs"
T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


class Clock:
    """The rule's clock, moved by hand: an hour of polling without sleeping."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(read_rules, "clock", c)
    return c


def reads(storage: Storage, tenant: Tenant) -> list[dict[str, Any]]:
    return [e for e in iter_chain(storage, tenant.org.id) if e["action"] == "audit_logs.read"]


def seed(client: TestClient, tenant: Tenant, n: int) -> None:
    batch = [{"client_ip": "10.9.0.1", "url": f"https://app.test/{i}", "action": "walk.item",
              "timestamp": f"2024-03-01T00:00:{i:02d}Z"} for i in range(n)]
    assert client.post(URL, json=batch, headers=tenant.headers).status_code == 201


def walk(client: TestClient, headers: dict[str, str], params: dict[str, Any]) -> list[Any]:
    """Follow Link rel=next from the first page; the responses."""
    responses = [client.get(URL, params=params, headers=headers)]
    while (nxt := responses[-1].links.get("next")) is not None:
        assert responses[-1].status_code == 200, responses[-1].text
        responses.append(client.get(nxt["url"], headers=headers))
    assert responses[-1].status_code == 200, responses[-1].text
    return responses


def cursor_of(response: Any) -> str:
    return str(response.links["next"]["url"].split("cursor=")[1].split("&")[0])


def test_a_three_page_walk_writes_exactly_one_read_record(
    app_client: TestClient, tenant: Tenant, storage: Storage, clock: Clock
) -> None:
    """limit=3 over 7 events: 3 pages, one audit_logs.read stating the query, its format and its mode."""
    seed(app_client, tenant, 7)
    before = len(reads(storage, tenant))
    pages = walk(app_client, tenant.headers, {"action": "walk.*", "limit": 3, "format": "ndjson"})
    assert [len(r.text.splitlines()) for r in pages] == [3, 3, 1]
    (record,) = reads(storage, tenant)[before:]
    assert record["payload"]["mode"] == "walk"
    assert record["payload"]["format"] == "ndjson"
    assert record["payload"]["snapshot"] == "own_seq"
    assert record["payload"]["query"] == {"action": "walk.*", "limit": "3", "format": "ndjson"}


def test_a_walk_reads_through_its_own_record(app_client: TestClient, tenant: Tenant, storage: Storage) -> None:
    """The first page's snapshot is its record's seq: the record is the last event the walk can see."""
    seed(app_client, tenant, 2)
    pages = walk(app_client, tenant.headers, {"limit": 1})
    seen = [log for r in pages for log in r.json()["logs"]]
    record = reads(storage, tenant)[-1]
    assert seen[-1]["event_uuid"] == record["event_uuid"]
    assert [r["seq"] for r in iter_chain(storage, tenant.org.id)][-1] == record["seq"]


def test_a_hand_edited_cursor_is_refused(app_client: TestClient, tenant: Tenant, storage: Storage) -> None:
    """Moving a signed cursor's position (its HMAC kept) is a 422 on `cursor`, and records nothing."""
    seed(app_client, tenant, 4)
    first = app_client.get(URL, params={"limit": 2}, headers=tenant.headers)
    body, tag = cursor_of(first).split(".")
    data = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    data["s"] = 0
    forged = base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode() + "." + tag
    count = len(reads(storage, tenant))
    r = app_client.get(URL, params={"limit": 2, "cursor": forged}, headers=tenant.headers)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["query", "cursor"]
    assert len(reads(storage, tenant)) == count


def test_a_cursor_stripped_of_its_hmac_is_refused(app_client: TestClient, tenant: Tenant) -> None:
    seed(app_client, tenant, 4)
    first = app_client.get(URL, params={"limit": 2}, headers=tenant.headers)
    r = app_client.get(URL, params={"limit": 2, "cursor": cursor_of(first).split(".")[0]}, headers=tenant.headers)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["query", "cursor"]


def test_an_unsigned_cursor_is_recorded_as_a_walk_of_its_own(
    app_client: TestClient, tenant: Tenant, storage: Storage
) -> None:
    """A cursor without an HMAC (the console's, or one from before) is read, and recorded with its bound."""
    seed(app_client, tenant, 4)
    head = [e["seq"] for e in iter_chain(storage, tenant.org.id)][-1]
    made = Cursor(Position("2024-03-01T00:00:01.000000Z", 0), head, descending=False).encode()
    r = app_client.get(URL, params={"limit": 10, "cursor": made}, headers=tenant.headers)
    assert r.status_code == 200
    assert [log["url"] for log in r.json()["logs"]] == [f"https://app.test/{i}" for i in (1, 2, 3)]
    record = reads(storage, tenant)[-1]
    assert record["payload"]["mode"] == "walk"
    assert record["payload"]["snapshot"] == head
    assert "continues" not in record["payload"]


def test_another_reader_or_query_with_a_walks_cursor_is_recorded(
    app_client: TestClient, tenant: Tenant, storage: Storage
) -> None:
    """A cursor handed to another key, or used with other filters, starts a recorded walk that names the
    record it continues."""
    seed(app_client, tenant, 4)
    first = app_client.get(URL, params={"limit": 2}, headers=tenant.headers)
    walk_record = reads(storage, tenant)[-1]["event_uuid"]
    _, other_key = tenant.user(Role.ADMIN)
    other = app_client.get(URL, params={"limit": 2, "cursor": cursor_of(first)},
                           headers={"Authorization": f"Key {other_key}"})
    assert other.status_code == 200
    by_other = reads(storage, tenant)[-1]
    assert by_other["user_email"] != tenant.admin.name
    assert by_other["payload"]["continues"] == walk_record
    filtered = app_client.get(URL, params={"limit": 2, "cursor": cursor_of(first), "source": "x"},
                              headers=tenant.headers)
    assert filtered.status_code == 200
    by_filter = reads(storage, tenant)[-1]
    assert by_filter["event_uuid"] != by_other["event_uuid"]
    assert by_filter["payload"]["query"] == {"limit": "2", "source": "x"}
    assert by_filter["payload"]["continues"] == walk_record


def test_another_organizations_cursor_is_refused(app_client: TestClient, tenant: Tenant, storage: Storage) -> None:
    """A cursor is signed for its organization: presented by another organization's key it is a 422, and
    nothing of the other organization's walk (its record's uuid) reaches this one's log."""
    from tests.conftest import make_tenant

    seed(app_client, tenant, 4)
    first = app_client.get(URL, params={"limit": 2}, headers=tenant.headers)
    walk_record = reads(storage, tenant)[-1]["event_uuid"]
    other = make_tenant(storage)
    r = app_client.get(URL, params={"limit": 2, "cursor": cursor_of(first)}, headers=other.headers)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "cursor"]
    assert walk_record not in str(reads(storage, other))


def test_a_walk_cursor_older_than_the_session_is_recorded_again(
    app_client: TestClient, tenant: Tenant, storage: Storage, clock: Clock
) -> None:
    """Within AUDITKEEP_READ_SESSION_SECONDS of its record a cursor's page writes none; from then on, one."""
    seed(app_client, tenant, 6)
    first = app_client.get(URL, params={"limit": 2}, headers=tenant.headers)
    count = len(reads(storage, tenant))
    clock.now = T0 + timedelta(seconds=3599)
    second = app_client.get(URL, params={"limit": 2, "cursor": cursor_of(first)}, headers=tenant.headers)
    assert second.status_code == 200
    assert len(reads(storage, tenant)) == count
    clock.now = T0 + timedelta(seconds=3600)
    third = app_client.get(URL, params={"limit": 2, "cursor": cursor_of(second)}, headers=tenant.headers)
    assert third.status_code == 200
    assert len(reads(storage, tenant)) == count + 1
    assert reads(storage, tenant)[-1]["payload"]["continues"] == reads(storage, tenant)[count - 1]["event_uuid"]


def poll(client: TestClient, headers: dict[str, str], after: int, **params: Any) -> tuple[list[Any], int]:
    r = client.get(URL, params={"after_seq": after, "limit": 100, **params}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["logs"], int(r.headers["X-Last-Seq"])


def test_an_hour_of_polling_every_5_seconds_gets_an_empty_page_99_percent_of_the_time(
    app_client: TestClient, tenant: Tenant, storage: Storage, clock: Clock
) -> None:
    """720 polls, 5 s apart (a controlled clock), nothing else happening: only the first poll's page has
    anything (the log so far and its own record), so 1 of 720 is non-empty (the target allows 7)."""
    seed(app_client, tenant, 3)
    before = len(reads(storage, tenant))
    after, non_empty = 0, 0
    for n in range(720):
        clock.now = T0 + timedelta(seconds=5 * n)
        logs, after = poll(app_client, tenant.headers, after)
        non_empty += bool(logs)
    assert non_empty == 1
    (record,) = reads(storage, tenant)[before:]
    assert record["payload"]["mode"] == "poll"
    assert record["payload"]["after_seq"] == 0
    assert record["payload"]["query"] == {"limit": "100"}


def test_a_polling_session_ends_after_the_session_seconds(
    app_client: TestClient, tenant: Tenant, storage: Storage, clock: Clock
) -> None:
    """The poll 3600 s after the session's record writes the next record; 3599.999 s after, none."""
    _, after = poll(app_client, tenant.headers, 0)
    count = len(reads(storage, tenant))
    clock.now = T0 + timedelta(seconds=3599.999)
    assert poll(app_client, tenant.headers, after) == ([], after)
    assert len(reads(storage, tenant)) == count
    clock.now = T0 + timedelta(seconds=3600)
    logs, after = poll(app_client, tenant.headers, after)
    assert [log["action"] for log in logs] == ["audit_logs.read"]
    assert len(reads(storage, tenant)) == count + 1
    clock.now = T0 + timedelta(seconds=3605)
    assert poll(app_client, tenant.headers, after) == ([], after)


def test_each_key_and_filter_set_has_its_own_polling_session(
    app_client: TestClient, tenant: Tenant, storage: Storage, clock: Clock
) -> None:
    """Another filter set, or another key, is a new session and writes its own first record."""
    _, after = poll(app_client, tenant.headers, 0)
    count = len(reads(storage, tenant))
    poll(app_client, tenant.headers, after)
    poll(app_client, tenant.headers, after, source="cli")
    _, other_key = tenant.user(Role.ADMIN)
    poll(app_client, {"Authorization": f"Key {other_key}"}, after)
    new = reads(storage, tenant)[count:]
    assert [(r["payload"]["query"], r["user_email"] == tenant.admin.name) for r in new] == [
        ({"limit": "100", "source": "cli"}, True), ({"limit": "100"}, False)]


def test_a_walk_goes_on_across_a_signing_key_rotation(storage: Storage, settings: Settings, tenant: Tenant,
                                                      tmp_path: Path) -> None:
    """A cursor minted before `auditkeep signing-key rotate` still verifies after it, twice over: its walk
    goes on without a 422 and without a record of its own. The retired key's cursor secret is kept 0600
    beside the key, apart from the public ring; a hand-edited cursor is still refused."""
    key_path = tmp_path / "keys" / "signing-key.pem"
    mine = settings.model_copy(update={"database_url": storage.url, "signing_key_path": key_path})
    own = open_storage(storage.url, settings=mine, migrate=False)
    try:
        with TestClient(create_app(mine, storage=own)) as client:
            seed(client, tenant, 8)
            first = client.get(URL, params={"limit": 2}, headers=tenant.headers)
            count = len(reads(storage, tenant))
            rotate_signing_key(key_path)
            second = client.get(URL, params={"limit": 2, "cursor": cursor_of(first)}, headers=tenant.headers)
            assert second.status_code == 200, second.text
            rotate_signing_key(key_path)
            third = client.get(URL, params={"limit": 2, "cursor": cursor_of(first)}, headers=tenant.headers)
            assert third.status_code == 200, third.text
            fourth = client.get(URL, params={"limit": 2, "cursor": cursor_of(second)}, headers=tenant.headers)
            assert fourth.status_code == 200, fourth.text
            assert len(reads(storage, tenant)) == count  # one walk, recorded once, by its first page
            body, tag = cursor_of(first).split(".")
            forged = client.get(URL, params={"limit": 2, "cursor": f"{body}.{tag[::-1]}"}, headers=tenant.headers)
            assert forged.status_code == 422
    finally:
        own.dispose()
    kept = retired_cursor_secrets_path(key_path)
    assert kept.stat().st_mode & 0o777 == 0o600
    secrets_kept = read_retired_cursor_secrets(kept)
    assert len(secrets_kept) == 2 and all(s.hex() not in retired_keys_path(key_path).read_text() for s in secrets_kept)
