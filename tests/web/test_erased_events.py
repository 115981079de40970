"""The console shows an erased event (issue #12): "[erased]" for client_ip and url, nothing for the rest."""

from __future__ import annotations

import secrets

from fastapi.testclient import TestClient

from auditkeep.erasure import erase_person
from auditkeep.ingest.selfaudit import Origin
from tests.conftest import Tenant
from tests.web.conftest import Browser, People


def test_the_list_and_the_detail_page_show_an_erased_event_without_its_values(
    tenant: Tenant, people: People, browser: Browser, app_client: TestClient
) -> None:
    """After an erasure the console's list and detail pages show "[erased]" and none of the values, and
    the event's hash, which still verifies."""
    tag = secrets.token_hex(6)
    values = {"user_email": f"zoe-{tag}@x.test", "client_ip": "203.0.113.77", "url": f"https://app.test/{tag}",
              "user_agent": f"agent-{tag}", "referer": f"https://ref.test/{tag}", "log_entry": f"entry-{tag}",
              "payload": {"secret": f"payload-{tag}"}, "user_id": 9876543210}
    r = app_client.post("/api/v1/audit_logs", headers=tenant.headers,
                        json=[{**values, "action": "doc.update", "object_type": "doc", "object_id": 5}])
    assert r.status_code == 201, r.text
    (uuid,) = r.json()["event_uuids"]
    erase_person(tenant.storage, tenant.org.id, user_email=values["user_email"], reason="request 1",
                 origin=Origin.cli(["test"]))
    browser.sign_in(people.admin.name)

    listing = browser.get("/audit-logs?action=doc.update")
    detail = browser.get(f"/audit-logs/{uuid}")
    assert listing.status_code == 200 and detail.status_code == 200
    assert f'data-href="/audit-logs/{uuid}' in listing.text
    for html in (listing.text, detail.text):
        assert "[erased]" in html
        for value in (values["user_email"], values["client_ip"], tag, "9876543210"):
            assert value not in html, value
    assert detail.text.count("[erased]") >= 2  # client_ip and url
