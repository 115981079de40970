"""The console in a real headless Chromium (Playwright for Python) against the real server process.

Chromium is the system's (Debian: `apt-get install -y chromium`); Playwright never downloads a browser.
Without one these tests skip, except with CI=true, where a missing Chromium fails the run.

They take the README's screenshots (sign-in, audit log, event detail, API keys). A normal run keeps them
in its temporary directory, so that `make test` leaves the work tree clean; with
AUDITKEEP_UPDATE_SCREENSHOTS=1 they replace docs/screenshots/*.png.
"""

from __future__ import annotations

import csv
import io
import os
import random
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa

from auditkeep.auth.passwords import hash_password
from auditkeep.auth.principals import Principal, Role, Scope
from auditkeep.settings import Settings
from auditkeep.storage import identity, open_storage
from auditkeep.storage.identity import Org
from auditkeep.storage.types import format_timestamp
from tests.conftest import IN_CI
from tests.e2e.server import Server

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ADMIN, VIEWER, PASSWORD = "ann@acme.example", "victor@acme.example", "browser-test-password"
XSS_ENTRY = '<img src=x onerror="window.__xss=1">Nice <b>work</b><script>window.__xss=2</script>'
OLD_ENTRY = "ann@acme.example deleted dataset legacy_orders"  # two years ago: only "All time" shows it
PHONE = {"width": 390, "height": 844}


def _chromium() -> str:
    path = os.environ.get("AUDITKEEP_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "no Chromium found (apt-get install -y chromium); Playwright never downloads one"
        if IN_CI:
            pytest.fail(f"browser tests are mandatory in CI: {message}")
        pytest.skip(message)
    return path


@dataclass
class Console:
    url: str
    admin_key: str


_USERS = ["ann@acme.example", "bob@acme.example", "chen@acme.example", "dana@acme.example"]
_AGENTS = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
]
_KINDS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("user.login", "user", "{user} signed in", {"method": "sso", "idp": "okta"}),
    ("dataset.update", "dataset", "{user} changed the retention of orders_daily",
     {"dataset": "orders_daily", "changes": {"retention_days": {"from": 30, "to": 90}}}),
    ("dataset.create", "dataset", "{user} created dataset churn_features",
     {"dataset": "churn_features", "warehouse": "snowflake", "schema": "analytics"}),
    ("connection.update", "connection", "{user} rotated the credentials of warehouse-prod",
     {"connection": "warehouse-prod", "fields": ["password"]}),
    ("datadiff.run", "datadiff", "{user} compared orders_daily between staging and prod",
     {"source": "staging.orders_daily", "target": "prod.orders_daily", "rows_different": 12}),
    ("role.update", "user", "{user} made chen@acme.example an admin",
     {"member": "chen@acme.example", "role": {"from": "default", "to": "admin"}}),
    ("export.download", "dataset", "{user} downloaded a CSV of churn_features",
     {"dataset": "churn_features", "format": "csv", "rows": 18250}),
]


def _events(now: datetime) -> list[dict[str, Any]]:
    rng = random.Random(5)
    out: list[dict[str, Any]] = []
    for i in range(90):
        action, object_type, entry, payload = rng.choice(_KINDS)
        user = rng.choice(_USERS)
        failed = action == "user.login" and rng.random() < 0.25
        out.append({
            "action": action, "object_type": object_type, "object_id": rng.randint(100, 990),
            "user_email": user, "user_id": _USERS.index(user) + 1, "client_ip": f"203.0.113.{rng.randint(2, 250)}",
            "url": f"https://app.datafold.example/{object_type}s/{rng.randint(100, 990)}",
            "request_type": "POST" if action != "export.download" else "GET", "source": "app",
            "status": "failure" if failed else "success", "user_agent": rng.choice(_AGENTS),
            "log_entry": entry.format(user=user) + (" (wrong password)" if failed else ""), "payload": payload,
            "is_support_user": False, "timestamp": format_timestamp(now - timedelta(minutes=4 * (90 - i))),
        })
    out.append({"action": "comment.create", "object_type": "comment", "user_email": "dana@acme.example",
                "client_ip": "203.0.113.77", "url": "https://app.datafold.example/comments/1",
                "source": "app", "status": "success", "log_entry": XSS_ENTRY,
                "payload": {"comment": XSS_ENTRY}, "timestamp": format_timestamp(now - timedelta(hours=5))})
    out.append({"action": "dataset.delete", "object_type": "dataset", "user_email": ADMIN, "client_ip": "203.0.113.9",
                "url": "https://app.datafold.example/datasets/7", "source": "app", "status": "success",
                "log_entry": OLD_ENTRY, "timestamp": format_timestamp(now - timedelta(days=730))})
    return out


