"""`q` pages are full, and following the Links visits every match exactly once, in order (issue #13), on
both backends, whatever part of the log is indexed yet. Only while the unindexed tail is longer than
search.TAIL_LIMIT does a page test at most Q_SCAN_BUDGET events (issue #4's scan), still visiting every
match once."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from fastapi.testclient import TestClient

import auditkeep.storage.pages as pages
from auditkeep.storage import search
from tests.conftest import Tenant

URL = "/api/v1/audit_logs"
NEEDLES = {2, 3, 11, 12, 13, 27}


@pytest.fixture
def haystack(app_client: TestClient, tenant: Tenant) -> list[str]:
    """30 events, those at NEEDLES mention "Needle" (in log_entry or url), in timestamp order; their uuids."""
    events = [
        {"action": "scan.t", "client_ip": "10.0.0.1", "source": "web" if i % 3 else "api",
         "url": f"https://app.test/needle/{i}" if i == 27 else f"https://app.test/{i}",
         "log_entry": f"Needle {i}" if i in NEEDLES - {27} else f"hay {i}",
         "timestamp": f"2024-02-01T00:00:{i:02d}Z"}
        for i in range(30)
    ]
    r = app_client.post(URL, json=events, headers=tenant.headers)
    assert r.status_code == 201, r.text
    return list(r.json()["event_uuids"])


def _walk(client: TestClient, tenant: Tenant, params: dict[str, Any]) -> tuple[list[str], list[int]]:
    """Every page's event uuids, following Link; and each page's size."""
    uuids: list[str] = []
    sizes: list[int] = []
    url: str | None = None
    while True:
        r = client.get(url or URL, params=None if url else params, headers=tenant.headers)
        assert r.status_code == 200, r.text
        if params.get("format") == "csv":
            page = [row["event_uuid"] for row in csv.DictReader(io.StringIO(r.text))]
        else:
            page = [log["event_uuid"] for log in r.json()["logs"]]
        uuids.extend(page)
        sizes.append(len(page))
        url = r.links.get("next", {}).get("url")
        if url is None:
            return uuids, sizes


@pytest.fixture
def long_tail(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every unindexed event counts as a tail too long to scan: q falls back to the budgeted scan."""
    monkeypatch.setattr(search, "TAIL_LIMIT", 0)


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("indexed", [0, 15, 1000])
@pytest.mark.parametrize("limit", [1, 2, 4, 100])
def test_q_pages_are_full_and_visit_every_match_once_in_order(
    app_client: TestClient, tenant: Tenant, haystack: list[str], order: str, indexed: int, limit: int,
) -> None:
    """None, some or all of the haystack indexed: every page but the last holds `limit` matches, and the
    last page (the only one without a Link) holds the rest."""
    search.index_batch(tenant.storage, tenant.org.id, batch=indexed)
    expected = [haystack[i] for i in sorted(NEEDLES, reverse=order == "desc")]
    uuids, sizes = _walk(app_client, tenant, {"q": "NEEDLE", "action": "scan.t", "order": order, "limit": limit})
    assert uuids == expected
    full, rest = divmod(len(NEEDLES), limit)
    assert sizes == [limit] * full + ([rest] if rest else [])


@pytest.mark.usefixtures("long_tail")
@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("budget", [1, 4, 7])
@pytest.mark.parametrize("limit", [1, 2, 100])
def test_budgeted_pages_visit_every_match_once_in_order(
    app_client: TestClient, tenant: Tenant, haystack: list[str], monkeypatch: pytest.MonkeyPatch,
    order: str, budget: int, limit: int,
) -> None:
    monkeypatch.setattr(pages, "Q_SCAN_BUDGET", budget)
    expected = [haystack[i] for i in sorted(NEEDLES, reverse=order == "desc")]
    uuids, sizes = _walk(app_client, tenant, {"q": "needle", "action": "scan.t", "order": order, "limit": limit})
    assert uuids == expected
    # 30 events, `budget` tested a page: at least that many pages, some of them short or empty.
    assert len(sizes) >= -(-30 // budget)


@pytest.mark.usefixtures("long_tail")
def test_a_page_tests_q_only_on_its_budget(app_client: TestClient, tenant: Tenant, haystack: list[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """With a budget of 5 the first page holds the matches among the first 5 events, and links on."""
    monkeypatch.setattr(pages, "Q_SCAN_BUDGET", 5)
    r = app_client.get(URL, params={"q": "needle", "action": "scan.t", "limit": 100}, headers=tenant.headers)
    assert [log["event_uuid"] for log in r.json()["logs"]] == [haystack[2], haystack[3]]
    assert "next" in r.links


@pytest.mark.usefixtures("long_tail")
def test_budget_counts_events_matching_the_other_filters(
    app_client: TestClient, tenant: Tenant, haystack: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unindexed filter (source) with q: the same matches, page after page, in CSV too."""
    monkeypatch.setattr(pages, "Q_SCAN_BUDGET", 3)
    expected = [haystack[i] for i in sorted(NEEDLES) if i % 3]
    for fmt in ("json", "csv"):
        params = {"q": "needle", "action": "scan.t", "source": "web", "limit": 2, "format": fmt}
        assert _walk(app_client, tenant, params)[0] == expected


@pytest.mark.usefixtures("long_tail")
def test_without_a_limit_q_is_not_budgeted(app_client: TestClient, tenant: Tenant, haystack: list[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """An unpaged read (an export) returns every match in one response."""
    monkeypatch.setattr(pages, "Q_SCAN_BUDGET", 1)
    r = app_client.get(URL, params={"q": "needle", "action": "scan.t"}, headers=tenant.headers)
    assert [log["event_uuid"] for log in r.json()["logs"]] == [haystack[i] for i in sorted(NEEDLES)]
    assert "next" not in r.links


@pytest.mark.parametrize("indexed", [0, 1000])
def test_q_with_an_unindexed_filter_gives_full_pages_in_csv_too(
    app_client: TestClient, tenant: Tenant, haystack: list[str], indexed: int
) -> None:
    """q with source (no index of its own): full pages of exactly the events matching both."""
    search.index_batch(tenant.storage, tenant.org.id, batch=indexed)
    expected = [haystack[i] for i in sorted(NEEDLES) if i % 3]
    for fmt in ("json", "csv"):
        params = {"q": "needle", "action": "scan.t", "source": "web", "limit": 2, "format": fmt}
        assert _walk(app_client, tenant, params) == (expected, [2, 1])  # three matches, two a page


@pytest.mark.parametrize("q", ["n", "ne"])
def test_q_shorter_than_three_characters_is_refused(app_client: TestClient, tenant: Tenant, q: str) -> None:
    """A trigram index cannot serve one or two characters: 422 in FastAPI's error shape, naming q."""
    r = app_client.get(URL, params={"q": q}, headers=tenant.headers)
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["loc"] == ["query", "q"] and "at least 3 characters" in error["msg"]
