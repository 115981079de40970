"""Paging (limit + cursor, Link) and after_seq polling (X-Last-Seq) under concurrent ingest (issue #4)."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from auditkeep.ingest.service import record_events
from auditkeep.ingest.validation import parse_events
from auditkeep.storage import Storage
from auditkeep.storage.pages import SEQ_WINDOW_MIN
from tests.conftest import Tenant

URL = "/api/v1/audit_logs"
BASE = datetime(2024, 3, 1, tzinfo=UTC)


def events(n: int, *, offset: int = 0, action: str = "walk.item", minutes: int = 1) -> list[dict[str, Any]]:
    """n events a `minutes` apart from BASE (+ offset steps), with ties every third so seq breaks them."""
    return [
        {"client_ip": "10.1.0.1", "url": f"https://app.test/{offset + i}", "action": action,
         "timestamp": (BASE + timedelta(minutes=minutes * ((offset + i) // 3 * 3))).isoformat()}
        for i in range(n)
    ]


def post(client: TestClient, tenant: Tenant, batch: list[dict[str, Any]]) -> list[str]:
    r = client.post(URL, json=batch, headers=tenant.headers)
    assert r.status_code == 201, r.text
    return list(r.json()["event_uuids"])


def store(storage: Storage, tenant: Tenant, batch: list[dict[str, Any]]) -> None:
    """Ingest straight through the service (for the concurrent writer thread)."""
    import orjson

    record_events(storage, tenant.org.id, parse_events(orjson.dumps(batch), datetime.now(UTC)))


def walk(client: TestClient, tenant: Tenant, params: dict[str, Any],
         between_pages: Any = None) -> tuple[list[dict[str, Any]], int]:
    """Follow Link rel=next from the first page; all logs and the number of pages."""
    r = client.get(URL, params=params, headers=tenant.headers)
    logs: list[dict[str, Any]] = []
    pages = 0
    while True:
        assert r.status_code == 200, r.text
        page = r.json()["logs"]
        assert len(page) <= params["limit"]
        logs.extend(page)
        pages += 1
        if between_pages is not None:
            between_pages(pages)
        nxt = r.links.get("next")
        if nxt is None:
            return logs, pages
        assert nxt["url"].startswith("/api/v1/audit_logs?")
        r = client.get(nxt["url"], headers=tenant.headers)


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_walk_visits_each_event_once_in_order(app_client: TestClient, tenant: Tenant, order: str) -> None:
    uuids = post(app_client, tenant, events(23))
    logs, pages = walk(app_client, tenant, {"limit": 5, "order": order, "action": "walk.item"})
    assert pages == 5
    got = [log["event_uuid"] for log in logs]
    assert sorted(got) == sorted(uuids) and len(got) == 23
    keys = [(log["timestamp"], uuids.index(log["event_uuid"])) for log in logs]
    assert keys == sorted(keys, reverse=order == "desc")


def test_link_only_when_more_exist(app_client: TestClient, tenant: Tenant) -> None:
    post(app_client, tenant, events(4))
    r = app_client.get(URL, params={"limit": 4, "action": "walk.item"}, headers=tenant.headers)
    assert len(r.json()["logs"]) == 4 and "link" not in r.headers
    r = app_client.get(URL, params={"limit": 3, "action": "walk.item"}, headers=tenant.headers)
    assert len(r.json()["logs"]) == 3 and r.links["next"]["url"]
    r = app_client.get(URL, params={"action": "walk.item"}, headers=tenant.headers)  # no limit: no paging
    assert len(r.json()["logs"]) == 4 and "link" not in r.headers


def test_link_keeps_filters_format_and_range(app_client: TestClient, tenant: Tenant) -> None:
    post(app_client, tenant, events(6))
    r = app_client.request("GET", URL, params={"limit": 2, "action": "walk.*", "format": "ndjson"},
                           json={"start_date": BASE.isoformat()}, headers=tenant.headers)
    link = r.links["next"]["url"]
    for part in ("action=walk.%2A", "format=ndjson", "start_date=2024-03-01T00%3A00%3A00.000000Z", "limit=2"):
        assert part in link
    r2 = app_client.get(link, headers=tenant.headers)
    assert r2.headers["content-type"] == "application/x-ndjson" and len(r2.text.splitlines()) == 2


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_walk_under_concurrent_ingest_visits_every_pre_existing_event_exactly_once(
    app_client: TestClient, tenant: Tenant, storage: Storage, order: str
) -> None:
    """A writer thread adds events (back-dated into the walked range, and new ones) while pages are read:
    every event that matched at the start is seen once, in order, and nothing appears twice."""
    uuids = set(post(app_client, tenant, events(60)))
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        n = 0
        try:
            while not stop.is_set() and n < 400:
                # back-dated (sorts before and among the walked events), and recent
                store(storage, tenant, events(3, offset=n % 60, action="walk.item")
                      + events(2, offset=1000 + n, action="walk.item"))
                n += 5
        except BaseException as exc:  # reported below, never swallowed
            errors.append(exc)

    thread = threading.Thread(target=writer)

    def between_pages(page: int) -> None:
        if page == 1:
            thread.start()  # after the first page: the walk's snapshot is fixed by then
        store(storage, tenant, events(2, offset=5, action="walk.item"))

    try:
        logs, pages = walk(app_client, tenant, {"limit": 7, "order": order, "action": "walk.item"}, between_pages)
    finally:
        stop.set()
        thread.join()
    assert not errors
    seen = Counter(log["event_uuid"] for log in logs)
    assert max(seen.values()) == 1, "an event appeared twice"
    assert uuids <= set(seen), "a pre-existing event was missed"
    assert set(seen) == uuids, "events ingested during the walk appear"
    keys = [log["timestamp"] for log in logs]
    assert keys == sorted(keys, reverse=order == "desc")
    assert pages == 9


def test_a_cursor_keeps_its_snapshot(app_client: TestClient, tenant: Tenant) -> None:
    """Following a link later (after more ingest) still ends where the walk's snapshot ends."""
    first = post(app_client, tenant, events(4))
    r = app_client.get(URL, params={"limit": 2, "action": "walk.item"}, headers=tenant.headers)
    post(app_client, tenant, events(5, offset=100))
    post(app_client, tenant, events(1, offset=0))  # back-dated before the cursor
    r2 = app_client.get(r.links["next"]["url"], headers=tenant.headers)
    assert [log["event_uuid"] for log in r.json()["logs"] + r2.json()["logs"]] == first
    assert "link" not in r2.headers


