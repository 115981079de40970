"""The audit log page's "Show reads" switch in a real browser against `auditkeep serve` (issue #9)."""

from __future__ import annotations

from typing import Any

from tests.web.test_browser import ADMIN, _sign_in, chromium, console, page  # noqa: F401 - fixtures

READ = "audit_logs.read"


def _actions(page: Any) -> list[str]:  # noqa: F811 - the page fixture's value
    return list(page.locator("#logs tbody tr td:nth-child(2)").all_inner_texts())


def test_show_reads_switch_round_trips_through_the_url(page: Any) -> None:  # noqa: F811
    """Reads are hidden on arrival (the sign-in's own view wrote one); the switch shows them, Apply keeps it
    on, and switching it off hides them again."""
    _sign_in(page, ADMIN)
    page.goto("/audit-logs?limit=200")
    assert READ not in _actions(page)
    switch = page.locator("#show-reads")
    assert switch.inner_text().strip().endswith("Show reads") and switch.get_attribute("aria-checked") == "false"

    switch.click()
    page.wait_for_url("**/audit-logs?*reads=1*")
    assert READ in _actions(page)
    assert page.locator("#show-reads").get_attribute("aria-checked") == "true"

    page.fill('input[name="action"]', "audit_logs.*")
    page.click('button:has-text("Apply")')
    page.wait_for_url("**/audit-logs?*reads=1*")
    assert set(_actions(page)) == {READ}

    page.goto("/audit-logs?limit=200&reads=1")
    page.click("#show-reads")
    page.wait_for_load_state()
    assert "reads=1" not in page.url
    assert READ not in _actions(page)
