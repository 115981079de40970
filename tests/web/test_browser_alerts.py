"""The Alerts page in a real Chromium against `auditkeep serve`, whose own evaluator counts in the
background and notifies a real webhook receiver on loopback (issue #13). Takes docs/screenshots/alerts.png
and alerts-phone.png."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from auditkeep.storage import identity
from tests.e2e.server import Server
from tests.streams.receivers import WebhookReceiver, verify_signature, webhook_receiver
from tests.web.test_browser import (  # noqa: F401 - fixtures
    ADMIN,
    PASSWORD,
    PHONE,
    VIEWER,
    Console,
    _in_viewport,
    _sign_in,
    acme,
    chromium,
    page,
    screenshots,
    shot,
)

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

SECRET = "browser-alert-secret-0123456789"


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """`auditkeep serve` (evaluator on, polling every 0.1 s) with its own database and keys, and org
    "acme" holding an admin and a viewer."""
    tmp = tmp_path_factory.mktemp("alerts-console")
    url = f"sqlite:///{tmp / 'console.db'}"
    env = {"AUDITKEEP_SIGNING_KEY_PATH": str(tmp / "key.pem"), "AUDITKEEP_SECRETS_KEY_PATH": str(tmp / "secrets"),
           "AUDITKEEP_ALERT_POLL_SECONDS": "0.1"}
    with acme(url, tmp / "key.pem") as (conn, _, admin):
        admin_key, _ = identity.create_key(conn, admin)
    server = Server(url, env=env).start()
    try:
        yield Console(server.url, admin_key)
    finally:
        server.stop()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as r:
        yield r


def _api(console: Console, method: str, path: str, **kwargs: Any) -> Any:
    r = httpx.request(method, f"{console.url}{path}", headers={"Authorization": f"Key {console.admin_key}"},
                      **kwargs)
    assert r.status_code < 300, r.text
    return r.json() if r.content else None


def _cell(tab: Any, name: str, column: str) -> str:
    return str(tab.locator(f'#alert-rules tr[data-rule="{name}"] .{column}').inner_text()).strip()


def _wait(tab: Any, done: Callable[[], bool], timeout: float = 20.0) -> None:
    """Reload the page until `done()` holds (the server's evaluator works in the background)."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the page did not get there in time"
        time.sleep(0.25)
        tab.reload()


def test_alerts_from_the_console(page: Any, console: Console, receiver: WebhookReceiver,  # noqa: F811
                                 shot: Callable[[str], None]) -> None:  # noqa: F811
    """A template enabled in one click fires on a matching event, recorded by the server's own evaluator; a
    rule with a webhook notifies it (signed); one whose receiver is down shows failing with the error;
    disable and enable switch a rule; a test notification reports each channel."""
    _sign_in(page, ADMIN)
    page.click(".mainnav >> text=Alerts")
    page.wait_for_url("**/alerts")
    assert page.locator(".empty").inner_text().startswith("No alert rules yet.")
    page.locator('#templates tr[data-template="api_key_changes"] [data-action="enable-template"]').click()
    page.wait_for_url("**/alerts?done=created*")
    assert "Alert rule 'API key created or revoked' is on." in page.locator("#alerts-notice").inner_text()
    assert page.locator('#templates tr[data-template="api_key_changes"] .badge').inner_text() == "on"
    assert _cell(page, "API key created or revoked", "col-notify") == "the log only"

    with webhook_receiver() as down:
        down.answer = lambda d: (503, {})
        _api(console, "POST", "/api/v1/alert_rules", json={
            "name": "exports", "filter": {"action": "report.export"}, "threshold": {"count": 2, "window_seconds": 60},
            "group_by": ["user_email"], "notify": [{"kind": "webhook", "url": receiver.url, "secret": SECRET}]})
        _api(console, "POST", "/api/v1/alert_rules", json={
            "name": "pager", "filter": {"action": "report.export"}, "threshold": {"count": 1, "window_seconds": 60},
            "notify": [{"kind": "slack", "url": down.url}]})
        _api(console, "POST", "/api/v1/audit_logs", json=[
            {"client_ip": "203.0.113.8", "url": "https://app.example/x", "action": action,
             "user_email": "ann@acme.example"} for action in ("report.export", "report.export", "api_key.create")])
        page.reload()
        _wait(page, lambda: bool(receiver.received) and _cell(page, "pager", "col-state").startswith("failing")
              and not _cell(page, "API key created or revoked", "col-last-fired").startswith("never"))
        alert = receiver.received[0].json["alert"]
        assert verify_signature(SECRET, receiver.received[0])
        assert alert["rule"]["name"] == "exports" and alert["group"] == {"user_email": "ann@acme.example"}
        assert "answered 503" in _cell(page, "pager", "col-error")
        assert _cell(page, "exports", "col-last-fired").startswith(datetime.now(UTC).strftime("%Y-%m-%d"))
        assert _cell(page, "exports", "col-threshold").startswith("2 in 1 min 0 s per user_email")
        shot("alerts.png")

    page.locator('#alert-rules tr[data-rule="exports"] [data-action="disable"]').click()
    page.wait_for_url("**/alerts?done=disabled*")
    assert _cell(page, "exports", "col-state") == "disabled"
    page.locator('#alert-rules tr[data-rule="exports"] [data-action="enable"]').click()
    page.wait_for_url("**/alerts?done=enabled*")
    assert _cell(page, "exports", "col-state") == "enabled"

    page.locator('#alert-rules tr[data-rule="exports"] [data-action="test"]').click()
    page.wait_for_load_state()
    assert page.locator("#alert-test-result").inner_text() == "Test notification for exports: webhook delivered."
    assert receiver.received[-1].json["alert"]["test"] is True

    logs = _api(console, "GET", "/api/v1/audit_logs", params={"action": "alert_rule.*"})["logs"]
    assert [(log["action"], log["source"]) for log in logs if log["source"] == "web"] == [
        ("alert_rule.create", "web"), ("alert_rule.update", "web"), ("alert_rule.update", "web")]
    fired = _api(console, "GET", "/api/v1/audit_logs", params={"action": "alert.fired"})["logs"]
    assert {log["source"] for log in fired} == {"auditkeep"} and len(fired) >= 3


def test_alerts_fit_a_phone(page: Any, console: Console, shot: Callable[[str], None]) -> None:  # noqa: F811
    """At 390x844 nothing scrolls sideways; a rule's cells and its actions lie inside the screen."""
    page.set_viewport_size(PHONE)
    _sign_in(page, ADMIN)
    page.goto("/alerts")
    if page.locator('#templates tr[data-template="failed_signins"] [data-action="enable-template"]').count():
        page.locator('#templates tr[data-template="failed_signins"] [data-action="enable-template"]').click()
        page.wait_for_url("**/alerts?done=created*")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    row = page.locator('#alert-rules tr[data-rule="A burst of failed sign-ins"]')
    row.evaluate("r => r.scrollIntoView()")
    _in_viewport(page, '#alert-rules tr[data-rule="A burst of failed sign-ins"] td.col-state')
    _in_viewport(page, '#alert-rules tr[data-rule="A burst of failed sign-ins"] .stream-actions .btn')
    page.goto("/alerts")
    shot("alerts-phone.png")


def test_non_admins_get_the_403_page(page: Any) -> None:  # noqa: F811
    _sign_in(page, VIEWER)
    assert "Alerts" not in page.locator(".mainnav").inner_text()
    response = page.goto("/alerts")
    assert response.status == 403
    assert page.locator("h1").inner_text() == "Not allowed"