@contextmanager
def acme(url: str, signing_key_path: Path) -> Iterator[tuple[sa.Connection, Org, Principal]]:
    """In a write transaction on the database at `url`: org "acme" with its admin and its viewer, both
    signing in with PASSWORD; yields (connection, org, admin) for a console fixture to add to."""
    storage = open_storage(url, settings=Settings(database_url=url, signing_key_path=signing_key_path))
    password_hash = hash_password(PASSWORD)
    try:
        with storage.write() as conn:
            org = identity.create_org(conn, "acme")
            admin = identity.create_user(conn, org, ADMIN, Role.ADMIN)
            viewer = identity.create_user(conn, org, VIEWER, Role.VIEWONLY)
            for user in (admin, viewer):
                identity.set_password_hash(conn, user.id, password_hash)
            yield conn, org, admin
    finally:
        storage.dispose()


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """`auditkeep serve` on a fresh SQLite database holding org "acme", its people and 90 events."""
    tmp = tmp_path_factory.mktemp("console")
    url = f"sqlite:///{tmp / 'console.db'}"
    with acme(url, tmp / "key.pem") as (conn, org, admin):
        admin_key, _ = identity.create_key(conn, admin)
        siem = identity.create_service_account(conn, org, "siem-exporter", frozenset({Scope.READ}))
        identity.create_key(conn, siem)
    server = Server(url, env={"AUDITKEEP_SIGNING_KEY_PATH": str(tmp / "key.pem")}).start()
    try:
        r = httpx.post(f"{server.url}/api/v1/audit_logs", json=_events(datetime.now(UTC)),
                       headers={"Authorization": f"Key {admin_key}"})
        assert r.status_code == 201, r.text
        r = httpx.post(f"{server.url}/api/v1/integrity/checkpoints", headers={"Authorization": f"Key {admin_key}"})
        assert r.status_code == 201, r.text
        yield Console(server.url, admin_key)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    path = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium: Any, console: Console) -> Iterator[Any]:
    """A fresh browser profile; fails the test if the page broke the CSP or threw."""
    context = chromium.new_context(base_url=console.url, viewport={"width": 1360, "height": 860},
                                   accept_downloads=True)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=console.url)
    p = context.new_page()
    problems: list[str] = []
    p.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
    p.on("pageerror", lambda e: problems.append(str(e)))
    p.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    yield p
    context.close()
    assert problems == []


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get("AUDITKEEP_UPDATE_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return DOCS_SCREENSHOTS
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def shot(page: Any, screenshots: Path) -> Callable[[str], None]:
    """Screenshot the page as it is now, under `name`."""

    def take(name: str) -> None:
        path = screenshots / name
        page.screenshot(path=str(path), full_page=False)
        assert path.stat().st_size > 10_000  # a rendered page, not a blank one

    return take


def _sign_in(page: Any, email: str, password: str = PASSWORD) -> None:
    page.goto("/")
    page.fill('input[name="email"]', email)
    page.fill('input[name="password"]', password)
    page.click('button:has-text("Sign in")')
    page.wait_for_load_state()


def test_sign_in_form_refuses_a_wrong_password(page: Any, shot: Callable[[str], None]) -> None:
    page.goto("/")
    assert page.title() == "Sign in · auditkeep"
    shot("signin.png")
    _sign_in(page, ADMIN, "not-the-password")
    assert page.locator("#signin-message").inner_text() == "Incorrect email or password."
    assert page.input_value('input[name="email"]') == ADMIN
    assert not [c for c in page.context.cookies() if c["name"] == "auditkeep_session"]


def test_admin_signs_in_and_browses_with_filters_and_paging(page: Any, shot: Callable[[str], None]) -> None:
    _sign_in(page, ADMIN)
    assert page.url.endswith("/audit-logs")
    cookie = next(c for c in page.context.cookies() if c["name"] == "auditkeep_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.locator("#logs tbody tr").count() == 50
    assert "signature valid" in page.locator("#checkpoint-status").inner_text()
    shot("audit-log.png")

    page.click('label[for="range-1h"]')  # a preset applies at once (app.js)
    page.wait_for_url("**/audit-logs?*range=1h*")
    page.fill('input[name="action"]', "dataset.*")
    page.select_option('select[name="limit"]', "25")
    page.click('button:has-text("Apply")')
    page.wait_for_load_state()
    actions = page.locator("#logs tbody tr td:nth-child(2)").all_inner_texts()
    assert actions and all(a.startswith("dataset.") for a in actions)
    assert "action: dataset.*" in page.locator(".chips").inner_text()

    page.goto("/audit-logs?range=7d&limit=25")
    first = page.locator("#logs tbody tr td:first-child").all_inner_texts()
    page.click("#older")
    page.wait_for_load_state()
    second = page.locator("#logs tbody tr td:first-child").all_inner_texts()
    assert len(first) == 25 and second and second[0] <= first[-1]
    assert page.locator('a[rel="first"]').inner_text() == "← Newest"


def test_detail_view_shows_the_payload_pretty_printed(page: Any, shot: Callable[[str], None]) -> None:
    _sign_in(page, ADMIN)
    page.goto("/audit-logs?action=dataset.update")
    page.locator("#logs tbody tr").first.locator("td:nth-child(8)").click()  # the row opens its event
    page.wait_for_url("**/audit-logs/*-*")
    assert page.locator("h1").inner_text() == "dataset.update"
    payload = page.locator("#payload").inner_text()
    assert '"retention_days": {\n      "from": 30,' in payload
    assert "changed the retention of orders_daily" in page.locator(".log-entry").inner_text()
    shot("event-detail.png")
    page.click("text=← Audit log")
    page.wait_for_url("**/audit-logs?*action=dataset.update*")


def test_export_downloads_the_filtered_events(page: Any, tmp_path: Path) -> None:
    _sign_in(page, ADMIN)
    page.goto("/audit-logs?action=role.update")
    with page.expect_download() as info:
        page.click('a[data-export="csv"]')
    download = info.value
    assert download.suggested_filename.startswith("auditlog-acme-")
    assert download.suggested_filename.endswith(".csv")
    target = tmp_path / "export.csv"
    download.save_as(target)
    rows = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"), newline="")))
    assert rows and {r["action"] for r in rows} == {"role.update"}
    shown = page.locator("#logs tbody tr").count()
    assert len(rows) == shown  # fewer than a page: the same events


def test_create_and_revoke_a_key(page: Any, console: Console, shot: Callable[[str], None]) -> None:
    """The new key works against the API until it is revoked; then the API answers 401."""
    _sign_in(page, ADMIN)
    page.click("text=API keys")
    page.click("#create-key")
    page.wait_for_load_state()
    key = page.input_value("#new-key")
    assert key.startswith("ak_") and len(key) == 46
    page.click('button[data-copy="new-key"]')
    page.locator('button[data-copy="new-key"]:text-is("Copied")').wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == key
    headers = {"Authorization": f"Key {key}"}
    assert httpx.get(f"{console.url}/api/v1/audit_logs?limit=1", headers=headers).status_code == 200
    shot("api-keys.png")

    page.goto("/api-keys")
    page.locator(f'tr[data-prefix="{key[:11]}"] a:has-text("Revoke")').click()
    assert "cannot be undone" in page.locator(".alert-warning").inner_text()
    page.click("#confirm-revoke")
    page.wait_for_url("**/api-keys?revoked=*")
    assert f"API key {key[:11]}… was revoked." in page.locator("#keys-notice").inner_text()
    assert httpx.get(f"{console.url}/api/v1/audit_logs?limit=1", headers=headers).status_code == 401


def test_markup_in_an_event_stays_inert(page: Any) -> None:
    """The script and the onerror handler neither run nor render: they show as text."""
    _sign_in(page, ADMIN)
    page.goto("/audit-logs?action=comment.create")
    cell = page.locator("#logs tbody tr").first.locator("td:nth-child(8)")
    assert cell.inner_text() == XSS_ENTRY
    assert page.locator("#logs img").count() == 0 and page.locator("#logs b").count() == 0
    cell.click()
    page.wait_for_url("**/audit-logs/*-*")
    assert page.locator(".log-entry").inner_text() == XSS_ENTRY
    assert page.evaluate("window.__xss === undefined")


def test_viewonly_user_is_refused_the_audit_log(page: Any) -> None:
    _sign_in(page, VIEWER)
    assert page.url.endswith("/api-keys")
    assert page.locator(".mainnav").inner_text() == "API keys"
    response = page.goto("/audit-logs")
    assert response.status == 403
    assert page.locator("h1").inner_text() == "Not allowed"
    assert "Only admins of acme can open this page." in page.locator("main").inner_text()


def _in_viewport(page: Any, selector: str) -> None:
    """Every element matching `selector` is shown and lies wholly inside the viewport."""
    size = page.viewport_size
    boxes = [loc.bounding_box() for loc in page.locator(selector).all()]
    assert boxes, selector
    for box in boxes:
        assert box is not None and box["width"] > 0 and box["height"] > 0, selector
        assert box["x"] >= 0 and box["x"] + box["width"] <= size["width"], (selector, box)
        assert box["y"] >= 0 and box["y"] + box["height"] <= size["height"], (selector, box)


def test_audit_log_fits_a_phone(page: Any, shot: Callable[[str], None]) -> None:
    """At 390x844 nothing scrolls sideways and a row shows its time, action, actor, status and client IP."""
    page.set_viewport_size(PHONE)
    _sign_in(page, ADMIN)
    page.goto("/audit-logs?action=role.update")  # the fixture's events, not the console's own sign-ins
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    row = page.locator("#logs tbody tr").first
    row.scroll_into_view_if_needed()
    _in_viewport(page, "#logs tbody tr:first-child :is(.col-time, .col-action, .col-actor, .col-status, .col-ip)")
    texts = [row.locator(c).inner_text() for c in (".col-action", ".col-actor", ".col-ip")]
    assert texts[0] == "role.update" and texts[1].endswith("@acme.example") and texts[2].startswith("203.0.113.")
    page.goto("/audit-logs")
    page.locator(".table-card").evaluate("card => card.scrollIntoView()")
    shot("audit-log-phone.png")


def test_api_keys_fit_a_phone(page: Any) -> None:
    """At 390x844 the keys page does not scroll sideways and a key's prefix, owner, status and Revoke show."""
    page.set_viewport_size(PHONE)
    _sign_in(page, ADMIN)
    page.goto("/api-keys")
    page.click("#create-key")
    page.wait_for_load_state()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    row = page.locator("#keys tbody tr").first
    row.scroll_into_view_if_needed()
    _in_viewport(page, "#keys tbody tr:first-child td")
    assert row.locator("td a:has-text('Revoke')").is_visible()
    page.locator("#accounts tbody tr").first.scroll_into_view_if_needed()
    _in_viewport(page, "#accounts tbody tr:first-child td")


def test_integrity_banner_is_one_line_at_1440(page: Any, console: Console) -> None:
    """With four-digit counts (2,000 more events, a month old so other views do not show them)."""
    month_ago = format_timestamp(datetime.now(UTC) - timedelta(days=30))
    bulk = [{"action": "bulk.sync", "client_ip": "203.0.113.5", "url": "https://app.datafold.example/sync",
             "timestamp": month_ago} for _ in range(2_000)]
    r = httpx.post(f"{console.url}/api/v1/audit_logs", json=bulk, headers={"Authorization": f"Key {console.admin_key}"})
    assert r.status_code == 201, r.text
    page.set_viewport_size({"width": 1440, "height": 900})
    _sign_in(page, ADMIN)
    page.goto("/audit-logs")
    height, padding, line = page.evaluate("""() => {
        const banner = document.querySelector(".integrity"), style = getComputedStyle(banner);
        const padding = parseFloat(style.paddingTop) + parseFloat(style.paddingBottom)
            + parseFloat(style.borderTopWidth) + parseFloat(style.borderBottomWidth);
        return [banner.getBoundingClientRect().height, padding, parseFloat(style.lineHeight)];
    }""")
    assert height - padding < 2 * line  # one line of text (badges and code sit inside it)
    tops = {round(b["y"]) for b in (loc.bounding_box() for loc in page.locator(".integrity-label").all()) if b}
    assert len(tops) == 1  # both items side by side


def test_all_time_shows_a_two_year_old_event(page: Any) -> None:
    _sign_in(page, ADMIN)
    page.goto("/audit-logs?action=dataset.delete")
    assert page.locator("#logs tbody tr").count() == 0
    page.click('label[for="range-all"]')  # a preset applies at once (app.js)
    page.wait_for_url("**/audit-logs?*range=all*")
    assert page.locator("#logs tbody tr .col-entry").all_inner_texts() == [OLD_ENTRY]
    assert page.locator("#range-all").is_checked()
    assert "range=all" in (page.locator('a[data-export="csv"]').get_attribute("href") or "")


def test_csv_download_is_newest_first_and_the_apis_bytes(page: Any, console: Console, tmp_path: Path) -> None:
    """The page's CSV download equals GET /api/v1/audit_logs?format=csv&order=desc for the same filter."""
    _sign_in(page, ADMIN)
    page.goto("/audit-logs?range=all&action=user.login")
    with page.expect_download() as info:
        page.click('a[data-export="csv"]')
    target = tmp_path / "export.csv"
    info.value.save_as(target)
    api = httpx.get(f"{console.url}/api/v1/audit_logs?action=user.login&format=csv&order=desc",
                    headers={"Authorization": f"Key {console.admin_key}"})
    assert api.status_code == 200
    assert target.read_bytes() == api.content
    rows = list(csv.DictReader(io.StringIO(api.text, newline="")))
    assert len(rows) > 1 and [r["timestamp"] for r in rows] == sorted((r["timestamp"] for r in rows), reverse=True)
    shown = page.locator("#logs tbody tr .col-time").all_inner_texts()
    assert len(shown) == len(rows)


def test_docs_render_offline(chromium: Any, console: Console) -> None:
    """/docs loads every asset from the server itself: a request to any other host is aborted and recorded."""
    context = chromium.new_context(base_url=console.url)
    page = context.new_page()
    leaving: list[str] = []
    problems: list[str] = []

    def route(r: Any) -> None:
        host = urlsplit(r.request.url).hostname
        if r.request.url.startswith(("data:", "blob:")) or host in {"127.0.0.1", "localhost"}:
            r.continue_()
        else:
            leaving.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    try:
        response = page.goto("/docs")
        assert response.status == 200
        assert "cdn" not in response.headers["content-security-policy"]
        page.locator(".opblock").first.wait_for()
        paths = page.locator(".opblock-summary-path").all_inner_texts()
        assert "/api/v1/audit_logs" in [p.replace("\u200b", "") for p in paths]
        assert page.locator(".opblock").count() == len(paths) >= 10
        assert page.locator(".information-container .title").inner_text().startswith("auditkeep")
    finally:
        context.close()
    assert leaving == []
    assert problems == []


def test_a_key_gets_its_name_and_expiry_from_the_create_form(page: Any, console: Console) -> None:
    """Name and expiry chosen in the form show in the key's row, and the key works against the API."""
    _sign_in(page, ADMIN)
    page.goto("/api-keys")
    assert page.input_value("#key-expiry") == "90"  # the form's suggestion
    page.fill("#key-name", "nightly export")
    page.select_option("#key-expiry", "7")
    before = datetime.now(UTC).replace(second=0, microsecond=0)
    page.click("#create-key")
    page.wait_for_load_state()
    after = datetime.now(UTC)
    key = page.input_value("#new-key")
    page.goto("/api-keys")
    row = page.locator(f'tr[data-prefix="{key[:11]}"]')
    assert row.locator(".col-name").inner_text() == "nightly export"
    expires = datetime.strptime(row.locator(".col-expires").inner_text(), "%Y-%m-%d %H:%M UTC").replace(tzinfo=UTC)
    assert before + timedelta(days=7) <= expires <= after + timedelta(days=7)
    assert httpx.get(f"{console.url}/api/v1/audit_logs?limit=1",
                     headers={"Authorization": f"Key {key}"}).status_code == 200
