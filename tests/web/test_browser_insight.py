"""The audit log page's activity chart, zoom, top lists and saved searches in a real Chromium against
`auditkeep serve` (issue #13). Takes docs/screenshots/audit-log-activity.png and its phone width twin."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from auditkeep.storage.types import format_timestamp
from tests.web.test_browser import (  # noqa: F401 - fixtures
    ADMIN,
    PHONE,
    Console,
    _sign_in,
    chromium,
    console,
    page,
    screenshots,
    shot,
)

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


def _bars(p: Any) -> list[tuple[int, int]]:
    links = p.locator("#activity-chart a.bar-link")
    return [(int(links.nth(i).get_attribute("data-count")), int(links.nth(i).get_attribute("data-failures")))
            for i in range(links.count())]


def test_chart_counts_the_pages_events_and_marks_failures(page: Any, console: Console,  # noqa: F811
                                                          shot: Callable[[str], None]) -> None:  # noqa: F811
    """The bars of the last 24 hours add up to the API's stats for the same range; failures are drawn red;
    top actors are the fixture's people. Takes the desktop and phone screenshots (nothing scrolls sideways)."""
    now = datetime.now(UTC)
    failed = [{"action": "user.login", "user_email": "dana@acme.example", "client_ip": "198.51.100.7",
               "url": "https://app.datafold.example/login", "source": "app", "status": "failure",
               "log_entry": "dana@acme.example failed to sign in (wrong password)",
               "timestamp": format_timestamp(now - timedelta(minutes=m))} for m in (95, 96, 97, 300)]
    r = httpx.post(f"{console.url}/api/v1/audit_logs", json=failed,
                   headers={"Authorization": f"Key {console.admin_key}"})
    assert r.status_code == 201, r.text
    _sign_in(page, ADMIN)
    page.goto("/audit-logs?range=24h&action=user.login")
    bars = _bars(page)
    assert sum(n for n, _ in bars) > 0
    r = httpx.get(f"{console.url}/api/v1/audit_logs", params={"action": "user.login", "start_date":
                  _start(page)}, headers={"Authorization": f"Key {console.admin_key}"})
    logs = r.json()["logs"]
    assert sum(n for n, _ in bars) == len(logs)
    assert sum(f for _, f in bars) == sum(log["status"] == "failure" for log in logs) > 0
    assert page.locator("#activity-chart rect.bar-fail").count() == sum(1 for _, f in bars if f)
    actors = page.locator("#top-actors li a").all_inner_texts()
    assert actors and all(a.endswith("@acme.example") for a in actors)
    page.goto("/audit-logs?range=24h")
    shot("audit-log-activity.png")
    page.set_viewport_size(PHONE)
    page.goto("/audit-logs?range=24h")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.locator("#activity").evaluate("el => el.scrollIntoView()")
    shot("audit-log-activity-phone.png")


def _start(p: Any) -> str:
    """The chart's first bucket's start, as the chart's first bar's zoom link says (UTC)."""
    href = p.locator("#activity-chart a.bar-link").first.get_attribute("href")
    return parse_qs(urlsplit(href).query)["start"][0] + ":00Z"


def test_clicking_a_bar_zooms_to_its_bucket(page: Any) -> None:  # noqa: F811
    """A bar is a link: clicking it shows just its bucket (a custom range, finer bars) with the filters kept,
    and the table then holds exactly the bar's events."""
    _sign_in(page, ADMIN)
    page.goto("/audit-logs?range=24h&source=app")
    bars = _bars(page)
    busiest = max(range(len(bars)), key=lambda i: bars[i][0])
    page.locator("#activity-chart a.bar-link").nth(busiest).click()
    page.wait_for_load_state()
    query = parse_qs(urlsplit(page.url).query)
    assert query["range"] == ["custom"] and query["source"] == ["app"]
    assert query["end"][0] > query["start"][0]
    assert page.locator("#logs tbody tr").count() == bars[busiest][0]
    assert sum(n for n, _ in _bars(page)) == bars[busiest][0]
    assert "per minute" in page.locator("#activity .insight-head").inner_text()


def test_save_reopen_and_delete_a_search(page: Any) -> None:  # noqa: F811
    """Save the current filters under a name; the saved link restores them; delete removes it."""
    _sign_in(page, ADMIN)
    page.goto("/audit-logs?range=7d&action=user.login&status=failure")
    page.fill('#saved-searches input[name="name"]', "Failed sign-ins")
    page.click('#saved-searches button:has-text("Save search")')
    page.wait_for_load_state()
    assert "Saved “Failed sign-ins”" in page.locator("#saved-searches").inner_text()
    page.goto("/audit-logs")
    link = page.locator("#saved-searches a.saved-link", has_text="Failed sign-ins")
    href = link.get_attribute("href")
    link.click()
    page.wait_for_load_state()
    assert page.input_value('input[name="action"]') == "user.login"
    assert page.input_value('select[name="status"]') == "failure"
    statuses = page.locator("#logs tbody .col-status").all_inner_texts()
    assert statuses and set(statuses) == {"failure"}
    # Shared by link: the same address opens the same filters in another session.
    assert href is not None and "action=user.login" in href and "status=failure" in href
    page.click('#saved-searches button[aria-label="Delete saved search Failed sign-ins"]')
    page.wait_for_load_state()
    assert "Deleted “Failed sign-ins”" in page.locator("#saved-searches").inner_text()
    assert page.locator("#saved-searches a.saved-link", has_text="Failed sign-ins").count() == 0
