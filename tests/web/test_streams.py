"""The console's Streams page (issue #10): admins only; create a webhook stream, see its state and lag,
pause, resume, replay, test and delete it, each change audited like the API's; CSRF on every form."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from auditkeep.auth.principals import Role
from auditkeep.storage import Storage
from auditkeep.storage import streams as store
from auditkeep.streams.forwarder import FAILING_AFTER, Forwarder
from tests.conftest import Tenant, make_tenant
from tests.streams.receivers import WebhookReceiver, verify_signature, webhook_receiver
from tests.streams.test_webhook_streams import drain, ingest
from tests.web.conftest import Browser, BrowserFactory, People, events

SECRET = "console-secret-0123456789abcdef"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as r:
        yield r


@pytest.fixture
def admin(people: People, browser: Browser) -> Browser:
    """The tenant's admin, signed in."""
    assert browser.sign_in(people.admin.name).status_code == 303
    return browser


def create(browser: Browser, receiver: WebhookReceiver, **fields: str) -> str:
    """Create a webhook stream with the form; its id."""
    form = {"name": "siem", "url": receiver.url, "secret": SECRET, "batch_size": "10", "format": "datafold",
            "action": "", "start": "all", **fields}
    r = browser.post("/streams", form, follow_redirects=False)
    assert r.status_code == 303, r.text
    match = re.fullmatch(r"/streams\?done=created&stream=([0-9a-f-]+)", r.headers["location"])
    assert match, r.headers["location"]
    return match.group(1)


def row(page: str, stream_id: str) -> str:
    """The stream's table row, tags stripped and whitespace squeezed."""
    match = re.search(rf'<tr data-stream="[^"]*" data-id="{stream_id}">(.*?)</tr>', page, re.S)
    assert match, f"no row for {stream_id}"
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", match.group(1))).split())


def stored(storage: Storage, tenant: Tenant, stream_id: str) -> store.StreamRow:
    with storage.read() as conn:
        return store.get(conn, tenant.org.id, stream_id)


def test_create_a_webhook_stream_and_see_it_delivered(
    admin: Browser, tenant: Tenant, app_client: TestClient, storage: Storage, receiver: WebhookReceiver,
    forwarder: Forwarder,
) -> None:
    """The form makes a signed webhook stream from the oldest event; after a forwarder pass the page shows
    it active, caught up (lag 0) and delivered to the newest seq; the secret is never shown."""
    ingest(app_client, tenant, 12)
    stream_id = create(admin, receiver, name="siem", action="report.*")
    page = admin.get(f"/streams?done=created&stream={stream_id}")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    assert "Stream &#39;siem&#39; was created. Its events are delivered in the background." in page.text
    assert SECRET not in page.text and 'value="' + SECRET not in page.text
    drain(forwarder, lambda: len(receiver.events()) >= 12)
    assert [e["action"] for e in receiver.events()] == ["report.view"] * 12
    assert all(verify_signature(SECRET, d) for d in receiver.received)
    head = stored(storage, tenant, stream_id).delivered_seq
    text = row(admin.get("/streams").text, stream_id)
    assert text.startswith(f"siem {receiver.url} action: report.* webhook datafold active {head} 0 events · 0 s ")
    assert "none" in text.split(" 0 s ")[1]  # no last error
    (event,) = events(storage, tenant.org.id, "stream.create")
    assert event["source"] == "web" and event["user_email"] == tenant.admin.name
    assert event["payload"]["stream_id"] == stream_id and SECRET not in str(event)


def test_form_errors_name_the_field_and_never_echo_the_secret(
    admin: Browser, tenant: Tenant, storage: Storage, receiver: WebhookReceiver
) -> None:
    r = admin.post("/streams", {"name": "siem", "url": "not a url", "secret": SECRET, "start": "new"})
    assert r.status_code == 400 and SECRET not in r.text
    assert re.search(r'id="streams-error">URL: Input should be a valid URL[^<]*</div>', r.text)
    assert 'name="name" value="siem"' in r.text and 'name="url" value="not a url"' in r.text
    r = admin.post("/streams", {"name": "siem", "url": receiver.url, "secret": "short"})
    assert r.status_code == 400
    assert "Secret: String should have at least 16 characters." in r.text
    r = admin.post("/streams", {"name": "siem", "url": receiver.url, "secret": SECRET, "batch_size": "0"})
    assert r.status_code == 400 and "Batch size: Input should be greater than or equal to 1." in r.text
    create(admin, receiver, name="siem")
    r = admin.post("/streams", {"name": "siem", "url": receiver.url, "secret": SECRET})
    assert r.status_code == 409 and "A stream named &#39;siem&#39; already exists." in r.text
    with storage.read() as conn:
        assert [s.name for s in store.list_for_org(conn, tenant.org.id)] == ["siem"]