def poll(client: TestClient, tenant: Tenant, after: int, **params: Any) -> tuple[list[dict[str, Any]], int, bool]:
    r = client.get(URL, params={"after_seq": after, **params}, headers=tenant.headers)
    assert r.status_code == 200, r.text
    return r.json()["logs"], int(r.headers["X-Last-Seq"]), "next" in r.links


def test_after_seq_returns_seq_order_and_last_seq(app_client: TestClient, tenant: Tenant) -> None:
    post(app_client, tenant, events(5, offset=30) + events(5, offset=0))  # later timestamps first
    logs, last, more = poll(app_client, tenant, 0, action="walk.item", include="integrity")
    assert [log["seq"] for log in logs] == list(range(1, 11))
    assert last >= 10 and not more
    logs, last2, more = poll(app_client, tenant, 0, action="walk.item", limit=4, include="integrity")
    assert [log["seq"] for log in logs] == [1, 2, 3, 4] and last2 == 4 and more


def test_after_seq_polling_misses_nothing_and_repeats_nothing(app_client: TestClient, tenant: Tenant,
                                                              storage: Storage) -> None:
    """A poller that always asks again with X-Last-Seq sees every event once, late back-dated ones too,
    while a writer thread ingests."""
    expected = set(post(app_client, tenant, events(10, action="poll.item")))
    stop = threading.Event()
    written: list[list[dict[str, Any]]] = []

    def writer() -> None:
        for n in range(40):
            batch = events(3, offset=(n * 7) % 50, action="poll.item")  # back-dated, out of order
            for item in batch:
                item["event_uuid"] = f"00000000-0000-4000-8000-{n * 3 + batch.index(item):012d}"
            store(storage, tenant, batch)
            written.append(batch)
        stop.set()

    thread = threading.Thread(target=writer)
    thread.start()
    seen: Counter[str] = Counter()
    position = 0
    while True:
        finished = stop.is_set()
        logs, last, more = poll(app_client, tenant, position, action="poll.item", limit=4)
        assert last >= position
        seen.update(log["event_uuid"] for log in logs)
        position = last
        if finished and not more and not logs:
            break
    thread.join()
    expected |= {item["event_uuid"] for batch in written for item in batch}
    assert max(seen.values()) == 1
    assert set(seen) == expected


def test_after_seq_moves_past_non_matching_ranges(app_client: TestClient, tenant: Tenant) -> None:
    """X-Last-Seq covers what was scanned, so a rare filter does not pin the poller."""
    post(app_client, tenant, events(5, action="noise"))
    logs, last, more = poll(app_client, tenant, 0, action="rare.thing", limit=10)
    assert logs == [] and last >= 5 and not more
    target = post(app_client, tenant, [{**events(1)[0], "action": "rare.thing"}])
    logs, last2, _ = poll(app_client, tenant, last, action="rare.thing", limit=10)
    assert [log["event_uuid"] for log in logs] == target and last2 > last


def test_after_seq_scans_a_bounded_window(app_client: TestClient, tenant: Tenant, storage: Storage) -> None:
    """With a limit, one request scans at most the window; Link says there is more."""
    batch = events(1, action="noise")
    store(storage, tenant, batch * 1)
    big = [dict(batch[0]) for _ in range(5000)]
    for _ in range(SEQ_WINDOW_MIN // 5000 + 1):
        store(storage, tenant, big)
    logs, last, more = poll(app_client, tenant, 0, action="never", limit=1)
    assert logs == [] and last == SEQ_WINDOW_MIN and more


def test_after_seq_ahead_of_the_log_keeps_its_position(app_client: TestClient, tenant: Tenant) -> None:
    logs, last, more = poll(app_client, tenant, 10**9, limit=5)
    assert logs == [] and last == 10**9 and not more


def test_pages_too_large_to_prefetch_stream_the_same(app_client: TestClient, tenant: Tenant,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Past PREFETCH_BYTES a page is found by its end and streamed in a second pass: same pages."""
    import auditkeep.storage.pages as pages

    uuids = post(app_client, tenant, events(13))
    prefetched, _ = walk(app_client, tenant, {"limit": 4, "action": "walk.item"})
    polled = poll(app_client, tenant, 0, action="walk.item", limit=4)
    monkeypatch.setattr(pages, "PREFETCH_BYTES", 10)
    streamed, pages = walk(app_client, tenant, {"limit": 4, "action": "walk.item"})
    assert streamed == prefetched and pages == 4
    assert sorted(log["event_uuid"] for log in streamed) == sorted(uuids)
    assert poll(app_client, tenant, 0, action="walk.item", limit=4) == polled
