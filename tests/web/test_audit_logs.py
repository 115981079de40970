"""The audit log page: admins only, newest first, filters, presets, cursor paging, detail, exports."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from fastapi.testclient import TestClient

from auditkeep.auth.principals import Role
from auditkeep.storage import integrity as integrity_records
from auditkeep.storage import pages as storage_pages
from auditkeep.storage import search
from auditkeep.storage.types import format_timestamp
from tests.conftest import Tenant
from tests.web.conftest import Browser, People, events


def _ingest(tenant: Tenant, client: TestClient, batch: list[dict[str, object]]) -> list[str]:
    body = [{"client_ip": "10.0.0.1", "url": "https://app.test/x", **e} for e in batch]
    r = client.post("/api/v1/audit_logs", headers=tenant.headers, json=body)
    assert r.status_code == 201, r.text
    return list(r.json()["event_uuids"])


def _ago(**delta: float) -> str:
    return format_timestamp(datetime.now(UTC) - timedelta(**delta))


def _row_uuids(html: str) -> list[str]:
    return re.findall(r'<tr data-href="/audit-logs/([0-9a-f-]{36})', html)


@pytest.fixture
def admin(people: People, browser: Browser) -> Browser:
    browser.sign_in(people.admin.name)
    return browser


@pytest.mark.parametrize("role", [Role.VIEWONLY, Role.DEFAULT])
def test_non_admins_get_a_403_page_and_the_refusal_is_audited(
    tenant: Tenant, people: People, browser: Browser, role: Role
) -> None:
    user = people.add(role)
    browser.sign_in(user.name)
    for path in ("/audit-logs", "/audit-logs/export?format=csv",
                 "/audit-logs/00000000-0000-0000-0000-000000000000"):
        r = browser.get(path)
        assert r.status_code == 403
        assert f"Only admins of {tenant.org.name} can open this page." in r.text
    assert 'href="/audit-logs"' not in browser.get("/api-keys").text  # not even in the menu
    denied = events(tenant.storage, tenant.org.id, "request.denied")
    assert len(denied) == 3 and {e["source"] for e in denied} == {"web"}
    assert {e["user_email"] for e in denied} == {user.name} and {e["status"] for e in denied} == {"failure"}
    assert events(tenant.storage, tenant.org.id, "audit_logs.read") == []


def test_signed_out_visitors_are_sent_to_sign_in(browser: Browser) -> None:
    r = browser.get("/audit-logs?range=1h", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/?next=/audit-logs%3Frange%3D1h"


def test_table_is_newest_first_and_each_view_is_self_audited(
    tenant: Tenant, admin: Browser, app_client: TestClient
) -> None:
    uuids = _ingest(tenant, app_client, [{"action": f"t.{i}", "timestamp": _ago(minutes=10 - i)} for i in range(3)])
    html = admin.get("/audit-logs?action=t.*").text
    assert _row_uuids(html) == uuids[::-1]
    (read,) = events(tenant.storage, tenant.org.id, "audit_logs.read")
    assert read["source"] == "web" and read["user_email"] == tenant.admin.name and read["status"] == "success"
    assert read["request_type"] == "GET" and read["payload"]["filter"] == {"range": "7d", "action": "t.*"}


def test_presets_bound_the_time_range(tenant: Tenant, admin: Browser, app_client: TestClient) -> None:
    hour, day, week, old = _ingest(tenant, app_client, [
        {"action": "p.hour", "timestamp": _ago(minutes=30)},
        {"action": "p.day", "timestamp": _ago(hours=5)},
        {"action": "p.week", "timestamp": _ago(days=3)},
        {"action": "p.old", "timestamp": _ago(days=30)},
    ])
    assert _row_uuids(admin.get("/audit-logs?range=1h&action=p.*").text) == [hour]
    assert _row_uuids(admin.get("/audit-logs?range=24h&action=p.*").text) == [hour, day]
    assert _row_uuids(admin.get("/audit-logs?range=7d&action=p.*").text) == [hour, day, week]
    assert _row_uuids(admin.get("/audit-logs?range=custom&action=p.*").text) == [hour, day, week, old]
    start = (datetime.now(UTC) - timedelta(days=31)).strftime("%Y-%m-%dT%H:%M")
    end = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    r = admin.get(f"/audit-logs?range=custom&start={start}&end={end}&action=p.*")
    assert _row_uuids(r.text) == [week, old]
    assert f'name="start" value="{start}"' in r.text


def test_all_time_shows_every_event_and_its_links_keep_the_range(
    tenant: Tenant, admin: Browser, app_client: TestClient
) -> None:
    """range=all has no lower bound: a two-year-old event shows, and paging, export and detail links keep it."""
    events_ = [{"action": "a.old", "timestamp": _ago(days=730)}] + [
        {"action": "a.new", "timestamp": _ago(minutes=30 - i)} for i in range(25)]
    old, *new = _ingest(tenant, app_client, events_)
    assert _row_uuids(admin.get("/audit-logs?range=7d&action=a.*&limit=50").text) == new[::-1]
    html = admin.get("/audit-logs?range=all&action=a.*&limit=50").text
    assert _row_uuids(html) == [*new[::-1], old]
    assert 'id="range-all" value="all" checked' in html and '<label for="range-all">All time</label>' in html
    assert 'href="/audit-logs/export?range=all&amp;action=a.%2A&amp;format=csv&amp;order=desc"' in html
    assert f'<tr data-href="/audit-logs/{old}?range=all&amp;action=a.%2A"' in html
    first = admin.get("/audit-logs?range=all&action=a.*&limit=25").text
    older = re.search(r'href="([^"]+)" rel="next"', first)
    assert older is not None
    assert older.group(1).startswith("/audit-logs?range=all&amp;action=a.%2A&amp;limit=25&amp;cursor=")
    assert _row_uuids(admin.get(older.group(1).replace("&amp;", "&")).text) == [old]


def test_a_reversed_or_unreadable_custom_range_is_explained(admin: Browser) -> None:
    r = admin.get("/audit-logs?range=custom&start=2026-01-02T00:00&end=2026-01-01T00:00")
    assert r.status_code == 400 and "The end of the range must come after its start." in r.text
    r = admin.get("/audit-logs?range=custom&start=yesterday")
    assert r.status_code == 400 and "not a date and time" in r.text


def test_filters_narrow_the_table(tenant: Tenant, admin: Browser, app_client: TestClient) -> None:
    a, b, c = _ingest(tenant, app_client, [
        {"action": "f.user.login", "status": "failure", "user_email": "ann@x.test", "source": "app",
         "log_entry": "Ann failed to sign in"},
        {"action": "f.user.login", "status": "success", "user_email": "bob@x.test", "source": "app"},
        {"action": "f.setting.update", "status": "success", "user_email": "ann@x.test", "source": "sdk"},
    ])
    assert set(_row_uuids(admin.get("/audit-logs?action=f.user.login").text)) == {a, b}
    assert set(_row_uuids(admin.get("/audit-logs?action=f.*&status=failure").text)) == {a}
    assert set(_row_uuids(admin.get("/audit-logs?action=f.*&user_email=ann@x.test").text)) == {a, c}
    assert set(_row_uuids(admin.get("/audit-logs?action=f.*&source=sdk").text)) == {c}
    assert set(_row_uuids(admin.get("/audit-logs?q=ann+failed").text)) == {a}
    html = admin.get("/audit-logs?action=f.*&status=failure").text
    assert 'class="chip"' in html and "status: failure" in html


def test_a_text_search_shows_a_full_page_of_matches_however_far_back_they_are(
    tenant: Tenant, admin: Browser, app_client: TestClient
) -> None:
    """An old match behind newer non-matching events is on the first page, and a term found nowhere says
    plainly that nothing matched, with no "Older" link (issue #13: q pages are full)."""
    (needle,) = _ingest(tenant, app_client, [{"action": "s.find", "log_entry": "the needle"}])
    _ingest(tenant, app_client, [{"action": "s.hay", "log_entry": f"hay {n}"} for n in range(4)])
    search.index_batch(tenant.storage, tenant.org.id, batch=2)  # some indexed, the newest not yet
    html = admin.get("/audit-logs?action=s.*&q=NEEDLE").text
    assert _row_uuids(html) == [needle] and 'id="older"' not in html
    html = admin.get("/audit-logs?action=s.*&q=nothing-like-it").text
    assert "No events match." in html and 'id="older"' not in html


def test_a_text_search_while_the_index_catches_up_offers_to_search_further_back(
    tenant: Tenant, admin: Browser, app_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tail too long to scan (TAIL_LIMIT) falls back to a bounded scan a page: an empty page says so
    and links on, and following "Older" finds the match."""
    (needle,) = _ingest(tenant, app_client, [{"action": "s.find", "log_entry": "the needle"}])
    _ingest(tenant, app_client, [{"action": "s.hay", "log_entry": f"hay {n}"} for n in range(4)])
    monkeypatch.setattr(search, "TAIL_LIMIT", 0)
    monkeypatch.setattr(storage_pages, "Q_SCAN_BUDGET", 2)  # the newest page tests only two events
    html = admin.get("/audit-logs?action=s.*&q=needle").text
    assert "No matches on this page." in html and 'id="older"' in html
    pages_seen = 1
    while needle not in _row_uuids(html):
        html = admin.get(_older_href(html)).text
        pages_seen += 1
    assert pages_seen > 1


def test_a_search_shorter_than_three_characters_is_explained(admin: Browser) -> None:
    """The index serves three characters or more: a shorter search says so (400), not an empty page."""
    r = admin.get("/audit-logs?q=ab")
    assert r.status_code == 400 and "Search for at least 3 characters." in r.text


def _older_href(html: str) -> str:
    match = re.search(r'href="([^"]+)" rel="next"', html)
    assert match, "no Older link"
    return match.group(1).replace("&amp;", "&")


def test_paging_walks_every_event_once_and_never_more_than_a_page(
    tenant: Tenant, admin: Browser, app_client: TestClient
) -> None:
    """25 a page; the Older link's cursor resumes after the last row, and events added meanwhile wait."""
    uuids = _ingest(tenant, app_client, [{"action": "page.e", "timestamp": _ago(seconds=60 - i)} for i in range(57)])
    seen: list[str] = []
    url: str | None = "/audit-logs?action=page.e&limit=25"
    pages = 0
    while url:
        html = admin.get(url).text
        rows = _row_uuids(html)
        assert len(rows) <= 25
        seen += rows
        pages += 1
        if pages == 1:  # ingested after the walk began: not part of it
            _ingest(tenant, app_client, [{"action": "page.e"}])
            assert "← Newest" not in html
        else:
            assert "← Newest" in html
        match = re.search(r'href="([^"]+)" rel="next"', html)
        url = match.group(1).replace("&amp;", "&") if match else None
    assert pages == 3
    assert seen == uuids[::-1]


def test_a_forged_cursor_is_refused_politely(admin: Browser) -> None:
    r = admin.get("/audit-logs?cursor=not-a-cursor")
    assert r.status_code == 400 and "not valid any more" in r.text


def test_detail_shows_every_field_and_the_payload_pretty_printed(
    tenant: Tenant, admin: Browser, app_client: TestClient
) -> None:
    (uuid,) = _ingest(tenant, app_client, [{
        "action": "d.export", "object_type": "dataset", "object_id": 42, "user_email": "ann@x.test",
        "log_entry": "Ann exported a dataset", "payload": {"rows": 3, "columns": ["a", "b"]},
        "is_support_user": True,
    }])
    r = admin.get(f"/audit-logs/{uuid}?action=d.*")
    assert r.status_code == 200
    html = r.text
    assert "Ann exported a dataset" in html and "dataset" in html and "42" in html
    assert '{\n  &#34;columns&#34;: [\n    &#34;a&#34;,\n    &#34;b&#34;\n  ],\n  &#34;rows&#34;: 3\n}' in html
    assert 'href="/audit-logs?action=d.%2A"' in html  # back to the same filter
    stored = next(e for e in events(tenant.storage, tenant.org.id) if e["event_uuid"] == uuid)
    assert stored["hash"] in html and f"<dd class=\"mono\">{stored['seq']}</dd>" in html
    read = events(tenant.storage, tenant.org.id, "audit_logs.read")[-1]
    assert read["payload"]["event_uuid"] == uuid and read["source"] == "web"


def test_unknown_event_is_a_404_page(admin: Browser) -> None:
    for uuid in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        r = admin.get(f"/audit-logs/{uuid}")
        assert r.status_code == 404 and "no event with that id" in r.text


@pytest.mark.parametrize("fmt", ["json", "ndjson", "csv"])
def test_export_downloads_the_current_filter(
    tenant: Tenant, admin: Browser, app_client: TestClient, fmt: str
) -> None:
    """Streamed attachment, newest first as the page shows, only what the filter matches, the API's bytes for
    order=desc; audited."""
    uuids = _ingest(tenant, app_client, [
        {"action": "x.keep", "timestamp": _ago(minutes=3), "payload": {"n": 1}},
        {"action": "x.drop", "timestamp": _ago(minutes=2)},
        {"action": "x.keep", "timestamp": _ago(minutes=1), "user_email": "a,b\"c@x.test"},
    ])
    html = admin.get("/audit-logs?action=x.keep&range=1h").text
    link = re.search(rf'href="([^"]+)" download data-export="{fmt}"', html)
    assert link is not None
    r = admin.get(link.group(1).replace("&amp;", "&"))
    assert r.status_code == 200
    assert re.fullmatch(rf'attachment; filename="auditlog-{tenant.org.name}-\d{{8}}T\d{{6}}Z\.{fmt}"',
                        r.headers["content-disposition"])
    if fmt == "json":
        logs = orjson.loads(r.content)["logs"]
    elif fmt == "ndjson":
        assert r.headers["content-type"] == "application/x-ndjson"
        logs = [orjson.loads(line) for line in r.text.splitlines()]
    else:
        assert r.headers["content-type"] == "text/csv; charset=utf-8"
        logs = list(csv.DictReader(io.StringIO(r.text)))
    assert [log["event_uuid"] for log in logs] == [uuids[2], uuids[0]]
    assert logs[0]["user_email"] == 'a,b"c@x.test'
    api = app_client.get(f"/api/v1/audit_logs?action=x.keep&format={fmt}&order=desc", headers=tenant.headers)
    assert r.content == api.content  # the API's exact bytes
    # The API's read records state their format too (issue #9): the console's is the one from "web".
    (read,) = [e for e in events(tenant.storage, tenant.org.id, "audit_logs.read")
               if e["source"] == "web" and "format" in e["payload"]]
    assert read["payload"] == {"filter": {"range": "1h", "action": "x.keep"}, "format": fmt, "order": "desc"}


@pytest.mark.parametrize("coding", ["zstd", "gzip"])
def test_export_is_compressed_when_the_browser_accepts_it(
    tenant: Tenant, admin: Browser, app_client: TestClient, coding: str
) -> None:
    """The console's export goes through the API's encoder (issue #14): zstd or gzip as asked, decoding to
    the bytes sent uncompressed."""
    _ingest(tenant, app_client, [{"action": "x.zip", "timestamp": _ago(minutes=1), "log_entry": "z" * 300}
                                 for _ in range(8)])
    url = "/audit-logs/export?action=x.zip&range=1h&format=ndjson"
    plain = admin.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and len(plain.content) > 1024
    r = admin.get(url, headers={"Accept-Encoding": coding})
    assert r.headers["content-encoding"] == coding and "Accept-Encoding" in r.headers["vary"]
    assert r.content == plain.content  # httpx decoded it


def test_unknown_export_format_is_a_404_page(admin: Browser) -> None:
    assert admin.get("/audit-logs/export?format=xml").status_code == 404


def test_integrity_line_shows_the_head_and_the_latest_checkpoint(
    tenant: Tenant, admin: Browser, app_client: TestClient
) -> None:
    """The chain head always; the latest signed checkpoint once there is one, its signature checked."""
    _ingest(tenant, app_client, [{"action": "i.e"}] * 3)
    html = admin.get("/audit-logs").text
    assert "None yet: one is signed automatically" in html
    r = app_client.post("/api/v1/integrity/checkpoints", headers=tenant.headers)
    assert r.status_code == 201, r.text
    checkpoint = r.json()
    _ingest(tenant, app_client, [{"action": "i.e"}])
    html = admin.get("/audit-logs").text
    assert '<span class="badge badge-success">signature valid</span>' in html
    assert f"tree size <strong>{checkpoint['tree_size']:,}</strong>" in html
    assert checkpoint["root_hash"][:16] in html
    head = events(tenant.storage, tenant.org.id)[-1]
    assert f'title="{head["hash"]}"' in html


def test_a_checkpoint_whose_signature_fails_is_flagged(tenant: Tenant, admin: Browser, app_client: TestClient) -> None:
    good = app_client.post("/api/v1/integrity/checkpoints", headers=tenant.headers).json()
    forged = {**good, "tree_size": good["tree_size"] + 1, "signature": "0" * 128}
    with tenant.storage.write() as conn:
        integrity_records.insert_checkpoint(conn, tenant.org.id, forged)
    html = admin.get("/audit-logs").text
    assert "signature does not verify" in html and "integrity-bad" in html


def test_reads_are_hidden_until_show_reads_is_switched_on(
    tenant: Tenant, admin: Browser, app_client: TestClient
) -> None:
    """audit_logs.read events stay out of the table by default; "Show reads" (reads=1 in the URL) brings
    them back and every link of the page keeps it (issue #9)."""
    (event,) = _ingest(tenant, app_client, [{"action": "r.kept", "timestamp": _ago(minutes=5)}])
    assert app_client.get("/api/v1/audit_logs", headers=tenant.headers).status_code == 200
    (api_read,) = [e["event_uuid"] for e in events(tenant.storage, tenant.org.id, "audit_logs.read")]
    html = admin.get("/audit-logs").text
    assert event in _row_uuids(html) and api_read not in _row_uuids(html)
    toggle = re.search(r'<a href="([^"]+)" id="show-reads" role="switch" aria-checked="false">', html)
    assert toggle is not None and toggle.group(1) == "/audit-logs?range=7d&amp;reads=1"
    shown = admin.get(toggle.group(1).replace("&amp;", "&")).text
    assert api_read in _row_uuids(shown) and event in _row_uuids(shown)
    assert 'id="show-reads" role="switch" aria-checked="true"' in shown
    assert '<input type="hidden" name="reads" value="1">' in shown
    assert f'href="/audit-logs/{api_read}?range=7d&amp;reads=1"' in shown
    assert 'href="/audit-logs?range=7d" id="show-reads"' in shown  # switching off again
    assert api_read in _row_uuids(admin.get("/audit-logs?action=audit_logs.read").text)
    assert api_read in _row_uuids(admin.get("/audit-logs?action=audit_logs.*").text)