def test_forms_without_the_csrf_token_change_nothing(
    admin: Browser, tenant: Tenant, storage: Storage, receiver: WebhookReceiver
) -> None:
    stream_id = create(admin, receiver)
    r = admin.post("/streams", {"name": "other", "url": receiver.url, "secret": SECRET}, csrf=False)
    assert r.status_code == 403 and "This form has expired" in r.text
    for action in ("pause", "delete"):
        r = admin.post(f"/streams/{stream_id}/{action}", {"csrf_token": "forged"})
        assert r.status_code == 403 and "This form has expired" in r.text
    with storage.read() as conn:
        assert [(s.name, s.state) for s in store.list_for_org(conn, tenant.org.id)] == [("siem", "active")]


def test_only_admins_see_and_use_the_page(
    admin: Browser, people: People, new_browser: BrowserFactory, tenant: Tenant, storage: Storage,
    receiver: WebhookReceiver,
) -> None:
    """Others get the console's 403 page (audited), no Streams link, and their posts change nothing."""
    stream_id = create(admin, receiver)
    assert '<a href="/streams"' in admin.get("/api-keys").text
    for role in (Role.DEFAULT, Role.VIEWONLY):
        other = new_browser()
        other.sign_in(people.add(role).name)
        assert '<a href="/streams"' not in other.get("/api-keys").text
        page = other.get("/streams")
        assert page.status_code == 403 and "Not allowed" in page.text
        assert f"Only admins of {tenant.org.name} can open this page." in page.text
        for url in (f"/streams/{stream_id}/pause", f"/streams/{stream_id}/delete", "/streams"):
            r = other.post(url, {"name": "x", "url": receiver.url, "secret": SECRET})
            assert r.status_code == 403 and f"Only admins of {tenant.org.name} can manage streams." in r.text
    assert stored(storage, tenant, stream_id).state == "active"
    denied = events(storage, tenant.org.id, "request.denied")
    assert [e["url"].rsplit("/", 1)[-1] for e in denied] == ["streams", "pause", "delete", "streams"] * 2


def test_pause_resume_and_replay(
    admin: Browser, tenant: Tenant, app_client: TestClient, storage: Storage, receiver: WebhookReceiver,
    forwarder: Forwarder,
) -> None:
    """Paused: nothing new is delivered and the page says so; resumed: the backlog arrives in order;
    replayed from a seq: the events from there arrive again. Each change is a stream.update from "web"."""
    ingest(app_client, tenant, 5)
    stream_id = create(admin, receiver, action="report.*")
    drain(forwarder, lambda: len(receiver.events()) >= 5)

    r = admin.post(f"/streams/{stream_id}/pause", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/streams?done=paused&stream={stream_id}"
    page = admin.get(r.headers["location"]).text
    assert "Stream &#39;siem&#39; is paused. It keeps its place; resuming delivers from there." in page
    assert " paused " in row(page, stream_id) and 'data-action="resume"' in page
    ingest(app_client, tenant, 3, start=5)
    forwarder.run_once()
    assert len(receiver.events()) == 5
    # Lag counts every event after the cursor, matching or not: the pause's stream.update and the 3 new.
    paused_at = stored(storage, tenant, stream_id).delivered_seq
    assert f" paused {paused_at} 4 events · " in row(admin.get("/streams").text, stream_id)

    r = admin.post(f"/streams/{stream_id}/resume", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/streams?done=resumed&stream={stream_id}"
    page = admin.get(r.headers["location"]).text
    assert f"Stream &#39;siem&#39; was resumed. Delivery continues from seq {paused_at + 1}." in page
    drain(forwarder, lambda: len(receiver.events()) >= 8)
    delivered = [e["seq"] for e in receiver.events()]
    assert delivered == sorted(delivered) and len(set(delivered)) == 8

    first = delivered[0]
    r = admin.post(f"/streams/{stream_id}/replay", {"from_seq": str(first)}, follow_redirects=False)
    assert r.status_code == 303
    assert f"Stream &#39;siem&#39; will deliver again from seq {first}." in admin.get(r.headers["location"]).text
    drain(forwarder, lambda: len(receiver.events()) >= 16)
    assert [e["seq"] for e in receiver.events()][8:] == delivered
    updates = events(storage, tenant.org.id, "stream.update")
    assert [(e["source"], e["payload"]["changed"]) for e in updates] == [
        ("web", ["state"]), ("web", ["state"]), ("web", ["replay_from_seq"])]
    assert updates[-1]["log_entry"] == f"Stream 'siem' changed: replay_from_seq (replay from seq {first})"


def test_replay_refuses_a_bad_seq(admin: Browser, tenant: Tenant, storage: Storage,
                                  receiver: WebhookReceiver) -> None:
    stream_id = create(admin, receiver, start="new")
    before = stored(storage, tenant, stream_id).delivered_seq
    r = admin.post(f"/streams/{stream_id}/replay", {"from_seq": "abc"})
    assert r.status_code == 400
    assert "Replay of &#39;siem&#39;: give the seq to deliver again from, a whole number from 1." in r.text
    with storage.read() as conn:
        head = store.head_seq(conn, tenant.org.id)
    r = admin.post(f"/streams/{stream_id}/replay", {"from_seq": str(head + 2)})
    assert r.status_code == 400
    assert (f"Replay of &#39;siem&#39;: replay_from_seq {head + 2} is past the newest event (seq {head})."
            in r.text)
    assert stored(storage, tenant, stream_id).delivered_seq == before
    assert events(storage, tenant.org.id, "stream.update") == []


def test_send_test_shows_what_the_destination_said(
    admin: Browser, tenant: Tenant, storage: Storage, receiver: WebhookReceiver
) -> None:
    stream_id = create(admin, receiver, start="new")
    before = stored(storage, tenant, stream_id).delivered_seq
    r = admin.post(f"/streams/{stream_id}/test")
    assert r.status_code == 200
    assert re.search(r'id="stream-test-result">Test event delivered to siem: the destination acknowledged it.<',
                     r.text)
    (test_event,) = receiver.events()
    assert test_event["test"] is True and test_event["action"] == "auditkeep.stream_test"
    receiver.answer = lambda d: (401, {})
    r = admin.post(f"/streams/{stream_id}/test")
    assert r.status_code == 200
    result = re.search(r'id="stream-test-result">([^<]+)<', r.text)
    assert result and result.group(1).startswith("Test event to siem not delivered: ")
    assert "answered 401" in result.group(1)
    assert stored(storage, tenant, stream_id).delivered_seq == before  # outside the cursor


def test_a_failing_stream_shows_its_badge_and_last_error(
    admin: Browser, tenant: Tenant, app_client: TestClient, storage: Storage, receiver: WebhookReceiver,
    forwarder: Forwarder,
) -> None:
    receiver.answer = lambda d: (503, {})
    ingest(app_client, tenant, 2)
    stream_id = create(admin, receiver)
    drain(forwarder, lambda: stored(storage, tenant, stream_id).failures >= FAILING_AFTER)
    page = admin.get("/streams").text
    assert re.search(rf'data-id="{stream_id}">.*?<span class="badge badge-failure">failing</span>', page, re.S)
    last_error = stored(storage, tenant, stream_id).last_error
    assert last_error and "answered 503" in last_error
    assert last_error in row(page, stream_id)


def test_delete_asks_first_and_is_audited(
    admin: Browser, tenant: Tenant, storage: Storage, receiver: WebhookReceiver
) -> None:
    stream_id = create(admin, receiver)
    confirm = admin.get(f"/streams/{stream_id}/delete")
    assert confirm.status_code == 200 and "This cannot be undone" in confirm.text
    assert stored(storage, tenant, stream_id).name == "siem"
    r = admin.post(f"/streams/{stream_id}/delete", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/streams?done=deleted"
    page = admin.get(r.headers["location"]).text
    assert "The stream was deleted. The events it delivered stay in the audit log." in page
    assert "No streams yet." in page
    (event,) = events(storage, tenant.org.id, "stream.delete")
    assert event["source"] == "web" and event["payload"]["stream_id"] == stream_id


def test_another_organizations_streams_are_not_found(
    admin: Browser, tenant: Tenant, storage: Storage, receiver: WebhookReceiver, password_hash: str,
    new_browser: BrowserFactory,
) -> None:
    stream_id = create(admin, receiver)
    other = People(make_tenant(storage), password_hash)
    intruder = new_browser()
    intruder.sign_in(other.admin.name)
    page = intruder.get("/streams")
    assert page.status_code == 200 and stream_id not in page.text and "No streams yet." in page.text
    assert intruder.get(f"/streams/{stream_id}/delete").status_code == 404
    for action in ("pause", "resume", "test", "delete"):
        r = intruder.post(f"/streams/{stream_id}/{action}")
        assert r.status_code == 404 and "There is no such stream in this organization." in r.text
    r = intruder.post(f"/streams/{stream_id}/replay", {"from_seq": "1"})
    assert r.status_code == 404
    assert stored(storage, tenant, stream_id).state == "active"
    assert receiver.attempts == []
    assert events(storage, tenant.org.id, "stream.update") == []
